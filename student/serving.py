"""Export a student as a self-contained TensorFlow SavedModel: uint8 RGB images in, saliency maps out.

The `serving_default` signature holds all pre- and post-processing, so a consumer needs nothing but
TensorFlow (no Keras, no code from this project):

    served = tf.saved_model.load("run/saved_model").signatures["serving_default"]
    out = served(images=tf.constant(rgb_uint8[None]))     # (1, H, W, 3) uint8, any H, W
    out["saliency_map"]   # (1, H, W, 1) float32 in [0, 1], the density divided by its per-image max
    out["density"]        # (1, H, W, 1) float32, sums to 1 over each image

The images must be upright as displayed: the model does not read EXIF. `tf.io.decode_jpeg` ignores a phone
photo's EXIF orientation, so rotate such images first (`datasets.io.read_image` applies it, as predict.py does).

Inside: the batch is resized to fit the training resolution with its aspect ratio kept and padded with the
ImageNet mean colour (exactly as in training, `datasets.records.fit_box`), the student runs, the saliency
head's logits are cropped to the image's box, their spatial softmax is resized back to the input size and
renormalised. A student trained with `resize="stretch"` is served stretched instead. `saliency_from_logits`
and `predict_saliency` are the same computation in-process, for callers holding a Keras student.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from datasets.io import plain_permissions
from datasets.records import PAD_COLOUR, RESIZE_MODES, fit_box, letterbox

SIGNATURE_KEY = "serving_default"
INPUT_KEY = "images"
OUTPUT_KEYS = ("saliency_map", "density")
METADATA_FILE = os.path.join("assets.extra", "saliency_kd.json")


def _check_input_size(input_size):
    """Return `input_size` as a pair of positive ints or raise naming the value received."""
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        height = width = 0
    if height <= 0 or width <= 0:
        raise ValueError(
            f"`input_size` must be (height, width) with two positive ints, the student's training "
            f"resolution (e.g. (240, 320)). Received: input_size={input_size!r}"
        )
    return height, width


def image_box(image_shape, input_size, resize="letterbox"):
    """The (top, left, h, w) box the images of a batch of `image_shape` (N, H, W, 3) occupy at `input_size`."""
    if resize == "stretch":
        return 0, 0, input_size[0], input_size[1]
    return fit_box(image_shape[1], image_shape[2], input_size)


def resize_images(images, input_size, resize="letterbox"):
    """Bring a uint8 (or float 0..255) NHWC batch to `input_size` as float32 0..255 for the student.

    Bilinear with antialiasing, so downscaling a large photo averages its pixels instead of aliasing; with
    "letterbox" the aspect ratio is kept and the rest of the frame is the ImageNet mean colour.
    """
    images = tf.cast(images, tf.float32)
    box = image_box(tf.shape(images), input_size, resize)
    return tf.clip_by_value(letterbox(images, box, input_size, PAD_COLOUR), 0.0, 255.0)


def saliency_from_logits(logits, output_size):
    """Turn saliency-head logits into a density and a [0, 1] map at `output_size`.

    Args:
        logits: float tensor (N, h, w, 1), the student's "saliency" output.
        output_size: (H, W) of the original images, ints or a 1-D int tensor.

    Returns:
        A dict with "density" (N, H, W, 1) float32 summing to 1 per image, and "saliency_map",
        the density divided by its per-image max (so 1 at the most salient pixel).
    """
    logits = tf.cast(logits, tf.float32)
    shape = tf.shape(logits)
    flat = tf.reshape(logits, [shape[0], -1])
    density = tf.reshape(tf.nn.softmax(flat, axis=-1), shape)
    density = tf.image.resize(density, output_size, method="bilinear", antialias=True)
    # Interpolation keeps a softmax positive, so the sum and max below are > 0.
    density = tf.maximum(density, 0.0)
    density = density / tf.reduce_sum(density, axis=[1, 2, 3], keepdims=True)
    saliency_map = density / tf.reduce_max(density, axis=[1, 2, 3], keepdims=True)
    return {"saliency_map": saliency_map, "density": density}


def predict_saliency(student_model, images, input_size=(240, 320), resize="letterbox"):
    """Run a Keras student on a uint8 RGB batch exactly as the exported signature does.

    Args:
        student_model: a model from `student.model.build_student` (dict output with "saliency" logits).
        images: uint8 (N, H, W, 3) RGB batch of equal-size images.
        input_size: (height, width) the student was trained at. Defaults to (240, 320).
        resize: how it was trained: "letterbox" (default) or "stretch".

    Returns:
        The dict of `saliency_from_logits`, at the images' (H, W).
    """
    input_size = _check_input_size(input_size)
    if resize not in RESIZE_MODES:
        raise ValueError(f"`resize` must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    images = tf.convert_to_tensor(images)
    top, left, h, w = image_box(tf.shape(images), input_size, resize)
    logits = student_model(resize_images(images, input_size, resize), training=False)["saliency"]
    logits = logits[:, top:top + h, left:left + w, :]
    return saliency_from_logits(logits, tf.shape(images)[1:3])


HEAD_UPSAMPLING, HEAD_CONV = "decoder_up5", "saliency_conv"


def _fusable_head(model):
    try:
        up, conv = model.get_layer(HEAD_UPSAMPLING), model.get_layer(HEAD_CONV)
    except ValueError:
        return None
    config = conv.get_config()
    simple = (tuple(config["kernel_size"]) == (3, 3) and config["filters"] == 1 and config["padding"] == "same"
              and tuple(config["strides"]) == (1, 1) and tuple(config["dilation_rate"]) == (1, 1)
              and config["activation"] == "linear" and config["groups"] == 1)
    return (up, conv) if simple and isinstance(up, keras.layers.UpSampling2D) else None


def inference_student(student_model, fuse_head=True):
    """The student's saliency logits as an inference-only graph: same outputs, fewer ops.

    BatchNormalization (inference statistics) is folded into the convolution before it: the kernel is scaled
    by ``gamma / sqrt(var + eps)`` per output channel and the shift becomes the conv's bias, so a conv-BN pair
    is one op. Only the "saliency" head is kept (variant B's teacher branch is training-only). The result is
    a new functional model (no weights shared with `student_model`) taking the same float 0..255 input and
    returning ``{"saliency": logits}``; it matches `student_model(x, training=False)["saliency"]` to float
    rounding.

    With `fuse_head`, the last x2 upsampling runs on 9 channels instead of 32: the 3x3 head conv (32 -> 1)
    after it is split into a 1x1 conv to its 9 taps BEFORE the upsampling (channel mixing commutes with a
    per-channel bilinear resize) and a fixed 3x3 conv that shifts and sums the taps after it (the same zero
    padding as the head's). The algebra is exact; the full-resolution tensor that the upsampling writes and
    the head reads shrinks 3.6x.
    """
    _check_student(student_model)
    # Cut to the saliency head first, so that no other consumer of the last upsampling is cloned.
    student_model = keras.Model(student_model.input, {"saliency": student_model.output["saliency"]},
                                name=student_model.name)
    folds = _batchnorm_folds(student_model)
    head = _fusable_head(student_model) if fuse_head else None
    fused = {}
    if head:
        fused["taps"] = keras.layers.Conv2D(9, 1, use_bias=False, dtype=head[1].dtype_policy, name="saliency_taps")
        fused["shift"] = keras.layers.Conv2D(1, 3, padding="same", dtype=head[1].dtype_policy, name="saliency_shift")
    saliency = _clone_without_batchnorm(student_model, folds, head, fused)
    if head:
        kernel, bias = head[1].get_weights()  # (3, 3, C, 1), (1,)
        fused["taps"].set_weights([kernel[:, :, :, 0].reshape(9, -1).T[None, None]])
        fused["shift"].set_weights([np.eye(9, dtype="float32").reshape(3, 3, 9, 1), bias])
    _copy_folded_weights(student_model, saliency, folds, fused)
    return saliency


def _with_nested(model):
    """`model` and the models nested in it (the backbone), whose layers are listed separately."""
    return [model] + [layer for layer in model.layers if isinstance(layer, keras.Model)]


def _batchnorm_folds(student_model):
    """{conv name: (conv, its BatchNormalization)} for every BatchNormalization, which must follow its conv."""
    folds = {}
    for model in _with_nested(student_model):
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                conv = model.get_layer(layer.name[: -len("_bn")] + "_conv") if layer.name.endswith("_bn") else None
                if (not isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
                        or layer.axis not in (-1, 3, [3], [-1])):
                    raise ValueError(
                        f"BatchNormalization {layer.name!r} does not follow a Conv2D or DepthwiseConv2D named "
                        f"{layer.name[:-3]}_conv; inference_student folds the conv-BN pairs of the backbones in "
                        "student.backbones, named <x>_conv / <x>_bn"
                    )
                folds[conv.name] = (conv, layer)
    return folds


def _clone_without_batchnorm(student_model, folds, head, fused):
    """A fresh copy of the saliency graph: the folded convs get a bias, BatchNormalization is skipped, and with
    a fusable `head` the last upsampling runs on `fused["taps"]` and `fused["shift"]` replaces the head conv."""
    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in folds:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call_layer(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.BatchNormalization):
            return args[0]
        if head and layer.name == HEAD_UPSAMPLING:
            return layer(fused["taps"](args[0]))
        if head and layer.name == HEAD_CONV:
            return fused["shift"](args[0])
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(
        student_model, clone_function=clone_layer, call_function=call_layer, recursive=True
    )
    return keras.Model(clone.input, {"saliency": clone.output["saliency"]}, name=f"{student_model.name}_infer")


def _copy_folded_weights(student_model, saliency, folds, fused):
    """Give each layer of the clone its original's weights, the folded convs theirs with the BN folded in."""
    originals = {}
    for model in _with_nested(student_model):
        originals.update({layer.name: layer for layer in model.layers})
    for model in _with_nested(saliency):
        for layer in model.layers:
            if not layer.weights or isinstance(layer, keras.Model) or any(layer is f for f in fused.values()):
                continue
            if layer.name in folds:
                layer.set_weights(_folded_conv_weights(*folds[layer.name]))
            else:
                layer.set_weights(originals[layer.name].get_weights())


def _folded_conv_weights(conv, bn):
    """[kernel, bias] (float32) of `conv` followed by `bn` with inference statistics, computed in float64."""
    kernel = keras.ops.convert_to_numpy(conv.kernel).astype("float64")
    gamma = keras.ops.convert_to_numpy(bn.gamma).astype("float64") if bn.scale else 1.0
    beta = keras.ops.convert_to_numpy(bn.beta).astype("float64") if bn.center else 0.0
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype("float64")
    var = keras.ops.convert_to_numpy(bn.moving_variance).astype("float64")
    scale = gamma / (var + bn.epsilon) ** 0.5
    bias = beta - mean * scale
    if conv.use_bias:
        bias = bias + keras.ops.convert_to_numpy(conv.bias).astype("float64") * scale
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # kernel (kh, kw, C, multiplier): out = c * m + j
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    return [kernel.astype("float32"), bias.astype("float32")]


def _check_student(student_model):
    outputs = student_model.output if isinstance(student_model, keras.Model) else None
    if not isinstance(outputs, dict) or "saliency" not in outputs:
        names = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ValueError(
            f"`student_model` must be a Keras model with a dict output holding 'saliency' logits, as built "
            f"by student.model.build_student. Received outputs: {names}"
        )


def _is_saved_model(directory):
    return os.path.isfile(os.path.join(directory, "saved_model.pb"))


def export_saved_model(student_model, directory, input_size=(240, 320), resize="letterbox", fold_batchnorm=True):
    """Write `student_model` as a SavedModel with the uint8-in, map-out `serving_default` signature.

    The SavedModel is written to a temporary folder beside `directory` and renamed into place, so
    `directory` always holds either the previous export or the complete new one. An existing
    SavedModel at `directory` is replaced; any other non-empty folder is left alone (an error).
    `assets.extra/saliency_kd.json` records `input_size` and the output keys for readers.

    Args:
        student_model: a model from `student.model.build_student` (variant A or B; only the
            "saliency" head is served).
        directory: path of the SavedModel folder to write.
        input_size: (height, width) of the student's training resolution; every image is resized
            to fit it before the student runs. Defaults to (240, 320).
        resize: "letterbox" (aspect kept, padded; the default, as training does) or "stretch".
        fold_batchnorm: serve `inference_student(student_model)` (BatchNormalization folded into the
            convolutions, saliency head only; the same maps to float rounding). Defaults to True.

    Returns:
        `directory`.

    Raises:
        ValueError: `input_size` is not two positive ints, or `student_model` has no "saliency" output.
        FileExistsError: `directory` is a non-empty folder that is not a SavedModel.
    """
    input_size = _check_input_size(input_size)
    _check_student(student_model)
    if fold_batchnorm:
        student_model = inference_student(student_model)
    directory = _check_export_directory(directory)
    archive = _serving_archive(student_model, input_size, resize)
    metadata = {
        "format": "saliency-kd student",
        "signature": SIGNATURE_KEY,
        "input": {INPUT_KEY: "uint8 (N, H, W, 3) RGB"},
        "outputs": list(OUTPUT_KEYS),
        "input_size": list(input_size),
        "resize": resize,
        "model_name": student_model.name,
    }

    def write(folder):
        archive.write_out(folder, verbose=False)
        os.makedirs(os.path.join(folder, os.path.dirname(METADATA_FILE)), exist_ok=True)
        with open(os.path.join(folder, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)

    _replace_folder_atomically(directory, write)
    return directory


def _check_export_directory(directory):
    """`directory` as an absolute path, refused when it is a file or a non-empty folder that is not a SavedModel."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.isdir(directory) and os.listdir(directory) and not _is_saved_model(directory):
        raise FileExistsError(
            f"{directory}: exists and is not a SavedModel (no saved_model.pb); refusing to replace it. "
            "Choose another `directory` or remove this folder."
        )
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"{directory}: exists and is a file, not a folder; choose another `directory`")
    return directory


def _serving_archive(student_model, input_size, resize):
    """A Keras ExportArchive of `student_model` with the uint8-in `serving_default` endpoint."""
    # The name `images` becomes the signature's input key.
    def serve(images):
        return predict_saliency(student_model, images, input_size, resize)

    archive = keras.export.ExportArchive()
    archive.track(student_model)
    archive.add_endpoint(
        name=SIGNATURE_KEY,
        fn=serve,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name=INPUT_KEY)],
    )
    return archive


def _replace_folder_atomically(directory, write):
    """Call `write(folder)` on a temporary folder beside `directory`, then rename it into place: `directory`
    holds either its previous content or the complete new one, whatever fails."""
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(directory)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    plain_permissions(tmp)  # mkdtemp makes the folder private
    old = None
    try:
        write(tmp)
        if os.path.isdir(directory):
            # Directories cannot be renamed over a non-empty one: move the old export aside first.
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rmdir(old)
            os.replace(directory, old)
        os.replace(tmp, directory)
    except BaseException:
        if old is not None and not os.path.exists(directory):
            os.replace(old, directory)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)


def read_metadata(directory):
    """Return the export metadata written by `export_saved_model`, or None for other SavedModels."""
    path = os.path.join(os.fspath(directory), METADATA_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
