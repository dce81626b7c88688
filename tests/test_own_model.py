"""The own-model study: search runs, val readings, the recipe choice and the targets (no training here)."""

import argparse
import csv
import json

import pytest

from experiments import own_model
from experiments.own_model import FINAL_VARIANTS, SEARCH, OwnSettings


def test_each_search_run_changes_one_setting_of_the_base():
    base = OwnSettings(records_dirs=("r_mit", "r_osie"), photos_dirs=("r_photos",))
    alt = (["f_mit", "f_osie"], ["f_photos"])
    runs = {name: own_model.candidate_settings(base, name, alt) for name in SEARCH}
    assert runs["base"].epochs == own_model.MAX_EPOCHS
    for name, settings in runs.items():
        if name == "base":
            continue
        assert settings.epochs == own_model.SEARCH_EPOCHS
        changed = {f for f in vars(base) if getattr(base, f) != getattr(settings, f)} - {"epochs"}
        expected = {"teacher": {"records_dirs", "photos_dirs"}}.get(name, set(SEARCH[name]))
        assert changed == expected, name
    assert runs["teacher"].records_dirs == ("f_mit", "f_osie") and runs["teacher"].photos_dirs == ("f_photos",)
    with pytest.raises(ValueError, match="--alt-records-dir"):
        own_model.candidate_settings(base, "teacher", None)


def test_final_variants_train_on_their_data(tmp_path):
    settings = OwnSettings(records_dirs=("mit", "osie"), photos_dirs=("photos",), image_size=(64, 96))
    configs = {name: settings.train_config(name, str(tmp_path / name), "init.weights.h5", 3) for name in FINAL_VARIANTS}
    assert configs["S"].records_dir == ["mit", "osie", "photos"] and configs["S"].variant == "B"
    assert configs["S"].kd_into_saliency == 1.0 and configs["S"].decoder == "light"
    assert configs["S_noteacher"].records_dir == ["mit", "osie"] and configs["S_noteacher"].variant == "A"
    assert configs["S_KD"].label_fraction == 0.0 and configs["S_KD"].records_dir == ["mit", "osie", "photos"]
    for config in configs.values():
        assert config.initial_weights == "init.weights.h5" and config.backbone_weights is None
        assert config.freeze_encoder_bn and config.seed == 3 and config.image_size == (64, 96)


def test_missing_records_are_named_before_any_training(tmp_path, capsys):
    code = own_model.main(["search", "--records-dir", str(tmp_path / "mit"), "--photos-dir", str(tmp_path / "ph"),
                           "--out", str(tmp_path / "out")])
    assert code == 1
    assert f"{tmp_path / 'mit'}: no finished 'train' export" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()



def test_the_photos_are_required_only_by_the_variants_that_train_on_them(tmp_path):
    for split in ("train", "val", "test"):
        for d in ("mit", "osie"):
            (tmp_path / d).mkdir(exist_ok=True)
            (tmp_path / d / f"{split}.json").write_text("{}")
    settings = OwnSettings(records_dirs=(str(tmp_path / "mit"), str(tmp_path / "osie")),
                           photos_dirs=(str(tmp_path / "photos"),))
    own_model.check_records(settings, ["S_noteacher"])
    for variants in (["S_noteacher", "S_KD"], None):
        with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'photos'}: no finished 'train' export"):
            own_model.check_records(settings, variants)

