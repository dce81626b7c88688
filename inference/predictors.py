"""Predict saliency maps with any model the project produces: the loader shared by predict.py and evaluate.py.

`load_predictor(path)` accepts

- a run folder from train.py (it holds `saved_model/`),
- a student SavedModel written by `student.serving.export_saved_model` (outputs "saliency_map"/"density"),
- an MSI-Net teacher: a frozen `.pb`, a TF2 SavedModel (the author's Hub/HF export) or a Keras file,
- any saliency model following `teacher.loading.CONTRACT` (a SavedModel folder or Keras file, e.g. FastGaze),
- a student exported by `inference.export`: `.onnx` (ONNX Runtime), `.xml` (OpenVINO) or `.tflite` (LiteRT),
  the runtime picked from the extension,

and returns a `Predictor` whose `predict(image)` maps a uint8 RGB image (H, W, 3) to a float32 (H, W)
saliency map in [0, 1] at the image's own size. The student's pre- and post-processing live inside its
SavedModel; the teacher's are the author's (aspect-preserving resize and pad to the teacher's input size,
then crop the padding and resize back), from `teacher.preprocessing`.

Writing maps for files (predict.py) is `inference.files`.
"""

import os

import numpy as np

from inference import shipped
from teacher import builtin

RUN_SAVED_MODEL = "saved_model"
# The model used when none is named: the project's own student (`inference.shipped`, docs/own-model.md). Over 3
# seeds it beat FastGaze + centre, the earlier default, by more than a seed's sd in NSS and CC on both test splits
# (target (b) of its study: NSS 2.17 vs 1.78 on MIT1003, 2.83 vs 2.25 on OSIE). Its weights are for research only;
# "fastgaze-centre" (Apache-2.0) stays built in.
DEFAULT_MODEL = "saliency-kd"
# Built-in students shipped with this package (`inference.shipped`: one folder each), beside `teacher.builtin`'s
# teachers: name -> `teacher.builtin.Builtin(kind="student")` whose loader is `inference.predictors:load_shipped`
# (`load_shipped(name, batch_size=, threads=)` returns a `Predictor`). `load_predictor` loads them by name (any
# letter case) and the CLIs and the web page list them.
STUDENT_BUILTINS = shipped.builtins()


def builtin_names():
    """Every built-in model name: the teachers of `teacher.builtin` and the students above (no Keras import)."""
    return builtin.names() + tuple(STUDENT_BUILTINS)


def builtin_menu():
    """The built-in models to offer in a menu: `DEFAULT_MODEL` first, then the others whose packages are installed,
    then the ensemble of the teachers (`teacher.builtin.ENSEMBLE`) when all its members are."""
    names = [DEFAULT_MODEL] + [n for n in builtin.names() if n != DEFAULT_MODEL and builtin.available(n)]
    names += [n for n in STUDENT_BUILTINS if n != DEFAULT_MODEL]  # the default may be a shipped student
    if all(term.name in names for term in builtin.parse_spec(builtin.ENSEMBLE)):
        names.append(builtin.ENSEMBLE)
    return tuple(names)


def model_help():
    """The `--model` help of the command lines that take one model (predict.py, crop.py): the default, the other
    built-ins and every kind of path, from the registry."""
    others = ", ".join(n for n in builtin_names() if n != DEFAULT_MODEL)
    return (f"the built-in {DEFAULT_MODEL} (default; shipped with the package), the other built-ins ({others}), or a "
            "spec of the teachers (fastgaze-centre+attention-center, 0.6*fastgaze-centre+0.4*attention-center, "
            "attention-center:flip); a run folder from train.py (with saved_model/), a student SavedModel folder, a "
            "student export from export_student.py (.onnx, OpenVINO .xml, .tflite: the runtime is picked from the "
            "extension), an MSI-Net teacher (.pb frozen graph, SavedModel folder or Keras file), or any saliency "
            "model following the contract (SavedModel folder or .keras/.h5, e.g. FastGaze's)")


