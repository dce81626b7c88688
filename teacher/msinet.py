"""MSI-Net (Kroner et al. 2020) as a Keras 3 functional model with exact parity to the published graphs.

The architecture follows the author's TF1 `model.py` (class `MSINET` of the author's repository, alexanderkroner/saliency): a VGG16 encoder whose
pool4/pool5 keep the resolution (2x2, stride 1, SAME) with dilated conv5, an ASPP context module (rates 4/8/12
plus a global-average branch), a decoder of three TF1-legacy bilinear x2 upsamplings with 3x3 convs, a linear
1-channel head and a per-image min-max normalisation. Input is float RGB 0..255; the VGG means, given in BGR
order, are subtracted from the RGB channels as the author's graph does.

Layer names follow the graph's variable scopes one to one through `SCOPE_TO_LAYER`, so the 46 published
constants (`<scope>/kernel`, `<scope>/bias`) port without renaming guesswork (see `teacher.convert`).
"""

import keras
import tensorflow as tf

# Subtracted from channels R, G, B in this order (BGR-ordered Caffe means applied to RGB, as trained).
MEAN_RGB = (103.939, 116.779, 123.68)
NORMALIZATION_EPSILON = 1e-7
OUTPUT_STRIDE = 8
NUM_PARAMETERS = 24_934_209

# (TF scope, Keras layer name, filters, kernel size, dilation, ReLU) in the author's forward order.
CONV_SPECS = (
    ("conv1/conv1_1", "conv1_1", 64, 3, 1, True),
    ("conv1/conv1_2", "conv1_2", 64, 3, 1, True),
    ("conv2/conv2_1", "conv2_1", 128, 3, 1, True),
    ("conv2/conv2_2", "conv2_2", 128, 3, 1, True),
    ("conv3/conv3_1", "conv3_1", 256, 3, 1, True),
    ("conv3/conv3_2", "conv3_2", 256, 3, 1, True),
    ("conv3/conv3_3", "conv3_3", 256, 3, 1, True),
    ("conv4/conv4_1", "conv4_1", 512, 3, 1, True),
    ("conv4/conv4_2", "conv4_2", 512, 3, 1, True),
    ("conv4/conv4_3", "conv4_3", 512, 3, 1, True),
    ("conv5/conv5_1", "conv5_1", 512, 3, 2, True),
    ("conv5/conv5_2", "conv5_2", 512, 3, 2, True),
    ("conv5/conv5_3", "conv5_3", 512, 3, 2, True),
    ("aspp/conv1_1", "aspp_conv1_1", 256, 1, 1, True),
    ("aspp/conv1_2", "aspp_conv1_2", 256, 3, 4, True),
    ("aspp/conv1_3", "aspp_conv1_3", 256, 3, 8, True),
    ("aspp/conv1_4", "aspp_conv1_4", 256, 3, 12, True),
    ("aspp/conv1_5", "aspp_conv1_5", 256, 1, 1, True),
    ("aspp/conv2", "aspp_conv2", 256, 1, 1, True),
    ("decoder/conv1", "decoder_conv1", 128, 3, 1, True),
    ("decoder/conv2", "decoder_conv2", 64, 3, 1, True),
    ("decoder/conv3", "decoder_conv3", 32, 3, 1, True),
    ("decoder/conv4", "decoder_conv4", 1, 3, 1, False),
)
SCOPES = tuple(spec[0] for spec in CONV_SPECS)
SCOPE_TO_LAYER = {spec[0]: spec[1] for spec in CONV_SPECS}
LAYER_TO_SCOPE = {spec[1]: spec[0] for spec in CONV_SPECS}
_SPECS_BY_LAYER = {spec[1]: spec for spec in CONV_SPECS}


@keras.saving.register_keras_serializable(package="saliency_kd")
class SubtractMean(keras.layers.Layer):
    """Subtract a per-channel constant (MSI-Net's in-graph input normalisation; no scaling, no channel flip)."""

    def __init__(self, mean=MEAN_RGB, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, inputs):
        return inputs - tf.constant(self.mean, dtype=inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean)}