def _write_run(run_dir, val_klds, curves):
    run_dir.mkdir(parents=True)
    with open(run_dir / "history.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "val_kld"])
        for epoch, kld in enumerate(val_klds):
            writer.writerow([epoch, 1.0, kld])
    with open(run_dir / "val_curves.json", "w") as f:
        json.dump({str(e): dict(zip(("nss", "cc", "kld"), c)) for e, c in enumerate(curves)}, f)


def test_a_run_is_read_at_its_best_checkpoint_within_the_epochs_counted(tmp_path):
    _write_run(tmp_path / "r", [0.9, 0.7, 0.8, 0.6], [(1.0, 0.4, 0.9), (1.5, 0.5, 0.7), (1.4, 0.5, 0.8),
                                                     (1.7, 0.6, 0.6)])
    assert own_model.read_run(tmp_path / "r", 3) == {"epoch": 2, "epochs_seen": 3, "nss": 1.5, "cc": 0.5,
                                                     "kld": 0.7}
    assert own_model.read_run(tmp_path / "r")["epoch"] == 4
    assert own_model.read_run(tmp_path / "missing") is None


def test_the_choice_takes_each_factor_that_beats_the_base_and_the_best_epoch_count():
    base = {"epoch": 8, "nss": 2.0, "cc": 0.6, "kld": 0.8}
    readings = {"base": base,
                "decoder_card": {"epoch": 9, "nss": 2.1, "cc": 0.6, "kld": 0.8},    # +2.5%: joins
                "kd_weight_1": {"epoch": 7, "nss": 2.1, "cc": 0.55, "kld": 0.8},    # +2.5% NSS, -4.2% CC: no
                "size_192x256": None}                                              # not run yet: left out
    curve = {10: base, 15: {"epoch": 14, "nss": 2.2, "cc": 0.62, "kld": 0.7},
             20: {"epoch": 14, "nss": 2.2, "cc": 0.62, "kld": 0.7}}
    recipe, rows = own_model.choose(readings, OwnSettings(), curve)
    assert recipe == {"decoder": "card", "epochs": 15}  # 15 and 20 tie: the shorter schedule
    names = [r["name"] for r in rows]
    assert "size_192x256" not in names and names[:3] == ["base", "decoder_card", "kd_weight_1"]
    assert [r["chosen"] for r in rows[:3]] == [False, True, False]
    assert "| decoder_card | 9 | 2.100 | 0.600 |" in own_model.search_markdown(rows)


def _summary(s_nss, s_cc, sd, teacher, kd_nss=None):
    cell = lambda m, s: {"mean": m, "sd": s}  # noqa: E731
    variants = {"S": {"test": {d: {"nss": cell(s_nss, sd), "cc": cell(s_cc, sd)} for d in ("mit1003", "osie")}}}
    if kd_nss is not None:
        variants["S_KD"] = {"test": {d: {"nss": cell(kd_nss, sd), "cc": cell(0.5, sd)} for d in ("mit1003", "osie")}}
    return {"references": {d: {"teacher (records)": dict(teacher)} for d in ("mit1003", "osie")},
            "variants": variants}


def test_targets_follow_their_definitions():
    models = {d: {"fastgaze-centre": {"nss": 2.0, "cc": 0.60}} for d in ("mit1003", "osie")}
    teacher = {"nss": 2.2, "cc": 0.65}
    t = own_model.check_targets(_summary(2.1, 0.62, 0.05, teacher, kd_nss=2.1), models, 3_100_000)
    assert t["b"]["met"] is False  # CC +0.02 is not more than one sd (0.05)
    assert t["b+"]["met"] is False and t["c"]["met"] is True and t["f"]["met"] is True  # 2.1 / 2.2 = 95.5%
    t = own_model.check_targets(_summary(2.3, 0.70, 0.01, teacher, kd_nss=2.08), models, 5_100_000)
    assert t["b"]["met"] is True and t["b+"]["met"] is True
    assert t["c"]["met"] is False and "94.5%" in t["c"]["why"] and t["f"]["met"] is False
    assert "not measured" in own_model.targets_markdown(own_model.check_targets(
        _summary(2.3, 0.7, 0.01, teacher), models, 1))


def test_final_refuses_the_choice_of_a_search_in_progress(tmp_path, capsys):
    search = tmp_path / "out" / "search"
    search.mkdir(parents=True)
    choice = {"recipe": {"epochs": 10, "kd_weight": 1.0}, "rows": [], "complete": False}
    (search / "choice.json").write_text(json.dumps(choice))
    args = ["final", "--records-dir", "mit", "--photos-dir", "ph", "--out", str(tmp_path / "out")]
    assert own_model.main(args) == 1
    assert "has not finished every run" in capsys.readouterr().err
    assert not (tmp_path / "out" / "final").exists()
    choice["complete"] = True
    (search / "choice.json").write_text(json.dumps(choice))
    parsed = argparse.Namespace(records_dir=["mit"], photos_dir=["ph"], recipe=str(search / "choice.json"))
    settings = own_model.settings_from_args(parsed)
    assert settings.epochs == 10 and settings.kd_weight == 1.0