def resolve_builtin(path):
    """The built-in student (its `Builtin`) or teacher spec (its canonical text) that `path` names, or None.

    A built-in wins over a file or folder of the same name, and stderr says so (`teacher.builtin.note_if_shadowing`:
    the teacher loader says it for teachers).
    """
    try:
        text = os.fspath(path)
    except TypeError:
        return None
    student = builtin.lookup(text, STUDENT_BUILTINS)
    if student is not None:
        builtin.note_if_shadowing(text, student.name)
        return student
    return builtin.canonical(text) if builtin.is_builtin(text) else None
STUDENT_OUTPUTS = ("saliency_map", "density")


def check_image(image, name="image"):
    """Return `image` as a uint8 (H, W, 3) array or raise naming what was received and the fix."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(
            f"`{name}` must be a uint8 RGB array of shape (H, W, 3); received dtype {image.dtype} and shape "
            f"{image.shape}. Read files with datasets.io.read_image, which also converts grayscale and RGBA."
        )
    return image


class Predictor:
    """Maps uint8 RGB images to float32 saliency maps in [0, 1] at each image's size.

    Attributes:
        path: the model path it was loaded from.
        kind: "student" or "teacher".
        input_size: (height, width) the model runs at, or None if unknown.
        num_params: number of weights, or None if unknown.
    """

    kind = None

    def __init__(self, path, input_size=None, num_params=None, batch_size=8):
        self.path = os.fspath(path)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.num_params = num_params
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
        self.batch_size = int(batch_size)

    def __repr__(self):
        return f"{type(self).__name__}(path={self.path!r}, input_size={self.input_size})"

    def _predict_group(self, images):
        """Maps (N, H, W) float32 in [0, 1] for a uint8 batch (N, H, W, 3) of at most `batch_size` images."""
        raise NotImplementedError

    def predict(self, image):
        """Saliency map of one uint8 RGB image (H, W, 3): float32 (H, W) in [0, 1]."""
        return self._predict_group(check_image(image)[None])[0]

    def predict_batch(self, images):
        """Saliency maps of a sequence of uint8 RGB images of any sizes, in order.

        Equal-size images run together, `batch_size` at a time.

        Args:
            images: a list of (H_i, W_i, 3) uint8 arrays, or one (N, H, W, 3) uint8 array.

        Returns:
            A list of float32 (H_i, W_i) maps in [0, 1].
        """
        images = [check_image(im, f"images[{i}]") for i, im in enumerate(images)]
        by_size = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.shape, []).append(i)
        maps = [None] * len(images)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for i, saliency_map in zip(chunk, self._predict_group(np.stack([images[i] for i in chunk]))):
                    maps[i] = saliency_map
        return maps

    def predict_density(self, image):
        """The prediction as a probability density over the image's pixels: float64 (H, W), sums to 1."""
        saliency_map = self.predict(image).astype(np.float64)
        total = saliency_map.sum()
        if total <= 0:
            return np.full(saliency_map.shape, 1.0 / saliency_map.size)
        return saliency_map / total


class StudentPredictor(Predictor):
    """A student SavedModel from `student.serving.export_saved_model`; all processing runs inside it."""

    kind = "student"

    def __init__(self, path, loaded=None, batch_size=8):
        import tensorflow as tf

        from student.serving import SIGNATURE_KEY, read_metadata

        loaded = loaded if loaded is not None else tf.saved_model.load(os.fspath(path))
        metadata = read_metadata(path) or {}
        variables = getattr(loaded, "variables", None) or []
        num_params = int(sum(np.prod(v.shape) for v in variables)) or None
        super().__init__(path, metadata.get("input_size"), num_params, batch_size)
        self._loaded = loaded  # keeps the variables alive
        self._serve = loaded.signatures[SIGNATURE_KEY]

    def _predict_group(self, images):
        import tensorflow as tf

        outputs = self._serve(images=tf.constant(images))
        return outputs["saliency_map"].numpy()[..., 0]

    def predict_density(self, image):
        """The exported density itself (float64 (H, W), sums to 1), not a renormalised map."""
        import tensorflow as tf

        outputs = self._serve(images=tf.constant(check_image(image)[None]))
        density = outputs["density"].numpy()[0, ..., 0].astype(np.float64)
        return density / density.sum()


