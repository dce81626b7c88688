"""`load_teacher(path)`: run MSI-Net from whatever the author publishes, as it is.

Accepted files (the loader is chosen from the path):

* `model_<dataset>_{cpu,gpu}.pb`: the TF1 frozen GraphDef, imported under `tf.compat.v1.wrap_function` as a
  TF2 function `input:0 -> output:0`. The `_gpu` graphs use NCHW ops; where TF has no CPU kernel for them the
  constants are copied into the Keras MSI-Net instead (or, with `nchw_fallback="error"`, a clear error).
* a SavedModel folder (the TF2 model on Hugging Face / Kaggle): `tf.saved_model.load`, signature
  `serving_default`, its single output (the key differs between revisions, so it is not hard-coded). Keras 3
  cannot `load_model` this legacy format.
* `.keras` / `.weights.h5`: the Keras MSI-Net of `teacher.msinet`.

Every route returns a `Teacher`: float32 NHWC RGB 0..255 batches -> (N, H, W, 1) maps in [0, 1], plus the
dataset's input size and a name/sha256 for manifests.
"""

import hashlib
import logging
import os
import re

import keras
import tensorflow as tf

from teacher import convert, msinet
from teacher.preprocessing import INPUT_SIZES

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
        }

    def __repr__(self):
        return f"Teacher({self.name!r}, format={self.format!r}, backend={self.backend!r}, input_size={self.input_size})"


def file_sha256(path):
    """sha256 of a file, or of every file under a folder (relative paths and contents, in sorted order)."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        files = sorted(
            os.path.relpath(os.path.join(root, name), path) for root, _, names in os.walk(path) for name in names
        )
    else:
        files = [None]
    for relative in files:
        full = path if relative is None else os.path.join(path, relative)
        if relative is not None:
            digest.update(relative.replace(os.sep, "/").encode() + b"\0")
        with open(full, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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


def _load_saved_model(path):
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - TF raises many types for a bad folder; all mean the same here.
        raise ValueError(f"{path}: cannot load as a TF2 SavedModel ({type(e).__name__}: {e})") from e
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise ValueError(
            f"{path}: the SavedModel has no 'serving_default' signature (found: {sorted(signatures)}); expected "
            "MSI-Net's TF2 SavedModel from Hugging Face / Kaggle (alexanderkroner/MSI-Net)"
        )
    signature = signatures["serving_default"]
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
    if path.endswith(".weights.h5"):
        model = msinet.build_msinet()
        model.load_weights(path)
    else:
        model = keras.saving.load_model(path, compile=False)
    return _keras_function(model, jit_compile)


def load_teacher(path=DEFAULT_WEIGHTS, dataset=None, nchw_fallback="convert", jit_compile=False):
    """Load MSI-Net from a published frozen `.pb`, the published SavedModel folder, or a Keras file.

    Args:
        path: `model_<dataset>_{cpu,gpu}.pb`, a SavedModel folder, `.keras` or `.weights.h5`. Defaults to
            `weights/model_salicon_cpu.pb`.
        dataset: the dataset the weights were trained on (sets `input_size`); defaults to the one in the file
            name `model_<dataset>_...`, else "salicon".
        nchw_fallback: what to do with a `_gpu` (NCHW) graph TF cannot run on this CPU: "convert" (default)
            runs its constants through the Keras MSI-Net with a warning; "error" raises.
        jit_compile: compile the Keras MSI-Net with XLA (Keras routes only).

    Returns:
        A `Teacher`.

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
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: MSI-Net weights not found. {_DOWNLOAD_HINT}")

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

