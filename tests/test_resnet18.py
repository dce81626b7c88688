"""ResNet18 encoder: torchvision layout, and weight conversion checked against an independent numpy forward pass."""

import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from student.backbones.layers import ImageNetNormalization, SyncBatchNormalization
from student.backbones.resnet18 import build_resnet18_encoder, load_resnet18_weights, torchvision_key_map
from tests.helpers import np_bn, np_conv
from tests.torch_files import Tensor, save_legacy, save_zip

# torchvision.models.resnet18(): 11,689,512 parameters, of which fc (512 * 1000 + 1000) = 513,000.
TORCHVISION_RESNET18_TRUNK_PARAMS = 11_689_512 - 513_000
# BN running_mean + running_var buffers: 2 * (64 + 4*64 + 4*128 + 4*256 + 4*512 + 128 + 256 + 512).
TORCHVISION_RESNET18_BN_BUFFERS = 9_600


# ---------------------------------------------------------------------------------------------------------------
# A random torchvision-style state dict and a plain numpy (NCHW, OIHW) forward pass of torchvision's resnet18.
# ---------------------------------------------------------------------------------------------------------------


def _random_state_dict(seed=0):
    """Random values under torchvision's resnet18 key names and shapes (including fc and num_batches_tracked)."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(key, c_out, c_in, k):
        std = np.sqrt(2.0 / (c_in * k * k))
        state[f"{key}.weight"] = (rng.standard_normal((c_out, c_in, k, k)) * std).astype("float32")

    def bn(key, c):
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, c).astype("float32")
        state[f"{key}.bias"] = rng.normal(0.0, 0.1, c).astype("float32")
        state[f"{key}.running_mean"] = rng.normal(0.0, 0.1, c).astype("float32")
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, c).astype("float32")
        state[f"{key}.num_batches_tracked"] = np.array(123, dtype="int64")

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    c_in = 64
    for layer, c_out in zip(range(1, 5), (64, 128, 256, 512)):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            conv(f"{prefix}.conv1", c_out, c_in if block == 0 else c_out, 3)
            bn(f"{prefix}.bn1", c_out)
            conv(f"{prefix}.conv2", c_out, c_out, 3)
            bn(f"{prefix}.bn2", c_out)
            if block == 0 and layer > 1:
                conv(f"{prefix}.downsample.0", c_out, c_in, 1)
                bn(f"{prefix}.downsample.1", c_out)
        c_in = c_out
    state["fc.weight"] = rng.standard_normal((1000, 512)).astype("float32")
    state["fc.bias"] = np.zeros(1000, "float32")
    return state


def _np_maxpool_3x3_s2_p1(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h_out = (x.shape[2] - 3) // 2 + 1
    w_out = (x.shape[3] - 3) // 2 + 1
    windows = [x[:, :, i : i + 2 * (h_out - 1) + 1 : 2, j : j + 2 * (w_out - 1) + 1 : 2] for i in range(3) for j in range(3)]
    return np.max(np.stack(windows), axis=0)


def _np_resnet18(x_nchw, state):
    """Returns the outputs of torchvision resnet18's layer1..layer4 for an NCHW input."""
    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    x = relu(np_bn(np_conv(x_nchw, state["conv1.weight"], 2, 3), state, "bn1"))
    x = _np_maxpool_3x3_s2_p1(x)
    features = []
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            stride = 2 if (layer > 1 and block == 0) else 1
            y = relu(np_bn(np_conv(x, state[f"{p}.conv1.weight"], stride, 1), state, f"{p}.bn1"))
            y = np_bn(np_conv(y, state[f"{p}.conv2.weight"], 1, 1), state, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in state:
                shortcut = np_bn(np_conv(x, state[f"{p}.downsample.0.weight"], stride, 0), state, f"{p}.downsample.1")
            else:
                shortcut = x
            x = relu(y + shortcut)
        features.append(x)
    return features


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_dict():
    return _random_state_dict()


@pytest.fixture(scope="module")
def safetensors_path(tmp_path_factory, state_dict):
    path = str(tmp_path_factory.mktemp("weights") / "resnet18.safetensors")
    save_file(state_dict, path)
    return path


@pytest.fixture(scope="module")
def encoder():
    return build_resnet18_encoder((None, None, 3))


@pytest.fixture(scope="module")
def input_and_reference(state_dict):
    x = np.random.default_rng(1).standard_normal((1, 64, 48, 3)).astype("float32")
    reference = _np_resnet18(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), state_dict)
    return x, [np.transpose(f, (0, 2, 3, 1)) for f in reference]


