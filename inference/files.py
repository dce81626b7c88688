"""Saliency maps for image files and folders (the library behind predict.py): a grayscale PNG per image and,
on request, a heat-map overlay JPEG."""

import dataclasses
import json
import os

import numpy as np

from datasets.folders import IMAGE_EXTENSIONS, is_hidden, path_list  # noqa: F401 (IMAGE_EXTENSIONS: re-exported)
from datasets.io import encode_jpeg, encode_png, read_image, write_bytes_atomic
from datasets.progress import Progress  # noqa: F401 (re-exported: evaluation.scoring)
from inference.predictors import check_image


def overlay_colormap(colormap, alpha):
    """The matplotlib colormap named `colormap`, after checking both overlay arguments."""
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha!r}")
    try:
        return colormaps[colormap]
    except KeyError:
        raise ValueError(f"`colormap` {colormap!r} is not a matplotlib colormap (e.g. 'jet', 'inferno')") from None


def overlay_heatmap(image, saliency_map, colormap="jet", alpha=0.5):
    """Blend a colour-mapped saliency map over an image.

    Args:
        image: uint8 RGB (H, W, 3).
        saliency_map: float (H, W) in [0, 1] at the image's size.
        colormap: a matplotlib colormap name. Defaults to "jet".
        alpha: weight of the heat map (0 = image only, 1 = heat map only). Defaults to 0.5.

    Returns:
        uint8 RGB (H, W, 3).
    """
    cmap = overlay_colormap(colormap, alpha)
    image = check_image(image)
    saliency_map = np.asarray(saliency_map, np.float32)
    if saliency_map.shape != image.shape[:2]:
        raise ValueError(f"saliency map {saliency_map.shape} != image {image.shape[:2]}; predict at the image size")
    heat = cmap(np.clip(saliency_map, 0.0, 1.0))[..., :3] * 255.0
    return np.round((1.0 - alpha) * image + alpha * heat).clip(0, 255).astype(np.uint8)


def map_to_uint8(saliency_map):
    """A [0, 1] map as a uint8 (H, W) image (0..255, rounded)."""
    return np.round(np.clip(saliency_map, 0.0, 1.0) * 255.0).astype(np.uint8)


OUTPUT_MARKER = ".saliency-kd-output"
_MARKER_TEXT = ("This folder holds outputs of saliency-kd (predict.py, crop.py). A later run given a folder that "
                "contains this one skips it: its maps and crops are not read as input. Delete this file to make it "
                "input again.\n")
_CROPS_JSON = "crops.json"  # inference.crop.CROPS_JSON (that module imports this one)


def mark_output_folder(folder, inputs=()):
    """Create `folder` if needed and write `OUTPUT_MARKER` in it (once): later runs recognise it as output.

    Not when `folder` holds one of `inputs` (files or folders: an output folder above its input, `--out .`): it
    is not only output, and a later run on a folder above it must still read those inputs.
    """
    top = os.path.realpath(folder).rstrip(os.sep) + os.sep
    if any(os.path.realpath(item).startswith(top) for item in inputs):
        return
    marker = os.path.join(folder, OUTPUT_MARKER)
    if not os.path.isfile(marker):
        write_bytes_atomic(marker, _MARKER_TEXT.encode())


