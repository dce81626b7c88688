"""The local web page: drop a photo, see where people look, crop it to aspect ratios (Gradio).

    python app.py --model runs/b-seed0          # then open http://127.0.0.1:7860

`build_app(models)` makes the page (a `gradio.Blocks`) from a dict of model names to model paths (anything
`inference.predictors.load_predictor` takes: run folder, SavedModel, .onnx/.xml/.tflite export, teacher file, or
a built-in name such as "fastgaze") or to ready predictor objects (anything with `predict(uint8 RGB (H, W, 3))
-> float (H, W) map in [0, 1]`, as the tests pass). Paths load on first use and stay loaded.

The page's work is done by functions that need neither Gradio nor a browser, and that the tests call:

- `decode_photo(source)`: an upload to a uint8 RGB array and the notes to show about it (EXIF rotation applied;
  grayscale, RGBA, palette, CMYK, 16-bit and animated files converted, photos over `MAX_PIXELS` downscaled).
  Anything that cannot become a photo raises `PhotoError`, whose message is written for the page.
- `parse_ratios(checked, other)`: the ticked ratios and the free "W:H" text to a list of aspect labels.
- `analyse(image, saliency_map, ratios)`: the heat-map overlay, the map as an image, the crop boxes drawn on
  the photo and the cropped images (`inference.crop`, by saliency mass).
- `save_downloads(saliency_map, folder, stem)`: the map as a PNG (uint8) and an .npy (float32 in [0, 1]).
- `predict_page(...)` and `recrop_page(...)`: one press of "Predict" / one change of the ratios, as the page
  does them, returning a `PageResult` (what each output shows, the notes, the error if any).

Gradio is only imported by `build_app` and `launch`: install it with the `web` extra (pip install -e ".[web]").
"""

import atexit
import dataclasses
import io
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings

import numpy as np

from datasets.io import composite_over_white, encode_png, to_uint8, write_bytes_atomic
from inference.crop import crop_box, crop_image, parse_aspect
from inference.files import map_to_uint8, overlay_heatmap
from inference.predictors import builtin_menu

# The models offered when none is given (app.py without --model): the default first, then every other built-in
# whose packages are installed (`teacher.builtin`; attention-center needs LiteRT), then the teachers' ensemble.
DEFAULT_MODELS = builtin_menu()
RATIO_CHOICES = ("1:1", "16:9", "4:5", "2:1")
DEFAULT_RATIOS = ("16:9",)
# Photos with more pixels are downscaled to this many before anything else (the map, the overlay and the
# crops of a 50 MP photo already take seconds and hundreds of MB); Pillow itself refuses to open more than
# twice its MAX_IMAGE_PIXELS (about 179 MP, a decompression-bomb guard), which the page reports as too large.
MAX_PIXELS = 50_000_000
MIN_SIDE = 8
# Largest upload the server accepts (Gradio refuses bigger ones with its own message).
MAX_UPLOAD_SIZE = "200mb"
# Downloads older than this are deleted when new ones are written.
DOWNLOAD_MAX_AGE_S = 3600
CROP_METHOD = "mass"
OVERLAY_COLORMAP = "jet"
OVERLAY_ALPHA = 0.5
BOX_COLOURS = ((255, 214, 0), (0, 229, 255), (255, 61, 127), (124, 255, 77), (255, 140, 0), (179, 136, 255))

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
# Drawn by examples/generate.py, public domain (examples/LICENSE.md).
EXAMPLES = tuple(os.path.join(EXAMPLES_DIR, name) for name in ("balloon.jpg", "lighthouse.jpg", "fruit.jpg"))
READABLE = "JPEG, PNG, WebP, GIF, BMP or TIFF"


class PhotoError(ValueError):
    """An upload, a ratio or a model the page cannot use; the message is shown on the page as it is."""


@dataclasses.dataclass
class Photo:
    """A decoded upload: `image` uint8 RGB (H, W, 3), `notes` to show the user, `name` (file stem, for downloads)."""

    image: np.ndarray
    notes: list
    name: str = "photo"


def _megapixels(width, height):
    return f"{width * height / 1e6:.3g} megapixels"