class KerasStudentPredictor(Predictor):
    """A Keras student in memory (e.g. a shipped one, `inference.shipped`), run as its SavedModel would run it:
    BatchNormalization folded (`student.serving.inference_student`) and `student.serving.predict_saliency`."""

    kind = "student"

    def __init__(self, student_model, path, input_size, resize="letterbox", batch_size=8):
        import tensorflow as tf

        from student.serving import inference_student, predict_saliency

        super().__init__(path, input_size, int(student_model.count_params()), batch_size)
        self.model = inference_student(student_model)
        size = self.input_size
        self._serve = tf.function(lambda images: predict_saliency(self.model, images, size, resize),
                                  input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)])

    def _predict_group(self, images):
        return self._serve(images)["saliency_map"].numpy()[..., 0]

    def predict_density(self, image):
        """The model's density itself (float64 (H, W), sums to 1), as `StudentPredictor.predict_density`."""
        density = self._serve(check_image(image)[None])["density"].numpy()[0, ..., 0].astype(np.float64)
        return density / density.sum()


class TeacherPredictor(Predictor):
    """MSI-Net through `teacher.loading.load_teacher`, with the author's resize/pad and its inverse.

    `pipeline` picks `teacher.preprocessing`'s "repo" pipeline (TF1 area/bicubic, pad 126: how the published
    `.pb` results were made; the default) or "hub" (the Hugging Face card's bilinear resize, pad 0).
    """

    kind = "teacher"

    def __init__(self, path, input_size=None, batch_size=8, pipeline="repo"):
        from teacher import preprocessing
        from teacher.loading import load_teacher

        if pipeline not in preprocessing.PIPELINES:
            raise ValueError(f"`pipeline` must be one of {preprocessing.PIPELINES}. Received: pipeline={pipeline!r}")
        input_size = None if input_size is None else tuple(input_size)
        if input_size is not None and (
            len(input_size) != 2
            or not all(isinstance(v, (int, np.integer)) and v > 0 and v % 8 == 0 for v in input_size)
        ):
            raise ValueError(
                f"`teacher_input_size` must be (height, width), positive multiples of 8 (MSI-Net's output stride). "
                f"Received: {input_size!r}; e.g. (240, 320) for SALICON"
            )
        self._teacher = load_teacher(os.fspath(path), teacher_format="msinet")
        self.pipeline = pipeline
        super().__init__(path, input_size or self._teacher.input_size,
                         getattr(self._teacher, "num_params", None), batch_size)

    def _predict_group(self, images):
        from teacher import preprocessing

        # One box serves the whole group: equal-size images are resized and padded identically.
        padded, box = preprocessing.preprocess(images, self.input_size, pipeline=self.pipeline)
        maps = preprocessing.postprocess(self._teacher(padded), box, images.shape[1:3], pipeline=self.pipeline)
        maps = np.asarray(maps, np.float32)[..., 0]
        if maps.shape != images.shape[:3]:
            raise RuntimeError(
                f"{self.path}: the teacher's map came back as {maps.shape[1:]} for images of {images.shape[1:3]}; "
                f"check that input_size {self.input_size} suits this model"
            )
        return np.clip(maps, 0.0, 1.0)


class ContractPredictor(Predictor):
    """A contract teacher (`teacher.loading.ContractTeacher`): each image at its own size, no padding.

    The density comes back at the size the model ran at (the image's, or shrunk to the teacher's
    `max_input_side`), is resized to the image bilinearly if needed and divided by its maximum: [0, 1].
    """

    kind = "teacher"

    def __init__(self, path, batch_size=8, teacher_format="contract", max_input_side=None):
        from teacher.loading import load_teacher

        self._teacher = load_teacher(os.fspath(path), teacher_format=teacher_format, max_input_side=max_input_side)
        super().__init__(path, None, self._teacher.num_params, batch_size)

    def _predict_group(self, images):
        from datasets.geometry import resize_map

        maps = []
        for density in self._teacher.run_images(list(images), batch_size=self.batch_size):
            density = resize_map(density, images.shape[1:3])
            peak = float(density.max())
            maps.append(density / peak if peak > 0 else density)
        return np.stack(maps).astype(np.float32)


RUNTIME_EXTENSIONS = {".onnx": "onnxruntime", ".xml": "openvino", ".tflite": "litert"}


