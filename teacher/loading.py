"""`load_teacher(path)`: run MSI-Net from whatever the author publishes, as it is.

Accepted files (the loader is chosen from the path):

* `model_<dataset>_{cpu,gpu}.pb`: the TF1 frozen GraphDef, imported under `tf.compat.v1.wrap_function` as a
  TF2 function `input:0 -> output:0`. The `_gpu` graphs use NCHW ops; where TF has no CPU kernel for them the
  constants are copied into the Keras MSI-Net instead (or, with `nchw_fallback="error"`, a clear error).
* a SavedModel folder (the TF2 model on Hugging Face / Kaggle): `tf.saved_model.load`, signature
  `serving_default`, its single output (the key differs between revisions, so it is not hard-coded). Keras 3
  cannot `load_model` this legacy format.
* `.keras` / `.weights.h5`: the Keras MSI-Net of `teacher.msinet`.

Every MSI-Net route returns a `Teacher`: float32 NHWC RGB 0..255 batches -> (N, H, W, 1) maps in [0, 1], plus the
dataset's input size and a name/sha256 for manifests.

Any other saliency model (FastGaze, a user's DeepGaze or UNISAL export) loads as a `ContractTeacher` when it
follows the saliency-model contract (`CONTRACT`): a Keras file (`.keras`, or a full-model `.h5`) or a TF
SavedModel folder taking float32 RGB 0..255 images (B, H, W, 3) of any size and returning a non-negative map
(B, H, W, 1) at the input size (an unnormalised density; the model carries its own preprocessing). The
contract is checked when the file loads: the declared input (rank, dtype, channels) and one probe call on a
small image (output shape, finite and non-negative values that are not constant: an all-zero model is refused);
an error names the part that fails.

Which route (`teacher_kind`, `teacher_format="auto"`): a frozen `.pb` and a `.weights.h5` are MSI-Net; a
SavedModel is MSI-Net when its `serving_default` signature has the author's published names (input
`input_1`, output `output` or `layer_from_saved_model`) or its graph holds MSI-Net's published weight
constants (`conv1/conv1_1/kernel` and `decoder/conv4/kernel`, the author's scope names);
a `.keras`/`.h5` file is MSI-Net when its layers carry `teacher.msinet`'s names; anything else follows the
contract. `teacher_format="msinet"` or `"contract"` (`--teacher-format`) forces a route.

Built-in models (`teacher.builtin`: "fastgaze", "fastgaze-centre", "attention-center", and specs combining
them such as "fastgaze-centre+attention-center") load by name, in any letter case, before any path of that name:
a `ContractTeacher` running the models shipped in the package (format "builtin"; pass "./fastgaze" for a file or
folder called so).
"""

import json
import logging
import os
import re
import zipfile

import keras
import numpy as np
import tensorflow as tf

from datasets.geometry import capped_size
from datasets.io import file_sha256
from teacher import builtin, convert, msinet
from teacher.preprocessing import INPUT_SIZES

TEACHER_FORMATS = ("auto", "msinet", "contract")
CONTRACT = "saliency-model/v1"
CONTRACT_TEXT = (
    "float32 RGB 0..255 images (B, H, W, 3) of any size in, a non-negative map (B, H, W, 1) at the input size "
    "out (an unnormalised density; the model does its own preprocessing)"
)
# The stored teacher map's longest side in distillation records (aspect kept): small records.
DEFAULT_MAP_MAX_SIDE = 320
# The probe image: small, odd-sized and not square, so a model that only works at one size fails at load.
PROBE_SHAPE = (2, 37, 53, 3)
_MSINET_CONSTANTS = ("conv1/conv1_1/kernel", "decoder/conv4/kernel")
# (inputs, outputs) of the author's TF2 SavedModel revisions (the Hugging Face model alexanderkroner/MSI-Net).
_MSINET_SIGNATURES = [({"input_1"}, {"output"}), ({"input_1"}, {"layer_from_saved_model"})]
_KERAS_SUFFIXES = (".keras", ".h5")