def _source_name(source, name):
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source))
    return "the file"


def _is_16_bit(im):
    """Whether the file stores 16 bits per channel (Pillow reads 16-bit RGB PNGs as 8-bit "RGB")."""
    if im.mode.startswith("I;16"):
        return True
    return any(";16" in str(getattr(tile, "args", tile[3] if len(tile) > 3 else "")) for tile in im.tile or ())


def _high_bit_depth_to_8(im):
    """A single-channel 16/32-bit integer or float image as 8-bit "L" (`datasets.io.to_uint8`, as predict.py)."""
    from PIL import Image

    return Image.fromarray(to_uint8(np.asarray(im), sixteen_bit=im.mode.startswith("I;16")), "L")


def _cmyk_to_rgb(im, notes):
    """CMYK to RGB through the file's ICC profile when it has one (Pillow's plain formula otherwise)."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            converted = ImageCms.profileToProfile(
                im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            notes.append("The photo is CMYK (a print colour space); it was converted to RGB with its colour profile.")
            return converted
        except Exception:  # a broken or unusual profile: fall back to the plain conversion below
            pass
    notes.append("The photo is CMYK (a print colour space); it was converted to RGB, so colours may look slightly "
                 "different from a colour-managed viewer.")
    return im.convert("RGB")


def _to_rgb(im, notes, bits16):
    """Any Pillow mode to "RGB", noting what changed: alpha is laid over white, gray copied to three channels."""
    from PIL import Image

    mode = im.mode
    if mode in ("RGB", "L", "1") and "transparency" in im.info:  # a PNG's transparent colour (tRNS), as for "P"
        im = im.convert("RGBA" if mode == "RGB" else "LA")
        mode = im.mode
    if mode == "RGB":
        if bits16:
            notes.append("The photo has 16 bits per channel; it was reduced to 8 bits.")
        return im
    if mode == "CMYK":
        return _cmyk_to_rgb(im, notes)
    if mode.startswith("I") or mode == "F":
        if bits16 or mode.startswith("I;16"):
            notes.append("The photo has 16 bits per channel; it was reduced to 8 bits.")
        else:
            notes.append(f"The photo stores {'floating-point' if mode == 'F' else '32-bit'} values; they were "
                         "scaled to 8 bits.")
        im, mode = _high_bit_depth_to_8(im), "L"
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("The photo has transparent parts; they are shown on white.")
            rgba = Image.fromarray(composite_over_white(np.asarray(rgba)))  # the rule of datasets.io.read_image
        gray = mode in ("LA", "La")
        im, mode = rgba.convert("RGB"), ("L" if gray else "RGB")
        if not gray:
            return im
    if mode in ("L", "1"):
        notes.append("The photo is grayscale; the model sees it as a colour photo with three equal channels.")
        return im.convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise PhotoError(f"The photo's colour mode {mode} cannot be converted to RGB ({e}); save it as an RGB JPEG "
                         "or PNG and try again.") from None


def decode_photo(source, name=None, max_pixels=MAX_PIXELS):
    """Decode an upload into a uint8 RGB photo, as the page shows and predicts it.

    Args:
        source: a file path, bytes, or a binary file object.
        name: what to call the file in messages (default: the path's base name).
        max_pixels: photos with more pixels are downscaled (area-preserving) to at most this many; a note says so.

    Returns:
        A `Photo`: the image, the notes for the user (each one sentence or two), and the file stem.

    Raises:
        PhotoError: not an image, a damaged one, one too large to open, or too small to predict.
    """
    from PIL import Image, UnidentifiedImageError

    label = _source_name(source, name)
    stem = os.path.splitext(label)[0] if label != "the file" else "photo"
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    notes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError as e:
        size = re.search(r"\((\d+) pixels\)", str(e))
        count = f" ({int(size.group(1)) / 1e6:.0f} megapixels)" if size else ""
        raise PhotoError(f"{label} is too large to open{count}: this page opens photos up to "
                         f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels. Downscale it first.") from None
    except UnidentifiedImageError:
        raise PhotoError(f"{label} is not an image this page can read; upload a {READABLE} file.") from None
    except OSError as e:
        reason = e.strerror or e
        raise PhotoError(f"{label} could not be read: the file looks damaged or truncated ({reason}).") from None
    with im:
        try:
            return _decode_opened(im, label, stem, notes, max_pixels)
        except PhotoError:
            raise
        except Image.DecompressionBombError:
            raise PhotoError(f"{label} is too large to decode; downscale it first.") from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
            reason = str(e) or type(e).__name__
            raise PhotoError(f"{label} could not be decoded: the file looks damaged or truncated ({reason}).") from None


def _decode_opened(im, label, stem, notes, max_pixels):
    """`decode_photo` once Pillow has opened the file (header read, pixels not yet decoded)."""
    from PIL import Image, ImageOps

    frames = getattr(im, "n_frames", 1)
    if getattr(im, "is_animated", False) or frames > 1:
        im.seek(0)
        kind = {"GIF": "GIF", "WEBP": "WebP", "PNG": "PNG (APNG)"}.get(im.format, im.format or "image")
        notes.append(f"{label} is an animated {kind} with {frames} frames; the first frame is used.")
    width, height = im.size
    if min(width, height) < MIN_SIDE:
        raise PhotoError(f"{label} is {width}x{height} pixels; the page needs at least {MIN_SIDE} pixels per side.")
    target = None
    if width * height > max_pixels:
        factor = math.sqrt(width * height / max_pixels)
        target = (max(MIN_SIDE, int(width / factor)), max(MIN_SIDE, int(height / factor)))
        if im.format == "JPEG":
            im.draft("RGB", target)  # decode at 1/2, 1/4 or 1/8 scale where that is still at least `target`
    bits16 = _is_16_bit(im)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im.load()
    try:
        orientation = im.getexif().get(0x0112, 1)
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        orientation = 1
        notes.append(f"{label} has an unreadable EXIF orientation; it is shown as stored.")
    im = _to_rgb(im, notes, bits16)
    if target is not None:
        if orientation in (5, 6, 7, 8):  # the EXIF rotation swapped width and height
            target = target[::-1]
        if im.size != target:
            im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        notes.append(f"{label} has {width}x{height} pixels ({_megapixels(width, height)}), over this page's "
                     f"limit of {max_pixels / 1e6:g} megapixels; it was downscaled to {im.size[0]}x{im.size[1]}.")
    image = np.array(im, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:  # every branch above ends in "RGB"; a guard, not a path
        raise PhotoError(f"{label} decoded to an unexpected shape {image.shape}.")
    return Photo(image=image, notes=notes, name=stem)


def parse_ratios(checked=(), other=""):
    """The aspect ratios to crop to: the ticked ones, then those typed in `other` (comma-separated "W:H").

    Returns:
        A list of labels without spaces ("16:9", "3:2"), duplicates (equal ratios) dropped, in order.

    Raises:
        PhotoError: a typed ratio that is not "W:H" with positive numbers (the message quotes it).
    """
    labels, seen = [], set()
    typed = [part for part in re.split(r"[,;]", other or "") if part.strip()]
    # The ticked ones in the order of the check boxes (the page returns them in the order they were ticked).
    order = {choice: i for i, choice in enumerate(RATIO_CHOICES)}
    checked = sorted(checked or (), key=lambda c: order.get(c, len(order)))
    for text in checked + typed:
        label = re.sub(r"\s+", "", str(text))
        try:
            ratio = parse_aspect(label)
        except ValueError:
            raise PhotoError(f"{str(text).strip()!r} is not an aspect ratio: write it as W:H with positive numbers, "
                             "e.g. 3:2 or 1.91:1 (several: separate them with commas).") from None
        key = round(ratio, 9)
        if key not in seen:
            seen.add(key)
            labels.append(label)
    return labels


def check_map(saliency_map, shape):
    """A predictor's output as float32 (H, W) in [0, 1] at the photo's size, or PhotoError saying what came back."""
    saliency_map = np.asarray(saliency_map)
    if saliency_map.ndim == 3 and saliency_map.shape[-1] == 1:
        saliency_map = saliency_map[..., 0]
    if saliency_map.shape != tuple(shape):
        raise PhotoError(f"The model returned a map of shape {saliency_map.shape} for a photo of {tuple(shape)}.")
    saliency_map = saliency_map.astype(np.float32)
    if not np.all(np.isfinite(saliency_map)):
        raise PhotoError("The model returned a map with NaN or infinite values.")
    return np.clip(saliency_map, 0.0, 1.0)


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def draw_boxes(image, labelled_boxes):
    """The photo with each (label, Box) outlined in its own colour and labelled: uint8 RGB (H, W, 3)."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(np.asarray(image, np.uint8))
    draw = ImageDraw.Draw(canvas)
    side = min(canvas.size)
    width = max(2, round(side / 110))
    font = _font(max(12, round(side / 18)))
    pad = max(2, width)
    # Labels sit in the boxes' bottom-left corners (a page shows its own caption over an image's top-left); a label
    # that would cover one drawn before moves up above it.
    placed = []
    for i, (label, box) in enumerate(labelled_boxes):
        # The outline inset by i widths so that boxes sharing an edge (most do) stay visible side by side; never
        # past the box's middle line, so that a thin box (100:1) does not turn inside out.
        inset = min(i * width, (min(int(box.width), int(box.height)) - 1) // 2)
        x0, y0 = int(box.x) + inset, int(box.y) + inset
        x1, y1 = int(box.x) + int(box.width) - 1 - inset, int(box.y) + int(box.height) - 1 - inset
        draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOURS[i % len(BOX_COLOURS)], width=width)
    for i, (label, box) in enumerate(labelled_boxes):
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(int(box.x) + (i + 1) * width, canvas.size[0] - w)
        y = int(box.y) + int(box.height) - (i + 1) * width - h
        while any(x < r[2] and r[0] < x + w and y < r[3] and r[1] < y + h for r in placed):
            y = min(r[1] for r in placed if x < r[2] and r[0] < x + w and y < r[3] and r[1] < y + h) - h - 1
        placed.append((x, y, x + w, y + h))
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=BOX_COLOURS[i % len(BOX_COLOURS)])
        draw.text((x + pad - left, y + pad - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


@dataclasses.dataclass
class Analysis:
    """What the page shows for one photo and map.

    Attributes:
        overlay: uint8 RGB (H, W, 3), the heat map over the photo.
        density: uint8 (H, W), the map as a grayscale image (0 = never looked at, 255 = the map's maximum).
        boxes_image: uint8 RGB (H, W, 3), the photo with the crop boxes drawn.
        crops: list of (uint8 RGB crop, caption), one per ratio.
        boxes: list of (label, Box).
    """

    overlay: np.ndarray
    density: np.ndarray
    boxes_image: np.ndarray
    crops: list
    boxes: list


def crop_photo(image, saliency_map, ratios):
    """(boxes image, [(crop, caption)], [(label, Box)]) for the ratio labels (`parse_ratios`)."""
    boxes = [(label, crop_box(saliency_map, parse_aspect(label), method=CROP_METHOD)) for label in ratios]
    crops = [
        (crop_image(image, box), f"{label}: {box.width}x{box.height}")
        for label, box in boxes
    ]
    return draw_boxes(image, boxes), crops, boxes


def analyse(image, saliency_map, ratios):
    """The `Analysis` of a photo (uint8 RGB) and its map (float (H, W) in [0, 1]) for ratio labels."""
    saliency_map = check_map(saliency_map, image.shape[:2])
    boxes_image, crops, boxes = crop_photo(image, saliency_map, ratios)
    return Analysis(
        overlay=overlay_heatmap(image, saliency_map, OVERLAY_COLORMAP, OVERLAY_ALPHA),
        density=map_to_uint8(saliency_map),
        boxes_image=boxes_image,
        crops=crops,
        boxes=boxes,
    )


def safe_stem(name):
    """A file-name stem from an upload's name: letters, digits, '-', '_' and '.', at most 60 characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(name or ""))[0]).strip("._")
    return stem[:60] or "photo"


def save_downloads(saliency_map, folder, stem="photo"):
    """Write `<stem>_saliency.png` (uint8 grayscale) and `<stem>_saliency.npy` (float32 (H, W) in [0, 1]).

    Returns:
        [png_path, npy_path].
    """
    os.makedirs(folder, exist_ok=True)
    stem = safe_stem(stem)
    png = os.path.join(folder, f"{stem}_saliency.png")
    npy = os.path.join(folder, f"{stem}_saliency.npy")
    write_bytes_atomic(png, encode_png(map_to_uint8(saliency_map)))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(saliency_map, np.float32))
    write_bytes_atomic(npy, buffer.getvalue())
    return [png, npy]


class DownloadFolder:
    """A private temporary folder for the page's downloads: one subfolder per prediction, old ones pruned.

    The folder is removed when Python exits.
    """

    def __init__(self, root=None, max_age_s=DOWNLOAD_MAX_AGE_S):
        self.root = os.fspath(root) if root else tempfile.mkdtemp(prefix="saliency-kd-web-")
        os.makedirs(self.root, exist_ok=True)
        self.max_age_s = max_age_s
        if root is None:
            atexit.register(shutil.rmtree, self.root, True)

    def new(self):
        """A fresh subfolder, after deleting subfolders older than `max_age_s`."""
        now = time.time()
        for entry in os.scandir(self.root):
            try:
                if entry.is_dir() and now - entry.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except FileNotFoundError:
                pass
        path = os.path.join(self.root, uuid.uuid4().hex)
        os.makedirs(path)
        return path


def model_name(path):
    """The dropdown name of a model path: its folder or file name ("runs/b-seed0" -> "b-seed0"); a SavedModel
    folder inside a run ("runs/b-seed0/saved_model") is named after the run."""
    path = os.path.normpath(os.fspath(path))
    base = os.path.basename(path)
    if base == "saved_model" and os.path.dirname(path):
        return os.path.basename(os.path.dirname(path))
    return base or path


def models_from_args(values):
    """{name: path} from the CLI's --model values: "PATH" (named by `model_name`) or "NAME=PATH".

    "NAME=PATH" applies only when the whole value is not itself an existing path; equal names get " (2)", ...
    """
    models = {}
    for value in values:
        value = os.fspath(value)
        name, path = None, value
        if "=" in value and not os.path.exists(value):
            left, right = value.split("=", 1)
            if left.strip() and right.strip():
                name, path = left.strip(), right.strip()
        name = name or model_name(path)
        unique, n = name, 2
        while unique in models:
            unique, n = f"{name} ({n})", n + 1
        models[unique] = path
    return models


class Models:
    """The page's models: name -> path (loaded with `load_predictor` on first use, then kept) or predictor.

    Thread-safe: Gradio runs handlers in worker threads; a model loads once even if two requests want it.
    """

    def __init__(self, models):
        if isinstance(models, Models):
            models = models._entries
        if not models:
            raise ValueError("`models` must name at least one model, e.g. {'fastgaze': 'fastgaze'}")
        self._entries = dict(models)
        self._loaded = {name: m for name, m in self._entries.items() if hasattr(m, "predict")}
        self._lock = threading.Lock()

    @property
    def names(self):
        return list(self._entries)

    @property
    def default(self):
        return self.names[0]

    def source(self, name):
        """What `name` was given as: a path string, or the predictor's repr."""
        entry = self._entries[name]
        return os.fspath(entry) if isinstance(entry, (str, os.PathLike)) else repr(entry)

    def get(self, name):
        """The predictor called `name`, loading it on first use.

        Raises:
            PhotoError: an unknown name, or the model failed to load (the message says why).
        """
        if name not in self._entries:
            raise PhotoError(f"Unknown model {name!r}; choose one of {', '.join(self.names)}.")
        with self._lock:
            if name not in self._loaded:
                from inference.predictors import load_predictor

                try:
                    self._loaded[name] = load_predictor(self._entries[name])
                except Exception as e:  # every loader failure becomes a message on the page
                    raise PhotoError(f"The model {name!r} could not be loaded from {self.source(name)}: "
                                     f"{e}") from e
            return self._loaded[name]

    def load_all(self):
        """Load every model now (the CLI does this before serving); PhotoError on the first that fails."""
        for name in self.names:
            self.get(name)


@dataclasses.dataclass
class PageResult:
    """Every output of the page after one action; None where an output is cleared.

    `state` is what the page keeps for re-cropping without predicting again: {"image", "map", "name"}.
    """

    overlay: np.ndarray = None
    density: np.ndarray = None
    boxes_image: np.ndarray = None
    crops: list = None
    files: list = None
    status: str = ""
    notes: list = dataclasses.field(default_factory=list)
    error: str = None
    state: dict = None


def _status(model, photo, seconds, boxes):
    height, width = photo.image.shape[:2]
    lines = [f"**{model}** on {photo.name} ({width}x{height} pixels): {seconds:.2f} s."]
    if not boxes:
        lines.append("Tick a ratio or type one to see crops.")
    lines += [f"- {note}" for note in photo.notes]
    return "\n\n".join(lines)


def _error_result(message, notes=()):
    return PageResult(status=f"**Could not predict.** {message}", notes=list(notes), error=message)


def predict_page(models, photo_path, model, checked=DEFAULT_RATIOS, other="", downloads=None, name=None):
    """One press of "Predict": decode the upload, predict with `model`, crop, write the downloads.

    Args:
        models: a `Models` (or the dict `Models` takes).
        photo_path: the uploaded file's path (None: nothing uploaded yet, the outputs are cleared).
        model: a model name from `models`.
        checked, other: the ratio check boxes and the free "W:H" text (`parse_ratios`).
        downloads: a `DownloadFolder` (default: a new private temporary one).
        name: the file's name for messages and downloads (default: the path's base name).

    Returns:
        A `PageResult`. Never raises for a bad upload, ratio or model: those come back as `error`.
    """
    models = models if isinstance(models, Models) else Models(models)
    if not photo_path:
        return PageResult(status="Drop a photo or pick an example.")
    notes = []
    try:
        ratios = parse_ratios(checked, other)
        photo = decode_photo(photo_path, name=name)
        notes = photo.notes
        predictor = models.get(model)
        start = time.perf_counter()
        try:
            saliency_map = predictor.predict(photo.image)
        except Exception as e:  # a model failing on one photo is reported, not raised into the page
            raise PhotoError(f"The model {model!r} failed on this photo: {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - start
        saliency_map = check_map(saliency_map, photo.image.shape[:2])
        analysis = analyse(photo.image, saliency_map, ratios)
        downloads = downloads or DownloadFolder()
        try:
            files = save_downloads(saliency_map, downloads.new(), photo.name)
        except OSError as e:
            raise PhotoError(f"The map files could not be written ({e}).") from e
    except PhotoError as e:
        return _error_result(str(e), notes)
    return PageResult(
        overlay=analysis.overlay,
        density=analysis.density,
        boxes_image=analysis.boxes_image,
        crops=analysis.crops,
        files=files,
        status=_status(model, photo, seconds, analysis.boxes),
        notes=notes,
        state={"image": photo.image, "map": saliency_map, "name": photo.name},
    )


def recrop_page(state, checked=DEFAULT_RATIOS, other=""):
    """A change of ratios after a prediction: new boxes and crops from the kept map, no new prediction.

    Returns:
        A `PageResult` with only `boxes_image`, `crops` and `status` (or `error`) set; None for everything when
        nothing has been predicted yet (`state` None).
    """
    if not state:
        return None
    try:
        ratios = parse_ratios(checked, other)
    except PhotoError as e:
        return PageResult(status=f"**Could not crop.** {e}", error=str(e))
    boxes_image, crops, boxes = crop_photo(state["image"], state["map"], ratios)
    status = f"Crops of {state['name']} for {', '.join(ratios)}." if boxes else "Tick a ratio or type one to see crops."
    return PageResult(boxes_image=boxes_image, crops=crops, status=status)


INTRO = """# Where do people look?
Drop a photo (or pick an example): the model predicts where people look first, as a heat map, and crops the
photo to the aspect ratios you pick around what draws the eye. Everything runs on this computer."""

CSS = """
#status p { margin: 0.2em 0; }
"""


def build_app(models, examples=EXAMPLES, downloads=None):
    """The page as a `gradio.Blocks` (not launched: see `launch`).

    Args:
        models: {name: path or predictor} (the first is selected), or a `Models`.
        examples: photo paths offered under the upload (default: the three bundled ones); () for none.
        downloads: a `DownloadFolder` for the map files (default: a private temporary folder).
    """
    import gradio as gr

    models = Models(models)
    downloads = downloads or DownloadFolder()

    def notify(result):
        for note in result.notes:
            gr.Warning(note)
        if result.error:
            gr.Warning(result.error, title="Could not predict")

    def on_predict(photo_path, model, checked, other):
        try:
            result = predict_page(models, photo_path, model, checked, other, downloads)
        except Exception as e:  # a bug, not a bad upload: the log gets the traceback, the page a sentence
            logging.getLogger(__name__).exception("predicting %s with %s failed", photo_path, model)
            result = _error_result(f"Something went wrong ({type(e).__name__}: {e}); the server log has details.")
        notify(result)
        return (result.overlay, result.density, result.boxes_image, result.crops, result.files, result.status,
                result.state)

    def on_recrop(state, checked, other):
        result = recrop_page(state, checked, other)
        if result is None:
            return gr.skip(), gr.skip(), gr.skip()
        notify(result)
        return result.boxes_image, result.crops, result.status

    with gr.Blocks(title="saliency-kd: where do people look?", analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                photo = gr.File(label="Photo (JPEG, PNG, WebP, GIF, BMP, TIFF)", file_count="single",
                                type="filepath", elem_id="photo")
                model = gr.Dropdown(choices=models.names, value=models.default, label="Model", elem_id="model",
                                    interactive=True)
                ratios = gr.CheckboxGroup(choices=list(RATIO_CHOICES), value=list(DEFAULT_RATIOS),
                                          label="Crop ratios (width:height)", elem_id="ratios")
                other = gr.Textbox(label="Other ratios", placeholder="W:H, e.g. 3:2, 1.91:1", elem_id="other",
                                   max_lines=1)
                run = gr.Button("Predict", variant="primary", elem_id="predict")
                status = gr.Markdown("Drop a photo or pick an example.", elem_id="status")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[photo], label="Examples",
                                example_labels=[os.path.splitext(os.path.basename(p))[0] for p in examples])
            with gr.Column(scale=2):
                with gr.Row():
                    overlay = gr.Image(label="Heat map", type="numpy", interactive=False, elem_id="overlay")
                    density = gr.Image(label="Saliency map", type="numpy", interactive=False, elem_id="density",
                                       image_mode="L")
                with gr.Row():
                    boxes_image = gr.Image(label="Crops on the photo", type="numpy", interactive=False,
                                           elem_id="boxes")
                    crops = gr.Gallery(label="Crops", columns=2, height="auto", object_fit="contain",
                                       elem_id="crops", interactive=False)
                files = gr.File(label="Download the map (PNG, .npy float32 in [0, 1])", file_count="multiple",
                                interactive=False, elem_id="downloads")
        state = gr.State(None)
        outputs = [overlay, density, boxes_image, crops, files, status, state]
        inputs = [photo, model, ratios, other]
        # One prediction at a time over all triggers (a new photo, another model, the button), and a re-crop in
        # the same queue: it waits for the predictions asked before it, so that their crops (made with the
        # ratios of their moment) cannot overwrite its own, and it crops the map they leave in `state`.
        for trigger in (photo.change, model.change, run.click):
            trigger(on_predict, inputs, outputs, concurrency_limit=1, concurrency_id="predict")
        for trigger in (ratios.change, other.submit):
            trigger(on_recrop, [state, ratios, other], [boxes_image, crops, status], concurrency_limit=1,
                    concurrency_id="predict")
    return app


def launch(app, host="127.0.0.1", port=7860, **kwargs):
    """Serve `app` the way app.py does (upload size limit, the page's CSS, no share link); other kwargs go to launch().

    Returns what `gradio.Blocks.launch` returns.
    """
    kwargs.setdefault("max_file_size", MAX_UPLOAD_SIZE)
    kwargs.setdefault("css", CSS)
    kwargs.setdefault("show_error", False)
    return app.launch(server_name=host, server_port=port, share=False, **kwargs)
