"""Export a trained student to the runtimes people deploy with: SavedModel, ONNX, OpenVINO and LiteRT.

    from inference.export import export_student
    paths = export_student("runs/B", "exports/B", input_size=(240, 320), int8=True, records_dir="data/distill")

The SavedModel keeps the project's contract (uint8 RGB of any size in, the map at that size out; see
`student.serving`). ONNX, OpenVINO and LiteRT files take a FIXED input size, the student's resolution
(`input_size`, default the run's training size): uint8 RGB (N, H, W, 3) at exactly that size in, and
"density" (sums to 1) and "saliency_map" (max 1), float32 (N, H, W, 1) at that size out. The batch size is
free. To serve an image of another size, bring it to (H, W) as the student was trained, letterboxed (resized to
fit with its aspect ratio kept, centred on the ImageNet mean colour) or stretched, run the file, take the
density of the image's box, renormalise it and resize it back: `inference.predictors` does that with OpenCV
(area when shrinking, bilinear otherwise), so these files give the same contract as the SavedModel through
`load_predictor`. Each file carries its input size and resize mode inside it (the `saliency_kd` entry: ONNX
`metadata_props`, OpenVINO `rt_info`, a TFLite metadata buffer), so a file copied alone is served as it was
trained; `<file>.json` beside it repeats them for people and older readers.

All exports run the inference graph of `student.serving.inference_student` (BatchNormalization folded
into the convolutions, the saliency head only). int8 variants are calibrated on images from the records:
LiteRT full-integer (int8 weights and activations, float/uint8 interface), ONNX static QDQ int8 (7-bit weights,
which no CPU saturates; see `quantize_onnx`) and OpenVINO
IR quantized by NNCF's post-training quantization (FakeQuantize on activations, int8 weights); all three keep
the float files' uint8 input and float32 outputs.
"""

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import sys
import tempfile

import numpy as np

from datasets.geometry import RESIZE_MODES
from inference import shipped

FORMATS = ("saved_model", "onnx", "openvino", "litert")
EXTENSIONS = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
INPUT_NAME = "images"
OUTPUT_NAMES = ("density", "saliency_map")
# The key of the JSON every runtime file carries inside it (`export_description`); read by inference.predictors.
METADATA_KEY = "saliency_kd"


def run_resize(path, default="letterbox"):
    """How a run's student saw its images: its config's `resize`; "stretch" for runs from before letterboxing
    (no such key), `default` for a bare weights file."""
    config_path = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_path):
        return default
    with open(config_path) as f:
        return json.load(f).get("resize", "stretch")


