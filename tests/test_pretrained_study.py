"""The pretrained study's variants: which records, which maps and which encoder each run trains on."""

import json

import pytest

from experiments import pretrained_study
from experiments.pretrained_study import VARIANTS, PretrainedSettings


def test_each_variant_trains_on_its_data_from_the_seed_s_initial_weights(tmp_path):
    settings = PretrainedSettings(records_dirs=("mit", "osie"), photos_dirs=("photos",), backbone="mobilenetv2")
    configs = {name: settings.train_config(name, str(tmp_path / name), "init.weights.h5", 7) for name in VARIANTS}
    assert configs["P_A"].records_dir == ["mit", "osie"] and configs["P_A"].variant == "A"
    assert configs["P_B"].records_dir == ["mit", "osie"] and configs["P_B"].kd_into_saliency == 1.0
    assert configs["P_B_photos"].records_dir == ["mit", "osie", "photos"]
    assert configs["P_KD"].records_dir == ["mit", "osie", "photos"] and configs["P_KD"].label_fraction == 0.0
    for config in configs.values():
        # Paired: every variant starts from the same file, which already holds the ImageNet encoder.
        assert config.initial_weights == "init.weights.h5" and config.backbone_weights is None
        assert config.backbone == "mobilenetv2" and config.freeze_encoder_bn and config.seed == 7


def test_missing_photo_records_are_named_before_any_work(tmp_path, capsys):
    code = pretrained_study.main(["--records-dir", str(tmp_path / "a"), "--photos-dir", str(tmp_path / "photos"),
                                  "--out", str(tmp_path / "out"), "--variants", "P_B_photos"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'photos'}: no records of the unlabelled photos" in err and "export_teacher.py --images" in err
    assert f"{tmp_path / 'a'}: no finished 'train' export" in err  # every bad folder in the one error
    assert not (tmp_path / "out").exists()


def _records(folder, splits=("train", "val", "test"), teacher="fastgaze-centre"):
    """A records folder as the study's checks see it: one manifest per split (no shards are read before training)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (folder / f"{split}.json").write_text(json.dumps({"split": split, "teacher": {"name": teacher}}))
    return str(folder)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the study builds a model or trains: its inputs must be checked before either."""
    from student import training

    def refuse(*args, **kwargs):
        raise AssertionError("the study built a model or trained before its inputs were checked")

    monkeypatch.setattr(pretrained_study, "model_cost", refuse)
    monkeypatch.setattr(training, "train", refuse)


def _run(tmp_path, capsys, photos, *records_dirs):
    code = pretrained_study.main(["--records-dir", *records_dirs, "--photos-dir", *photos, "--out",
                                  str(tmp_path / "out"), "--seeds", "0"])
    assert code == 1 and not (tmp_path / "out").exists()
    return " ".join(capsys.readouterr().err.split())


def test_a_photo_folder_given_as_photo_records_is_refused_before_any_model(tmp_path, capsys, no_work):
    mit, osie = _records(tmp_path / "mit"), _records(tmp_path / "osie")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.PNG"):
        (photos / name).write_bytes(b"")
    err = _run(tmp_path, capsys, [str(photos)], mit, osie)
    assert f"{photos}: a folder of 2 photo(s), not their records" in err
    assert f"export_teacher.py --images {photos} --teacher fastgaze-centre --out data/distill_photos" in err
    assert "--photos-dir data/distill_photos" in err and "--split" not in err


def test_photo_records_are_checked_before_any_model(tmp_path, capsys, no_work):
    mit, osie = _records(tmp_path / "mit"), _records(tmp_path / "osie")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "train.plan.json").write_text("{}")
    err = _run(tmp_path, capsys, [str(unfinished), str(tmp_path / "empty")], mit, osie)
    assert f"{unfinished}: the export of the unlabelled photos has not finished" in err
    assert f"{tmp_path / 'empty'}: no records of the unlabelled photos" in err

    err = _run(tmp_path, capsys, [mit], mit, osie)
    assert "--records-dir and --photos-dir" in err and "given twice" in err

    other = _records(tmp_path / "other", ("train",), teacher="msinet")
    err = _run(tmp_path, capsys, [other], mit, osie)
    assert "different teachers" in err and "'fastgaze-centre' vs 'msinet'" in err
    assert "export the photos with the teacher" in err and "--allow-mixed-records" not in err


def test_the_cost_is_that_of_the_served_student():
    cost = pretrained_study.model_cost("mobilenetv2", (64, 96))
    assert cost["params"] > 2_000_000 and 0 < cost["gmac"] < 1
    with pytest.raises(ValueError, match="choose one of"):
        pretrained_study.model_cost("vgg16", (64, 96))


def _summary(means, sd=0.01, teacher=None):
    """A study summary with the given mean NSS/CC per variant (the same on both sets) and a fixed sd."""
    teacher = teacher or {"nss": 2.0, "cc": 0.6}
    cell = lambda v: {"mean": v, "sd": sd}  # noqa: E731
    return {"references": {d: {"teacher (records)": dict(teacher)} for d in ("mit1003", "osie")},
            "variants": {name: {"test": {d: {"nss": cell(nss), "cc": cell(cc)} for d in ("mit1003", "osie")}}
                         for name, (nss, cc) in means.items()}}


def test_targets_follow_their_definitions():
    t = pretrained_study.check_targets(_summary({"P_A": (1.5, 0.5), "P_B": (1.6, 0.56), "P_KD": (1.9, 0.55)}))
    assert t["a"]["met"] is True  # +0.1 NSS and +0.06 CC against 2 pooled sd = 0.02
    assert t["b"]["met"] is False and "osie NSS 1.600 vs 2.000" in t["b"]["why"]
    assert t["c"]["met"] is True and "95.0%" in t["c"]["why"]

    t = pretrained_study.check_targets(_summary({"P_A": (1.5, 0.5), "P_B": (1.515, 0.56), "P_KD": (1.89, 0.55)}))
    assert t["a"]["met"] is False  # NSS +0.015 is not more than 2 pooled sd (0.02)
    assert t["c"]["met"] is False  # 94.5%


def test_beating_the_teacher_needs_osie_above_and_mit1003_within_two_percent():
    teacher = {"nss": 2.0, "cc": 0.6}
    above = pretrained_study.check_targets(_summary({"P_B_photos": (2.01, 0.61)}, teacher=teacher))
    assert above["b"]["met"] is True and above["a"]["met"] is None and above["c"]["met"] is None
    summary = _summary({"P_B_photos": (2.01, 0.61)}, teacher=teacher)
    summary["variants"]["P_B_photos"]["test"]["mit1003"]["nss"]["mean"] = 1.95  # 2.5% below
    assert pretrained_study.check_targets(summary)["b"]["met"] is False
    assert "not measured" in pretrained_study.targets_markdown(above)


def test_a_ctrl_c_in_a_finaliser_stops_the_study_silently(tmp_path, capsys, monkeypatch):
    """Python runs the SIGINT handler wherever the Ctrl-C lands, a finaliser included (no real signal is sent)."""
    import signal
    import sys

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's, which prints "Exception ignored"

    class Finalised:
        def __del__(self):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    def run_study(*args, stop_requested=None, **kwargs):
        Finalised()
        assert stop_requested is not None and stop_requested()  # what the study asks after each batch and run
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained_study, "run_study", run_study)
    try:
        code = pretrained_study.main(["--out", str(tmp_path / "out")])
    except KeyboardInterrupt:  # would stop pytest itself
        pytest.fail("a KeyboardInterrupt escaped pretrained_study.main")
    assert code == 130
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "run the same command again to resume" in err