def _torchvision_size(n):
    """Spatial size after conv1 (7/2, pad 3), maxpool (3/2, pad 1) and three 3x3/2 pad-1 convs, per stage."""
    sizes = []
    n = (n + 2 * 3 - 7) // 2 + 1
    n = (n + 2 * 1 - 3) // 2 + 1
    sizes.append(n)
    for _ in range(3):
        n = (n + 2 * 1 - 3) // 2 + 1
        sizes.append(n)
    return sizes


@pytest.mark.parametrize("height, width", [(64, 64), (50, 70)])
def test_stage_shapes_follow_torchvision(encoder, height, width):
    out = encoder(np.zeros((1, height, width, 3), "float32"))
    assert sorted(out) == ["P2", "P3", "P4", "P5"]
    for key, h, w, c in zip(("P2", "P3", "P4", "P5"), _torchvision_size(height), _torchvision_size(width), (64, 128, 256, 512)):
        assert tuple(out[key].shape) == (1, h, w, c), key
    # Strides 4/8/16/32 at a size divisible by 32.
    if height == 64:
        assert [out[k].shape[1] for k in ("P2", "P3", "P4", "P5")] == [16, 8, 4, 2]


def test_parameter_count_matches_torchvision(encoder):
    trainable = sum(int(np.prod(w.shape)) for w in encoder.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in encoder.non_trainable_weights)
    assert trainable == TORCHVISION_RESNET18_TRUNK_PARAMS == 11_176_512
    assert non_trainable == TORCHVISION_RESNET18_BN_BUFFERS


def test_key_map_covers_every_encoder_weight_once(encoder, state_dict):
    key_map = torchvision_key_map()
    targets = list(key_map.values())
    assert len(set(targets)) == len(targets)
    weight_paths = {(v.path.split("/")[-2], v.path.split("/")[-1]) for v in encoder.weights}
    assert set(targets) == weight_paths
    expected_keys = {k for k in state_dict if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert set(key_map) == expected_keys


def test_batchnorm_matches_torchvision_defaults(encoder):
    bn = encoder.get_layer("stack2_block0_1_bn")
    assert bn.epsilon == 1e-5 and bn.momentum == 0.9 and bn.synchronized
    assert all(isinstance(layer, SyncBatchNormalization) for layer in encoder.layers if "_bn" in layer.name)
    conv = encoder.get_layer("conv1_conv")
    assert conv.use_bias is False and conv.strides == (2, 2) and conv.padding == "valid"


def test_sync_batchnorm_uses_two_pass_statistics():
    """Training-mode output equals a float64 two-pass reference on data whose |mean| >> std, where Keras'
    E[x^2] - E[x]^2 loses float32 precision, and equals unsynchronized BatchNormalization on one device."""
    rng = np.random.default_rng(0)
    x = (1000.0 + rng.standard_normal((4, 8, 8, 3))).astype("float32")
    mean = x.astype("float64").mean(axis=(0, 1, 2))
    var = ((x.astype("float64") - mean) ** 2).mean(axis=(0, 1, 2))
    reference = (x - mean) / np.sqrt(var + 1e-3)
    layer = SyncBatchNormalization(epsilon=1e-3)
    out = np.asarray(layer(x, training=True))
    np.testing.assert_allclose(out, reference, atol=2e-3)
    plain = keras.layers.BatchNormalization(epsilon=1e-3)
    np.testing.assert_allclose(out, np.asarray(plain(x, training=True)), atol=1e-6)


def test_sync_batchnorm_keeps_float64_statistics():
    """Under a float64 policy the statistics stay float64 (only float16 / bfloat16 are raised to float32), so a
    float64 clone of the student is an exact reference for float32 training (the mirrored parity test)."""
    rng = np.random.default_rng(0)
    x = 1000.0 + rng.standard_normal((4, 8, 8, 3))
    mean = x.mean(axis=(0, 1, 2))
    reference = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=(0, 1, 2)) + 1e-3)
    out = np.asarray(SyncBatchNormalization(epsilon=1e-3, dtype="float64")(x, training=True))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-9)


