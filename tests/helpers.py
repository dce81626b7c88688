"""Helpers shared by several test modules (not a test module: pytest collects nothing here).

Fixtures shared by several modules live in conftest.py; this module holds plain constants and functions.
"""

import numpy as np

from benchmarks.export_parity import randomize_batchnorm  # noqa: F401  (re-exported for the tests)
from datasets.io import encode_jpeg, encode_png, write_bytes_atomic

# The smallest training run that still exercises every step: TrainConfig keywords and the matching train.py flags.
TINY = dict(image_size=(32, 48), batch_size=2, epochs=2, steps_per_epoch=2, validation_steps=1, verbose=0)
TINY_CLI = ["--image-size", "32", "48", "--batch-size", "2", "--epochs", "2", "--steps-per-epoch", "1",
            "--validation-steps", "1", "--quiet"]


# The shared ResNet18 export's fixed size: small keeps it fast; odd and not a multiple of the student's stride 32,
# so the student pads unevenly inside every converted graph.
RESNET18_EXPORT_SIZE = (45, 70)


def cc(a, b):
    """Pearson correlation of two maps, computed here in numpy (independent of metrics/)."""
    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    return float((a * b).mean())


def weights_file(path):
    """The file holding an export's weights: OpenVINO's .bin beside its .xml, else the file itself."""
    return path[: -len(".xml")] + ".bin" if path.endswith(".xml") else path


def mit1003_original_layout(root, points_rows_cols):
    """MIT1003's original release layout under `root`: ALLSTIMULI + ALLFIXATIONMAPS with two 12x16 stimuli,
    "a" and "b", whose fixation points (row, col) are stored lossless (PNG)."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        image = rng.integers(0, 256, (12, 16, 3), np.uint8)
        write_bytes_atomic(root / "ALLSTIMULI" / f"{name}.jpeg", encode_jpeg(image))
        fix_map = np.full((12, 16), 90, np.uint8)
        write_bytes_atomic(root / "ALLFIXATIONMAPS" / f"{name}_fixMap.jpg", encode_jpeg(fix_map))
        points = np.zeros((12, 16), np.uint8)
        points[tuple(np.array(points_rows_cols).T)] = 255
        write_bytes_atomic(root / "ALLFIXATIONMAPS" / f"{name}_fixPts.png", encode_png(points))

def assert_int8_weights_cannot_saturate(path):
    """Every int8 convolution weight of an ONNX or OpenVINO int8 file within -64..64 (ONNX Runtime's
    `reduce_range`, NNCF's overflow fix).

    x86 int8 kernels without VNNI (AVX2, AVX-512 before VNNI) sum pairs of uint8 activation x int8 weight
    products in int16 (VPMADDUBSW): 2 x 255 x 64 fits, 2 x 255 x 65 saturates. With full-range weights
    EfficientNet-Lite0's ONNX int8 maps fell to CC 0.89 on an AVX2-only CPU while passing on AVX-512 VNNI, and
    FastGaze-centre's OpenVINO int8 ones to 0.88. This holds whatever CPU runs it."""
    if path.endswith(".xml"):
        import openvino as ov

        def consumer(op):  # the convolution an int8 weight feeds, through its Convert/Subtract/Multiply
            while op.get_type_name() not in ("Convolution", "GroupConvolution"):
                op = next(iter(op.output(0).get_target_inputs())).get_node()
            return op.get_type_name()

        # NNCF's overflow fix covers Convolution and MatMul; depthwise ones (GroupConvolution) keep the full range
        # (EfficientNet-Lite0's int8 maps still pass the CC check below on an AVX2-only CPU).
        weights = [op.get_data() for op in ov.Core().read_model(path).get_ops()
                   if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
                   and consumer(op) == "Convolution"]
    else:
        import onnx
        from onnx import numpy_helper

        weights = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def np_conv(x, w, stride, pad, groups=1):
    """torch.nn.functional.conv2d in numpy (an independent reference): x (N, C, H, W), w (O, C / groups, kh, kw),
    no bias, zero padding; groups 1 or depthwise (groups == C == O)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    h_out = (h - kh) // stride + 1
    w_out = (wd - kw) // stride + 1
    out = np.zeros((n, o, h_out, w_out), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * (h_out - 1) + 1 : stride, j : j + stride * (w_out - 1) + 1 : stride]
            if groups == 1:
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
            else:  # depthwise: one input channel per filter
                assert groups == c == o and w.shape[1] == 1
                out += patch * w[None, :, 0, i, j, None, None]
    return out


def np_bn(x, state, key, eps=1e-5):
    """torch's BatchNorm2d in eval mode, in numpy, from a state dict's `key.*` tensors."""
    shape = (1, -1, 1, 1)
    mean = state[f"{key}.running_mean"].reshape(shape)
    var = state[f"{key}.running_var"].reshape(shape)
    return (x - mean) / np.sqrt(var + eps) * state[f"{key}.weight"].reshape(shape) + state[f"{key}.bias"].reshape(shape)
