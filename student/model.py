"""The saliency student: an encoder from `student.backbones` (ResNet18 by default), an UpSampling2D/Conv2D
decoder and one or two logit heads.

Variant A has one head, ``"saliency"`` (trained on the human maps). Variant B adds a second branch,
``"teacher"``, whose logits are matched to the teacher's maps; both branch from the last upsampled 32-channel
tensor, as in the seed project (there without skip connections and with sigmoid outputs; here the heads output
logits whose spatial softmax is the predicted fixation density, see :func:`spatial_softmax`).

Any input size works: the image is padded to a multiple of 32 inside the model (symmetrically, with zeros after
the backbone's own normalisation, i.e. its mean colour) and the output is cropped back to the input size.

Two decoders (`DECODERS`):
- ``"card"``, the design card's: the stride-32 tap upsampled x2 five times, a 3x3 conv after each of the first
  four (256, 128, 64, 32 channels), the heads at full resolution. Most of a small encoder's compute goes here.
- ``"light"``: a narrow top-down path over the stride-8, -16 and -32 taps (1x1 laterals to 64 channels, x2
  bilinear upsampling and sums, two 3x3 convs at stride 8), the heads at stride 8, and the logits upsampled x8
  bilinearly inside the model. Fixation maps are smooth (a Gaussian of about 24 pixels at 240x320), so nothing
  needs full-resolution 3x3 convolutions.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from student.backbones import DEFAULT_BACKBONE, get_backbone
from student.backbones.layers import check_image_shape, layer_seed
from student.config import DECODERS

VARIANTS = ("A", "B")
HEADS = {"A": ("saliency",), "B": ("saliency", "teacher")}
DEFAULT_DECODER = "card"
DECODER_FILTERS = (256, 128, 64, 32)
LIGHT_WIDTH = 64
LIGHT_STRIDE = 8
TEACHER_BRANCH_FILTERS = 16
OUTPUT_STRIDE = 32


@keras.saving.register_keras_serializable(package="saliency_kd")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads height and width up to the next multiple of ``multiple``, split evenly between the two sides.

    Even splitting keeps the image centre at the centre of the padded frame (saliency has a strong centre bias).
    """

    def __init__(self, multiple: int = OUTPUT_STRIDE, **kwargs):
        super().__init__(**kwargs)
        if int(multiple) < 1:
            raise ValueError(f"`multiple` must be a positive int. Received: multiple={multiple}")
        self.multiple = int(multiple)

    def call(self, inputs):
        shape = keras.ops.shape(inputs)
        pad_h = (-shape[1]) % self.multiple
        pad_w = (-shape[2]) % self.multiple
        top, left = pad_h // 2, pad_w // 2
        return keras.ops.pad(inputs, [[0, 0], [top, pad_h - top], [left, pad_w - left], [0, 0]])

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        up = lambda n: None if n is None else -(-n // self.multiple) * self.multiple  # noqa: E731
        return (b, up(h), up(w), c)

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="saliency_kd")
class CropLike(keras.layers.Layer):
    """Crops ``inputs`` (B, H', W', C) back to the height and width of ``reference``, undoing :class:`PadToMultiple`."""

    def call(self, inputs, reference):
        out_shape = keras.ops.shape(inputs)
        ref_shape = keras.ops.shape(reference)
        top = (out_shape[1] - ref_shape[1]) // 2
        left = (out_shape[2] - ref_shape[2]) // 2
        return keras.ops.slice(
            inputs, [0, top, left, 0], [out_shape[0], ref_shape[1], ref_shape[2], out_shape[3]]
        )

    def compute_output_shape(self, inputs_shape, reference_shape):
        return (inputs_shape[0], reference_shape[1], reference_shape[2], inputs_shape[3])


def spatial_softmax(logits):
    """Predicted fixation density: softmax of (B, H, W, C) logits over H and W, per image and channel.

    Args:
        logits: tensor (B, H, W, C), e.g. a head output of :func:`build_student`.

    Returns:
        float32 tensor of the same shape, each (H, W) slice non-negative and summing to 1.
    """
    logits = keras.ops.cast(logits, "float32")
    return keras.ops.exp(logits - keras.ops.logsumexp(logits, axis=(1, 2), keepdims=True))


def saliency_map(logits):
    """A [0, 1] saliency map: the :func:`spatial_softmax` density divided by its per-image maximum.

    Args:
        logits: tensor (B, H, W, C).

    Returns:
        float32 tensor of the same shape with maximum exactly 1 per image and channel.
    """
    density = spatial_softmax(logits)
    return density / keras.ops.max(density, axis=(1, 2), keepdims=True)


