"""FastGaze in Keras, built from its `.vxm` file: the decode of the reference SavedModels, op for op.

Graph of `../shared/models/fastgaze/fastgaze{,_centre}_savedmodel` (inspected with `tf.saved_model.load`) and
what stands for each part here:

1. `aspect_fit_320`: `tf.image.resize(image, (h, w), "lanczos3", antialias=True)` (a `ScaleAndTranslate`,
   kernel lanczos3, scale = new/old size, no translation), with `s = min(320 / W, 320 / H)` in float32,
   `h = floor(s * H + 0.5)`, `w = floor(s * W + 0.5)`, then clipped to 0..255. Here: `AspectFitResize`,
   the same separable resampling written as two small weight matrices (`resample_matrix`, TensorFlow's
   kernel and span rules) and matrix products, so that it needs no TensorFlow-only op.
2. `mean_subtract`: a Keras `Normalization` with mean (123.68, 116.779, 103.939) in R, G, B order and variance
   1. The first convolution's kernel has its input channels reversed, so it reads B, G, R planes (Caffe).
3. Convolutions ('same' padding, cross-correlation, OIHW weights transposed to HWIO), ReLU, max pools 2x2
   stride 2 'same' (ceil), and PReLU with one slope per layer (`PReLU(shared_axes=[1, 2, 3])`): the
   log-saliency grid, 1/16 of the resized image (ceil).
4. `to_image`: a `ScaleAndTranslate` of the grid, kernel triangle (bilinear), no antialias, scale `16 H / h`
   (and `16 W / w`), translation 0, straight to the input's (H, W): grid cell r sits at resized pixel
   `16 r + 7.5`, with edge clamping. Here: `GridToImage`, again as two weight matrices.
5. `fastgaze-centre` only: minus `0.5 ((y - (H - 1) / 2) / (0.25 H))^2 + 0.5 ((x - (W - 1) / 2) / (0.25 W))^2`
   on the log map (a centred Gaussian prior, sigma 0.25 of each side, times the density). Here:
   `LogCentrePrior`.
6. `exp` (a Keras `Activation("exponential")`): a non-negative, unnormalised density (B, H, W, 1).

The Gaussian blur layer stored in the file (layer 18) is not applied, as in Twitter's reference SavedModels.
One guard differs from the references: the resized side is at least 1 pixel (they fail on images more than 640
times wider than tall, or the reverse).
"""

import os

import keras
import numpy as np
from keras import ops

from teacher.fastgaze.vxm import read_vxm

WEIGHTS_FILE = "fastgaze.vxm"
MAX_SIDE = 320
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
CENTRE_SIGMA = 0.25
_PI = np.float32(3.14159265359)  # TensorFlow's kPI in the resampling kernels
_FLT_MIN = float(np.finfo(np.float32).tiny)


def _lanczos3(x):
    """TensorFlow's LanczosKernelFunc(3) for x >= 0: 1 near 0, 0 beyond the radius."""
    radius = np.float32(3.0)
    safe = ops.maximum(x, 1e-3)
    value = radius * ops.sin(_PI * safe) * ops.sin(_PI * safe / radius) / ((_PI * _PI) * safe * safe)
    return ops.where(x > radius, 0.0, ops.where(x <= 1e-3, 1.0, value))


def _triangle(x):
    """TensorFlow's TriangleKernelFunc for x >= 0 (bilinear)."""
    return ops.where(x < 1.0, 1.0 - x, 0.0)


_KERNELS = {"lanczos3": _lanczos3, "triangle": _triangle}  # both zero beyond their radius (3, 1)


def resample_matrix(out_size, in_size, scale, kernel, antialias):
    """The (out_size, in_size) weights of TensorFlow's `ScaleAndTranslate` along one axis (translation 0).

    Output pixel i samples the input at `(i + 0.5) / scale`; input pixel j weighs
    `kernel(|j + 0.5 - sample| / kernel_scale)`, where `kernel_scale = max(1 / scale, 1)` with antialias (a
    wider, low-pass kernel when shrinking) and 1 without; each row is divided by its sum (which clamps at the
    edges), and a sample outside the input gets no weights, as in `scale_and_translate_op.cc`.

    Args:
        out_size, in_size: sizes (ints or int scalar tensors).
        scale: float32 scalar, output / input (TensorFlow's `scale` argument).
        kernel: "lanczos3" or "triangle".
        antialias: widen the kernel when shrinking.
    """
    function = _KERNELS[kernel]
    scale = ops.cast(scale, "float32")
    inv_scale = 1.0 / scale
    kernel_scale = ops.maximum(inv_scale, 1.0) if antialias else ops.ones_like(inv_scale)
    sample = (ops.cast(ops.arange(out_size), "float32") + 0.5) * inv_scale
    source = ops.cast(ops.arange(in_size), "float32") + 0.5
    weights = function(ops.abs((source[None, :] - sample[:, None]) * (1.0 / kernel_scale)))
    total = ops.sum(weights, axis=1, keepdims=True)
    valid = ops.abs(total) >= 1000.0 * _FLT_MIN
    inside = ops.logical_and(sample >= 0.0, sample <= ops.cast(in_size, "float32"))[:, None]
    normalised = weights * (1.0 / ops.where(valid, total, 1.0))
    return ops.where(ops.logical_and(valid, inside), normalised, 0.0)


