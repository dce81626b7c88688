"""SALICON reader: file listing paired by stem, fixations from the 2017 `.mat` files, and per-sample loading.

Two on-disk layouts are recognised under `root`:

* the official 2017 (LSUN'17) release: `images/{train,val,test}/*.jpg`, `maps/{train,val}/*.png`,
  `fixations/{train,val}/*.mat`;
* MSI-Net's `download.py` layout: `stimuli/{train,val[,test]}/*.jpg`, `saliency/{train,val}/*.png`,
  `fixations/{train,val}/*.mat`.

Files are paired by stem, never by sort order: a map or fixation file without its image (or the
reverse) is an error naming the file. The `fixations/` folder is optional as a whole (training on maps
does not need it), but when present it must match the images one to one. The test split has images only.

Fixations are the 2017 release's inferred fixations (`gaze(i).fixations`), not the raw mouse samples
(`gaze(i).location`), converted from MATLAB's 1-based (x, y) to 0-based (row, col) and clipped to the image.
"""

import dataclasses
import os

import numpy as np

from datasets.folders import IMAGE_EXTENSIONS, MAP_EXTENSIONS, check_pairs, files_by_stem  # noqa: F401 (re-exported)
from datasets.io import read_map
from datasets.matfile import read_gaze_mat
from datasets.sample import Sample

SPLITS = ("train", "val", "test")
FIXATION_EXTENSIONS = (".mat",)

# Folder names (images, maps, fixations) of the two layouts, in the order they are tried.
LAYOUTS = {
    "salicon2017": ("images", "maps", "fixations"),
    "msinet": ("stimuli", "saliency", "fixations"),
}


@dataclasses.dataclass(frozen=True)
class SaliconSample(Sample):
    """One stimulus and its ground-truth files; `map_path` and `fixations_path` are None when absent."""

    stem: str
    image_path: str
    map_path: str | None = None
    fixations_path: str | None = None

    def fixation_points(self, image_shape):
        """The fixation file's points (no observers or durations); None without a fixation file."""
        if self.fixations_path is None:
            return None
        fixations = np.asarray(load_fixations(self.fixations_path, image_shape), np.int32).reshape(-1, 2)
        return fixations, np.zeros(0, np.int32), np.zeros(0, np.float32)


def detect_layout(root):
    """Return the folder names (images, maps, fixations) of the SALICON layout found under `root`.

    Raises:
        FileNotFoundError: naming `root` and both expected layouts when neither image folder exists.
    """
    root = os.fspath(root)
    for folders in LAYOUTS.values():
        if os.path.isdir(os.path.join(root, folders[0])):
            return folders
    raise FileNotFoundError(
        f"{root}: not a SALICON folder; expected images/{{train,val,test}}/ (2017 release: images, maps, "
        "fixations) or stimuli/{train,val}/ (MSI-Net download layout: stimuli, saliency, fixations)"
    )