def test_safetensors_conversion_matches_numpy_reference(safetensors_path, state_dict, input_and_reference):
    encoder = build_resnet18_encoder()
    load_resnet18_weights(encoder, safetensors_path)
    x, reference = input_and_reference
    out = encoder(x, training=False)
    for key, ref in zip(("P2", "P3", "P4", "P5"), reference):
        np.testing.assert_allclose(np.asarray(out[key]), ref, atol=1e-4, rtol=1e-4, err_msg=key)


def test_conversion_layouts_and_running_stats(safetensors_path, state_dict):
    encoder = build_resnet18_encoder()
    load_resnet18_weights(encoder, safetensors_path)
    kernel = np.asarray(encoder.get_layer("stack1_block0_1_conv").kernel)  # HWIO
    w = state_dict["layer2.0.conv1.weight"]  # OIHW (128, 64, 3, 3)
    assert kernel.shape == (3, 3, 64, 128)
    assert kernel[0, 2, 5, 7] == w[7, 5, 0, 2] and kernel[2, 1, 63, 127] == w[127, 63, 2, 1]
    bn = encoder.get_layer("stack3_block0_0_bn")  # layer4.0.downsample.1
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), state_dict["layer4.0.downsample.1.running_mean"])
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), state_dict["layer4.0.downsample.1.running_var"])
    np.testing.assert_array_equal(np.asarray(bn.gamma), state_dict["layer4.0.downsample.1.weight"])
    np.testing.assert_array_equal(np.asarray(bn.beta), state_dict["layer4.0.downsample.1.bias"])


def _write(tmp_path, state, name="bad.safetensors"):
    path = str(tmp_path / name)
    save_file(state, path)
    return path


def test_missing_key_is_named(tmp_path, state_dict, encoder):
    state = dict(state_dict)
    del state["layer3.1.bn2.running_var"]
    path = _write(tmp_path, state)
    with pytest.raises(ValueError, match=r"1 missing key\(s\): layer3\.1\.bn2\.running_var") as info:
        load_resnet18_weights(encoder, path)
    assert path in str(info.value)


def test_unknown_key_is_named(tmp_path, state_dict, encoder):
    state = dict(state_dict, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), "float32")})
    path = _write(tmp_path, state)
    with pytest.raises(ValueError, match=r"1 unexpected key\(s\): layer5\.0\.conv1\.weight.*ResNet18"):
        load_resnet18_weights(encoder, path)