def resize_to(image, size, interpolation=None):
    """Resize an (H, W[, C]) array to `size` (H, W) with OpenCV: area averaging when shrinking, else bilinear.

    This is the resize the fixed-size runtime exports document (`inference.export`): area for shrinking is
    OpenCV's antialiased downscale, as the SavedModel's `tf.image.resize(antialias=True)` is TensorFlow's.
    """
    import cv2

    height, width = (int(s) for s in size)
    if image.shape[:2] == (height, width):
        return image
    if interpolation is None:
        shrink = height <= image.shape[0] and width <= image.shape[1]
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    return out.reshape(height, width, *image.shape[2:])


def fit_to_input(image, size, resize="letterbox"):
    """An image brought to a fixed-size export's input `size`, as training does: (uint8 frame, (top, left, h, w)).

    "letterbox" resizes it to fit with the aspect ratio kept (`resize_to`) into the box of
    `datasets.geometry.fit_box` (the rule training and the SavedModel use) and centres it in a frame of the
    ImageNet mean colour (rounded to uint8); "stretch" resizes it to `size` and the box is the whole frame.
    """
    from datasets.geometry import PAD_COLOUR, fit_box

    height, width = (int(s) for s in size)
    if resize == "stretch":
        return resize_to(image, (height, width)), (0, 0, height, width)
    top, left, h, w = fit_box(int(image.shape[0]), int(image.shape[1]), (height, width))
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = np.round(PAD_COLOUR).astype(np.uint8)
    frame[top:top + h, left:left + w] = resize_to(image, (h, w))
    return frame, (top, left, h, w)


def export_metadata_path(path):
    """The JSON beside a fixed-size export that says how it was trained: `<file>.json`."""
    return os.fspath(path) + ".json"


# The key under which `inference.export` stores the export's JSON description inside each runtime file.
EMBEDDED_METADATA_KEY = "saliency_kd"