def export_description(input_size, resize):
    """What a runtime file says about itself (inside it and in its `.json`): input size and resize mode."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"`resize` must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    return {"format": "saliency-kd student export", "input": "uint8 (N, H, W, 3) RGB at input_size",
            "outputs": list(OUTPUT_NAMES), "input_size": [int(v) for v in input_size], "resize": resize}


def _write_export_metadata(path, input_size, resize):
    from datasets.io import atomic_write
    from inference.predictors import export_metadata_path

    with atomic_write(export_metadata_path(path), "w") as f:
        json.dump(export_description(input_size, resize), f, indent=2)
    return path


def embed_description(path, description):
    """Store `description` (`export_description`) inside a runtime file under `METADATA_KEY`, in place.

    ONNX: a `metadata_props` entry; OpenVINO: an `rt_info` entry of the .xml (the .bin is rewritten alongside);
    LiteRT: a metadata entry of the flatbuffer pointing at a buffer holding the JSON.
    """
    path = os.fspath(path)
    text = json.dumps(description)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".onnx":
        import onnx

        model = onnx.load(path)
        kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=METADATA_KEY, value=text)
        onnx.save(model, path)
    elif extension == ".xml":
        import openvino as ov

        model = ov.Core().read_model(path)
        model.set_rt_info(text, [METADATA_KEY])
        _save_openvino(model, path)
    elif extension == ".tflite":
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils

        with open(path, "rb") as f:
            model = flatbuffer_utils.read_model_from_bytearray(bytearray(f.read()))
        model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_KEY, METADATA_KEY.encode())]
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(text.encode(), np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
        model.metadata.append(entry)
        with open(path, "wb") as f:
            f.write(flatbuffer_utils.convert_object_to_bytearray(model))
    else:
        raise ValueError(f"{path}: not a runtime file (.onnx, .xml, .tflite)")
    return path


def _save_openvino(model, path):
    """`ov.save_model` to `path` (.xml and .bin) through a sibling name: the model may still map the old .bin."""
    import openvino as ov

    stem = os.path.splitext(path)[0]
    staged = stem + ".staged"
    ov.save_model(model, staged + ".xml", compress_to_fp16=False)
    del model
    os.replace(staged + ".bin", stem + ".bin")
    os.replace(staged + ".xml", path)


def load_student(path, variant=None, backbone=None):
    """Load a trained student from a run folder or a `.weights.h5` file.

    Args:
        path: a run folder from train.py (its `config.json` gives the variant and training size; the best
            checkpoint is used, else the last) or a student `.weights.h5` file.
        variant: "A" or "B"; None reads it from the run's config or the weights file.
        backbone: the encoder's name; None reads it from the run's config (a bare file: "resnet18").

    Returns:
        (keras student, input_size or None). input_size is the run's training size; None for a bare file.

    Raises:
        FileNotFoundError: no such file, or a run folder without checkpoints.
        ValueError: the weights do not fit the variant.
    """
    from student.model import build_student, load_all_weights

    path = os.fspath(path)
    input_size = decoder = None
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{path}: not a run folder (no config.json); pass a run folder from train.py "
                                    "or a student .weights.h5 file")
        with open(config_path) as f:
            config = json.load(f)
        variant = variant or config.get("variant")
        backbone = backbone or config.get("backbone")
        decoder = config.get("decoder", "card")  # runs from before the light decoder have none: the card's
        input_size = tuple(config["image_size"]) if "image_size" in config else None
        path = run_checkpoint(path)
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such run folder or .weights.h5 file")
    _check_hdf5(path)
    if variant is None or decoder is None:
        guessed_variant, guessed_decoder = _weights_variant(path)
        variant, decoder = variant or guessed_variant, decoder or guessed_decoder
    backbone = backbone or "resnet18"
    student = build_student(variant, backbone=backbone, decoder=decoder)
    try:
        load_all_weights(student, path)
    except OSError as e:  # h5py: readable as HDF5 above, but damaged inside
        raise ValueError(f"{path}: not a student .weights.h5 (cannot be read: {e}); pass a file from a run's "
                         "checkpoints/") from None
    except ValueError as e:
        detail = str(e).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: these weights do not fit a variant {variant} {backbone} student ({detail}); "
                         "pass the right --variant and --backbone") from None
    return student, input_size


def _check_hdf5(path):
    """A ValueError naming `path` when it is not an HDF5 file (a `.weights.h5` that is garbage or truncated)."""
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as e:
        raise ValueError(f"{path}: not a student .weights.h5 (not a readable HDF5 file: {e}); pass a file from a "
                         "run's checkpoints/ (best.weights.h5 or last.weights.h5), or the run folder itself") from None


# Top-level Conv2D layers of a student's `.weights.h5` (decoder and heads; the encoder is nested) -> (variant,
# decoder): the card's decoder has 4 convs, the light one 5 (3 laterals, 2 smoothing); B adds a 2-conv branch.
_CONV_COUNTS = {5: ("A", "card"), 7: ("B", "card"), 6: ("A", "light"), 8: ("B", "light")}


def _weights_variant(path):
    """("A" or "B", decoder) of a student `.weights.h5`, from its number of top-level Conv2D layers."""
    import h5py

    with h5py.File(path, "r") as f:
        convs = sum(1 for name in f.get("layers", {}) if name.startswith("conv2d"))
    if convs not in _CONV_COUNTS:
        raise ValueError(f"{path}: not a student .weights.h5 (found {convs} decoder/head convs, expected "
                         f"{sorted(_CONV_COUNTS)}); pass a file from a run's checkpoints/")
    return _CONV_COUNTS[convs]


def build_runtime_model(student, input_size, calibration_images=None):
    """A fixed-size Keras model for the portable exports: uint8 (N, H, W, 3) in, density and map out.

    Args:
        student: a Keras student (see `student.model.build_student`), any variant.
        input_size: (H, W) the exported file runs at.
        calibration_images: None, or the uint8 images (N, H, W, 3) a LiteRT int8 file is calibrated on: the
            logits are then shifted by `int8_logit_shift` on them (the softmax does not change; see there).

    Returns:
        A functional keras.Model with input "images" and the dict outputs "density" and "saliency_map",
        each float32 (N, H, W, 1), computed like `student.serving.saliency_from_logits` at (H, W).
    """
    import keras

    from student.model import spatial_softmax
    from student.serving import _check_input_size, inference_student

    height, width = _check_input_size(input_size)
    folded = inference_student(student)
    images = keras.Input((height, width, 3), dtype="uint8", name=INPUT_NAME)
    logits = folded(keras.ops.cast(images, "float32"))["saliency"]
    if calibration_images is not None:
        shift = int8_logit_shift(folded, calibration_images)
        if shift:
            logits = logits + shift
    density = spatial_softmax(logits)
    saliency_map = density / keras.ops.max(density, axis=(1, 2), keepdims=True)
    return keras.Model(images, {"density": density, "saliency_map": saliency_map}, name=f"{student.name}_runtime")


def int8_logit_shift(folded, images, margin=0.1):
    """The constant to add to the logits before a LiteRT int8 conversion, so that they are >= 0 on `images`.

    The softmax's max (REDUCE_MAX) must keep its input's int8 scale, and LiteRT's converter gives the logits the
    range it calibrated for the max (each image's largest logit; 0 always included) instead of their own: every
    logit below 0 then comes out as 0. It flattened FastGaze-centre's maps (logits -4..1.5: CC 0.67 to the
    float file). The softmax is the same for logits + c;
    with c = `margin` of their range minus their minimum on the calibration images (0 when that is already >= 0),
    the max's range is theirs, so the int8 file keeps it (CC 0.98-0.999 there).

    Args:
        folded: the inference graph (`student.serving.inference_student`).
        images: uint8 (N, H, W, 3) calibration images at the export size.
        margin: the share of the logits' range left below their calibration minimum.

    Returns:
        float, >= 0.
    """
    images = np.asarray(images, np.uint8)
    low, high = np.inf, -np.inf
    for start in range(0, len(images), 8):
        logits = np.asarray(folded(images[start:start + 8].astype(np.float32))["saliency"])
        low, high = min(low, float(logits.min())), max(high, float(logits.max()))
    return max(0.0, margin * (high - low) - low)


def _input_signature(model):
    import tensorflow as tf

    height, width = model.input.shape[1:3]
    return [tf.TensorSpec((None, height, width, 3), tf.uint8, name=INPUT_NAME)]


def _atomic_target(path, write, description=None):
    """Run `write(tmp_path)` into a temporary folder beside `path`, then move the files it made into place.

    `write` gets a path with the same base name inside the temporary folder, so side files (OpenVINO's
    `.bin`) come along; they are moved first and the named file last. A `description` (`export_description`)
    is stored inside the file before it moves (`embed_description`).
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        write(os.path.join(tmp, os.path.basename(path)))
        if description is not None:
            embed_description(os.path.join(tmp, os.path.basename(path)), description)
        names = sorted(os.listdir(tmp), key=lambda n: n == os.path.basename(path))
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(parent, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _runtime_description(runtime_model, resize):
    return export_description(runtime_model.input.shape[1:3], resize)


def export_onnx(runtime_model, path, opset=17, resize="letterbox"):
    """Write `runtime_model` (from `build_runtime_model`) as ONNX (needs tf2onnx and onnx).

    `resize` is how its student was trained ("letterbox" or "stretch"); it is stored inside the file.
    """
    return _atomic_target(path, lambda tmp: runtime_model.export(
        tmp, format="onnx", input_signature=_input_signature(runtime_model), opset_version=opset, verbose=False),
        _runtime_description(runtime_model, resize))


def export_openvino(runtime_model, path, resize="letterbox"):
    """Write `runtime_model` as OpenVINO IR (`path` ends in .xml; the weights go to the .bin beside it)."""
    return _atomic_target(path, lambda tmp: runtime_model.export(
        tmp, format="openvino", input_signature=_input_signature(runtime_model), verbose=False),
        _runtime_description(runtime_model, resize))


def export_litert(runtime_model, path, representative_images=None, resize="letterbox"):
    """Write `runtime_model` as LiteRT (.tflite); float32, or full-integer int8 given calibration images.

    Args:
        runtime_model: from `build_runtime_model`.
        path: the .tflite file.
        representative_images: None for float32, or uint8 (N, H, W, 3) images at the model's size to
            calibrate int8 activations (weights and activations int8; the uint8 input and float outputs stay).
        resize: how its student was trained, "letterbox" or "stretch" (stored inside the file).
    """
    import tensorflow as tf

    kwargs = {}
    if representative_images is not None:
        images = np.asarray(representative_images, np.uint8)

        def representative_dataset():
            for image in images:
                yield [image[None]]

        kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative_dataset}
    return _atomic_target(path, lambda tmp: runtime_model.export(
        tmp, format="litert", input_signature=_input_signature(runtime_model), verbose=False, **kwargs),
        _runtime_description(runtime_model, resize))


