"""attention-center, a built-in pretrained saliency model (Google's `center.tflite`, Apache-2.0).

The file ships with this package unchanged (`LICENSE` and `NOTICE` beside it; its sha256 is checked when it
loads). Its only declared output is the predicted centre (`concat:0`, [1, 2]), computed from a full-resolution
saliency map, the tensor `Sigmoid` [1, 480, 640]. Here that map is made a declared output: the flatbuffer's
subgraph outputs and its signature are rewritten in memory (LiteRT's own schema, `ModelT` object API), and the
rewritten bytes run in LiteRT's ordinary `Interpreter`.

    from teacher.attention_center import AttentionCenter
    model = AttentionCenter()            # one interpreter; about 1 s per image on a CPU core
    raw = model.raw_map(image)           # uint8 RGB (H, W, 3) -> float32 (H, W) in (0, 1), any H and W
    density = postprocess(raw, power=0.5, sigma=0.3)   # the defaults, chosen on val

Input convention (the repository's `encode_with_centers.py`): float32 [1, 480, 640, 3] RGB / 255. Any image
size is letterboxed into 480x640 with the project's own box (`datasets.records.fit_box`: aspect kept, rounded,
centred), the map's box is cropped and resized back to the image's size. `filename:0` (a string) is fed empty.
"""

import hashlib
import os

import numpy as np

MODEL_FILE = "center.tflite"
# sha256 of google/attention-center's model/center.tflite at commit 91f6d6ea (2,111,740 bytes).
MODEL_SHA256 = "8968fe8266a305c356334a1dcd5c58541b58be916decd32c55c6f51fe65273de"
INPUT_SIZE = (480, 640)
SALIENCY_TENSOR = "Sigmoid"
SALIENCY_OUTPUT = "saliency"
# The letterbox bars: black, the image's own mean colour, or the project's ImageNet mean (`PAD_COLOUR`). The
# image's mean was chosen on the 61 letterboxed images of MIT1003 val (OSIE's are all 4:3, without bars): mean
# NSS + CC 2.322 against 2.315 (ImageNet mean) and 2.262 (black), experiments/teacher_choice.py.
PAD_COLOURS = ("black", "image-mean", "imagenet-mean")
DEFAULT_PAD = "image-mean"
# Post-processing chosen on the val splits of MIT1003 and OSIE (experiments/teacher_choice.py, mean NSS + CC,
# powers 0.25-1 x sigmas none, 0.15-0.4): the raw map to the power `power`, times a centred Gaussian of sigma
# `sigma` times each side (None: no prior). Val NSS 1.513 -> 1.757 on MIT1003, 2.379 -> 2.417 on OSIE.
DEFAULT_POWER = 0.5
DEFAULT_SIGMA = 0.3
# What the built-in "attention-center" runs with (part of its sha256 in manifests).
SETTINGS = {"pad": DEFAULT_PAD, "power": DEFAULT_POWER, "sigma": DEFAULT_SIGMA}

_LITERT_HINT = ("the built-in attention-center model runs in LiteRT: pip install ai-edge-litert (or the deploy "
                "extra: pip install -e '.[deploy]')")


def model_path():
    """The path of the `center.tflite` shipped in this package (package data)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), MODEL_FILE)


def read_model(path=None):
    """The bytes of the model file, refused unless their sha256 is `MODEL_SHA256` (a damaged or swapped file)."""
    path = model_path() if path is None else os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not attention-center's {MODEL_SHA256} (a damaged or replaced "
                         "file); reinstall the package, or copy model/center.tflite of google/attention-center at "
                         "commit 91f6d6ea there")
    return data


def with_saliency_output(data, tensor_name=SALIENCY_TENSOR, output_name=SALIENCY_OUTPUT):
    """The flatbuffer `data` with the tensor `tensor_name` added to its subgraph's outputs and to its signature
    (as `output_name`), so the interpreter keeps and returns it like any declared output.

    Raises:
        ValueError: the model has no tensor of that name.
    """
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise ImportError(f"{e}; {_LITERT_HINT}") from e

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    subgraph = model.subgraphs[0]
    names = [tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name for tensor in subgraph.tensors]
    if tensor_name not in names:
        raise ValueError(f"attention-center: the model has no tensor {tensor_name!r}; is it google/attention-center's "
                         "center.tflite?")
    index = names.index(tensor_name)
    if index not in list(subgraph.outputs):
        subgraph.outputs = np.asarray(list(subgraph.outputs) + [index], np.int32)
    for signature in model.signatureDefs or []:
        if all(entry.tensorIndex != index for entry in signature.outputs):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = output_name.encode(), index
            signature.outputs.append(entry)
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def letterbox_box(height, width, size=INPUT_SIZE):
    """(top, left, h, w) of an image of `height` x `width` in a `size` frame: the project's one box rule."""
    from datasets.records import fit_box

    return tuple(int(v) for v in fit_box(int(height), int(width), tuple(int(s) for s in size)))


def _resize(array, size):
    """OpenCV resize to `size` (h, w): area averaging when shrinking, bilinear otherwise."""
    import cv2

    height, width = (int(s) for s in size)
    if array.shape[:2] == (height, width):
        return array
    shrink = height <= array.shape[0] and width <= array.shape[1]
    out = cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape(height, width, *array.shape[2:])


