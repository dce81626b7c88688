"""The ORIGINAL MSI-Net graph rebuilt TF1-style with random weights, frozen and saved as the author publishes it.

An independent reference for the Keras MSI-Net, the converter and the loaders, written from the author's
`model.py` (class `MSINET`, github.com/alexanderkroner/saliency): `tf.compat.v1` graph mode, variables made with
`get_variable` under the author's scopes (`conv1/conv1_1/kernel` ...), `conv2d + bias_add + relu`, `max_pool`, TF1
`resize_bilinear` (legacy mapping) with the author's NHWC<->NCHW transposes in the "gpu" variant, a `reduce_mean`
global branch and the min-max normalisation whose division is named `output`. It shares no code with `teacher/`.

`build_reference_pb` freezes the graph like the author's `optimize()` (variables -> Const, Identity nodes
removed, unused nodes stripped) into `model_salicon_{cpu,gpu}.pb`; `build_reference_savedmodel` converts
that `.pb` to the TF2 SavedModel the author published (wrap_function, prune input:0 -> output:0).
"""

import os

import numpy as np
import tensorflow as tf

MEAN = [103.939, 116.779, 123.68]

# (scope, filters, kernel size, dilation) of the 23 convolutions, in the author's order.
_CONVS = [
    ("conv1/conv1_1", 64, 3, 1), ("conv1/conv1_2", 64, 3, 1),
    ("conv2/conv2_1", 128, 3, 1), ("conv2/conv2_2", 128, 3, 1),
    ("conv3/conv3_1", 256, 3, 1), ("conv3/conv3_2", 256, 3, 1), ("conv3/conv3_3", 256, 3, 1),
    ("conv4/conv4_1", 512, 3, 1), ("conv4/conv4_2", 512, 3, 1), ("conv4/conv4_3", 512, 3, 1),
    ("conv5/conv5_1", 512, 3, 2), ("conv5/conv5_2", 512, 3, 2), ("conv5/conv5_3", 512, 3, 2),
    ("aspp/conv1_1", 256, 1, 1), ("aspp/conv1_2", 256, 3, 4), ("aspp/conv1_3", 256, 3, 8),
    ("aspp/conv1_4", 256, 3, 12), ("aspp/conv1_5", 256, 1, 1), ("aspp/conv2", 256, 1, 1),
    ("decoder/conv1", 128, 3, 1), ("decoder/conv2", 64, 3, 1), ("decoder/conv3", 32, 3, 1),
    ("decoder/conv4", 1, 3, 1),
]
_IN_CHANNELS = {
    "conv1/conv1_1": 3, "conv5/conv5_1": 512, "aspp/conv1_1": 1280, "aspp/conv1_2": 1280, "aspp/conv1_3": 1280,
    "aspp/conv1_4": 1280, "aspp/conv1_5": 1280, "aspp/conv2": 1280, "decoder/conv1": 256,
}


def reference_weights(seed=0):
    """Random He-scaled weights {"<scope>/kernel": HWIO, "<scope>/bias": (out,)} that keep activations alive."""
    rng = np.random.default_rng(seed)
    weights, in_channels = {}, 3
    for scope, filters, size, _ in _CONVS:
        in_channels = _IN_CHANNELS.get(scope, in_channels)
        std = np.sqrt(2.0 / (size * size * in_channels))
        weights[f"{scope}/kernel"] = rng.normal(0.0, std, (size, size, in_channels, filters)).astype(np.float32)
        weights[f"{scope}/bias"] = rng.uniform(-0.1, 0.1, filters).astype(np.float32)
        in_channels = filters
    return weights


