"""Saliency-guided cropping: the box of a given aspect ratio that keeps what people look at.

    from inference.crop import crop_box, crop_image
    box = crop_box(predictor.predict(image), "16:9")          # Box(x, y, width, height) in image pixels
    thumbnail = crop_image(image, box)

The box is the largest of the aspect ratio that fits the image, times `scale` per side, rounded to whole pixels
(`box_size`); only its position depends on the method:

- "centre": centred in the image (no model needed).
- "point": centred on the most salient pixel (the box's middle pixel, the second of the two middle ones along an
  even side, is that pixel), shifted back inside the image where it would cross a border (Twitter's cropping:
  Theis et al. 2018, twitter-research/image-crop-analysis).
- "mass" (the default): the position holding the most saliency, the sum of the map over the box, over every
  position the box can take. One summed-area table (two `np.cumsum`) gives every box sum in O(H W), so the
  search is exact at the map's full resolution and the map is never downsampled (on one CPU core: about 10 ms
  for a 600x800 map, under a second for a 3000x4000 one, where the model's prediction takes far longer).

Ties (equal sums, or several maximal pixels for "point") go to the position nearest the centre, then to the
first in row-major order, so a flat map gives the centre crop. The maths is numpy only: this module imports
no TensorFlow; `crop_files` takes an already loaded `Predictor` (`inference.predictors.load_predictor`).

`crop_files` is the library behind crop.py: one prediction per image, one JPEG per aspect ratio, and one JSON
(`crops.json`) with every box. `fixations_in_box` is the measure of benchmarks/crop_fixations.py.
"""

import contextlib
import dataclasses
import errno
import json
import math
import os
import re

import numpy as np

from datasets.folders import path_list
from datasets.io import atomic_write, encode_jpeg, read_image, write_bytes_atomic
from inference.files import IMAGE_EXTENSIONS, Progress, list_images, mark_output_folder

CROP_METHODS = ("centre", "point", "mass")
DEFAULT_ASPECT = "16:9"
CROPS_JSON = "crops.json"
# Box sums within this fraction of the map's total mass count as equal (float64 rounding in the cumsums).
TIE_RTOL = 1e-9

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_ASPECT = re.compile(rf"^\s*{_NUMBER}\s*:\s*{_NUMBER}\s*$")


def _aspect_parts(text):
    """(width, height) of an aspect ratio "W:H" as positive floats; ValueError naming the text otherwise."""
    match = _ASPECT.match(text) if isinstance(text, str) else None
    if match:
        width, height = float(match.group(1)), float(match.group(2))
        if width > 0 and height > 0:
            return width, height
    raise ValueError(f"aspect ratio must be \"W:H\" with positive numbers, e.g. \"16:9\", \"1:1\", \"4:5\" or "
                     f"\"1.91:1\". Received: {text!r}")


def parse_aspect(text):
    """The ratio width / height of an aspect written "W:H" ("16:9" -> 1.777..., "1.91:1" -> 1.91).

    Raises:
        ValueError: `text` is not two positive numbers separated by a colon (the message repeats it).
    """
    width, height = _aspect_parts(text)
    return width / height


def aspect_label(text):
    """The aspect "W:H" written canonically ("16:09" -> "16:9") and as a file-name part ("16x9", "1.91x1")."""
    width, height = _aspect_parts(text)
    return f"{width:g}:{height:g}", f"{width:g}x{height:g}"


def _ratio(aspect):
    """`aspect` as a float width / height: a "W:H" string or a positive number."""
    if isinstance(aspect, str):
        return parse_aspect(aspect)
    if isinstance(aspect, (int, float, np.integer, np.floating)) and not isinstance(aspect, bool):
        if math.isfinite(aspect) and aspect > 0:
            return float(aspect)
    raise ValueError(f"`aspect` must be \"W:H\" (e.g. \"16:9\") or a positive number width / height. "
                     f"Received: aspect={aspect!r}")


