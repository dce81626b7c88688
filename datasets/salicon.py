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

import os

import numpy as np

# The fixation readers live in datasets.fixations (FileSample reads them); re-exported here for SALICON callers.
from datasets.fixations import image_hw, load_fixation_image, load_fixations, load_salicon_fixations  # noqa: F401
from datasets.folders import IMAGE_EXTENSIONS, MAP_EXTENSIONS, check_pairs, files_by_stem  # noqa: F401 (re-exported)
from datasets.sample import FileSample

SPLITS = ("train", "val", "test")
FIXATION_EXTENSIONS = (".mat",)

# Folder names (images, maps, fixations) of the two layouts, in the order they are tried.
LAYOUTS = {
    "salicon2017": ("images", "maps", "fixations"),
    "msinet": ("stimuli", "saliency", "fixations"),
}


# A SALICON sample is a file-backed sample: image, map file, fixation `.mat` (the name stays for callers).
SaliconSample = FileSample


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
        A list of `datasets.sample.FileSample`.

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
        return [FileSample(stem, path) for stem, path in sorted(images.items())]
    maps = files_by_stem(os.path.join(root, map_dir, split), MAP_EXTENSIONS)
    check_pairs(images, maps, "saliency map")
    fixations = files_by_stem(os.path.join(root, fixation_dir, split), FIXATION_EXTENSIONS, required=False)
    if fixations is not None:
        check_pairs(images, fixations, "fixation")
    return [
        FileSample(stem, path, maps[stem], fixations[stem] if fixations is not None else None)
        for stem, path in sorted(images.items())
    ]


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
    hw = image_hw(shape, "shape")
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
        sample: a `datasets.sample.Sample` (from `list_salicon` or `datasets.mit1003.list_mit1003`).

    Returns:
        dict with `stem`, `image` (uint8 RGB (H, W, 3)), `saliency` (uint8 (H, W), or None without a map)
        and `fixations` (int32 (N, 2) 0-based (row, col), or None without a fixation file).

    Raises:
        ValueError: naming the files if one is unreadable or the map size differs from the image size.
    """
    loaded = sample.load()
    return {key: loaded[key] for key in ("stem", "image", "saliency", "fixations")}