def apply_decoder_block(x, filters: int, name: str, seed: int | None = None):
    """Bilinear x2 upsampling, then a 3x3 conv with ReLU (the seed project's decoder step; no skip input).

    Args:
        x: tensor (B, H, W, C).
        filters: int. Output channels.
        name: str. Layer-name prefix, e.g. ``"decoder_block1"``.
        seed: int or None. Model seed for the conv initialiser.

    Returns:
        Tensor (B, 2H, 2W, filters).
    """
    x = _upsample(x, f"{name}_up")
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed(seed, f"{name}_conv")),
        name=f"{name}_conv",
    )(x)


def card_decoder(p5, seed=None):
    """The design card's decoder: five x2 bilinear upsamplings of the stride-32 tap, 3x3 convs after the first
    four (`DECODER_FILTERS`); returns full-resolution 32-channel features."""
    x = p5
    for i, filters in enumerate(DECODER_FILTERS, start=1):
        x = apply_decoder_block(x, filters, f"decoder_block{i}", seed)
    return _upsample(x, "decoder_up5")


def light_decoder(taps, seed=None, width=LIGHT_WIDTH):
    """A narrow top-down decoder for small encoders; returns `width`-channel features at stride 8.

    1x1 laterals bring the stride-32, -16 and -8 taps to `width` channels; each coarser sum is upsampled x2
    (bilinear) and added to the next lateral, then two 3x3 ReLU convs smooth the stride-8 sum.
    """
    def conv(y, filters, kernel, name, activation=None):
        return keras.layers.Conv2D(filters, kernel, padding="same", activation=activation, name=name,
                                   kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed(seed, name)))(y)

    x = conv(taps["P5"], width, 1, "decoder_lateral5")
    for level in (4, 3):
        up = _upsample(x, f"decoder_up{level}")
        x = keras.layers.Add(name=f"decoder_sum{level}")([up, conv(taps[f"P{level}"], width, 1,
                                                                    f"decoder_lateral{level}")])
    x = conv(x, width, 3, "decoder_conv1", "relu")
    return conv(x, width, 3, "decoder_conv2", "relu")


def _upsample(x, name):
    # float32 even under mixed_float16: XLA's ResizeBilinearGrad returns float32 for a float16 image, which made
    # jit-compiled mixed-precision training fail ("Seen floating point types of different precisions").
    return keras.layers.UpSampling2D(2, interpolation="bilinear", dtype="float32", name=name)(x)


def _head_conv(x, filters, name, seed, activation=None, dtype=None):
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed(seed, name)),
        dtype=dtype,
        name=name,
    )(x)