DEFAULT_WEIGHTS = os.path.join("weights", "model_salicon_cpu.pb")
DEFAULT_DATASET = "salicon"
_FILE_NAME = re.compile(r"model_([a-z0-9]+)_(cpu|gpu)", re.IGNORECASE)
_DOWNLOAD_HINT = (
    "Get MSI-Net's weights from the author's release (github.com/alexanderkroner/saliency, download.py): "
    "model_salicon_cpu.pb is in the zip with Google Drive id 1Xy9C72pcA8DO4CY0rc6B7wsuE9L9DDZY, all models are in "
    "the Drive folder 1GI7i6GpfI-FoklP3vCc6vxe3T9nk3V2n; unzip it to weights/model_salicon_cpu.pb (the default "
    "path). The TF2 SavedModel folder from Hugging Face (alexanderkroner/MSI-Net) works too."
)

logger = logging.getLogger(__name__)


class Teacher:
    """A loaded MSI-Net: call it on batches; it carries what a manifest needs.

    Attributes:
        name: file or folder name of the weights (e.g. "model_salicon_cpu.pb").
        sha256: hex digest of the weights file (of every file, in path order, for a folder).
        path: the path it was loaded from.
        format: "frozen_graph", "saved_model" or "keras".
        backend: what runs: "graph" (the published graph itself) or "keras" (the Keras MSI-Net).
        dataset: the dataset the model was trained on (from the file name, default "salicon").
        input_size: (H, W) the model was trained at, `INPUT_SIZES[dataset]`.
    """

    def __init__(self, function, *, name, sha256, path, format, backend, dataset):
        self._function = function
        self.name = name
        self.sha256 = sha256
        self.path = path
        self.format = format
        self.backend = backend
        self.dataset = dataset
        self.input_size = INPUT_SIZES[dataset]

    def __call__(self, images):
        """Predict saliency for a batch.

        Args:
            images: (N, H, W, 3) RGB 0..255 (numpy or tensor, any real dtype); H and W multiples of 8.

        Returns:
            float32 tensor (N, H, W, 1), each map min-max normalised to [0, 1).
        """
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"{self.name}: expected a batch of RGB images (N, H, W, 3), got shape {tuple(images.shape)}; "
                "add a batch axis with images[None] for a single image"
            )
        return tf.convert_to_tensor(self._function(tf.cast(images, tf.float32)), dtype=tf.float32)

    def manifest(self):
        """A JSON-ready description of the teacher for export manifests."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "format": self.format,
            "backend": self.backend,
            "dataset": self.dataset,
            "input_size": list(self.input_size),
            "contract": "msinet",
        }

    def __repr__(self):
        return f"Teacher({self.name!r}, format={self.format!r}, backend={self.backend!r}, input_size={self.input_size})"


def dataset_from_path(path):
    """The dataset named by `model_<dataset>_{cpu,gpu}` in the path's base name, else "salicon"."""
    match = _FILE_NAME.search(os.path.basename(os.path.normpath(path)))
    if match and match.group(1).lower() in INPUT_SIZES:
        return match.group(1).lower()
    return DEFAULT_DATASET


