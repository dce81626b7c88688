"""File helpers shared by every reader and writer: atomic writes and image decoding with clear errors."""

import contextlib
import os
import tempfile

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside `path` and rename it onto `path` only if the block succeeds.

    A reader never sees a half-written file: an exception (or a kill) leaves at most a
    `.<name>.tmp-*` file, which no reader takes as complete.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes_atomic(path, data):
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def decode_image(data, path="<bytes>"):
    """Decode encoded image bytes (JPEG/PNG/BMP...) to uint8 RGB of shape (H, W, 3).

    Grayscale inputs are replicated to three channels and RGBA inputs drop alpha, so every caller
    gets the same layout. Raises ValueError naming `path` if the bytes are not a readable image.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image (expected a JPEG or PNG file); re-download or remove it")
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path):
    """Read an image file as uint8 RGB (H, W, 3); errors name the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read image file ({e.strerror})") from e
    return decode_image(data, path)


def read_map(path):
    """Read a saliency/fixation map image as uint8 grayscale (H, W); errors name the file."""
    path = os.fspath(path)
    data = np.fromfile(path, dtype=np.uint8) if os.path.exists(path) else np.zeros(0, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable map image (expected a grayscale PNG or JPEG)")
    return image


def encode_png(array):
    """Encode a uint8 (H, W) / (H, W, 1) map, uint16 map or uint8 RGB image as PNG bytes."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"cannot encode array of shape {array.shape} and dtype {array.dtype} as PNG")
    return buf.tobytes()


def encode_jpeg(rgb, quality=95):
    """Encode a uint8 RGB image (or grayscale (H, W)) as JPEG bytes."""
    rgb = np.asarray(rgb)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cannot encode array of shape {rgb.shape} as JPEG")
    return buf.tobytes()