def pad_value(image, pad=DEFAULT_PAD):
    """The RGB 0..255 colour of the letterbox bars for `image`: see `PAD_COLOURS`."""
    if pad == "black":
        return np.zeros(3, np.float32)
    if pad == "image-mean":
        return np.asarray(image, np.float32).reshape(-1, 3).mean(axis=0)
    if pad == "imagenet-mean":
        from datasets.records import PAD_COLOUR

        return np.asarray(PAD_COLOUR, np.float32)
    raise ValueError(f"pad must be one of {PAD_COLOURS}. Received: pad={pad!r}")


def letterbox(image, pad=DEFAULT_PAD, size=INPUT_SIZE):
    """An RGB 0..255 (H, W, 3) image (uint8 or float) in a float32 `size` frame, RGB 0..1, and its box
    (top, left, h, w)."""
    image = np.asarray(image)
    top, left, h, w = letterbox_box(image.shape[0], image.shape[1], size)
    frame = np.empty((*size, 3), np.float32)
    frame[:] = pad_value(image, pad)
    frame[top:top + h, left:left + w] = _resize(image.astype(np.float32), (h, w))
    return frame / 255.0, (top, left, h, w)


def unletterbox(frame_map, box, shape):
    """The map of the image's `box` in a frame map, resized (bilinear) to the image's `shape` (H, W)."""
    import cv2

    top, left, h, w = box
    crop = np.ascontiguousarray(frame_map[top:top + h, left:left + w], np.float32)
    if crop.shape == tuple(shape):
        return crop
    return cv2.resize(crop, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


def centre_prior(shape, sigma):
    """A centred Gaussian (H, W), 1 at the centre, sigma `sigma` times each side (FastGaze's prior's shape)."""
    offsets = [(np.arange(n) - (n - 1) / 2.0) / (sigma * n) for n in shape]
    return np.exp(-0.5 * (offsets[0][:, None] ** 2 + offsets[1][None, :] ** 2))


def postprocess(raw_map, power=DEFAULT_POWER, sigma=DEFAULT_SIGMA):
    """`raw_map ** power`, times `centre_prior(shape, sigma)` unless sigma is None: float32, non-negative."""
    out = np.power(np.maximum(np.asarray(raw_map, np.float64), 0.0), power)
    if sigma is not None:
        out = out * centre_prior(out.shape, sigma)
    return out.astype(np.float32)


class AttentionCenter:
    """The interpreter over the rewritten model: raw saliency maps of RGB uint8 images of any size.

    Args:
        path: the `.tflite` (default: the shipped one; its sha256 must match).
        num_threads: LiteRT's CPU threads (None: its default).
        pad: the letterbox bars (`PAD_COLOURS`).
    """

    def __init__(self, path=None, num_threads=None, pad=DEFAULT_PAD):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ImportError(f"{e}; {_LITERT_HINT}") from e
        pad_value(np.zeros((1, 1, 3), np.uint8), pad)  # refuses an unknown pad
        self.pad = pad
        self.path = model_path() if path is None else os.fspath(path)
        self._interpreter = Interpreter(model_content=with_saliency_output(read_model(self.path)),
                                        num_threads=num_threads)
        self._runner = self._interpreter.get_signature_runner()

    def run_frame(self, frame):
        """The `Sigmoid` map (480, 640) of one float32 RGB 0..1 frame (480, 640, 3)."""
        outputs = self._runner(image=np.asarray(frame, np.float32)[None], filename=np.array(b""))
        return np.asarray(outputs[SALIENCY_OUTPUT][0], np.float32)

    def raw_map(self, image, flip=False, pad=None):
        """The raw map (float32 (H, W), values in (0, 1)) of an RGB 0..255 image (H, W, 3) at its own size.

        `flip` also runs the mirrored image and averages the two maps (the second mirrored back).
        """
        image = np.asarray(image)
        frame, box = letterbox(image, self.pad if pad is None else pad)
        raw = unletterbox(self.run_frame(frame), box, image.shape[:2])
        if flip:
            mirrored = unletterbox(self.run_frame(frame[:, ::-1]), _mirror_box(box), image.shape[:2])
            raw = 0.5 * (raw + mirrored[:, ::-1])
        return raw


def _mirror_box(box, size=INPUT_SIZE):
    """The box of a mirrored image in the mirrored frame (the same unless the bars differ by a pixel)."""
    top, left, h, w = box
    return top, size[1] - left - w, h, w


class AttentionCenterContract:
    """The built-in "attention-center": float32 RGB 0..255 (B, H, W, 3) -> post-processed maps (B, H, W, 1).

    A callable under the saliency-model contract (`teacher.loading.CONTRACT`), each image at its own size.
    """

    num_params = None  # int8 constants in a flatbuffer, no variables

    def __init__(self, model=None, power=DEFAULT_POWER, sigma=DEFAULT_SIGMA):
        self.model = AttentionCenter(pad=SETTINGS["pad"]) if model is None else model
        self.power, self.sigma = power, sigma

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        maps = [postprocess(self.model.raw_map(image), self.power, self.sigma) for image in images]
        return np.stack(maps)[..., None]


def load_contract(name="attention-center"):
    """The built-in `name` for `teacher.builtin`'s registry (an `AttentionCenterContract`)."""
    if name != "attention-center":
        raise ValueError(f"unknown attention-center model {name!r}; the built-in is 'attention-center'")
    return AttentionCenterContract()