def quantize_onnx(float_path, path, representative_images, resize="letterbox"):
    """Static int8 quantization (QDQ, per-channel weights) of an ONNX export with onnxruntime.quantization.

    The weights are quantized to 7 bits (`reduce_range`: -64..64), as ONNX Runtime's documentation advises for
    CPUs without VNNI: there its x86 kernels multiply uint8 activations by int8 weights in pairs summed into
    int16 (VPMADDUBSW), which saturates once 2 x 255 x |w| exceeds 32767, i.e. for |w| > 64. With 8-bit weights
    EfficientNet-Lite0's int8 maps fell to CC 0.89-0.94 against the float file on an AVX2-only AMD EPYC; with 7
    bits no CPU can saturate (0.994 there), at the cost of one bit of weight precision on every CPU.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = np.asarray(representative_images, np.uint8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._iter = iter(images)

        def get_next(self):
            image = next(self._iter, None)
            return None if image is None else {INPUT_NAME: image[None]}

    def write(tmp):
        prepared = tmp + ".pre.onnx"
        quant_pre_process(os.fspath(float_path), prepared, skip_symbolic_shape=True)
        quantize_static(prepared, tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=True)
        os.remove(prepared)

    return _atomic_target(path, write, export_description(images.shape[1:3], resize))


def quantize_openvino(float_xml_path, path, representative_images, resize="letterbox"):
    """Post-training int8 quantization of an OpenVINO export with NNCF; writes `path` (.xml) and its .bin.

    Args:
        float_xml_path: the float IR from `export_openvino`.
        path: the int8 .xml to write.
        representative_images: uint8 (N, H, W, 3) images at the model's size; all N calibrate.
        resize: how its student was trained, "letterbox" or "stretch" (stored inside the file).

    Raises:
        ImportError: NNCF is not installed.
    """
    nncf = _import_nncf()
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    images = np.asarray(representative_images, np.uint8)
    model = ov.Core().read_model(os.fspath(float_xml_path))
    dataset = nncf.Dataset([image[None] for image in images])
    # The ops after the last convolution (the head's shifts and crop, the spatial softmax) stay float: NNCF's
    # defaults also quantize the logits and their log-sum-exp, which cost 1.2% NSS on OSIE's test split against
    # 0.8% without them; the MIXED preset (asymmetric activations, for ReLU outputs) brought it to 0.75%.
    ordered = model.get_ordered_ops()
    last_conv = max(i for i, op in enumerate(ordered) if op.get_type_name() == "Convolution")
    tail = [op.get_friendly_name() for op in ordered[last_conv + 1:]
            if op.get_type_name() not in ("Constant", "Parameter", "Result")]
    # Every convolution's weights in half the int8 range (NNCF's overflow fix): CPUs without VNNI (AVX2, AVX-512
    # before VNNI) sum pairs of u8 x s8 products in int16 and saturate otherwise. With the default (first layer
    # only) FastGaze-centre's int8 maps fell to mean CC 0.88 (one photo 0.03) against the float file on an
    # AVX2-only AMD EPYC, NSS -15% on OSIE.
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    with _nncf_quietly():
        quantized = nncf.quantize(model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.MIXED,
                                  ignored_scope=nncf.IgnoredScope(names=tail, validate=False),
                                  advanced_parameters=advanced)
    return _atomic_target(path, lambda tmp: ov.save_model(quantized, tmp, compress_to_fp16=False),
                          export_description(images.shape[1:3], resize))


@contextlib.contextmanager
def _nncf_quietly():
    """NNCF's INFO lines (which ops it leaves in float) silenced and its progress bars sent to stderr.

    NNCF logs to a handler on sys.stdout and draws its bars (rich) on sys.stdout: `export_student.py > file`
    got 19 lines and two bars in the file. Its warnings still show, on stderr.
    """
    logger = logging.getLogger("nncf")
    level = logger.level
    streams = [(h, h.stream) for h in logger.handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    logger.setLevel(logging.WARNING)
    for handler, _ in streams:
        handler.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)
        for handler, stream in streams:
            handler.setStream(stream)


def _import_nncf():
    try:
        import nncf
    except ImportError as e:
        raise ImportError(f"int8 OpenVINO export needs NNCF ({e}): pip install nncf (or the deploy extra: "
                          "pip install -e '.[deploy]'), or leave openvino out of the formats") from e
    return nncf


def calibration_images(records_dir, input_size, split="train", count=32, seed=0, resize="letterbox"):
    """`count` images from the records, brought to `input_size` as the predictors do, uint8 (count, H, W, 3).

    The images are spread over the split (every k-th record, k from the record count and `seed`'s offset),
    so calibration sees the variety of the data rather than the first shard's.

    Raises:
        FileNotFoundError: no records of `split` (the advice names a split export_teacher.py can write).
        ValueError: a shard that is truncated or corrupt (named, with how to rewrite or check it), or no records.
    """
    from inference.predictors import fit_to_input

    images = [example["image"].numpy() for example in _read_calibration_records(records_dir, split)]
    if not images:
        raise ValueError(f"{records_dir}: split '{split}' has no records to calibrate int8 with")
    step = max(1, len(images) // count)
    picked = images[(seed % step)::step][:count]
    return np.stack([fit_to_input(image, input_size, resize)[0] for image in picked])


def _read_calibration_records(records_dir, split):
    """The decoded records of `split`, shard by shard, so that a damaged shard is named."""
    import tensorflow as tf

    from datasets import records
    from datasets.splits import SPLIT_NAMES

    try:
        files = records.list_shards(records_dir, split)
    except FileNotFoundError:
        if split in SPLIT_NAMES:
            raise  # its advice (export_teacher.py --split <split>) is one export_teacher.py takes
        present = sorted({os.path.basename(f).rsplit("-", 3)[0]
                          for f in glob.glob(os.path.join(os.fspath(records_dir), "*-*-of-*.tfrecord"))})
        there = f"the splits there: {', '.join(present)}" if present else "it holds no records"
        raise FileNotFoundError(
            f"{records_dir}: no records of split '{split}' to calibrate int8 with ({there}): pass one of them as "
            f"--calibration-split (calibration_split), or write one with `python export_teacher.py --split train "
            f"--out {records_dir}` (it writes the splits {', '.join(SPLIT_NAMES)})") from None
    check = (f"; `python export_teacher.py --verify-only --split {split} --out {records_dir}` lists every damaged "
             "shard" if split in SPLIT_NAMES else "")
    for path in files:
        try:
            yield from records.read_records([path])
        except tf.errors.DataLossError as e:
            reason = re.sub(r"\{\{[^}]*\}\}", "", e.message).split("[Op:")[0].strip()
            raise ValueError(
                f"{path}: truncated or corrupt record shard ({reason}): rewrite it by running "
                f"the export_teacher.py command that wrote these records again (it redoes every shard that no "
                f"longer matches its recorded sha256){check}") from None


def export_student(source, out_dir, formats=FORMATS, input_size=None, variant=None, int8=False,
                   records_dir=None, calibration_split="train", calibration_count=32, name="student", resize=None,
                   backbone=None):
    """Export a trained student to each of `formats` in `out_dir`; the one-call library behind export_student.py.

    Args:
        source: a run folder, a student `.weights.h5`, a Keras student, or a built-in model name ("fastgaze",
            "fastgaze-centre"; needs `input_size`), exported as a student (`inference.builtin_export`).
        out_dir: output folder; files are `<name>.onnx`, `<name>.xml`/`.bin`, `<name>.tflite`,
            `<name>_saved_model/`, and with int8 `<name>_int8.tflite`, `<name>_int8.onnx` and
            `<name>_int8.xml`/`.bin`. Without int8, an earlier export's `<name>_int8` files of the same formats
            are removed: they belong to other weights.
        formats: any of "saved_model", "onnx", "openvino", "litert".
        input_size: (H, W) the student runs at; None = the run's training size (required for a bare file).
        variant: "A"/"B" for a bare `.weights.h5` (None tries both).
        backbone: the encoder of a bare `.weights.h5` (None: the run's, or "resnet18").
        int8: also write a calibrated int8 file for each of the onnx, openvino and litert formats asked for
            (needs `records_dir`; OpenVINO's needs NNCF).
        records_dir: distillation records to calibrate int8 on.
        calibration_split, calibration_count: which records and how many images calibrate.
        name: base name of the files.
        resize: how the student was trained, "letterbox" or "stretch"; None = the run's (`run_resize`).

    Returns:
        dict format -> path written (keys "onnx_int8", "openvino_int8", "litert_int8" for the int8 files).

    Raises:
        ImportError: int8 with "openvino" and NNCF is not installed (raised before anything is written).
    """
    _check_options(formats, int8, records_dir, calibration_count)
    _refuse_to_replace_a_foreign_folder(os.path.join(os.fspath(out_dir), f"{name}_saved_model"), formats)
    student, input_size, resize = _resolve_source(source, input_size, variant, backbone, resize)
    # Read before anything is converted: a damaged shard or a wrong split fails in seconds, not after the exports.
    images = calibration_images(records_dir, input_size, calibration_split, calibration_count,
                                resize=resize) if int8 else None
    paths = _write_staged(out_dir, name, lambda staging: _export_into(staging, student, formats, input_size, images,
                                                                      name, resize))
    if not int8:
        _remove_stale_int8(out_dir, name, formats)
    return paths


def _remove_stale_int8(out_dir, name, formats):
    """Remove the `<name>_int8` files of `formats` that an earlier export left in `out_dir`: they were made from
    the earlier weights, and a deployment that takes `<name>_int8.tflite` beside the new float file would run
    another model."""
    from inference.predictors import export_metadata_path

    for fmt in formats:
        if fmt not in EXTENSIONS:
            continue
        path = os.path.join(os.fspath(out_dir), f"{name}_int8{EXTENSIONS[fmt]}")
        stale = [path, export_metadata_path(path)] + ([path[:-len(".xml")] + ".bin"] if fmt == "openvino" else [])
        for item in stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(item)


def _check_options(formats, int8, records_dir, calibration_count):
    """`export_student`'s argument checks, before any work (NNCF imported when OpenVINO int8 is asked for)."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"`formats` must be a non-empty subset of {FORMATS}. Received: {list(formats)}")
    if not int8:
        return
    if records_dir is None:
        raise ValueError("int8 export needs `records_dir` (--records-dir): distillation records to calibrate on, "
                         "e.g. data/distill")
    if not {"onnx", "openvino", "litert"} & set(formats):
        raise ValueError("int8 applies to the onnx, openvino and litert formats; add one of them to `formats`")
    if not isinstance(calibration_count, (int, np.integer)) or isinstance(calibration_count, bool) \
            or calibration_count < 1:
        raise ValueError(f"`calibration_count` (--calibration-count) must be a positive int: the number of images "
                         f"that calibrate int8. Received: {calibration_count!r}")
    if "openvino" in formats:
        _import_nncf()


def _refuse_to_replace_a_foreign_folder(saved_model_dir, formats):
    from student.serving import _is_saved_model

    if "saved_model" in formats and os.path.isdir(saved_model_dir) and os.listdir(saved_model_dir) \
            and not _is_saved_model(saved_model_dir):
        raise FileExistsError(f"{saved_model_dir}: exists and is not a SavedModel (no saved_model.pb); refusing to "
                              "replace it. Choose another --out or --name, or remove this folder")


def _resolve_source(source, input_size, variant, backbone, resize):
    """(Keras student, checked input size, resize mode) of `export_student`'s `source` and options."""
    from inference.builtin_export import build_exportable, exportable_name
    from student.serving import _check_input_size

    if exportable_name(source):  # "fastgaze", "fastgaze-centre": the built-in model at the fixed input_size
        student, run_size = build_exportable(source, input_size), input_size
    elif isinstance(source, (str, os.PathLike)):
        student, run_size = load_student(source, variant, backbone)
        resize = resize or run_resize(source)
    else:
        student, run_size = source, None
    input_size = input_size or run_size
    if input_size is None:
        raise ValueError(f"{source}: a bare weights file does not say its training size; pass input_size "
                         "(--input-size HEIGHT WIDTH), e.g. 240 320")
    return student, _check_input_size(input_size), resize or "letterbox"


def _write_staged(out_dir, name, write):
    """Run `write(staging)` (-> {format: path in staging}) in a hidden folder inside `out_dir`, then move it all in.

    An error, a full disk or Ctrl-C leaves `out_dir` as it was (no file of half an export set); an OSError names
    the file where it was going. Returns {format: final path}.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.export-tmp-", dir=out_dir)
    try:
        paths = write(staging)
        _move_into_place(staging, out_dir)
    except OSError as e:
        if e.filename and os.fspath(e.filename).startswith(staging + os.sep):  # name where it was going
            parts = os.path.relpath(e.filename, staging).split(os.sep)
            e.filename = os.path.join(out_dir, *[p for p in parts if not (p.startswith(".") and ".tmp-" in p)])
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
    return {fmt: os.path.join(out_dir, os.path.relpath(path, staging)) for fmt, path in paths.items()}


def _export_into(out_dir, student, formats, input_size, images, name, resize):
    """`export_student`'s writing, into `out_dir` (its staging folder); `images` calibrate int8 (None: no int8).

    Returns the paths written."""
    from student.serving import export_saved_model

    paths = {}
    if "saved_model" in formats:
        paths["saved_model"] = export_saved_model(student, os.path.join(out_dir, f"{name}_saved_model"),
                                                  input_size=input_size, resize=resize)
    portable = [f for f in formats if f != "saved_model"]
    if not portable:
        return paths
    runtime_model = build_runtime_model(student, input_size)
    target = lambda fmt, suffix="": os.path.join(out_dir, f"{name}{suffix}{EXTENSIONS[fmt]}")  # noqa: E731
    if "onnx" in portable:
        paths["onnx"] = export_onnx(runtime_model, target("onnx"), resize=resize)
    if "openvino" in portable:
        paths["openvino"] = export_openvino(runtime_model, target("openvino"), resize=resize)
    if "litert" in portable:
        paths["litert"] = export_litert(runtime_model, target("litert"), resize=resize)
    if images is not None:
        if "litert" in portable:
            paths["litert_int8"] = export_litert(build_runtime_model(student, input_size, images),
                                                 target("litert", "_int8"), images, resize=resize)
        if "onnx" in portable:
            paths["onnx_int8"] = quantize_onnx(paths["onnx"], target("onnx", "_int8"), images, resize=resize)
        if "openvino" in portable:
            paths["openvino_int8"] = quantize_openvino(paths["openvino"], target("openvino", "_int8"), images,
                                                       resize=resize)
    for fmt, path in paths.items():
        if fmt != "saved_model":
            _write_export_metadata(path, input_size, resize)
    return paths


def _move_into_place(staging, out_dir):
    """Move every file and folder of `staging` into `out_dir`, replacing earlier exports of the same names.

    Renames within one file system: they cannot run out of space. OpenVINO's .bin files go before the .xml
    files, and the .json sidecars last. A replaced folder (a SavedModel) is renamed away before the new one
    takes its name, then removed.
    """
    order = lambda n: (not n.endswith(".bin"), n.endswith(".json"), n)  # noqa: E731
    for name in sorted(os.listdir(staging), key=order):
        source, target = os.path.join(staging, name), os.path.join(out_dir, name)
        if os.path.isdir(source) and os.path.lexists(target):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=out_dir)
            os.replace(target, os.path.join(old, name))
            os.replace(source, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(source, target)


def write_float16_weights(source, target):
    """Copy the Keras `.weights.h5` `source` to `target` with every float32 dataset stored as float16."""
    import h5py

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if getattr(data, "dtype", None) == np.float32:
                    data = data.astype(np.float16)
                dst.create_dataset(name, data=data).attrs.update(dict(obj.attrs))
            else:
                dst.require_group(name).attrs.update(dict(obj.attrs))

        src.visititems(copy)


def run_checkpoint(run_dir):
    """A run folder's best checkpoint, else its last (FileNotFoundError naming the fix when it has neither)."""
    for name in ("best.weights.h5", "last.weights.h5"):
        path = os.path.join(run_dir, "checkpoints", name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{run_dir}: no checkpoints/best.weights.h5 or last.weights.h5; the run has not "
                            "finished an epoch yet (run train.py again with the same settings to resume)")


def package_student(run_dir, name, card, root=None):
    """Write the shipped student `name` from the finished run `run_dir`; returns its folder.

    Args:
        run_dir: a run folder from train.py (its `config.json`, `checkpoints/` and `saved_model/`).
        name: the built-in name (lower case, e.g. "saliency-kd").
        card: the model card's facts for `model.json` (must include "description" and "licence").
        root: where to write (default: this package's folder).

    Raises:
        FileNotFoundError: `run_dir` is not a finished run.
        ValueError: the files exceed `shipped.MAX_BYTES`, or `card` lacks a description or licence.
    """
    from datasets.io import file_sha256, plain_permissions
    from inference.predictors import StudentPredictor

    missing = [k for k in ("description", "licence") if not card.get(k)]
    if missing:
        raise ValueError(f"the model card needs {' and '.join(missing)}")
    if name != name.lower() or not name or os.sep in name:
        raise ValueError(f"{name!r}: a shipped student's name is one lower-case word (e.g. 'saliency-kd')")
    run_dir = os.fspath(run_dir)
    checkpoint = run_checkpoint(run_dir)
    saved_model = os.path.join(run_dir, "saved_model")
    if not os.path.isfile(os.path.join(saved_model, "saved_model.pb")):
        raise FileNotFoundError(f"{run_dir}: no saved_model/ (the run has not finished); run train.py again with the "
                                "same settings to finish it")
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    student, input_size = load_student(run_dir)

    target = shipped.folder(name, root)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=os.path.dirname(target))
    try:
        write_float16_weights(checkpoint, os.path.join(staging, shipped.WEIGHTS))
        _check_size(staging, run_dir)
        images = shipped.reference_images()
        maps = StudentPredictor(saved_model).predict_batch(images)
        np.savez_compressed(os.path.join(staging, shipped.REFERENCE),
                            **{f"image{i}": im for i, im in enumerate(images)},
                            **{f"map{i}": m.astype(np.float32) for i, m in enumerate(maps)})
        full = {**card, "name": name, "variant": config["variant"], "backbone": config.get("backbone", "resnet18"),
                "decoder": config.get("decoder", "card"), "input_size": list(input_size),
                "resize": config.get("resize", "letterbox"), "params": int(student.count_params()),
                "weights_dtype": "float16",
                "source": {"run_dir": os.path.abspath(run_dir), "checkpoint": os.path.basename(checkpoint),
                           "checkpoint_sha256": file_sha256(checkpoint), "seed": config.get("seed")}}
        with open(os.path.join(staging, shipped.CARD), "w") as f:
            json.dump(full, f, indent=2)
            f.write("\n")
        with open(os.path.join(staging, shipped.NOTICE), "w") as f:
            f.write(shipped.notice_text(full))
        _check_size(staging, run_dir)
        plain_permissions(staging)  # not mkdtemp's 0700: the package data is for every user of the install
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_size(staging, run_dir):
    size = sum(os.path.getsize(os.path.join(staging, f)) for f in os.listdir(staging))
    if size > shipped.MAX_BYTES:
        raise ValueError(f"{run_dir}: the shipped files would take {size / 2 ** 20:.1f} MB, over the "
                         f"{shipped.MAX_BYTES / 2 ** 20:.0f} MB limit on package data; ship a smaller student")