def is_output_folder(folder, files=None):
    """Whether `folder` holds the project's outputs only: its `OUTPUT_MARKER`, or (from before the marker existed)
    a crops.json written by crop.py that lists every image among `files` (the folder's file names; listed here
    if None) as a crop: an image it does not list is an input, and the folder is read."""
    if os.path.isfile(os.path.join(folder, OUTPUT_MARKER)):
        return True
    try:
        with open(os.path.join(folder, _CROPS_JSON), encoding="utf-8") as f:
            summary = json.load(f)
        crops = {os.path.normpath(crop["file"]) for entry in summary["images"].values()
                 for crop in entry["crops"].values()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    files = os.listdir(folder) if files is None else files
    return all(name in crops for name in files if name.lower().endswith(IMAGE_EXTENSIONS))


def walk_input_folder(folder, exclude=None, skipped_outputs=None):
    """(path, name) of every file under `folder`, folders and files sorted; earlier outputs are not inputs.

    Skipped: hidden files (`.name`: macOS's `._photo.jpg` metadata files, temporary files), as the data set
    readers skip them (`datasets.folders.files_by_stem`); `exclude` (a real path, this run's output folder) when
    it lies inside (one above `folder` holds the input itself and is not skipped), and every subfolder that
    `is_output_folder` (an earlier run's output, whatever its name), whose path is appended to the list
    `skipped_outputs` if given so that the caller can say so. `folder` itself is always read: it was asked for.
    """
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if exclude and os.path.realpath(root) == exclude:
            dirs[:] = []
            continue
        if root != folder and is_output_folder(root, files):
            if skipped_outputs is not None:
                skipped_outputs.append(root)
            dirs[:] = []
            continue
        for name in sorted(files):
            if not is_hidden(name):
                yield os.path.join(root, name), name


def skipped_outputs_note(folders):
    """The note a CLI prints (stderr) for the earlier output folders that `walk_input_folder` skipped."""
    shown = ", ".join(folders[:5]) + (f" and {len(folders) - 5} more" if len(folders) > 5 else "")
    return (f"skipped {len(folders)} earlier output folder(s) inside the input (they hold {OUTPUT_MARKER} or "
            f"crops.json): {shown}; give such a folder as an input itself to read it")


def list_images(inputs, exclude=None, skipped=None, skipped_outputs=None):
    """Expand files and folders into (image_path, output_stem) pairs.

    Folders are searched recursively for .jpg/.jpeg/.png/.bmp (case-insensitive), sorted; an image
    `folder/sub/x.jpg` gets the output stem `sub/x` so equal names in different subfolders stay apart.
    A file given directly gets its own stem, whatever its extension.

    Args:
        inputs: paths of image files and folders.
        exclude: the output folder. Inside an input folder, its contents are skipped (earlier outputs are not
            inputs); equal to an input folder, it is refused (maps would land among the images).
        skipped: a list that receives the paths of other files found in the folders (not listed as images).
        skipped_outputs: a list that receives the earlier output folders skipped inside the input folders
            (`walk_input_folder`).

    Returns:
        A list of (path, stem) pairs.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two inputs would write the same output, or the output folder is an input folder.
    """
    exclude = os.path.realpath(exclude) if exclude else None
    pairs = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            top = os.path.realpath(item)
            if exclude == top:
                raise ValueError(
                    f"the output folder {exclude} is the input folder {item}: the maps would be mixed with the images "
                    f"(and read as images next time); choose another --out, e.g. {os.path.join(item, 'predictions')}"
                )
            found = []
            for path, name in walk_input_folder(item, exclude, skipped_outputs):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append((path, os.path.splitext(os.path.relpath(path, item))[0]))
                elif skipped is not None:
                    skipped.append(path)
            pairs.extend(found)
        elif os.path.isfile(item):
            pairs.append((item, os.path.splitext(os.path.basename(item))[0]))
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    seen = {}
    for path, stem in pairs:
        if stem in seen:
            raise ValueError(
                f"{seen[stem]} and {path} would both be written as {stem}.png; rename one or predict them separately"
            )
        seen[stem] = path
    return pairs


@dataclasses.dataclass
class PredictionReport:
    """What `predict_files` did: output files written, (input path, message naming it) failures, the files
    of the input folders that are not images of a known type (`skipped`) and the earlier output folders inside
    them that were not read (`skipped_outputs`, see `walk_input_folder`)."""

    written: list
    failures: list
    skipped: list = dataclasses.field(default_factory=list)
    skipped_outputs: list = dataclasses.field(default_factory=list)


def predict_files(predictor, inputs, out_dir="predictions", overlay=False, colormap="jet", alpha=0.5,
                  progress=True):
    """Write `<out_dir>/<stem>.png` (grayscale map at the image's size) for every image in `inputs`.

    An image that cannot be read or predicted is reported and skipped; the others are still written.
    Every file is written atomically; `out_dir` is marked as output (`mark_output_folder`), so that a later run
    on a folder that contains it does not read the maps as images.

    Args:
        predictor: a `Predictor` (see `load_predictor`).
        inputs: image files and folders (see `list_images`), or one of them.
        out_dir: output folder. Defaults to "predictions".
        overlay: also write `<stem>_overlay.jpg`, the heat map blended over the image.
        colormap: matplotlib colormap of the overlay. Defaults to "jet".
        alpha: heat-map weight of the overlay. Defaults to 0.5.
        progress: show the progress on stderr (`Progress`: a bar on a terminal, else plain lines).

    Returns:
        A `PredictionReport`.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: no images, two inputs would write the same output, the output folder is an input folder, or
            a bad `colormap` / `alpha` with `overlay`.
    """
    if overlay:
        overlay_colormap(colormap, alpha)  # a bad argument fails once here, not once per image
    report = PredictionReport(written=[], failures=[])
    inputs = path_list(inputs)
    pairs = list_images(inputs, exclude=out_dir, skipped=report.skipped, skipped_outputs=report.skipped_outputs)
    if not pairs:
        others = f" ({len(report.skipped)} other file(s), e.g. {report.skipped[0]})" if report.skipped else ""
        raise ValueError(
            f"no images to predict in {', '.join(os.fspath(i) for i in inputs)}{others}: expected "
            f"{'/'.join(IMAGE_EXTENSIONS)} files"
        )
    mark_output_folder(out_dir, inputs)
    bar = Progress(len(pairs), "predict", enabled=progress)
    for path, stem in pairs:
        try:
            image = read_image(path)
            saliency_map = predictor.predict(image)
            target = os.path.join(out_dir, stem + ".png")
            write_bytes_atomic(target, encode_png(map_to_uint8(saliency_map)))
            report.written.append(target)
            if overlay:
                target = os.path.join(out_dir, stem + "_overlay.jpg")
                write_bytes_atomic(target, encode_jpeg(overlay_heatmap(image, saliency_map, colormap, alpha)))
                report.written.append(target)
        except Exception as e:  # one bad image must not stop the others; each failure is reported
            message = str(e) if str(e).startswith(path) else f"{path}: {type(e).__name__}: {e}"
            report.failures.append((path, message))
        bar.update()
    bar.close()
    return report