def check_scale(scale):
    """`scale` as a float in (0, 1] (the fraction of each side of the largest box); ValueError repeating it."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) or not (
            0 < scale <= 1):
        raise ValueError(f"`scale` must be a number in (0, 1], the fraction of the largest box's width and height "
                         f"(0.5 = half of each). Received: scale={scale!r}")
    return float(scale)


def _check_method(method):
    if method not in CROP_METHODS:
        raise ValueError(f"`method` must be one of {CROP_METHODS}. Received: method={method!r}")
    return method


@dataclasses.dataclass(frozen=True)
class Box:
    """A crop in image pixels: columns x .. x + width - 1, rows y .. y + height - 1 (0-based)."""

    x: int
    y: int
    width: int
    height: int

    def as_dict(self):
        """{"x": ..., "y": ..., "width": ..., "height": ...} as plain ints (JSON-ready)."""
        return {k: int(v) for k, v in dataclasses.asdict(self).items()}


def box_size(height, width, aspect, scale=1.0):
    """(box width, box height) in whole pixels for an image of `height` x `width`.

    The exact box is the largest of ratio `aspect` that fits (one side equals the image's), each side times
    `scale`. Each side is then rounded down or up (at least 1 pixel, at most the image's side); of those (up to
    four) pairs, the one whose ratio is nearest `aspect` (relative error) wins, the larger on a tie.

    Args:
        height, width: the image's size in pixels.
        aspect: "W:H" or a positive number width / height.
        scale: fraction of each side of the largest box, in (0, 1]. Defaults to 1.0.

    Raises:
        ValueError: a bad `aspect` or `scale` (the message repeats it), or an empty image.
    """
    ratio, scale = _ratio(aspect), check_scale(scale)
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive. Received: height={height}, width={width}")
    exact_w, exact_h = scale * min(width, height * ratio), scale * min(height, width / ratio)
    widths = {min(max(f(exact_w), 1), width) for f in (math.floor, math.ceil)}
    heights = {min(max(f(exact_h), 1), height) for f in (math.floor, math.ceil)}
    return min(((w, h) for w in widths for h in heights),
               key=lambda wh: (abs(math.log(wh[0] / wh[1] / ratio)), -wh[0] * wh[1]))


def _check_map(saliency_map):
    saliency_map = np.asarray(saliency_map)
    if saliency_map.ndim == 3 and saliency_map.shape[2] == 1:
        saliency_map = saliency_map[:, :, 0]
    if saliency_map.ndim != 2 or min(saliency_map.shape) < 1:
        raise ValueError(f"`saliency_map` must be a 2-D (H, W) map at the image's size. Received shape "
                         f"{saliency_map.shape}")
    if not (np.issubdtype(saliency_map.dtype, np.number) or saliency_map.dtype == bool):
        raise ValueError(f"`saliency_map` must hold numbers. Received dtype {saliency_map.dtype}")
    if not np.isfinite(saliency_map).all():
        raise ValueError("`saliency_map` has NaN or infinite values; check the model's output")
    return saliency_map


def _nearest_centre(rows, cols, centre_row, centre_col):
    """Index of the candidate (row-major order) nearest (centre_row, centre_col); the first on a tie."""
    return int(np.argmin((rows - centre_row) ** 2 + (cols - centre_col) ** 2))


def box_sums(saliency_map, box_height, box_width):
    """Sum of the map over every position of a box: float64 (H - h + 1, W - w + 1), [y, x] the box at (x, y).

    A summed-area table: O(H W) whatever the box size.
    """
    table = np.zeros((saliency_map.shape[0] + 1, saliency_map.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(saliency_map, axis=0, dtype=np.float64), axis=1, out=table[1:, 1:])
    h, w = box_height, box_width
    return table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]


def centre_box(shape, aspect, scale=1.0):
    """The centred box of `aspect` in an image of `shape` (H, W[, C]): what `crop_box(..., "centre")` gives."""
    height, width = int(shape[0]), int(shape[1])
    w, h = box_size(height, width, aspect, scale)
    return Box((width - w) // 2, (height - h) // 2, w, h)


def crop_box(saliency_map, aspect, method="mass", scale=1.0):
    """The crop of ratio `aspect` chosen by `method` on a saliency map at the image's size.

    Args:
        saliency_map: float (H, W) (or (H, W, 1)) at the image's size; any finite values (a predictor's
            [0, 1] map, a density, a human map).
        aspect: "W:H" (e.g. "16:9") or a positive number width / height.
        method: "centre", "point" or "mass" (module docstring). Defaults to "mass".
        scale: fraction of each side of the largest fitting box, in (0, 1]. Defaults to 1.0.

    Returns:
        A `Box` inside the image; its size is `box_size(H, W, aspect, scale)` for every method.

    Raises:
        ValueError: a bad map, aspect, method or scale (the message names it).
    """
    method = _check_method(method)
    saliency_map = _check_map(saliency_map)
    height, width = saliency_map.shape
    centred = centre_box(saliency_map.shape, aspect, scale)
    w, h = centred.width, centred.height
    if method == "centre":
        return centred
    if method == "point":
        peak = saliency_map.max()
        rows, cols = np.nonzero(saliency_map == peak)
        i = _nearest_centre(rows, cols, (height - 1) / 2, (width - 1) / 2)
        x = min(max(int(cols[i]) - w // 2, 0), width - w)
        y = min(max(int(rows[i]) - h // 2, 0), height - h)
        return Box(x, y, w, h)
    sums = box_sums(saliency_map, h, w)
    best = sums.max()
    tolerance = TIE_RTOL * max(float(np.abs(saliency_map).sum()), np.finfo(np.float64).tiny)
    rows, cols = np.nonzero(sums >= best - tolerance)
    i = _nearest_centre(rows, cols, (height - h) / 2, (width - w) / 2)
    return Box(int(cols[i]), int(rows[i]), w, h)


def _check_box(box, shape):
    height, width = int(shape[0]), int(shape[1])
    if not (box.width >= 1 and box.height >= 1 and 0 <= box.x and 0 <= box.y and box.x + box.width <= width
            and box.y + box.height <= height):
        raise ValueError(f"{box} is not inside the {width}x{height} image; compute it with crop_box on this image's "
                         "map")


def crop_image(image, box):
    """The part of `image` (H, W[, C]) inside `box` (a view, not a copy).

    Raises:
        ValueError: the box is empty or not inside the image.
    """
    image = np.asarray(image)
    _check_box(box, image.shape)
    return image[box.y:box.y + box.height, box.x:box.x + box.width]


def fixations_in_box(fixations_rc, box):
    """Fraction of fixations inside `box`.

    Args:
        fixations_rc: int (N, 2) 0-based (row, col) pixels, the project's convention (`datasets.nusvip`).
        box: a `Box`.

    Returns:
        float in [0, 1]: the points with y <= row < y + height and x <= col < x + width, over N.

    Raises:
        ValueError: no fixation (the fraction is undefined) or not an (N, 2) array.
    """
    points = np.asarray(fixations_rc)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"`fixations_rc` must be an (N, 2) array of (row, col). Received shape {points.shape}")
    if len(points) == 0:
        raise ValueError("`fixations_rc` is empty: the fraction of fixations inside a box is undefined")
    rows, cols = points[:, 0], points[:, 1]
    inside = (rows >= box.y) & (rows < box.y + box.height) & (cols >= box.x) & (cols < box.x + box.width)
    return float(inside.mean())


@dataclasses.dataclass
class CropReport:
    """What `crop_files` did: crop files written (and `crops.json`), (input path, message naming it) failures, the
    files of the input folders that are not images (`skipped`) and the earlier output folders inside them that
    were not read (`skipped_outputs`, see `inference.files.walk_input_folder`)."""

    written: list
    failures: list
    skipped: list = dataclasses.field(default_factory=list)
    json_path: str = ""
    num_images: int = 0
    skipped_outputs: list = dataclasses.field(default_factory=list)


def _aspect_labels(aspects):
    """{canonical "W:H": file-name part} for `aspects`, in order, duplicates (after canonicalising) once."""
    if isinstance(aspects, str):
        aspects = [aspects]
    labels = dict(aspect_label(a) for a in aspects)
    if not labels:
        raise ValueError("`aspects` is empty; give at least one \"W:H\", e.g. (\"16:9\",)")
    return labels


def _same_file(a, b):
    """Whether paths `a` and `b` (as given, maybe relative) name the same file."""
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _earlier_summary(json_path, settings, pairs, labels):
    """The `crops.json` an earlier run left at `json_path`, to merge this run into; a new, empty one if none.

    Raises:
        ValueError: naming the file, when it cannot be read, was made with other `settings` (method, scale,
            model: one crops.json describes one setting), or has another image under a stem of this run with
            crops of other aspects (they would be listed as crops of this run's image).
    """
    if not os.path.lexists(json_path):
        return {**settings, "aspects": {}, "images": {}, "failures": {}}
    move = "move it (and its crops) or choose another --out"
    try:
        with open(json_path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{json_path}: an earlier crops.json that cannot be read ({e}); {move}") from e
    if not (isinstance(summary, dict) and {"aspects", "images", "failures", *settings} <= summary.keys()):
        raise ValueError(f"{json_path}: not a crops.json written by crop.py; {move}")
    if any(summary[key] != value for key, value in settings.items()):
        def describe(d):
            return ", ".join(f"{key} {d[key]!r}" for key in settings)

        raise ValueError(f"{json_path}: holds crops made with {describe(summary)}; this run uses {describe(settings)}, "
                         f"and one crops.json describes one setting: {move}")
    for path, stem in pairs:
        old = summary["images"].get(stem)
        if old and not _same_file(old.get("path", ""), path) and set(old.get("crops", ())) - set(labels):
            raise ValueError(f"{json_path}: {stem} is the crop of {old['path']}, and this run crops {path} under the "
                             f"same name without its {', '.join(sorted(set(old['crops']) - set(labels)))} crop(s): "
                             f"{move}")
    return summary


def _write_summary(report, summary, labels, images, failures):
    """Merge this run's `images` and `failures` into `summary` (an earlier run's, `_earlier_summary`) and write
    it atomically: an image's entry replaces its earlier one, aspect by aspect; other entries are kept."""
    summary["aspects"] = {**summary["aspects"], **labels}
    for stem, entry in images.items():
        earlier = summary["images"].get(stem, {}).get("crops", {})
        summary["images"][stem] = {**entry, "crops": {**earlier, **entry["crops"]}}
        summary["failures"].pop(entry["path"], None)
    summary["failures"].update(failures)
    with atomic_write(report.json_path, "w") as f:
        json.dump(summary, f, indent=1)
    report.written.append(report.json_path)
    report.num_images = sum(entry["path"] not in failures for entry in images.values())