def list_salicon(root, split):
    """List the samples of one SALICON split, paired by stem and sorted by stem.

    Args:
        root: the SALICON folder (2017 release or MSI-Net download layout, see the module docstring).
        split: "train", "val" or "test". Test samples have `map_path` and `fixations_path` None.

    Returns:
        A list of `SaliconSample`.

    Raises:
        ValueError: for an unknown split, a file whose stem has no image, or two files with one stem.
        FileNotFoundError: for a missing or empty split folder, or an image without its map / fixation file.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = os.fspath(root)
    image_dir, map_dir, fixation_dir = detect_layout(root)
    images = files_by_stem(os.path.join(root, image_dir, split), IMAGE_EXTENSIONS)
    if split == "test":
        return [SaliconSample(stem, path) for stem, path in sorted(images.items())]
    maps = files_by_stem(os.path.join(root, map_dir, split), MAP_EXTENSIONS)
    check_pairs(images, maps, "saliency map")
    fixations = files_by_stem(os.path.join(root, fixation_dir, split), FIXATION_EXTENSIONS, required=False)
    if fixations is not None:
        check_pairs(images, fixations, "fixation")
    return [
        SaliconSample(stem, path, maps[stem], fixations[stem] if fixations is not None else None)
        for stem, path in sorted(images.items())
    ]


def _image_hw(image_shape, argument="image_shape"):
    if image_shape is None:
        return None
    if len(image_shape) not in (2, 3) or min(image_shape[:2]) <= 0:
        raise ValueError(f"{argument} must be (H, W) or (H, W, C) with positive sides, got {image_shape}")
    return int(image_shape[0]), int(image_shape[1])


def _clip(fixations, hw):
    return np.clip(fixations, 0, np.array(hw) - 1).astype(np.int32)


def load_salicon_fixations(mat_path, image_shape=None):
    """Read all subjects' fixations of a SALICON 2017 `.mat` file as 0-based (row, col).

    Args:
        mat_path: a fixation `.mat` (MATLAB v5 or v7.3/HDF5).
        image_shape: (H, W) or (H, W, C) of the image; defaults to the file's `resolution`. Points are
            clipped to it (the 2017 data contain a few points on or past the border).

    Returns:
        int32 array (N, 2) of (row, col), subjects concatenated in file order (duplicates kept).

    Raises:
        ValueError: naming the file if it is unreadable, has no `gaze`, has neither `resolution` nor an
            `image_shape`, its `resolution` differs from `image_shape`, or a fixation is NaN or infinite.
    """
    mat_path = os.fspath(mat_path)
    contents = read_gaze_mat(mat_path)
    hw = _image_hw(image_shape)
    resolution = contents["resolution"]
    if hw is None:
        if resolution is None:
            raise ValueError(f"{mat_path}: no 'resolution' variable; pass image_shape=(H, W) to clip the fixations")
        hw = resolution
    elif resolution is not None and resolution != hw:
        raise ValueError(
            f"{mat_path}: resolution {resolution[0]}x{resolution[1]} differs from the image size {hw[0]}x{hw[1]}; "
            "the fixation file does not belong to this image (or the image was resized)"
        )
    points = [subject["fixations"] for subject in contents["gaze"] if "fixations" in subject]
    if not points and contents["gaze"]:
        raise ValueError(f"{mat_path}: 'gaze' has no 'fixations' field; expected SALICON 2017 inferred fixations")
    xy = np.concatenate(points, axis=0) if points else np.zeros((0, 2))
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{mat_path}: {int(bad.sum())} of {len(xy)} fixations have NaN or infinite coordinates; the file is "
            "damaged: re-download it, or remove the image with its map and fixation file"
        )
    rows_cols = np.rint(xy[:, ::-1]).astype(np.int64) - 1
    return _clip(rows_cols, hw)


def load_fixation_image(path, image_shape=None):
    """Read fixations from a binary fixation-point image (nonzero pixel = fixation), e.g. MIT1003 `*_fixPts.jpg`.

    Args:
        path: an image file; any nonzero gray value counts as a fixation.
        image_shape: if given, (H, W) or (H, W, C) the fixation image must match.

    Returns:
        int32 array (N, 2) of 0-based (row, col) in row-major order.

    Raises:
        ValueError: naming the file if it is unreadable or its size differs from `image_shape`.
    """
    points = read_map(path)
    hw = _image_hw(image_shape)
    if hw is not None and points.shape != hw:
        raise ValueError(
            f"{os.fspath(path)}: fixation image is {points.shape[0]}x{points.shape[1]}, expected {hw[0]}x{hw[1]} "
            "like its stimulus"
        )
    return np.argwhere(points > 0).astype(np.int32)


def load_fixations(path, image_shape=None):
    """Read fixations from a SALICON `.mat` or a binary fixation-point image, chosen by the file extension."""
    if os.fspath(path).lower().endswith(".mat"):
        return load_salicon_fixations(path, image_shape)
    return load_fixation_image(path, image_shape)


def fixation_map(fixations, shape):
    """Rasterise fixations into a binary map.

    Args:
        fixations: int array (N, 2) of 0-based (row, col) inside `shape`.
        shape: (H, W) or (H, W, C) of the image.

    Returns:
        float32 (H, W) with 1.0 at every fixated pixel (repeated fixations count once) and 0 elsewhere.

    Raises:
        ValueError: if `fixations` is not (N, 2) or a point lies outside the image.
    """
    hw = _image_hw(shape, "shape")
    fixations = np.asarray(fixations)
    if fixations.size == 0:
        return np.zeros(hw, np.float32)
    if fixations.ndim != 2 or fixations.shape[1] != 2:
        raise ValueError(f"fixations must be an (N, 2) array of (row, col), got shape {fixations.shape}")
    outside = (fixations < 0).any(axis=1) | (fixations[:, 0] >= hw[0]) | (fixations[:, 1] >= hw[1])
    if outside.any():
        raise ValueError(
            f"fixation {fixations[outside][0].tolist()} lies outside the {hw[0]}x{hw[1]} image; "
            "clip fixations to the image first (load_salicon_fixations does)"
        )
    result = np.zeros(hw, np.float32)
    result[fixations[:, 0], fixations[:, 1]] = 1.0
    return result


def load_sample(sample):
    """Load one sample's arrays (`Sample.load`).

    Args:
        sample: a `SaliconSample` (from `list_salicon` or `datasets.mit1003.list_mit1003`).

    Returns:
        dict with `stem`, `image` (uint8 RGB (H, W, 3)), `saliency` (uint8 (H, W), or None without a map)
        and `fixations` (int32 (N, 2) 0-based (row, col), or None without a fixation file).

    Raises:
        ValueError: naming the files if one is unreadable or the map size differs from the image size.
    """
    loaded = sample.load()
    return {key: loaded[key] for key in ("stem", "image", "saliency", "fixations")}