def _keras_function(model, jit_compile=False):
    """A retrace-free tf.function over a Keras MSI-Net returning the normalised map."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], jit_compile=jit_compile)
    def run(images):
        outputs = model(images, training=False)
        return outputs["saliency"] if isinstance(outputs, dict) else outputs

    return run


def _graph_uses_nchw(graph_def):
    return any(node.attr["data_format"].s == b"NCHW" for node in graph_def.node if "data_format" in node.attr)


def _frozen_graph_function(graph_def):
    """Import the GraphDef under wrap_function as a TF2 concrete function `input:0 -> output:0`.

    `input_map` feeds `input:0` from a (None, None, None, 3) argument, whatever static shape or default the
    exported placeholder has, and the function returns `output:0`, so it is already pruned to input -> output;
    `WrappedFunction.prune` would only copy the ~100 MB graph once more (about 2 s).
    """

    def import_graph(images):
        (output,) = tf.compat.v1.import_graph_def(
            graph_def, input_map={"input:0": images}, return_elements=["output:0"], name=""
        )
        return output

    return tf.compat.v1.wrap_function(import_graph, [tf.TensorSpec([None, None, None, 3], tf.float32)])


def _load_frozen_graph(path, nchw_fallback, jit_compile):
    graph_def = convert.read_graph_def(path)
    names = {node.name for node in graph_def.node}
    missing = [name for name in ("input", "output") if name not in names]
    if missing:
        placeholders = [node.name for node in graph_def.node if node.op == "Placeholder"]
        raise ValueError(
            f"{path}: the graph has no node(s) {missing}; expected MSI-Net's frozen graph with input 'input' "
            f"(float32 NHWC RGB 0..255) and output 'output' (placeholders found: {placeholders[:5]})"
        )
    function = _frozen_graph_function(graph_def)
    if not _graph_uses_nchw(graph_def) or tf.config.list_physical_devices("GPU"):
        return function, "graph"
    try:  # Some NCHW kernels exist on CPU (oneDNN builds); a tiny probe tells whether this graph runs.
        function(tf.zeros([1, 16, 16, 3]))
        return function, "graph"
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError) as e:
        # Keep the kernel's own complaint, not the traceback TF wraps around it.
        lines = [line for line in str(e).splitlines() if line.strip() and not line[0].isspace()]
        lines = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node"))]
        reason = lines[-1] if lines else str(e)
    message = (
        f"{path}: this is a GPU (NCHW) MSI-Net graph and TensorFlow cannot run it on this machine's CPU "
        f"({reason}). Use the _cpu file (e.g. model_salicon_cpu.pb) or load it through the Keras conversion "
        "(load_teacher(path, nchw_fallback='convert'))"
    )
    if nchw_fallback == "error":
        raise RuntimeError(message)
    logger.warning("%s; running the same weights through the Keras MSI-Net instead.", message.split(". Use")[0])
    model = convert.load_constants_into(msinet.build_msinet(), convert.constants_from_graph_def(graph_def, path), path)
    return _keras_function(model, jit_compile), "keras"


def _serving_signature(path, expected):
    """Load a SavedModel and its `serving_default` signature; errors name the folder and what was `expected`."""
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - TF raises many types for a bad folder; all mean the same here.
        raise ValueError(f"{path}: cannot load as a TF2 SavedModel ({type(e).__name__}: {e})") from e
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise ValueError(
            f"{path}: the SavedModel has no 'serving_default' signature (found: {sorted(signatures)}); {expected}"
        )
    return loaded, signatures["serving_default"]


def _load_saved_model(path):
    loaded, signature = _serving_signature(
        path, "expected MSI-Net's TF2 SavedModel from Hugging Face / Kaggle (alexanderkroner/MSI-Net)")
    _, input_specs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if len(input_specs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"{path}: signature 'serving_default' has inputs {sorted(input_specs)} and outputs {sorted(outputs)}; "
            "expected MSI-Net's single float32 (N, H, W, 3) image input and single saliency output"
        )
    (input_key,) = input_specs
    (output_key,) = outputs
    spec = input_specs[input_key]
    if spec.dtype != tf.float32 or spec.shape.rank not in (None, 4):
        raise ValueError(
            f"{path}: signature input {input_key!r} is {spec}; expected float32 (N, H, W, 3) RGB 0..255"
        )

    def run(images):
        return signature(**{input_key: images})[output_key]

    run.loaded = loaded  # keep the trackable object (and its functions) alive
    return run


def _load_keras(path, jit_compile):
    try:
        if path.endswith(".weights.h5"):
            model = msinet.build_msinet()
            model.load_weights(path)
        else:
            model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - h5py, zipfile and Keras raise their own types for a foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path}: cannot load as the Keras MSI-Net ({type(e).__name__}: {first}); expected a file "
                         "saved from teacher.msinet's model (teacher/convert.py makes one)") from e
    return _keras_function(model, jit_compile)


def check_keras_file(path):
    """Refuse a `.keras` that is not a zip archive or an `.h5` that is not HDF5, naming it (before any loader, whose
    own errors say "File not found" or nothing about the file)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model file: a .keras file is a zip archive and this one is not "
                         "(corrupt, truncated, or another format renamed); save the model again with model.save(path)")
    if path.endswith(".h5"):
        import h5py

        if not h5py.is_hdf5(path):
            raise ValueError(f"{path}: not an HDF5 file (corrupt, truncated, or another format renamed); a .h5 or "
                             ".weights.h5 teacher is a Keras file saved with model.save or model.save_weights")


