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
