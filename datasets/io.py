"""File helpers shared by every reader and writer: atomic writes (bytes, text, Keras weights), file digests and
image decoding with clear errors (one rule for transparency: `composite_over_white`)."""

import contextlib
import hashlib
import os
import sys
import tempfile

import cv2
import numpy as np


def import_tensorflow_quietly():
    """Import TensorFlow without its start-up lines (oneDNN notice, CUDA probing) on stderr; for the CLIs.

    TensorFlow 2.21 writes them through absl before its log level applies, so stderr is pointed at /dev/null
    during the import and the device probe only (Python errors still show). A user who set TF_CPP_MIN_LOG_LEVEL sees everything.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA now (its "failed call to cuInit" line); devices stay configurable
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
        plain_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def plain_permissions(path):
    """Give `path` the permissions a plain open() (a file) or os.mkdir() (a folder) would: mkstemp makes 0600
    files and mkdtemp 0700 folders, which other users could not read once renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def save_weights_atomic(model, path):
    """`model.save_weights(path)` (a Keras `.weights.h5`) through a temporary file beside `path`, renamed onto it.

    A reader never sees a half-written file. A failed write (e.g. a full disk) leaves Keras' h5py file open (its
    writer is never closed on an error); left to the interpreter's teardown, h5py's cleanup flushes it into the
    full disk again and the process dies with a segfault after the error message. So the file is closed and the
    temporary removed here, and an h5py error without a file name becomes an OSError naming `path`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Keras takes only names ending in .weights.h5.
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", suffix=".weights.h5", dir=directory)
    os.close(fd)
    try:
        model.save_weights(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        plain_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        _close_h5_files(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:  # h5py's: no file name, HDF5's whole report as text
            raise OSError(e.errno, os.strerror(e.errno) if e.errno else str(e).splitlines()[0], path) from e
        raise


def _close_h5_files(path):
    """Close every h5py file object still open on `path` (its flush may fail again: that error is moot here)."""
    import h5py

    target = os.path.abspath(path)
    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        if os.path.abspath(os.fsdecode(file_id.name)) == target:
            try:
                h5py.File(file_id).close()
            except Exception:  # noqa: BLE001 - e.g. "file write failed" while flushing into a full disk
                pass


def check_writable_dir(path, option="--out", keep=True):
    """Check that a file can be written in folder `path` (creating it if needed), before any long work.

    With `keep=False`, the folders this check created are removed again: a run that then fails on its inputs
    leaves no empty output folder behind (its first write creates the folder).

    Raises:
        ValueError: naming the folder, the reason and the `option` to change.
    """
    path = os.fspath(path)
    created, head = [], os.path.abspath(path)
    while not os.path.lexists(head) and os.path.dirname(head) != head:
        created.append(head)  # deepest first, the order to remove them in
        head = os.path.dirname(head)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{path}: cannot write output there ({e.strerror or e}); choose another {option}") from e
    finally:
        if not keep:
            for folder in created:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
    return path


def write_bytes_atomic(path, data):
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_report(stem, results, markdown):
    """Write `<stem>.json` (the results, indented) and `<stem>.md` (the table), each atomically, creating the folder:
    the pair every benchmark script leaves."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with atomic_write(stem + ".json", "w") as f:
        json.dump(results, f, indent=2)
    with atomic_write(stem + ".md", "w") as f:
        f.write(markdown)


def file_sha256(path):
    """Hex sha256 of a file (read in 1 MiB chunks), or of every file under a folder: relative paths and contents,
    in sorted order."""
    path = os.fspath(path)
    digest = hashlib.sha256()
    if os.path.isdir(path):
        files = sorted(os.path.relpath(os.path.join(root, name), path)
                       for root, _, names in os.walk(path) for name in names)
    else:
        files = [None]
    for relative in files:
        if relative is not None:
            digest.update(relative.replace(os.sep, "/").encode() + b"\0")
        with open(path if relative is None else os.path.join(path, relative), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# Leading bytes of the formats tf.io.decode_image reads (what training decodes records with).
_TF_DECODABLE = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"), (b"GIF87a", "GIF"),
                 (b"GIF89a", "GIF"))
_OTHER_FORMATS = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"))
EXIF_ORIENTATION_TAG = 0x0112