# ---------------------------------------------------------------------------------------------------------
# Any saliency model that follows the contract.


class ContractTeacher:
    """A saliency model that follows `CONTRACT`: call it on same-size batches, or `run_images` on any sizes.

    Attributes:
        name, sha256, path: the file or folder, its hash (every file of a folder) and where it was loaded from.
        format: "saved_model", "keras" or "builtin" (`teacher.builtin`); backend: "graph" (signature), "keras" or
            a built-in's ("keras", "litert", "keras+litert").
        contract: `CONTRACT`.
        input_size: None (there is no fixed input size: each image runs at its own size).
        max_input_side: images with a longer side are shrunk (area, aspect kept) before the model; None: never.
        map_max_side: the longest side of the teacher map stored in distillation records (aspect kept).
        num_params: number of weights (variables), or None when the model has none (frozen constants).
    """

    contract = CONTRACT
    input_size = None

    def __init__(self, function, *, name, sha256, path, format, backend, num_params=None, max_input_side=None,
                 map_max_side=DEFAULT_MAP_MAX_SIDE, keep_alive=None):
        for arg, value in (("max_input_side", max_input_side), ("map_max_side", map_max_side)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{path}: `{arg}` must be a positive int or None. Received: {arg}={value!r}")
        if map_max_side is None:
            raise ValueError(f"{path}: `map_max_side` must be a positive int. Received: None")
        self._function = function
        self._keep_alive = keep_alive  # the loaded SavedModel / Keras model behind `function`
        self.name = name
        self.sha256 = sha256
        self.path = path
        self.format = format
        self.backend = backend
        self.num_params = num_params
        self.max_input_side = None if max_input_side is None else int(max_input_side)
        self.map_max_side = int(map_max_side)

    def _violation(self, part, detail, fix):
        return ValueError(f"{self.path}: does not follow the saliency-model contract ({CONTRACT_TEXT}): {part} "
                          f"{detail}. {fix}")

    def __call__(self, images):
        """The model's maps for a batch of same-size images.

        Args:
            images: (B, H, W, 3) RGB 0..255 (numpy or tensor, any real dtype; cast to float32).

        Returns:
            float32 tensor (B, H, W, 1), non-negative (an unnormalised density).

        Raises:
            ValueError: the input is not a batch of RGB images, or the model's output breaks the contract
                (its shape, non-finite or negative values), naming the file.
        """
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"{self.name}: expected a batch of RGB images (B, H, W, 3), got shape {tuple(images.shape)}; "
                "add a batch axis with images[None] for a single image"
            )
        outputs = self._function(tf.cast(images, tf.float32))
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        if isinstance(outputs, (list, tuple)):
            if len(outputs) != 1:
                raise self._violation("outputs:", f"the model returns {len(outputs)} tensors",
                                      "Return a single map (B, H, W, 1)")
            outputs = outputs[0]
        maps = tf.convert_to_tensor(outputs)
        expected = (*images.shape[:3], 1)
        if tuple(maps.shape) != expected:
            raise self._violation(
                "output shape", f"is {tuple(maps.shape)} for an input of {tuple(images.shape)}",
                f"Expected {expected}: one channel at the input's own size (resize back inside the model)")
        maps = tf.cast(maps, tf.float32)
        if not bool(tf.reduce_all(tf.math.is_finite(maps))):
            raise self._violation("output values", "are not all finite (NaN or inf)", "Fix the model")
        low = float(tf.reduce_min(maps))
        if low < 0:
            raise self._violation(
                "output has negative values", f"(min {low:.4g})",
                "Return a non-negative density, e.g. exp of log-density, a softmax, or clip at 0 inside the model")
        return maps

    def run_images(self, images, batch_size=8):
        """Density maps for images of any sizes, each at the size it ran at.

        Images are shrunk to `max_input_side` first when set (area, aspect kept); equal-size images run
        together, `batch_size` at a time.

        Args:
            images: a sequence of (H_i, W_i, 3) RGB 0..255 arrays.
            batch_size: most images per model call.

        Returns:
            A list of float32 (h_i, w_i) maps: (H_i, W_i), or the shrunk size.
        """
        import cv2

        inputs = []
        for image in images:
            image = np.asarray(image)
            size = capped_size(image.shape[0], image.shape[1], self.max_input_side)
            if size != image.shape[:2]:
                image = cv2.resize(image.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
            inputs.append(np.asarray(image, np.float32))
        groups = {}
        for i, image in enumerate(inputs):
            groups.setdefault(image.shape, []).append(i)
        maps = [None] * len(inputs)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                batch = self(np.stack([inputs[i] for i in chunk])).numpy()
                for i, saliency_map in zip(chunk, batch):
                    maps[i] = saliency_map[:, :, 0]
        return maps

    def manifest(self):
        """A JSON-ready description of the teacher for export manifests."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "format": self.format,
            "backend": self.backend,
            "contract": self.contract,
            "input_size": None,
            "max_input_side": self.max_input_side,
            "map_max_side": self.map_max_side,
        }

    def __repr__(self):
        return (f"ContractTeacher({self.name!r}, format={self.format!r}, max_input_side={self.max_input_side}, "
                f"map_max_side={self.map_max_side})")


def _check_input_spec(path, where, shape, dtype):
    """The declared input against the contract: rank 4, float32, 3 channels, any H and W."""
    head = f"{path}: does not follow the saliency-model contract ({CONTRACT_TEXT}):"
    shape = tf.TensorShape(shape)
    if shape.rank is not None and shape.rank != 4:
        raise ValueError(f"{head} input rank is {shape.rank} ({where} has shape {shape}); the contract needs rank 4 "
                         "(B, H, W, 3): give the model a batch axis")
    dtype = tf.as_dtype(dtype)
    if dtype != tf.float32:
        raise ValueError(f"{head} input dtype is {dtype.name} ({where}); the contract needs float32 RGB 0..255: "
                         "take float32 and cast inside the model if it needs another type")
    if shape.rank == 4 and shape[-1] is not None and shape[-1] != 3:
        raise ValueError(f"{head} input channels are {shape[-1]} ({where} has shape {shape}); the contract needs "
                         "3 (RGB)")
    if shape.rank == 4 and (shape[1] is not None or shape[2] is not None):
        raise ValueError(f"{head} input shape {shape} ({where}) fixes H and W; the contract needs any size "
                         "(None, None, None, 3): resize inside the model")


def _contract_saved_model(path):
    loaded, signature = _serving_signature(
        path, "save it with tf.saved_model.save(module, path, signatures=...) or Keras model.export(path), "
        f"following the saliency-model contract ({CONTRACT_TEXT})")
    _, input_specs = signature.structured_input_signature
    if len(input_specs) != 1:
        raise ValueError(f"{path}: does not follow the saliency-model contract ({CONTRACT_TEXT}): inputs: the "
                         f"signature takes {sorted(input_specs)}; the contract needs a single image input")
    ((key, spec),) = input_specs.items()
    _check_input_spec(path, f"signature input {key!r}", spec.shape, spec.dtype)

    def run(images):
        return signature(**{key: images})

    variables = getattr(loaded, "variables", None) or []
    return run, int(sum(np.prod(v.shape) for v in variables)) or None, loaded


def _contract_keras(path):
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - deserialisation fails in many ways; the fix is the same.
        raise ValueError(f"{path}: cannot load as a Keras model ({type(e).__name__}: {e}); a model with custom "
                         "layers needs them registered (keras.saving.register_keras_serializable), or export it "
                         "as a SavedModel (model.export(path))") from e
    if len(model.inputs) != 1:
        raise ValueError(f"{path}: does not follow the saliency-model contract ({CONTRACT_TEXT}): inputs: the "
                         f"model takes {len(model.inputs)} inputs; the contract needs a single image input")
    _check_input_spec(path, f"Keras input {model.inputs[0].name!r}", model.inputs[0].shape, model.inputs[0].dtype)
    return _keras_model_function(model)


def _keras_model_function(model):
    """(a retrace-free tf.function over `model`, its number of weights or None, `model` to keep alive)."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def run(images):
        return model(images, training=False)

    return run, int(model.count_params()) or None, model


def load_contract_teacher(path, max_input_side=None, map_max_side=DEFAULT_MAP_MAX_SIDE):
    """Load a Keras file or SavedModel folder that follows `CONTRACT`, checked with a probe call.

    Args:
        path: a SavedModel folder (signature `serving_default`, one image input), a `.keras` / `.h5` file, or
            a built-in model name or spec (`teacher.builtin`).
        max_input_side: shrink images with a longer side before the model (aspect kept); None: never.
        map_max_side: longest side of the teacher maps the export stores. Defaults to 320.

    Returns:
        A `ContractTeacher`.

    Raises:
        ValueError: the file cannot be loaded, or breaks the contract; the message names the part (inputs,
            input rank, input dtype, input channels, input shape, outputs, output shape, output values,
            negative values).
    """
    path = os.fspath(path)
    name = os.path.basename(os.path.normpath(path))
    if builtin.is_builtin(path):
        fmt, name, sha256 = "builtin", builtin.canonical(path), builtin.sha256(path)
        backend = builtin.backend(path)
        function, num_params, keep_alive = builtin.load_builtin(path)
    elif os.path.isdir(path):
        fmt, backend, sha256 = "saved_model", "graph", file_sha256(path)
        function, num_params, keep_alive = _contract_saved_model(path)
    elif path.endswith(_KERAS_SUFFIXES):
        fmt, backend, sha256 = "keras", "keras", file_sha256(path)
        function, num_params, keep_alive = _contract_keras(path)
    else:
        raise ValueError(f"{path}: a contract teacher is a SavedModel folder, a Keras file (.keras, .h5) or a "
                         f"built-in model name {list(builtin.names())}")
    teacher = ContractTeacher(function, name=name, sha256=sha256,
                              path=path, format=fmt, backend=backend, num_params=num_params,
                              max_input_side=max_input_side, map_max_side=map_max_side, keep_alive=keep_alive)
    probe = np.random.default_rng(0).uniform(0.0, 255.0, PROBE_SHAPE).astype(np.float32)
    try:
        maps = teacher(probe).numpy()
    except Exception as e:  # noqa: BLE001 - whatever the model raises on a valid input breaks the contract.
        if isinstance(e, ValueError) and str(e).startswith(path):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path}: does not follow the saliency-model contract ({CONTRACT_TEXT}): the probe call on "
                         f"a float32 {PROBE_SHAPE} batch failed ({type(e).__name__}: {first})") from e
    constant = [m for m in maps[..., 0] if is_constant_map(m)]
    if constant:
        raise teacher._violation(
            "output values", f"are constant (every pixel {float(constant[0].flat[0]):.4g}) on the probe images",
            "A saliency map must vary over the image: check that the model's weights were loaded (an all-zero or "
            "untrained model gives a constant map)")
    return teacher