@keras.saving.register_keras_serializable(package="saliency_kd")
class LegacyBilinearUpsampling(keras.layers.Layer):
    """Bilinear x`factor` upsampling with TF1's legacy mapping (`src = dst * in / out`, edge clamped).

    This is the `ResizeBilinear` op with `align_corners=False, half_pixel_centers=False`, the op in
    the published graphs. Keras `UpSampling2D(interpolation="bilinear")` uses half-pixel centres and is
    ~2e-2 off on the normalised output, so it cannot stand in.
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, inputs):
        size = tf.shape(inputs)[1:3] * self.factor
        # ResizeBilinear always returns float32; cast back so mixed precision keeps its compute dtype.
        outputs = tf.raw_ops.ResizeBilinear(images=inputs, size=size, align_corners=False, half_pixel_centers=False)
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        scale = lambda n: None if n is None else n * self.factor  # noqa: E731
        return (input_shape[0], scale(input_shape[1]), scale(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="saliency_kd")
class BroadcastSpatial(keras.layers.Layer):
    """Broadcast a (N, 1, 1, C) tensor to the spatial size of a reference (N, H, W, *) tensor.

    The author bilinearly resizes the 1x1 global-context map to H/8 x W/8, which is exactly a broadcast.
    """

    def call(self, inputs):
        features, reference = inputs
        shape = tf.concat([tf.shape(reference)[:3], tf.shape(features)[3:]], axis=0)
        return tf.broadcast_to(features, shape)

    def compute_output_shape(self, input_shape):
        features_shape, reference_shape = input_shape
        return (*reference_shape[:3], features_shape[3])


@keras.saving.register_keras_serializable(package="saliency_kd")
class MinMaxNormalization(keras.layers.Layer):
    """Per-image min-max normalisation: `(x - min) / (epsilon + max(x - min))` over (H, W, C).

    Matches the author's `_normalize` (the `output` node); values lie in [0, 1).
    """

    def __init__(self, epsilon=NORMALIZATION_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        shifted = inputs - tf.reduce_min(inputs, axis=(1, 2, 3), keepdims=True)
        return shifted / (self.epsilon + tf.reduce_max(shifted, axis=(1, 2, 3), keepdims=True))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _conv(x, layer_name):
    _, name, filters, kernel_size, dilation, relu = _SPECS_BY_LAYER[layer_name]
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        dilation_rate=dilation,
        activation="relu" if relu else None,
        name=name,
    )(x)


def build_msinet(input_shape=(None, None, 3), return_logits=False, name="msinet"):
    """Build MSI-Net as a Keras functional model (random weights; load them with `teacher.convert`).

    Args:
        input_shape: (H, W, 3) of the RGB input; H and W may be None (dynamic). Known sides must be multiples
            of 8, the network's output stride; the output has the input's size only then. Defaults to
            `(None, None, 3)`.
        return_logits: if True the model outputs a dict `{"saliency": (N, H, W, 1) normalised map,
            "logits": (N, H, W, 1) decoder output before normalisation}` (useful for fine-tuning with a loss
            on logits); otherwise the single normalised map. Defaults to False.
        name: the model's name.

    Returns:
        A `keras.Model` taking float RGB 0..255 of shape (N, H, W, 3) and returning maps in [0, 1).
        Under a `mixed_float16` policy the normalised output stays float32.

    Raises:
        ValueError: if `input_shape` is not (H, W, 3) or a known side is not a multiple of 8.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ValueError(f"build_msinet: `input_shape` must be (H, W, 3) RGB. Received: input_shape={input_shape}")
    for side in input_shape[:2]:
        if side is not None and side % OUTPUT_STRIDE:
            raise ValueError(
                f"build_msinet: known input sides must be multiples of {OUTPUT_STRIDE} (MSI-Net's output stride). "
                f"Received: input_shape={input_shape}; resize/pad with teacher.preprocessing.preprocess first."
            )

    inputs = keras.Input(input_shape, name="image")
    x = SubtractMean(name="subtract_mean")(inputs)

    # === Encoder: VGG16 convs; pool4/pool5 keep the resolution, conv5 is dilated ===
    x = _conv(_conv(x, "conv1_1"), "conv1_2")
    x = keras.layers.MaxPooling2D(2, 2, padding="valid", name="pool1")(x)
    x = _conv(_conv(x, "conv2_1"), "conv2_2")
    x = keras.layers.MaxPooling2D(2, 2, padding="valid", name="pool2")(x)
    x = _conv(_conv(_conv(x, "conv3_1"), "conv3_2"), "conv3_3")
    pool3 = keras.layers.MaxPooling2D(2, 2, padding="valid", name="pool3")(x)
    x = _conv(_conv(_conv(pool3, "conv4_1"), "conv4_2"), "conv4_3")
    pool4 = keras.layers.MaxPooling2D(2, 1, padding="same", name="pool4")(x)
    x = _conv(_conv(_conv(pool4, "conv5_1"), "conv5_2"), "conv5_3")
    pool5 = keras.layers.MaxPooling2D(2, 1, padding="same", name="pool5")(x)
    features = keras.layers.Concatenate(axis=-1, name="encoder_concat")([pool3, pool4, pool5])

    # === ASPP: four dilated branches plus a global-context branch ===
    branches = [_conv(features, f"aspp_conv1_{i}") for i in (1, 2, 3, 4)]
    context = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_global_pool")(features)
    context = _conv(context, "aspp_conv1_5")
    branches.append(BroadcastSpatial(name="aspp_broadcast")([context, features]))
    x = keras.layers.Concatenate(axis=-1, name="aspp_concat")(branches)
    x = _conv(x, "aspp_conv2")

    # === Decoder: three legacy-bilinear x2 upsamplings, each followed by a 3x3 conv ===
    for i in (1, 2, 3):
        x = LegacyBilinearUpsampling(2, name=f"decoder_upsample{i}")(x)
        x = _conv(x, f"decoder_conv{i}")
    logits = _conv(x, "decoder_conv4")
    saliency = MinMaxNormalization(dtype="float32", name="saliency")(logits)

    outputs = {"saliency": saliency, "logits": logits} if return_logits else saliency
    return keras.Model(inputs, outputs, name=name)
