"""What every backbone shares: its layers (synchronised BatchNormalization, ImageNet normalisation), per-layer
seeds, the input-shape check, and :func:`port_state_dict`, the one function that ports a PyTorch state dict into
a Keras encoder (every key and shape checked before any weight is assigned).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import keras
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PyTorch's BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Keras counts momentum the other way round).
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9

# PyTorch BatchNorm state-dict names -> Keras BatchNormalization weight names.
BN_WEIGHTS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


@keras.saving.register_keras_serializable(package="saliency_kd")
class ImageNetNormalization(keras.layers.Layer):
    """Maps RGB 0..255 to ``(x / 255 - mean) / std`` with the ImageNet statistics torchvision was trained on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        mean = np.asarray(IMAGENET_MEAN, "float32") * 255.0
        std = np.asarray(IMAGENET_STD, "float32") * 255.0
        self._offset = -mean / std
        self._scale = 1.0 / std

    def call(self, inputs):
        scale = keras.ops.cast(self._scale, self.compute_dtype)
        offset = keras.ops.cast(self._offset, self.compute_dtype)
        return inputs * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape


def layer_seed(seed: int | None, name: str) -> int | None:
    """A per-layer seed derived from a model seed and the layer name.

    Seeding each layer by name (not by construction order) makes layers with the same name start from the
    same values in any model built with the same ``seed``, e.g. the common layers of student variants A and B.

    Args:
        seed: int or None. The model seed; None gives None (Keras' unseeded default).
        name: str. The layer name.

    Returns:
        An int in ``[0, 2**31)`` or None.
    """
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def conv_initializer(seed: int | None, name: str):
    """PyTorch's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` (also the EfficientNet reference's
    ``conv_kernel_initializer``), seeded per layer name."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=layer_seed(seed, name)
    )


def check_image_shape(input_shape):
    """`input_shape` as a tuple (height, width, 3); a ValueError says what was received otherwise."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, 3) with height/width None or int. Received: "
            f"input_shape={input_shape}"
        )
    return input_shape