def is_constant_map(saliency_map):
    """True when a map does not vary: all zeros, or its range below 1/65535 of its peak (what a record's 16-bit
    teacher map, divided by its maximum, could resolve)."""
    saliency_map = np.asarray(saliency_map, np.float64)
    peak = float(np.max(np.abs(saliency_map))) if saliency_map.size else 0.0
    return peak == 0.0 or float(np.ptp(saliency_map)) <= peak / 65535.0


def _saved_model_is_msinet(path):
    """True when the SavedModel has MSI-Net's published signature names or weight constants (module docstring)."""
    try:
        proto = convert.read_saved_model_proto(path)
    except (FileNotFoundError, ValueError):
        return True  # not a readable SavedModel: the MSI-Net loader reports it as before
    for meta_graph in proto.meta_graphs:
        signature = meta_graph.signature_def.get("serving_default")
        if signature is not None and (set(signature.inputs), set(signature.outputs)) in _MSINET_SIGNATURES:
            return True
    names = {node.name for meta_graph in proto.meta_graphs for node in convert._graph_nodes(meta_graph.graph_def)}
    return all(name in names for name in _MSINET_CONSTANTS)


def _keras_file_is_msinet(path):
    """True when a `.keras` / `.h5` model's layers have all of `teacher.msinet`'s convolution names."""
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                config = json.loads(f.attrs["model_config"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False  # unreadable: the contract loader reports it
    names = {layer.get("name") for layer in config.get("config", {}).get("layers", [])}
    return set(msinet.SCOPE_TO_LAYER.values()) <= names


def teacher_kind(path, teacher_format="auto"):
    """Which loader a teacher file takes: "msinet" (MSI-Net's published formats) or "contract".

    `teacher_format="auto"` decides from the file without running it (module docstring); "msinet" or
    "contract" forces the route. A frozen `.pb` and a `.weights.h5` can only be MSI-Net; a built-in model name
    or spec (`teacher.builtin`) is a contract model.
    """
    if teacher_format not in TEACHER_FORMATS:
        raise ValueError(f"teacher_format must be one of {TEACHER_FORMATS}. Received: {teacher_format!r}")
    path = os.fspath(path)
    if builtin.is_builtin(path):
        if teacher_format == "msinet":
            raise ValueError(f"{path}: a built-in contract model ({list(builtin.names())}), not MSI-Net; "
                             "use teacher_format 'auto' or 'contract'")
        return "contract"
    if not os.path.isdir(path) and path.endswith((".pb", ".weights.h5")):
        if teacher_format == "contract":
            raise ValueError(f"{path}: a {'.pb' if path.endswith('.pb') else '.weights.h5'} file cannot be a "
                             "contract teacher; the contract takes a SavedModel folder or a Keras file (.keras, .h5)")
        return "msinet"
    if teacher_format != "auto":
        return teacher_format
    if os.path.isdir(path):
        return "msinet" if _saved_model_is_msinet(path) else "contract"
    if path.endswith(_KERAS_SUFFIXES):
        return "msinet" if _keras_file_is_msinet(path) else "contract"
    return "msinet"  # the MSI-Net loader names the unsupported extension


def _not_found_message(path):
    """A missing teacher: a misspelt built-in name or spec gets the closest name; anything else MSI-Net's hint."""
    if builtin.looks_like_spec(path):
        try:
            builtin.parse_spec(path)
        except builtin.SpecError as e:
            return f"{path}: no such file or folder, and not a built-in model spec: {e}"
    close = builtin.suggest(path)
    if close is not None:
        return (f"{path}: no such file or folder, and not a built-in model name; did you mean {close!r}? Built-in "
                f"models: {', '.join(builtin.names())}")
    return f"{path}: MSI-Net weights not found. {_DOWNLOAD_HINT}"


def load_teacher(path=DEFAULT_WEIGHTS, dataset=None, nchw_fallback="convert", jit_compile=False,
                 teacher_format="auto", max_input_side=None, map_max_side=DEFAULT_MAP_MAX_SIDE):
    """Load MSI-Net from a published frozen `.pb`, the published SavedModel folder, or a Keras file, or any
    saliency model that follows the contract (a `ContractTeacher`; see the module docstring).

    Args:
        path: `model_<dataset>_{cpu,gpu}.pb`, a SavedModel folder, `.keras` or `.weights.h5`, or a built-in
            model name or spec (`teacher.builtin`: "fastgaze-centre", "attention-center:flip", ...; a
            `ContractTeacher`). Defaults to
            `weights/model_salicon_cpu.pb`.
        dataset: the dataset the weights were trained on (sets `input_size`); defaults to the one in the file
            name `model_<dataset>_...`, else "salicon".
        nchw_fallback: what to do with a `_gpu` (NCHW) graph TF cannot run on this CPU: "convert" (default)
            runs its constants through the Keras MSI-Net with a warning; "error" raises.
        jit_compile: compile the Keras MSI-Net with XLA (Keras routes only).
        teacher_format: "auto" (default; `teacher_kind` decides), "msinet" or "contract".
        max_input_side, map_max_side: contract teachers only, see `load_contract_teacher`.

    Returns:
        A `Teacher` (MSI-Net) or a `ContractTeacher`.

    Raises:
        FileNotFoundError: if `path` does not exist (the message says where to get the weights).
        ValueError: if the file is not what it claims (not a GraphDef, no `input`/`output`, no
            `serving_default` signature, an unknown extension or dataset).
        RuntimeError: for an NCHW graph on a CPU with `nchw_fallback="error"`.
    """
    path = os.fspath(path)
    if nchw_fallback not in ("convert", "error"):
        raise ValueError(f"load_teacher: nchw_fallback must be 'convert' or 'error'. Received: {nchw_fallback!r}")
    if dataset is not None and dataset not in INPUT_SIZES:
        raise ValueError(f"load_teacher: unknown dataset {dataset!r}; choose one of {sorted(INPUT_SIZES)}")
    if builtin.is_builtin(path):
        teacher_kind(path, teacher_format)  # refuses teacher_format="msinet"
        builtin.note_if_shadowing(path)
        return load_contract_teacher(path, max_input_side, map_max_side)
    if not os.path.exists(path):
        raise FileNotFoundError(_not_found_message(path))
    check_keras_file(path)
    if teacher_kind(path, teacher_format) == "contract":
        return load_contract_teacher(path, max_input_side, map_max_side)

    if os.path.isdir(path):
        fmt, backend, function = "saved_model", "graph", _load_saved_model(path)
    elif path.endswith(".pb"):
        fmt = "frozen_graph"
        function, backend = _load_frozen_graph(path, nchw_fallback, jit_compile)
    elif path.endswith((".keras", ".weights.h5")):
        fmt, backend, function = "keras", "keras", _load_keras(path, jit_compile)
    else:
        raise ValueError(
            f"{path}: unsupported MSI-Net weights file; expected a frozen GraphDef model_<dataset>_cpu.pb, a "
            "SavedModel folder, a .keras or a .weights.h5 file"
        )
    return Teacher(
        function,
        name=os.path.basename(os.path.normpath(path)),
        sha256=file_sha256(path),
        path=path,
        format=fmt,
        backend=backend,
        dataset=dataset or dataset_from_path(path),
    )