def _resample(images, rows, cols):
    """Separable resampling of (B, H, W, C) with row weights (h, H) and column weights (w, W)."""
    images = ops.einsum("ih,bhwc->biwc", rows, images)
    return ops.einsum("jw,biwc->bijc", cols, images)


def aspect_fit_size(height, width, max_side=MAX_SIDE):
    """(h, w) with the longest side `max_side` (up or down), as the references compute it in float32."""
    height_f, width_f = ops.cast(height, "float32"), ops.cast(width, "float32")
    side = np.float32(max_side)
    scale = ops.minimum(side / width_f, side / height_f)
    new_height = ops.cast(ops.floor(scale * height_f + 0.5), "int32")
    new_width = ops.cast(ops.floor(scale * width_f + 0.5), "int32")
    return ops.maximum(new_height, 1), ops.maximum(new_width, 1)


@keras.saving.register_keras_serializable(package="saliency_kd")
class AspectFitResize(keras.layers.Layer):
    """Resize RGB 0..255 images so the longest side is `max_side` (aspect kept; up or down): Lanczos-3 with
    antialias, as `tf.image.resize(..., "lanczos3", antialias=True)`, then clip to 0..255."""

    def __init__(self, max_side=MAX_SIDE, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(max_side, (int, np.integer)) or max_side < 1:
            raise ValueError(f"`max_side` must be a positive int. Received: max_side={max_side!r}")
        self.max_side = int(max_side)

    def call(self, images):
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        new_height, new_width = aspect_fit_size(height, width, self.max_side)
        rows = resample_matrix(new_height, height, ops.cast(new_height, "float32") / ops.cast(height, "float32"),
                               "lanczos3", antialias=True)
        cols = resample_matrix(new_width, width, ops.cast(new_width, "float32") / ops.cast(width, "float32"),
                               "lanczos3", antialias=True)
        return ops.clip(_resample(images, rows, cols), 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, None, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "max_side": self.max_side}


@keras.saving.register_keras_serializable(package="saliency_kd")
class GridToImage(keras.layers.Layer):
    """The network's grid at the input image's size: cell r at resized pixel `stride r + (stride - 1) / 2`,
    bilinear, edge-clamped (`ScaleAndTranslate`, triangle kernel, scale `stride H / h`).

    Call on `[grid (B, gh, gw, C), resized (B, h, w, 3), image (B, H, W, 3)]`; returns (B, H, W, C).
    """

    def __init__(self, stride=16, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"`stride` must be a positive int. Received: stride={stride!r}")
        self.stride = int(stride)

    def call(self, inputs):
        grid, resized, image = inputs
        grid_shape, resized_shape, image_shape = ops.shape(grid), ops.shape(resized), ops.shape(image)
        stride = np.float32(self.stride)
        scales = [stride * ops.cast(image_shape[axis], "float32") / ops.cast(resized_shape[axis], "float32")
                  for axis in (1, 2)]
        rows = resample_matrix(image_shape[1], grid_shape[1], scales[0], "triangle", antialias=False)
        cols = resample_matrix(image_shape[2], grid_shape[2], scales[1], "triangle", antialias=False)
        return _resample(grid, rows, cols)

    def compute_output_shape(self, input_shapes):
        grid_shape, _, image_shape = input_shapes
        return (grid_shape[0], image_shape[1], image_shape[2], grid_shape[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@keras.saving.register_keras_serializable(package="saliency_kd")
class LogCentrePrior(keras.layers.Layer):
    """Add the log of a centred Gaussian (sigma `sigma` of each side, unnormalised: 0 at the centre) to a
    log map (B, H, W, C): `- 0.5 ((y - (H - 1) / 2) / (sigma H))^2 - 0.5 ((x - (W - 1) / 2) / (sigma W))^2`."""

    def __init__(self, sigma=CENTRE_SIGMA, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(sigma, (int, float, np.floating)) or not sigma > 0:
            raise ValueError(f"`sigma` must be a positive number. Received: sigma={sigma!r}")
        self.sigma = float(sigma)

    def call(self, log_map):
        shape = ops.shape(log_map)
        offsets = []
        for axis in (1, 2):
            size = ops.cast(shape[axis], "float32")
            position = ops.cast(ops.arange(shape[axis]), "float32")
            offsets.append((position - (size - 1.0) / 2.0) / (np.float32(self.sigma) * size))
        rows = ops.square(offsets[0])[None, :, None, None]
        cols = ops.square(offsets[1])[None, None, :, None]
        return log_map - 0.5 * (rows + cols)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}


def weights_path():
    """The path of the `fastgaze.vxm` shipped in this package (package data)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS_FILE)


def _network(parsed):
    """The Keras layers for the parsed `.vxm` layers (blur skipped) and their weights, in order."""
    layers, weights = [], {}
    convs = [layer for layer in parsed.layers if layer.kind == "conv"]
    for layer in parsed.layers:
        i = layer.index
        if layer.kind == "pool":
            layers.append(keras.layers.MaxPooling2D(2, 2, padding="same", dtype="float32", name=f"pool{i}"))
        elif layer.kind == "conv":
            kernel = np.transpose(layer.weights["w"], (2, 3, 1, 0))  # OIHW -> HWIO
            if layer is convs[0]:
                kernel = kernel[:, :, ::-1, :]  # read the RGB input as B, G, R planes (Caffe)
            conv = keras.layers.Conv2D(layer.filters, layer.kernel_size, padding="same", dtype="float32",
                                       activation="relu" if layer.activation == "relu" else None, name=f"conv{i}")
            layers.append(conv)
            weights[conv.name] = [np.ascontiguousarray(kernel), layer.weights["b"]]
            if layer.activation == "prelu":
                prelu = keras.layers.PReLU(shared_axes=[1, 2, 3], dtype="float32", name=f"prelu{i}")
                layers.append(prelu)
                weights[prelu.name] = [layer.weights["alpha"].reshape(1, 1, 1)]
        # "blur": stored but never applied (as in the reference SavedModels)
    return layers, weights


def build_fastgaze(centre_prior=False, vxm_path=None, max_side=MAX_SIDE):
    """FastGaze as a Keras model, built from a `.vxm` file (default: the one this package ships).

    Args:
        centre_prior: multiply the density by a centred Gaussian (sigma 0.25 of each side), as
            `fastgaze_centre_savedmodel` does ("fastgaze-centre").
        vxm_path: the `.vxm` file; defaults to `weights_path()`.
        max_side: the longest side the image is resized to before the network (320 for FastGaze).

    Returns:
        A `keras.Model` named "fastgaze" or "fastgaze_centre": input "image", float32 RGB 0..255 (B, H, W, 3) of
        any H and W; output "density", float32 (B, H, W, 1), non-negative and unnormalised.

    Raises:
        ValueError: the file is not a valid `.vxm` (naming it and the problem), or its last convolution does not
            give one channel.
    """
    vxm_path = weights_path() if vxm_path is None else os.fspath(vxm_path)
    parsed = read_vxm(vxm_path)
    last_conv = [layer for layer in parsed.layers if layer.kind == "conv"][-1]
    if last_conv.filters != 1:
        raise ValueError(f"{vxm_path}: the last convolution (layer {last_conv.index}) gives {last_conv.filters} "
                         "channels; a saliency network ends in one (the log-saliency grid)")
    stride = 2 ** sum(layer.kind == "pool" for layer in parsed.layers)

    image = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    resized = AspectFitResize(max_side, name=f"aspect_fit_{max_side}")(image)
    x = keras.layers.Normalization(mean=list(CAFFE_MEAN_RGB), variance=[1.0, 1.0, 1.0], dtype="float32",
                                   name="mean_subtract")(resized)
    layers, weights = _network(parsed)
    for layer in layers:
        x = layer(x)
    log_map = GridToImage(stride, name="to_image")([x, resized, image])
    if centre_prior:
        log_map = LogCentrePrior(CENTRE_SIGMA, name="centre_prior")(log_map)
    density = keras.layers.Activation("exponential", dtype="float32", name="density")(log_map)
    model = keras.Model(image, density, name="fastgaze_centre" if centre_prior else "fastgaze")
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    return model