def _tflite_metadata(path, key=EMBEDDED_METADATA_KEY):
    """The bytes of the metadata entry `key` of a .tflite flatbuffer, or None (read with LiteRT's schema)."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        data = f.read()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() not in (key, key.encode()):
            continue
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset() > 1:  # a large model keeps buffers after the flatbuffer
            return data[buffer.Offset():buffer.Offset() + buffer.Size()]
        return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    return None


def _openvino_weights(path):
    return os.path.splitext(path)[0] + ".bin"


def _check_openvino_files(path):
    """Refuse an OpenVINO .xml that is not well-formed IR XML or lacks its .bin, before OpenVINO tries every
    frontend on it (TensorFlow's prints parse errors of its own)."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, UnicodeDecodeError) as e:
        raise ValueError(_unreadable_message(path, "openvino", e)) from e
    if root.tag != "net":
        raise ValueError(_unreadable_message(path, "openvino", f"its XML root is <{root.tag}>, not OpenVINO's <net>"))
    if not os.path.isfile(_openvino_weights(path)):
        raise ValueError(_unreadable_message(path, "openvino", f"no {_openvino_weights(path)} beside it"))


def _unreadable_message(path, runtime, error):
    """One line: which file could not be read, the runtime's own reason in brief, and the fix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # Keep the runtime's reason, not its C++ source locations.
    lines = [line for line in lines if not line.startswith(("Exception from ", "Check '"))] or lines
    reason = (lines[-1] if lines else type(error).__name__)[:300]
    files = path if runtime != "openvino" else f"{path} or its weights {_openvino_weights(path)}"
    kind = {"onnxruntime": "ONNX", "openvino": "OpenVINO IR", "litert": "LiteRT (.tflite)"}[runtime]
    return (f"{files}: not a readable {kind} model (corrupt, truncated or missing: {reason}). Copy the file again, "
            "or export the student again with export_student.py")


class RuntimeStudentPredictor(Predictor):
    """A fixed-size student export (`.onnx`, OpenVINO `.xml`, `.tflite`) with the SavedModel's contract.

    Each image is brought to the file's size as its student was trained (`fit_to_input`: letterboxed, or
    stretched for a student trained so), the density of the image's box is renormalised and resized back to the
    image's size; `saliency_map` is the density over its max, as in the SavedModel. How the student was trained
    is read from the file itself (`inference.export` stores it inside: ONNX metadata_props, OpenVINO rt_info,
    TFLite metadata), else from the `<file>.json` beside it; a file with neither is refused rather than guessed.

    Attributes:
        runtime: "onnxruntime", "openvino" or "litert".
        threads: CPU threads the runtime may use (None: the runtime's default).
        resize: "letterbox" or "stretch".
    """

    kind = "student"

    def __init__(self, path, batch_size=8, threads=None):
        path = os.fspath(path)
        self.runtime = RUNTIME_EXTENSIONS[os.path.splitext(path)[1].lower()]
        self.threads = threads
        try:
            if self.runtime == "openvino":
                _check_openvino_files(path)
            input_size, embedded = getattr(self, f"_load_{self.runtime}")(path, threads)
        except ImportError as e:
            raise ImportError(
                f"{path}: needs the {self.runtime} package ({e}); install the deploy extra: pip install -e '.[deploy]'"
            ) from e
        except ValueError as e:
            if str(e).startswith(path):  # ours, already naming the file
                raise
            raise ValueError(_unreadable_message(path, self.runtime, e)) from e
        except Exception as e:  # each runtime has its own exception types for a damaged file
            raise ValueError(_unreadable_message(path, self.runtime, e)) from e
        super().__init__(path, input_size, None, batch_size)
        self.resize = self._read_resize(path, embedded)

    def _read_resize(self, path, embedded):
        """The resize mode from the file's own metadata, else its sidecar JSON; a ValueError if neither says."""
        import json

        sidecar = export_metadata_path(path)
        if embedded is not None:
            source = f"{path} (its embedded {EMBEDDED_METADATA_KEY} metadata)"
            try:
                description = json.loads(embedded)
            except ValueError as e:
                raise ValueError(f"{source} is not valid JSON ({e}); export the student again with "
                                 "export_student.py") from e
        elif os.path.isfile(sidecar):
            source = sidecar
            try:
                with open(sidecar) as f:
                    description = json.load(f)
            except ValueError as e:
                raise ValueError(f"{sidecar}: not valid JSON ({e}); copy it again beside {path}, or export the "
                                 "student again with export_student.py") from e
        else:
            raise ValueError(
                f"{path}: the file does not say how its student saw images (letterboxed or stretched to "
                f"{self.input_size[0]}x{self.input_size[1]}): it carries no {EMBEDDED_METADATA_KEY} metadata and has "
                f"no {sidecar} beside it. Export the student again with export_student.py (its files carry this "
                f"inside), or copy the .json that was exported with it to {sidecar}"
            )
        resize = description.get("resize", "stretch") if isinstance(description, dict) else None
        if resize not in ("letterbox", "stretch"):
            raise ValueError(f"{source}: \"resize\" must be \"letterbox\" or \"stretch\", not {resize!r}; export the "
                             "student again with export_student.py")
        size = description.get("input_size")
        if embedded is not None and size is not None and tuple(size) != tuple(self.input_size):
            raise ValueError(f"{source} says input_size {tuple(size)} but the model takes {tuple(self.input_size)}; "
                             "export the student again with export_student.py")
        return resize

    def _load_onnxruntime(self, path, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._run = lambda x: self._session.run(["density"], {"images": x})[0]
        embedded = self._session.get_modelmeta().custom_metadata_map.get(EMBEDDED_METADATA_KEY)
        return tuple(self._session.get_inputs()[0].shape[1:3]), embedded

    def _load_openvino(self, path, threads):
        import openvino as ov

        core = ov.Core()
        # f32: the CPU plugin otherwise runs bf16 where the CPU has it, which changed maps by 2% in a test.
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        model = core.read_model(path)
        embedded = (model.get_rt_info([EMBEDDED_METADATA_KEY]).astype(str)
                    if model.has_rt_info([EMBEDDED_METADATA_KEY]) else None)
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        output = self._compiled.output("density")
        self._run = lambda x: self._request.infer({"images": x})[output]
        shape = model.input(0).get_partial_shape()
        return (shape[1].get_length(), shape[2].get_length()), embedded

    def _load_litert(self, path, threads):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=path, num_threads=int(threads) if threads else None)
        detail = self._interpreter.get_input_details()[0]
        runner = self._interpreter.get_signature_runner()  # resizes the batch dimension as needed
        self._run = lambda x: runner(images=x)["density"]
        embedded = _tflite_metadata(path)
        return tuple(int(v) for v in detail["shape"][1:3]), None if embedded is None else embedded.decode()

    def run_at_input_size(self, batch):
        """The runtime call alone: densities (N, h, w) for a uint8 batch (N, h, w, 3) at the file's size."""
        return np.asarray(self._run(np.ascontiguousarray(batch, np.uint8)), np.float32)[..., 0]

    def _predict_densities(self, images):
        height, width = images.shape[1:3]
        fitted = [fit_to_input(im, self.input_size, self.resize) for im in images]
        densities = []
        for density, (_, (top, left, h, w)) in zip(self.run_at_input_size(np.stack([f for f, _ in fitted])), fitted):
            density = np.maximum(resize_to(density[top:top + h, left:left + w], (height, width)), 0.0)
            densities.append(density / density.sum())
        return densities

    def _predict_group(self, images):
        return np.stack([d / d.max() for d in self._predict_densities(images)]).astype(np.float32)

    def predict_density(self, image):
        """The density (float64 (H, W), sums to 1) at the image's size."""
        density = self._predict_densities(check_image(image)[None])[0].astype(np.float64)
        return density / density.sum()


def _saved_model_outputs(directory):
    """Output keys of the SavedModel's serving_default signature, read from saved_model.pb without loading it."""
    from tensorflow.core.protobuf import saved_model_pb2

    from google.protobuf.message import DecodeError

    proto = saved_model_pb2.SavedModel()
    path = os.path.join(directory, "saved_model.pb")
    with open(path, "rb") as f:
        data = f.read()
    try:
        proto.ParseFromString(data)
    except DecodeError as e:
        raise ValueError(
            f"{path}: not a readable SavedModel (corrupt or truncated: {e}). Copy it again, or export it anew from "
            "the run's checkpoints/best.weights.h5 with student.serving.export_saved_model"
        ) from e
    keys = set()
    for meta_graph in proto.meta_graphs:
        signature = meta_graph.signature_def.get("serving_default")
        if signature is not None:
            keys.update(signature.outputs.keys())
    return keys


def load_shipped(name, batch_size=8, threads=None, root=None):
    """The shipped student `name` (`inference.shipped`) as a `KerasStudentPredictor` (`threads` is unused: it runs
    in TensorFlow)."""
    from student.model import build_student, load_all_weights

    card = shipped.read_card(name, root)
    path = os.path.join(shipped.folder(name, root), shipped.WEIGHTS)
    student = load_all_weights(build_student(card["variant"], backbone=card["backbone"], decoder=card["decoder"]),
                               path)
    # Named by its built-in name, as the teachers are: crops.json and the web page record "saliency-kd", not a path.
    return KerasStudentPredictor(student, card.get("name", name), card["input_size"], resize=card["resize"],
                                 batch_size=batch_size)


def load_predictor(path, teacher_input_size=None, batch_size=8, teacher_format="auto", threads=None):
    """Load a run folder, a student SavedModel or export, an MSI-Net teacher file or a contract model as a `Predictor`.

    A SavedModel whose `serving_default` signature has the "saliency_map" and "density" outputs is ours
    (a student); any other SavedModel or Keras file goes to the teacher loader, as MSI-Net or as a model
    following the saliency-model contract (`teacher.loading.teacher_kind` decides, or `teacher_format`).

    Args:
        path: a built-in model name or spec (`builtin_names()`, `teacher.builtin`: shipped with the package, no
            download; any letter case; it wins over a path of that name, with a note on stderr), a
            run folder (containing `saved_model/`), a SavedModel folder, or a teacher file (`.pb` frozen graph,
            `.keras` or `.weights.h5` Keras MSI-Net).
        teacher_input_size: (height, width) a teacher runs at. Defaults to None: the size its weights were
            trained at (from the file name `model_<dataset>_...`, else SALICON's (240, 320)).
        batch_size: most images per model call in `predict_batch`. Defaults to 8.
        teacher_format: "auto" (default), "msinet" or "contract": force how a teacher file loads.
        threads: CPU threads for the ONNX Runtime, OpenVINO and LiteRT predictors (None: their default).

    Returns:
        A `StudentPredictor`, a `RuntimeStudentPredictor` (by extension: .onnx, .xml, .tflite), a
        `TeacherPredictor` (MSI-Net) or a `ContractPredictor`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a folder that is neither a run folder nor a SavedModel.
    """
    path = os.fspath(path)
    found = resolve_builtin(path)
    if isinstance(found, builtin.Builtin):  # a built-in student
        return builtin.resolve(found.loader)(found.name, batch_size=batch_size, threads=threads)
    if found is not None:
        if teacher_input_size is not None:
            raise ValueError(f"{path}: a built-in model runs at each image's own size; drop the teacher input size")
        return ContractPredictor(found, batch_size=batch_size)  # its canonical name: crops.json, the web page
    if not os.path.exists(path):
        if builtin.looks_like_spec(path):
            try:
                builtin.parse_spec(path)
            except builtin.SpecError as e:
                raise FileNotFoundError(f"{path}: no such model file or folder, and not a built-in model spec: "
                                        f"{e}") from None
        close = builtin.suggest(path, builtin_names())
        hint = f" Did you mean the built-in {close!r}?" if close else ""
        raise FileNotFoundError(
            f"{path}: no such model file or folder.{hint} Expected a built-in model ({', '.join(builtin_names())}, or "
            "a spec such as fastgaze-centre+attention-center), a run "
            "folder from train.py (with saved_model/), "
            "a SavedModel folder, a student export (.onnx, OpenVINO .xml, .tflite) or an MSI-Net teacher file "
            "(e.g. weights/model_salicon_cpu.pb)."
        )
    if os.path.isfile(path) and os.path.splitext(path)[1].lower() in RUNTIME_EXTENSIONS:
        return RuntimeStudentPredictor(path, batch_size=batch_size, threads=threads)
    if os.path.isdir(path):
        run_saved_model = os.path.join(path, RUN_SAVED_MODEL)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isdir(run_saved_model):
            if not os.path.isfile(os.path.join(run_saved_model, "saved_model.pb")):
                raise ValueError(
                    f"{path}: a run folder whose {run_saved_model} has no saved_model.pb: the run has not finished "
                    "(train.py exports at the end). Wait for it, or run train.py again with the same settings to resume."
                )
            path = run_saved_model
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"{path}: not a model folder. Expected a run folder from train.py (containing saved_model/) or a "
                "SavedModel folder (containing saved_model.pb)."
            )
        if set(STUDENT_OUTPUTS) <= _saved_model_outputs(path):
            return StudentPredictor(path, batch_size=batch_size)
    if path.lower().endswith(".weights.h5"):
        return _teacher_from_weights(path, teacher_input_size, batch_size)
    from teacher.loading import teacher_kind

    if teacher_kind(path, teacher_format) == "contract":
        if teacher_input_size is not None:
            raise ValueError(f"{path}: a contract model runs at each image's own size; drop the teacher input size")
        return ContractPredictor(path, batch_size=batch_size)
    return TeacherPredictor(path, input_size=teacher_input_size, batch_size=batch_size)


def _teacher_from_weights(path, teacher_input_size, batch_size):
    """A `.weights.h5` is a Keras MSI-Net teacher; a student checkpoint gets an error saying what to pass."""
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    hint = (f"{path} is a student training checkpoint; pass its run folder {run_dir} (which holds saved_model/) "
            "or a SavedModel folder instead")
    if os.path.basename(os.path.dirname(os.path.abspath(path))) == "checkpoints" and os.path.exists(
        os.path.join(run_dir, "config.json")
    ):
        raise ValueError(hint)
    try:
        return TeacherPredictor(path, input_size=teacher_input_size, batch_size=batch_size)
    except (FileNotFoundError, ImportError):
        raise
    except Exception as e:  # Keras/h5py raise several types for weights of another model
        raise ValueError(
            f"{path}: not MSI-Net teacher weights ({type(e).__name__}). If it is a student checkpoint, pass its "
            "run folder (with saved_model/) or a SavedModel folder instead"
        ) from e
