"""The built-in FastGaze as a fixed-size, student-like Keras model, so `inference.export` writes it to every runtime.

    from inference.export import export_student
    paths = export_student("fastgaze-centre", "exports/fastgaze", input_size=(240, 320), name="fastgaze_centre")

`teacher.fastgaze.load_fastgaze(name)` takes images of any size and computes its resampling matrices from the
input's shape at run time (Lanczos-3 aspect fit, grid-to-image bilinear, the centre prior). An export has one
fixed size (H, W), so here those matrices are numpy constants, computed once with FastGaze's own
`resample_matrix`, and applied as plain 2-D matrix products (`FixedResample`): MatMul in ONNX and OpenVINO,
FULLY_CONNECTED in LiteRT, all of which quantize to int8. A resampling that is the identity (an input whose
longest side is already FastGaze's 320) is left out.

`fastgaze_student(name, input_size)` returns a model with the student's contract (float32 RGB 0..255
(B, H, W, 3) in, `{"saliency": logits}` out) whose logits are FastGaze's log-density at (H, W) (its map before
the final exp, the centre prior included for "fastgaze-centre"), so the spatial softmax every export applies gives
FastGaze's density divided by its sum. The exports serve it like a student: `inference.predictors` letterboxes
other image sizes into (H, W) (the bars are the ImageNet mean colour; FastGaze sees them, and the centre prior of
"fastgaze-centre" is centred on the whole frame), crops the image's box and resizes the density back.

What differs from the Keras FastGaze's layers, and why:

- the resampling layers (`AspectFitResize`, `GridToImage`) compute their matrices with sin, where and arange
  from the input's shape; here they are constants of the graph (`FixedResample`);
- FastGaze's Keras `Normalization` built with a mean and variance keeps them as eager tensors, which tf2onnx
  turned into two extra graph inputs (the .onnx file asked for them beside "images"):
  `ConstantNormalization` puts them in the graph;
- the centre prior (`LogCentrePrior`) is added as the biases of the grid-to-image products (see
  `FixedResample`): added as a constant map after them, LiteRT's int8 converter gave the result a range
  that dropped the prior's negative values (cc 0.66 to the float file).
"""

import keras
import numpy as np
from keras import ops

from teacher import builtin
from teacher.fastgaze import build_fastgaze, load_fastgaze, weights_path
from teacher.fastgaze.model import MAX_SIDE, LogCentrePrior, aspect_fit_size, resample_matrix

# The layers of `teacher.fastgaze.build_fastgaze` that `fastgaze_student` replaces by fixed-size equivalents.
_TO_IMAGE, _PRIOR = "to_image", "centre_prior"  # and its `aspect_fit_<max_side>` resize


def exportable_name(source):
    """The registry name when `source` names a built-in that exports like a student (`Builtin.exportable`:
    "fastgaze", "fastgaze-centre", in any letter case), else None.

    Raises:
        ValueError: `source` is a built-in model or spec that cannot be exported (naming the ones that can).
    """
    if not isinstance(source, str) or not builtin.is_builtin(source):
        return None
    entry = builtin.lookup(source)
    if entry is None or not entry.exportable:
        can = [name for name, e in builtin.BUILTINS.items() if e.exportable]
        raise ValueError(f"{source}: this built-in model cannot be exported to fixed-size runtime files (only "
                         f"{', '.join(can)} can; attention-center is already a LiteRT file, and ensembles or :flip "
                         "run only through predict.py, evaluate.py and export_teacher.py)")
    return entry.name


def build_exportable(source, input_size):
    """The student-like Keras model of an exportable built-in (`exportable_name`) at `input_size`."""
    return fastgaze_student(exportable_name(source), input_size)  # FastGaze's variants are the exportable ones


def _matrix(out_size, in_size, scale, kernel, antialias):
    return np.asarray(ops.convert_to_numpy(resample_matrix(out_size, in_size, np.float32(scale), kernel, antialias)),
                      np.float32)


