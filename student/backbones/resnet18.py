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

import keras

from student.backbones import pretrained
from student.backbones.layers import (  # noqa: F401  (re-exported: imported from here before student.backbones.layers)
    IMAGENET_MEAN,
    IMAGENET_STD,
    BN_WEIGHTS,
    ImageNetNormalization,
    SyncBatchNormalization,
    batch_norm,
    check_image_shape,
    conv_initializer,
    layer_seed,
    port_state_dict,
)
from student.backbones.torch_weights import read_torch_state_dict

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2
ENCODER_NAME = "resnet18"

# State-dict entries that hold no encoder weight (classifier, BN step counters) and are ignored.
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)


def _conv(x, filters, kernel_size, stride, padding, name, seed):
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="valid",
        use_bias=False,
        kernel_initializer=conv_initializer(seed, name),
        name=name,
    )(x)


def _bn(x, name):
    return batch_norm(x, name)  # torchvision's BatchNorm2d: eps 1e-5, momentum 0.1


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
        for tv_suffix, k_weight in BN_WEIGHTS.items():
            key_map[f"{tv_bn}.{tv_suffix}"] = (k_bn, k_weight)
    return key_map


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


def load_state_dict(encoder: keras.Model, state, source: str = "state dict") -> keras.Model:
    """Loads a torchvision/timm ResNet18 state dict (numpy arrays) into an encoder from :func:`build_resnet18_encoder`.

    Conv kernels are transposed OIHW -> HWIO; BN ``weight/bias/running_mean/running_var`` become
    ``gamma/beta/moving_mean/moving_variance``; ``fc.*`` and ``num_batches_tracked`` are ignored. Every key and
    shape is checked before any weight is assigned, so a bad dict leaves the encoder unchanged.

    Args:
        encoder: keras.Model. The encoder, or a student model holding it as layer ``"resnet18"``.
        state: mapping of key to array, e.g. from ``read_torch_state_dict``.
        source: str. Where ``state`` came from (a path), for error messages.

    Returns:
        The encoder (modified in place).

    Raises:
        ValueError: if keys are missing or are not ResNet18's, or shapes differ (all named, with ``source``).
    """
    return port_state_dict(
        _find_encoder(encoder), state, torchvision_key_map(), source=source,
        what="a torchvision/timm resnet18 state dict",
        ignored=lambda key: key.endswith(_IGNORED_SUFFIXES) or key.startswith(_IGNORED_PREFIXES),
        hint="Is this a ResNet18 state dict (not resnet34/50 or another architecture)?",
    )


def load_resnet18_weights(encoder: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Loads pretrained ResNet18 weights from a file into an encoder from :func:`build_resnet18_encoder`, directly
    (no cache; :func:`load_weights` is the cached way).

    Args:
        encoder: keras.Model. The encoder, or a student model holding it as layer ``"resnet18"``.
        path: str or path. A ``.safetensors`` / ``.pth`` state dict of torchvision's or timm's resnet18 (same key
            names; read without torch, see :func:`student.backbones.torch_weights.read_torch_state_dict`), or a
            ``.weights.h5`` written by ``encoder.save_weights``.

    Returns:
        The encoder (modified in place).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: keys or shapes that are not ResNet18's (named, with the file), or a file that is no state dict.
    """
    encoder = _find_encoder(encoder)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ResNet18 weights file not found: {path}")
    if path.lower().endswith(".weights.h5"):
        encoder.load_weights(path)
        return encoder
    return load_state_dict(encoder, read_torch_state_dict(path), source=path)


# The backbone interface (`student.backbones`).
Normalization = ImageNetNormalization
build_encoder = build_resnet18_encoder


def load_weights(encoder: keras.Model, spec) -> keras.Model:
    """Load ``spec`` into a student's encoder: a torch ``.pth`` / ``.safetensors`` state dict (converted once
    and cached, see :func:`student.backbones.pretrained.converted_weights`) or a ``.weights.h5`` of this encoder.
    No package ships ImageNet ResNet18 weights, so ``"imagenet"`` is refused with where to get them."""
    return pretrained.load_weights(encoder, ENCODER_NAME, spec)
