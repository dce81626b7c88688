"""Copy MSI-Net's 46 published weight constants into the Keras MSI-Net (`teacher.msinet.build_msinet`).

Both published formats keep the weights as `Const` nodes named `<scope>/kernel` (HWIO, the layout Keras'
`Conv2D` uses, so nothing is transposed) and `<scope>/bias`:

* the TF1 frozen GraphDefs `model_<dataset>_{cpu,gpu}.pb` (top-level nodes);
* the TF2 SavedModel on Hugging Face / Kaggle (inside the function library: `serving_default` calls nested
  `PartitionedCall`s down to the pruned function holding the constants).

The SavedModel's `saved_model.pb` is read as a protobuf, so nothing is executed to extract the weights.
"""

import os

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from teacher.msinet import CONV_SPECS, SCOPE_TO_LAYER, SCOPES, build_msinet

WEIGHT_NAMES = tuple(f"{scope}/{kind}" for scope in SCOPES for kind in ("kernel", "bias"))


def expected_shapes():
    """{"<scope>/kernel": (kh, kw, in, out), "<scope>/bias": (out,)} for the 46 MSI-Net weight tensors."""
    shapes, in_channels = {}, 3
    overrides = {"conv5/conv5_1": 512, "aspp/conv1_1": 1280, "aspp/conv1_2": 1280, "aspp/conv1_3": 1280,
                 "aspp/conv1_4": 1280, "aspp/conv1_5": 1280, "aspp/conv2": 1280, "decoder/conv1": 256}
    for scope, _, filters, size, _, _ in CONV_SPECS:
        in_channels = overrides.get(scope, in_channels)
        shapes[f"{scope}/kernel"] = (size, size, in_channels, filters)
        shapes[f"{scope}/bias"] = (filters,)
        in_channels = filters
    return shapes


def read_graph_def(path):
    """Parse a binary GraphDef file; errors name the file and say what was expected."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected a frozen MSI-Net GraphDef, model_<dataset>_cpu.pb)")
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        data = f.read()
    try:
        graph_def.ParseFromString(data)
    except DecodeError as e:
        raise ValueError(
            f"{path}: not a binary TensorFlow GraphDef ({e}); expected MSI-Net's frozen model_<dataset>_cpu.pb"
        ) from e
    if not graph_def.node:
        raise ValueError(f"{path}: parses as an empty GraphDef; expected MSI-Net's frozen model_<dataset>_cpu.pb")
    return graph_def


def read_saved_model_proto(directory):
    """Parse `<directory>/saved_model.pb` into a `SavedModel` proto; errors name the folder."""
    directory = os.fspath(directory)
    proto_path = os.path.join(directory, "saved_model.pb")
    if not os.path.isfile(proto_path):
        raise FileNotFoundError(f"{directory}: not a SavedModel folder (no saved_model.pb inside)")
    saved_model = saved_model_pb2.SavedModel()
    with open(proto_path, "rb") as f:
        try:
            saved_model.ParseFromString(f.read())
        except DecodeError as e:
            raise ValueError(f"{proto_path}: not a SavedModel protobuf ({e})") from e
    return saved_model


def _graph_nodes(graph_def):
    """Yield every NodeDef of a GraphDef, including those inside its function library."""
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def constants_from_graph_def(graph_def, source="<GraphDef>"):
    """Collect the 46 MSI-Net weight constants from a GraphDef (top level and function library).

    A node matches `<scope>/kernel` when its name equals it or ends in `/<scope>/kernel` (an import prefix).

    Args:
        graph_def: a `tf.compat.v1.GraphDef`.
        source: the file the graph came from, for error messages.

    Returns:
        {"<scope>/kernel" | "<scope>/bias": float32 numpy array}, possibly incomplete (see
        `load_constants_into`, which checks names and shapes).

    Raises:
        ValueError: if two different tensors match the same weight name.
    """
    found = {}
    for node in _graph_nodes(graph_def):
        if node.op != "Const":
            continue
        for name in WEIGHT_NAMES:
            if node.name == name or node.name.endswith("/" + name):
                value = tf.make_ndarray(node.attr["value"].tensor).astype(np.float32)
                if name in found and not np.array_equal(found[name], value):
                    raise ValueError(f"{source}: two different constants match {name!r}; cannot tell which to use")
                found[name] = value
                break
    return found


def extract_constants(path):
    """Read the MSI-Net weight constants from a frozen `.pb` file or a SavedModel folder.

    Returns:
        {"<scope>/kernel" | "<scope>/bias": float32 array} as found (checked by `load_constants_into`).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        saved_model = read_saved_model_proto(path)
        found = {}
        for meta_graph in saved_model.meta_graphs:
            found.update(constants_from_graph_def(meta_graph.graph_def, source=path))
        return found
    return constants_from_graph_def(read_graph_def(path), source=path)


def load_constants_into(model, constants, source="<constants>"):
    """Assign the 46 weight tensors to the Keras MSI-Net's conv layers by scope name.

    Args:
        model: a model from `build_msinet` (layer names from `SCOPE_TO_LAYER`).
        constants: {"<scope>/kernel" | "<scope>/bias": array}.
        source: where the constants came from, for error messages.

    Raises:
        ValueError: listing every missing or mis-shaped tensor, with the expected shapes.
    """
    shapes = expected_shapes()
    missing = [name for name in WEIGHT_NAMES if name not in constants]
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} of the {len(WEIGHT_NAMES)} MSI-Net weight tensors are missing: "
            f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} (found {len(constants)}). Expected Const "
            "nodes named <scope>/kernel and <scope>/bias (e.g. conv1/conv1_1/kernel), as in the author's "
            "model_<dataset>_cpu.pb or the Hugging Face SavedModel."
        )
    wrong = [
        f"{name}: {tuple(np.shape(constants[name]))} (expected {shapes[name]})"
        for name in WEIGHT_NAMES
        if tuple(np.shape(constants[name])) != shapes[name]
    ]
    if wrong:
        raise ValueError(f"{source}: mis-shaped MSI-Net weight tensors: {'; '.join(wrong)}")
    for scope in SCOPES:
        layer = model.get_layer(SCOPE_TO_LAYER[scope])
        layer.set_weights([constants[f"{scope}/kernel"], constants[f"{scope}/bias"]])
    return model


def convert(path, model=None, **build_kwargs):
    """Build (or fill) a Keras MSI-Net with the weights of a published frozen `.pb` or SavedModel.

    Args:
        path: `model_<dataset>_{cpu,gpu}.pb` or the SavedModel folder (Hugging Face `alexanderkroner/MSI-Net`).
        model: an existing `build_msinet` model to fill; built with `build_kwargs` when None.
        **build_kwargs: forwarded to `build_msinet` (e.g. `return_logits=True`).

    Returns:
        The Keras model holding the published weights.
    """
    constants = extract_constants(path)
    if model is None:
        model = build_msinet(**build_kwargs)
    return load_constants_into(model, constants, source=os.fspath(path))