class DiskFullError(ValueError):
    """A crop file could not be written: the disk is full or read-only. The run stops; the message names the file."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _crop_one(predictor, path, stem, out_dir, labels, method, scale, report, images):
    """Crop the image at `path` to every aspect in `labels`; `images[stem]` (its `crops.json` entry) lists each
    crop file as soon as it is written, so that an interruption leaves no crop unlisted.

    Raises:
        DiskFullError: naming the crop file (the run stops there).
        Exception: any other failure of this image, naming it.
    """
    image = read_image(path)
    saliency_map = predictor.predict(image) if predictor is not None else None
    if predictor is not None and np.shape(saliency_map) != image.shape[:2]:
        raise ValueError(f"the model's map is {np.shape(saliency_map)}, not the image's size {image.shape[:2]}")
    entry = {"path": path, "width": int(image.shape[1]), "height": int(image.shape[0]), "crops": {}}
    for aspect, name in labels.items():
        box = crop_box(saliency_map, aspect, method, scale) if predictor is not None else centre_box(
            image.shape, aspect, scale)
        file_name = f"{stem}_{name}.jpg"
        target = os.path.join(out_dir, file_name)
        try:
            write_bytes_atomic(target, encode_jpeg(crop_image(image, box)))
        except OSError as e:
            reason = e.strerror or str(e)
            if e.errno in _DISK_FULL:
                raise DiskFullError(f"{target}: cannot write the crop of {path} ({reason}); free space there or "
                                    "choose another --out") from e
            raise OSError(f"{path}: cannot write its crop {target} ({reason})") from e
        report.written.append(target)
        entry["crops"][aspect] = {**box.as_dict(), "file": file_name}
        images[stem] = entry


def crop_files(predictor, inputs, out_dir, aspects=(DEFAULT_ASPECT,), method="mass", scale=1.0, progress=True):
    """Crop every image in `inputs` to each aspect ratio; write `<stem>_<W>x<H>.jpg` and `crops.json` in `out_dir`.

    Each image is predicted once; every aspect's box comes from that map (`crop_box`). `crops.json` holds the
    method, scale and model, and per image (keyed by its stem) its path, width and height and per aspect
    ("16:9") the box x, y, width, height in the image's pixels and the crop's file (relative to `out_dir`); and
    the failed images with their messages. An image that cannot be read or predicted is reported and skipped;
    the others are still written. Every file is written atomically; `out_dir` is marked as output
    (`inference.files.mark_output_folder`), so that a later run on a folder that contains it skips it.

    A rerun into the same `out_dir` merges with the `crops.json` found there, so that it lists every crop file
    of the folder: a crop of the same image (stem) and aspect replaces its earlier entry (and file), the others
    are kept. A `crops.json` made with another method, scale or model is refused before any work (the boxes of
    two settings would be listed as one). On an interruption (Ctrl-C) or a full disk, `crops.json` is still
    written for the images that finished, then the error is raised.

    Args:
        predictor: a `inference.predictors.Predictor` (see `load_predictor`); may be None for "centre".
        inputs: image files and folders, or one of them (see `inference.files.list_images`: folders are searched
            recursively, `sub/x.jpg` gets the stem `sub/x`; earlier output folders inside them are skipped).
        out_dir: output folder.
        aspects: "W:H" strings. Defaults to ("16:9",).
        method: "centre", "point" or "mass". Defaults to "mass".
        scale: fraction of each side of the largest fitting box, in (0, 1]. Defaults to 1.0.
        progress: show the progress on stderr (`inference.files.Progress`: a bar on a terminal, else plain lines).

    Returns:
        A `CropReport`.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: a bad aspect, method or scale, no predictor for "point"/"mass", no images, two inputs with
            the same stem, the output folder is an input folder, or an earlier `crops.json` that cannot be merged.
        DiskFullError (a ValueError): a full or read-only disk, naming the crop file.
    """
    labels, method, scale = _aspect_labels(aspects), _check_method(method), check_scale(scale)
    use_model = method != "centre"
    if use_model and predictor is None:
        raise ValueError(f"method {method!r} needs a saliency model: pass a Predictor "
                         "(inference.predictors.load_predictor(PATH)); only 'centre' works without one")
    out_dir = os.fspath(out_dir)
    report = CropReport(written=[], failures=[], json_path=os.path.join(out_dir, CROPS_JSON))
    inputs = path_list(inputs)
    pairs = list_images(inputs, exclude=out_dir, skipped=report.skipped, skipped_outputs=report.skipped_outputs)
    if not pairs:
        others = f" ({len(report.skipped)} other file(s), e.g. {report.skipped[0]})" if report.skipped else ""
        raise ValueError(f"no images to crop in {', '.join(os.fspath(i) for i in inputs)}{others}: expected "
                         f"{'/'.join(IMAGE_EXTENSIONS)} files")
    settings = {"method": method, "scale": scale, "model": predictor.path if use_model else None}
    summary = _earlier_summary(report.json_path, settings, pairs, labels)
    mark_output_folder(out_dir, inputs)
    images = {}
    bar = Progress(len(pairs), "crop", enabled=progress)
    try:
        for path, stem in pairs:
            try:
                _crop_one(predictor if use_model else None, path, stem, out_dir, labels, method, scale, report,
                          images)
            except DiskFullError:
                raise
            except Exception as e:  # one bad image must not stop the others; each failure is reported
                message = str(e) if str(e).startswith(path) else f"{path}: {type(e).__name__}: {e}"
                report.failures.append((path, message))
            bar.update()
    except BaseException:  # Ctrl-C or a full disk: list what finished, then stop
        bar.close()
        with contextlib.suppress(OSError):  # a full disk may refuse crops.json too; the first error is the one to see
            _write_summary(report, summary, labels, images, dict(report.failures))
        raise
    bar.close()
    _write_summary(report, summary, labels, images, dict(report.failures))
    return report