def test_wrong_shape_is_named_and_leaves_encoder_unchanged(tmp_path, state_dict):
    encoder = build_resnet18_encoder()
    before = [np.asarray(w).copy() for w in encoder.weights]
    state = dict(state_dict, **{"layer4.1.conv2.weight": np.zeros((512, 256, 3, 3), "float32")})
    path = _write(tmp_path, state)
    with pytest.raises(ValueError, match=r"layer4\.1\.conv2\.weight.*\(512, 256, 3, 3\)") as info:
        load_resnet18_weights(encoder, path)
    assert path in str(info.value)
    for old, new in zip(before, encoder.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


def test_missing_file_and_unsupported_extension(tmp_path, encoder):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_resnet18_weights(encoder, str(tmp_path / "nope.safetensors"))
    npz = tmp_path / "weights.npz"
    npz.write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights\.npz is not a PyTorch file"):
        load_resnet18_weights(encoder, str(npz))


def test_weights_h5_round_trip(tmp_path, safetensors_path, input_and_reference):
    source = build_resnet18_encoder()
    load_resnet18_weights(source, safetensors_path)
    path = str(tmp_path / "encoder.weights.h5")
    source.save_weights(path)
    target = load_resnet18_weights(build_resnet18_encoder(), path)
    for a, b in zip(source.weights, target.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _torch_file(state, path, save):
    """`state` written in torch's format by `save` (tests/torch_files.py: byte for byte what torch.save writes)."""
    save({"state_dict": {k: Tensor.from_array(v, str(i)) for i, (k, v) in enumerate(state.items())}}, path)
    return str(path)


@pytest.mark.parametrize("save", [save_zip, save_legacy])
def test_pth_reads_without_torch(tmp_path, state_dict, input_and_reference, save, monkeypatch):
    """Issue 24 item 8b: a torchvision-layout .pth needed torch (an ImportError without it); it is now read by the
    torch-free reader, in both torch.save formats."""
    path = _torch_file(state_dict, tmp_path / "resnet18.pth", save)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    encoder = load_resnet18_weights(build_resnet18_encoder(), path)
    x, reference = input_and_reference
    np.testing.assert_allclose(np.asarray(encoder(x, training=False)["P5"]), reference[-1], atol=1e-4, rtol=1e-4)


def test_pth_written_by_torch_matches(tmp_path, state_dict, input_and_reference):
    """A checkpoint torch itself wrote loads the same (the torch-based expectation, where torch is installed)."""
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "resnet18.pth")
    torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}}, path)
    encoder = load_resnet18_weights(build_resnet18_encoder(), path)
    x, reference = input_and_reference
    np.testing.assert_allclose(np.asarray(encoder(x, training=False)["P5"]), reference[-1], atol=1e-4, rtol=1e-4)


def test_student_takes_a_pth_without_torch_through_the_cache(tmp_path, state_dict, monkeypatch):
    """`--backbone resnet18 --backbone-weights x.pth` without torch: converted once into the cache, like the
    other backbones, and the student's encoder holds the file's weights."""
    from student.model import build_student

    path = _torch_file(state_dict, tmp_path / "resnet18.pth", save_zip)
    monkeypatch.setenv("SALIENCY_KD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "torch", None)
    encoder = build_student("A", backbone_weights=path).get_layer("resnet18")
    assert len(list((tmp_path / "cache").glob("resnet18-*.weights.h5"))) == 1
    kernel = np.asarray(encoder.get_layer("stack1_block0_1_conv").kernel)  # HWIO <- OIHW
    np.testing.assert_array_equal(kernel, np.transpose(state_dict["layer2.0.conv1.weight"], (2, 3, 1, 0)))
    bn = encoder.get_layer("stack3_block0_0_bn")
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), state_dict["layer4.0.downsample.1.running_mean"])


def test_imagenet_normalization_hand_computed():
    layer = ImageNetNormalization()
    x = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    expected = [(0.0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (1.0 - 0.406) / 0.225]
    np.testing.assert_allclose(np.asarray(layer(x))[0, 0, 0], expected, rtol=1e-5)


def test_seeded_build_is_reproducible():
    a = build_resnet18_encoder(seed=3).get_layer("stack0_block1_2_conv").kernel
    b = build_resnet18_encoder(seed=3).get_layer("stack0_block1_2_conv").kernel
    c = build_resnet18_encoder(seed=4).get_layer("stack0_block1_2_conv").kernel
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    # torchvision init: kaiming normal, fan_out = 3 * 3 * 64, std = sqrt(2 / 576).
    assert abs(float(np.std(np.asarray(a))) - np.sqrt(2.0 / 576)) < 0.005