def build_student(
    variant: str = "B",
    backbone_weights=None,
    backbone: str = DEFAULT_BACKBONE,
    input_shape=(None, None, 3),
    name: str | None = None,
    seed: int | None = None,
    decoder: str = DEFAULT_DECODER,
) -> keras.Model:
    """Builds the saliency student on the encoder `backbone` (the design card's ResNet18 by default).

    Input: RGB float 0..255 (normalisation inside). Output: a dict of LOGITS ``(B, H, W, 1)`` float32, the
    same H, W as the input: ``{"saliency"}`` for variant A, ``{"saliency", "teacher"}`` for B. Turn logits into
    a density with :func:`spatial_softmax` or a [0, 1] map with :func:`saliency_map`.

    Layer names: ``normalize``, ``pad``, the nested encoder (named after the backbone, e.g. ``resnet18``), ``decoder_block{1..4}_{up,conv}``,
    ``decoder_up5``, ``saliency_conv`` (head A), and for B ``teacher_conv1`` (16, ReLU), ``teacher_conv2``,
    then ``saliency``/``teacher`` (crops). Under mixed precision the upsamplings, the heads' last convs and the
    crops run in float32 (outputs are float32).

    Args:
        variant: str. ``"A"`` (saliency head) or ``"B"`` (saliency + teacher heads). Defaults to ``"B"``.
        backbone_weights: str, path or None. Pretrained weights for the encoder: a file, or ``"imagenet"`` for
            the file an installed package ships (see the backbone's module); None keeps the random init.
        backbone: str. A name in `student.backbones.BACKBONES`. Defaults to ``"resnet18"``.
        input_shape: tuple. Input shape without batch. Defaults to ``(None, None, 3)``.
        name: str or None. Model name; None gives ``"student_a"`` / ``"student_b"``.
        seed: int or None. Seeds every initialiser by layer name, so A and B built with the same seed share
            identical initial weights in all common layers (or use :func:`copy_common_weights`). Defaults to None.
        decoder: str. ``"card"`` (the design card's full-resolution decoder) or ``"light"`` (stride-8 top-down
            decoder over three taps, logits upsampled x8). Defaults to ``"card"``.

    Returns:
        A functional ``keras.Model``. About 12.75M parameters (A: 12,744,001 trainable + 9,600 BN statistics).

    Raises:
        ValueError: for an unknown ``variant`` or a bad ``input_shape``.
    """
    variant_key = str(variant).upper()
    if variant_key not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    if decoder not in DECODERS:
        raise ValueError(f"`decoder` must be one of {DECODERS}. Received: decoder={decoder!r}")
    info = get_backbone(backbone)
    module = info.load()
    inputs = keras.Input(shape=check_image_shape(input_shape), name="image")
    x = module.Normalization(name="normalize")(inputs)
    x = PadToMultiple(OUTPUT_STRIDE, name="pad")(x)
    options = dict(info.options)
    encoder = module.build_encoder((None, None, 3), name=info.layer_name, seed=seed, **options)
    if backbone_weights is not None:
        module.load_weights(encoder, backbone_weights, **options)
    taps = encoder(x)
    if decoder == "card":
        features = card_decoder(taps["P5"], seed)
    else:
        features = light_decoder(taps, seed)

    logits = {"saliency": _head_conv(features, 1, "saliency_conv", seed, dtype="float32")}
    if variant_key == "B":
        t = _head_conv(features, TEACHER_BRANCH_FILTERS, "teacher_conv1", seed, activation="relu")
        logits["teacher"] = _head_conv(t, 1, "teacher_conv2", seed, dtype="float32")
    if decoder == "light":
        logits = {head: keras.layers.UpSampling2D(LIGHT_STRIDE, interpolation="bilinear", dtype="float32",
                                                  name=f"{head}_up")(y) for head, y in logits.items()}
    outputs = {head: CropLike(dtype="float32", name=head)(y, inputs) for head, y in logits.items()}
    return keras.Model(inputs, outputs, name=name or f"student_{variant_key.lower()}")


def load_all_weights(model: keras.Model, path: str) -> keras.Model:
    """Load the `.weights.h5` file `path` into `model`, all of it or an error.

    Keras only warns when the file lacks some of the model's layers; a student half-loaded would predict from
    random weights without a word. Raises ValueError "<path>: <Keras' words>" in that case.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        try:
            model.load_weights(path)
        except UserWarning as e:
            raise ValueError(f"{path}: {e}") from None
    return model


def copy_common_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copies the weights of every layer present in both models (same name) from ``source`` to ``target``.

    Use it to start variants A and B from the same initial weights: build B, build A, then
    ``copy_common_weights(b, a)`` (the nested ``resnet18`` encoder is one layer here).

    Args:
        source: keras.Model. Model to copy from.
        target: keras.Model. Model to copy into (modified in place).

    Returns:
        Names of the layers copied (those with weights).

    Raises:
        ValueError: if a common layer's weight shapes differ (named); nothing is copied then.
    """
    source_layers = {layer.name: layer for layer in source.layers}
    pairs = []
    for layer in target.layers:
        other = source_layers.get(layer.name)
        if other is None or not layer.weights:
            continue
        src_shapes = [tuple(w.shape) for w in other.weights]
        dst_shapes = [tuple(w.shape) for w in layer.weights]
        if src_shapes != dst_shapes:
            raise ValueError(
                f"Layer {layer.name!r} has weight shapes {src_shapes} in {source.name!r} but {dst_shapes} in "
                f"{target.name!r}; they are not the same architecture there."
            )
        pairs.append((layer, other))
    for layer, other in pairs:
        layer.set_weights(other.get_weights())
    return [layer.name for layer, _ in pairs]


def count_params(model: keras.Model) -> dict[str, int]:
    """Parameter counts of a model.

    Args:
        model: keras.Model (built).

    Returns:
        dict with ``"trainable"``, ``"non_trainable"`` (e.g. BN moving statistics) and ``"total"`` counts.
    """
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}


def forward_gmac(model: keras.Model, image_size) -> float:
    """GMAC (billions of multiply-adds) of one forward pass at `image_size` (H, W): TensorFlow's profiler on the
    frozen graph, whose float-op count takes a multiply-add as 2."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *image_size, 3), tf.float32)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    graph = convert_variables_to_constants_v2(function).graph
    return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops / 2e9