@keras.saving.register_keras_serializable(package="saliency_kd")
class FixedResample(keras.layers.Layer):
    """Separable linear resampling of (B, H, W, C) to (B, h, w, C) by constant row (h, H) and column (w, W)
    matrices, as reshapes, transposes and 2-D matrix products; an axis whose matrix is None is left as is.

    The matrices are rebuilt from the config (`teacher.fastgaze.model.resample_matrix`'s arguments per axis:
    out_size, in_size, scale, kernel, antialias), so the layer clones and serialises without weights.

    `prior_sigma` adds FastGaze's log centre prior at the output size (`LogCentrePrior`), `-0.5 (a_i + b_j)`,
    as the biases of the two products: the row term, added before the column product, comes through it unchanged
    because each row of the column matrix sums to 1.
    """

    def __init__(self, rows=None, cols=None, clip=None, prior_sigma=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rows, self.cols = (None if a is None else list(a) for a in (rows, cols))
        self.clip = None if clip is None else [float(v) for v in clip]
        self.prior_sigma = None if prior_sigma is None else float(prior_sigma)
        self._rows = None if rows is None else _matrix(*rows)
        self._cols = None if cols is None else _matrix(*cols)
        self._biases = (None, None)

    def build(self, input_shape):
        if self.prior_sigma is None:
            return
        height = input_shape[1] if self._rows is None else self._rows.shape[0]
        width = input_shape[2] if self._cols is None else self._cols.shape[0]
        if self._cols is not None and np.abs(self._cols.sum(axis=1) - 1.0).max() > 1e-5:
            raise ValueError(f"{self.name}: the rows of the column matrix do not sum to 1, so the prior's row term "
                             "cannot ride on the row product")
        prior = LogCentrePrior(self.prior_sigma)
        self._biases = tuple(np.ravel(ops.convert_to_numpy(prior(np.zeros(shape, np.float32)))).astype(np.float32)
                             for shape in ((1, height, 1, 1), (1, 1, width, 1)))  # -0.5 a_i, -0.5 b_j

    @staticmethod
    def _apply(x, matrix, bias, axis):
        """Resample axis 1 or 2 of a (B, H, W, C) tensor with `matrix` (out, in), plus `bias` (out,) or None."""
        if matrix is None:
            return x if bias is None else x + bias.reshape((1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        shape = x.shape  # static: the export's fixed size
        order = (0, 2, 3, 1) if axis == 1 else (0, 1, 3, 2)  # the resampled axis last
        kept = [shape[i] for i in order[1:3]]
        flat = ops.matmul(ops.reshape(ops.transpose(x, order), (-1, shape[axis])), matrix.T)
        if bias is not None:
            flat = flat + bias
        out = ops.reshape(flat, (-1, *kept, matrix.shape[0]))
        return ops.transpose(out, (0, 3, 1, 2) if axis == 1 else (0, 1, 3, 2))

    def call(self, x):
        x = self._apply(x, self._rows, self._biases[0], 1)
        x = self._apply(x, self._cols, self._biases[1], 2)
        if self.clip is not None:
            x = ops.clip(x, *self.clip)
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, h if self._rows is None else self._rows.shape[0], w if self._cols is None else self._cols.shape[0], c)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "cols": self.cols, "clip": self.clip,
                "prior_sigma": self.prior_sigma}


@keras.saving.register_keras_serializable(package="saliency_kd")
class ConstantNormalization(keras.layers.Layer):
    """`(x - mean) / sqrt(variance)` per channel, the constants in the graph (see the module's docstring)."""

    def __init__(self, mean, variance, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean, self.variance = [float(v) for v in mean], [float(v) for v in variance]

    def call(self, x):
        x = x - np.asarray(self.mean, np.float32)
        if any(v != 1.0 for v in self.variance):
            x = x * (1.0 / np.sqrt(np.asarray(self.variance, np.float32)))
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "variance": self.variance}


def _clone(layer):
    """A fresh copy of one of FastGaze's network layers (weights set later), in export-friendly form."""
    if isinstance(layer, keras.layers.Normalization):
        mean, variance = (np.ravel(ops.convert_to_numpy(v)) for v in (layer.mean, layer.variance))
        return ConstantNormalization(mean, variance, name=layer.name)
    return layer.__class__.from_config(layer.get_config())


def _axis(out_size, in_size, scale, kernel, antialias):
    """A `FixedResample` axis spec, or None when its matrix is the identity to float32 rounding."""
    spec = [int(out_size), int(in_size), float(scale), kernel, bool(antialias)]
    if out_size == in_size and np.abs(_matrix(*spec) - np.eye(out_size, dtype=np.float32)).max() < 1e-6:
        return None
    return spec


def fastgaze_student(name, input_size, max_side=MAX_SIDE):
    """The built-in model `name` at the fixed size `input_size` as a student-like Keras model.

    Args:
        name: "fastgaze" or "fastgaze-centre" (`teacher.fastgaze.VARIANTS`).
        input_size: (H, W) the exported files run at.
        max_side: the longest side FastGaze's network sees (its `aspect_fit` resize); 320, the shipped model's,
            whatever `input_size` is. `max(input_size)` runs the network at `input_size` itself (no resize), a
            cheaper FastGaze for a smaller input (benchmarks/quality_speed.py).

    Returns:
        A functional keras.Model named after `name` (dash as underscore): input "image" float32 RGB 0..255
        (B, H, W, 3), output `{"saliency": log-density (B, H, W, 1)}`; `exp(logits) / sum` equals
        `load_fastgaze(name)`'s density divided by its sum, to float rounding.

    Raises:
        ValueError: an unknown name (listing the built-in ones), or a missing or bad `input_size`.
    """
    from student.serving import _check_input_size

    if input_size is None:
        raise ValueError(f"{name}: a built-in model has no training size to export at; pass input_size "
                         "(--input-size HEIGHT WIDTH), e.g. 240 320")
    height, width = _check_input_size(input_size)
    reference = load_fastgaze(name)  # raises for an unknown name
    if max_side != MAX_SIDE:
        reference = build_fastgaze(centre_prior=name == "fastgaze-centre", vxm_path=weights_path(),
                                   max_side=int(max_side))
    resize, to_image = reference.get_layer(f"aspect_fit_{int(max_side)}"), reference.get_layer(_TO_IMAGE)
    prior = next((layer for layer in reference.layers if layer.name == _PRIOR), None)
    h, w = (int(v) for v in aspect_fit_size(height, width, resize.max_side))
    f32 = np.float32  # the scales as FastGaze computes them, in float32
    image = keras.Input((height, width, 3), dtype="float32", name="image")
    x = FixedResample(_axis(h, height, f32(h) / f32(height), "lanczos3", True),
                      _axis(w, width, f32(w) / f32(width), "lanczos3", True), clip=(0.0, 255.0),
                      name=resize.name)(image)
    weights = {}
    for layer in reference.layers[reference.layers.index(resize) + 1:reference.layers.index(to_image)]:
        clone = _clone(layer)
        x = clone(x)
        if clone.weights:
            weights[clone.name] = layer.get_weights()
    grid_h, grid_w = x.shape[1:3]
    stride = f32(to_image.stride)
    log_map = FixedResample(_axis(height, grid_h, stride * f32(height) / f32(h), "triangle", False),
                            _axis(width, grid_w, stride * f32(width) / f32(w), "triangle", False),
                            prior_sigma=None if prior is None else prior.sigma, name=_TO_IMAGE)(x)
    model = keras.Model(image, {"saliency": log_map}, name=name.replace("-", "_"))
    for layer_name, values in weights.items():
        model.get_layer(layer_name).set_weights(values)
    return model
