"""The pretrained study's variants: which records, which maps and which encoder each run trains on."""

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
    assert not (tmp_path / "out").exists()


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