class _Graph:
    """The author's MSINET forward pass in TF1 graph style for one data format."""

    def __init__(self, device):
        self.nchw = device == "gpu"
        self.data_format = "NCHW" if self.nchw else "NHWC"
        self.spatial = (2, 3) if self.nchw else (1, 2)
        self.channel_axis = 1 if self.nchw else 3

    def conv(self, x, scope, filters, size, dilation, relu=True):
        in_channels = x.shape[self.channel_axis]
        with tf.compat.v1.variable_scope(scope):
            kernel = tf.compat.v1.get_variable("kernel", [size, size, in_channels, filters], tf.float32)
            bias = tf.compat.v1.get_variable("bias", [filters], tf.float32)
            x = tf.nn.convolution(x, kernel, padding="SAME", dilations=dilation, data_format=self.data_format)
            x = tf.nn.bias_add(x, bias, data_format=self.data_format)
            return tf.nn.relu(x) if relu else x

    def pool(self, x, stride, padding):
        return tf.nn.max_pool2d(x, 2, stride, padding, data_format=self.data_format)

    def upsample(self, x, shape, factor):
        if self.nchw:
            x = tf.transpose(x, (0, 2, 3, 1))
        size = (shape[self.spatial[0]] * factor, shape[self.spatial[1]] * factor)
        x = tf.compat.v1.image.resize_bilinear(x, size, align_corners=False, half_pixel_centers=False)
        if self.nchw:
            x = tf.transpose(x, (0, 3, 1, 2))
        return x

    def forward(self, images):
        specs = {scope: (filters, size, dilation) for scope, filters, size, dilation in _CONVS}
        conv = lambda x, scope, relu=True: self.conv(x, scope, *specs[scope], relu=relu)  # noqa: E731

        x = images - tf.reshape(tf.constant(MEAN), [1, 1, 1, 3])
        if self.nchw:
            x = tf.transpose(x, (0, 3, 1, 2))
        x = self.pool(conv(conv(x, "conv1/conv1_1"), "conv1/conv1_2"), 2, "VALID")
        x = self.pool(conv(conv(x, "conv2/conv2_1"), "conv2/conv2_2"), 2, "VALID")
        x = conv(conv(conv(x, "conv3/conv3_1"), "conv3/conv3_2"), "conv3/conv3_3")
        layer10 = self.pool(x, 2, "VALID")
        x = conv(conv(conv(layer10, "conv4/conv4_1"), "conv4/conv4_2"), "conv4/conv4_3")
        layer14 = self.pool(x, 1, "SAME")
        x = conv(conv(conv(layer14, "conv5/conv5_1"), "conv5/conv5_2"), "conv5/conv5_3")
        layer18 = self.pool(x, 1, "SAME")
        encoder = tf.concat([layer10, layer14, layer18], axis=self.channel_axis)

        shape = tf.shape(encoder)
        branches = [conv(encoder, f"aspp/conv1_{i}") for i in (1, 2, 3, 4)]
        context = tf.reduce_mean(encoder, axis=self.spatial, keepdims=True)
        context = conv(context, "aspp/conv1_5")
        branches.append(self.upsample(context, shape, 1))
        x = conv(tf.concat(branches, axis=self.channel_axis), "aspp/conv2")

        for i in (1, 2, 3):
            x = conv(self.upsample(x, tf.shape(x), 2), f"decoder/conv{i}")
        x = conv(x, "decoder/conv4", relu=False)
        if self.nchw:
            x = tf.transpose(x, (0, 2, 3, 1))

        x -= tf.reduce_min(x, axis=(1, 2, 3), keepdims=True)
        return tf.divide(x, 1e-7 + tf.reduce_max(x, axis=(1, 2, 3), keepdims=True), name="output")


def _remove_identity_nodes(graph_def):
    """Drop Identity nodes and rewire their consumers, like TransformGraph's `remove_nodes(op=Identity)`."""
    forward = {node.name: node.input[0] for node in graph_def.node if node.op == "Identity"}

    def resolve(name):
        control = name.startswith("^")
        base, _, port = name.lstrip("^").partition(":")
        while base in forward:
            base, _, port = forward[base].lstrip("^").partition(":")
        return ("^" if control else "") + base + (f":{port}" if port and port != "0" else "")

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op == "Identity":
            continue
        new = out.node.add()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(resolve(name) for name in node.input)
    return out


def build_reference_pb(path, seed=0, device="cpu", weights=None):
    """Freeze the original MSI-Net graph with random weights into a binary GraphDef at `path`.

    Args:
        path: output file, conventionally `model_salicon_cpu.pb` / `model_salicon_gpu.pb`.
        seed: seed of `reference_weights` (ignored when `weights` is given).
        device: "cpu" (NHWC convs) or "gpu" (NCHW convs and the author's transposes; TF has no CPU kernels
            for some of them).
        weights: optional {"<scope>/kernel"|"<scope>/bias": array}; defaults to `reference_weights(seed)`.

    Returns:
        The weights dict that was frozen into the graph.
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"build_reference_pb: device must be 'cpu' or 'gpu'. Received: device={device!r}")
    weights = reference_weights(seed) if weights is None else weights
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        _Graph(device).forward(images)
        variables = tf.compat.v1.global_variables()
        with tf.compat.v1.Session(graph=graph) as session:
            for variable in variables:
                variable.load(weights[variable.op.name], session)
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), ["output"]
            )
    frozen = tf.compat.v1.graph_util.extract_sub_graph(_remove_identity_nodes(frozen), ["output"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(frozen.SerializeToString())
    return weights


def build_reference_savedmodel(directory, pb_path, output_key="output"):
    """Convert a frozen MSI-Net `.pb` to a TF2 SavedModel the way the author did for Hugging Face / Kaggle.

    The graph is imported under `tf.compat.v1.wrap_function`, pruned `input:0 -> output:0` and saved with
    a `serving_default` signature taking float32 (-1, -1, -1, 3). The weights stay Const nodes inside the
    (nested) function bodies; the SavedModel has no variables.

    Args:
        directory: SavedModel folder to write.
        pb_path: the frozen GraphDef (e.g. from `build_reference_pb`).
        output_key: the signature's output name (the author's revisions used "output" and others).
    """
    graph_def = tf.compat.v1.GraphDef()
    with open(pb_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    pruned = wrapped.prune(wrapped.graph.as_graph_element("input:0"), wrapped.graph.as_graph_element("output:0"))

    module = tf.Module()
    module.pruned = pruned

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="input_1")])
    def serve(images):
        return {output_key: module.pruned(images)}

    tf.saved_model.save(module, directory, signatures={"serving_default": serve})