def check_tf_decodable(data, path="<bytes>"):
    """Raise ValueError naming `path` unless `data` is a format tf.io.decode_image reads (JPEG, PNG, BMP, GIF, WebP).

    OpenCV reads more (TIFF, JPEG 2000...), so a file can pass every OpenCV check and still stop training.
    """
    data = bytes(data[:16])
    if any(data.startswith(sig) for sig, _ in _TF_DECODABLE) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return
    kind = next((name for sig, name in _OTHER_FORMATS if data.startswith(sig)), "not a JPEG/PNG/BMP/GIF/WebP")
    raise ValueError(
        f"{path}: {kind} file (whatever its extension); training decodes images with tf.io.decode_image, which "
        "reads only JPEG, PNG, BMP, GIF and WebP. Convert it (e.g. to PNG or JPEG) or remove it"
    )


def exif_orientation(data):
    """The EXIF orientation (1..8) stored in encoded image bytes; 1 (as stored) when there is none."""
    import io

    from PIL import Image  # Pillow comes with matplotlib; it only parses the header here

    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # unreadable or odd EXIF: OpenCV's decode reports unreadable files
        return 1
    return int(value) if value in range(1, 9) else 1


def composite_over_white(rgba):
    """A uint8 RGBA image (H, W, 4) laid over white: uint8 RGB, round((c * a + 255 * (255 - a)) / 255).

    The one rule for transparency, for every reader (`decode_image`, so predict.py, training records and the
    data sets; the web page's `decode_photo`). A transparent pixel has no colour of its own: what a person saw
    was the picture over a background, and white is the one a browser or image viewer shows by default.
    Dropping alpha instead would show the model whatever RGB an editor left under transparent pixels (often
    black or stale colours) that nobody saw.
    """
    rgba = np.asarray(rgba)
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"`rgba` must be a uint8 (H, W, 4) array; received dtype {rgba.dtype} and shape {rgba.shape}")
    colour, alpha = rgba[:, :, :3].astype(np.int32), rgba[:, :, 3:].astype(np.int32)
    return ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def has_transparency(data):
    """Whether encoded image bytes may hold transparent pixels (an alpha channel or a transparent colour)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    except Exception:  # unreadable: OpenCV's decode reports unreadable files
        return False


def _transparent_grey_level(data):
    """The level an 8-bit or 1-bit greyscale PNG marks transparent (its tRNS chunk, which OpenCV ignores), or None."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            level = im.info.get("transparency") if im.mode in ("1", "L") else None
    except Exception:  # unreadable: OpenCV's decode reports unreadable files
        return None
    return level if isinstance(level, int) else None


def apply_orientation(image, orientation):
    """Turn an image (H, W[, C]) as stored into the orientation it is displayed in (EXIF orientation 1..8)."""
    transforms = {
        1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms[int(orientation)](image))


def to_uint8(values, sixteen_bit=False):
    """An image array of any depth as uint8, rounded: the one rule of `decode_image` and the web page.

    16-bit values (uint16, or `sixteen_bit` for a reader that widens them) are divided by 257; floats in [0, 1]
    are multiplied by 255 (float TIFFs); other floats and wider integers are stretched from their range.
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind == "f":
        values = np.nan_to_num(values.astype(np.float64))
        low, high = float(values.min()), float(values.max())
        if 0.0 <= low and high <= 1.0:
            return np.round(values * 255.0).astype(np.uint8)
    else:
        sixteen_bit = sixteen_bit or values.dtype == np.uint16
        values = values.astype(np.int64)
        low, high = int(values.min()), int(values.max())
        if 0 <= low and high <= 65535:
            scaled = values / 257.0 if sixteen_bit or high > 255 else values
            return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.clip(np.round((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


def decode_image(data, path="<bytes>", orientation=True):
    """Decode encoded image bytes (JPEG/PNG/BMP...) to uint8 RGB of shape (H, W, 3).

    Grayscale inputs are replicated to three channels and images with transparency (an alpha channel or a PNG's
    transparent colour) are laid over white (`composite_over_white`), so every caller gets the same layout and
    pixels. With `orientation` (the default) an EXIF orientation is applied, so a phone photo comes out as it is
    displayed. Raises ValueError naming `path` if the bytes are not a readable image.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image (expected a JPEG or PNG file); re-download or remove it")
    if image.dtype != np.uint8:
        image = to_uint8(image)
    if image.ndim == 2:
        level = _transparent_grey_level(data)
        if level is not None:
            image = composite_over_white(np.dstack([image] * 3 + [np.where(image == level, 0, 255).astype(np.uint8)]))
        else:
            image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = composite_over_white(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA))
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    # IMREAD_UNCHANGED ignores EXIF; apply it here (the other IMREAD flags would, but lose 16-bit and alpha).
    return apply_orientation(image, exif_orientation(data)) if orientation else image


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