@keras.saving.register_keras_serializable(package="saliency_kd")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose training statistics are those of the global batch under ``tf.distribute``.

    Keras' ``synchronized=True`` all-reduces ``sum(x)`` and ``sum(x**2)`` and takes ``E[x^2] - E[x]^2``, which
    cancels in float32 when ``|mean| >> std``. This layer computes the moments in two passes (all-reduce the sum
    and count, then the squared deviations from the global mean). Measured against a float64 step of the
    student (one SGD step, mirrored over 2 CPUs, 2-core AMD EPYC): this keeps the mirrored run's moving variances
    as close to float64 as one device's, where Keras' formula was up to 2.6x further off; the first conv's
    kernel is off by ~1.8e-5 either way, the float32 noise of one-device runs too (see the parity test in
    tests/test_distillation.py). On one replica it is ``tf.nn.moments``, as in an unsynchronized
    BatchNormalization. Statistics are float32 for float16 / bfloat16 inputs, else in the input's dtype.
    Weights and inference are unchanged; ``synchronized`` is always True.
    """

    def __init__(self, **kwargs):
        kwargs["synchronized"] = True
        super().__init__(**kwargs)

    def _moments(self, inputs, mask):
        import tensorflow as tf  # the TensorFlow backend is the only one with tf.distribute replicas

        if mask is not None:
            return super()._moments(inputs, mask)
        dtype = inputs.dtype
        # float16 statistics overflow, as Keras' own moments() notes; float32 and float64 stay as they are.
        x = tf.cast(inputs, tf.float32) if dtype in (tf.float16, tf.bfloat16) else inputs
        axes = list(self._reduction_axes)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            mean, variance = tf.nn.moments(x, axes)
        else:
            sums = tf.reduce_sum(x, axis=axes)
            count = tf.cast(tf.size(x), x.dtype) / tf.cast(tf.size(sums), x.dtype)
            totals = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([sums, count[None]], 0))
            mean = tf.math.divide_no_nan(totals[:-1], totals[-1])
            squares = tf.reduce_sum(tf.square(x - tf.reshape(mean, self._broadcast_shape(x))), axis=axes)
            variance = tf.math.divide_no_nan(context.all_reduce(tf.distribute.ReduceOp.SUM, squares), totals[-1])
        if dtype != x.dtype:
            mean = tf.cast(tf.clip_by_value(mean, dtype.min, dtype.max), dtype)
            variance = tf.cast(tf.clip_by_value(variance, dtype.min, dtype.max), dtype)
        return mean, variance

    def _broadcast_shape(self, x):
        shape = [1] * len(x.shape)
        shape[self.axis] = -1
        return shape


def batch_norm(x, name, epsilon=TORCH_BN_EPSILON, momentum=TORCH_BN_MOMENTUM):
    """:class:`SyncBatchNormalization` on the channel axis (PyTorch's BatchNorm2d settings by default)."""
    return SyncBatchNormalization(axis=-1, epsilon=epsilon, momentum=momentum, name=name)(x)


# ---------------------------------------------------------------------------------------------------------------
# Porting a PyTorch state dict
# ---------------------------------------------------------------------------------------------------------------


def torch_to_keras(array: np.ndarray, layer) -> np.ndarray:
    """A PyTorch weight in the layout of the Keras ``layer`` that takes it.

    Conv kernels OIHW -> HWIO, depthwise kernels (C, 1, kh, kw) -> (kh, kw, C, 1), linear (out, in) -> Dense
    (in, out); anything else (BatchNormalization vectors) as it is.
    """
    if array.ndim == 4:
        return np.transpose(array, (2, 3, 0, 1) if isinstance(layer, keras.layers.DepthwiseConv2D) else (2, 3, 1, 0))
    if array.ndim == 2:
        return array.T
    return array


def torch_shape(keras_shape: tuple[int, ...], layer) -> tuple[int, ...]:
    """The PyTorch shape of a weight whose Keras shape is ``keras_shape`` (the inverse of :func:`torch_to_keras`)."""
    if len(keras_shape) == 4:
        kh, kw, a, b = keras_shape
        return (a, b, kh, kw) if isinstance(layer, keras.layers.DepthwiseConv2D) else (b, a, kh, kw)
    if len(keras_shape) == 2:
        return tuple(reversed(keras_shape))
    return tuple(keras_shape)


def get_variable(layer, weight_name: str):
    """The weight ``weight_name`` (``kernel``, ``gamma``, ...) of a Keras layer."""
    for variable in layer.weights:
        if variable.name == weight_name or variable.path.endswith(f"/{weight_name}"):
            return variable
    raise KeyError(f"Layer {layer.name!r} has no weight {weight_name!r}; weights: {[v.name for v in layer.weights]}")


def _preview(items, n=6):
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def port_state_dict(
    model: keras.Model,
    state: Mapping[str, np.ndarray],
    key_map: Mapping[str, tuple[str, str]],
    *,
    source: str,
    what: str,
    ignored: Callable[[str], bool] = lambda key: False,
    hint: str = "",
) -> keras.Model:
    """Assign a PyTorch state dict to a Keras model, all or nothing.

    Every key of ``key_map`` must be in ``state``, every key of ``state`` must be in ``key_map`` or ``ignored``, and
    every array must have the shape of its Keras weight once in Keras' layout (:func:`torch_to_keras`). Only when
    all hold is anything assigned, so a wrong file leaves the model unchanged.

    Args:
        model: keras.Model holding the layers ``key_map`` names.
        state: mapping of key to array (e.g. from ``read_torch_state_dict``).
        key_map: state-dict key -> (Keras layer name, weight name).
        source: str. Where ``state`` came from (a path), for the message.
        what: str. What the state dict should be, for the message ("an efficientnet-lite0 state dict ...").
        ignored: the keys of ``state`` that hold no weight of the model (classifier, BN step counters).
        hint: str. Appended to the message: what to pass instead.

    Returns:
        The model, modified in place.

    Raises:
        ValueError: naming ``source``, the missing and unexpected keys and the shape mismatches.
    """
    missing = [k for k in key_map if k not in state]
    unexpected = [k for k in state if k not in key_map and not ignored(k)]
    mismatched, assignments = [], []
    for key, (layer_name, weight_name) in key_map.items():
        if key not in state:
            continue
        layer = model.get_layer(layer_name)
        variable = get_variable(layer, weight_name)
        array = np.asarray(state[key])
        value = torch_to_keras(array, layer)
        if tuple(value.shape) != tuple(variable.shape):
            expected = torch_shape(tuple(variable.shape), layer)
            mismatched.append(f"{key} {tuple(array.shape)} (expected {expected}, Keras {layer_name}/{weight_name} "
                              f"{tuple(variable.shape)})")
            continue
        assignments.append((variable, value.astype(variable.dtype)))
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {_preview(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatch(es): {_preview(mismatched, 4)}")
        raise ValueError(f"{source} is not {what}: " + "; ".join(problems) + "." + (f" {hint}" if hint else ""))
    for variable, value in assignments:
        variable.assign(value)
    return model
