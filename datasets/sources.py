"""One listing for every data set the tools read: data set name -> the samples of one split.

| name | folder | split |
|---|---|---|
| `salicon` | SALICON (2017 release or MSI-Net download layout) | its own folders |
| `mit1003` | NUS-VIP layout (points, official `maps/`), or a maps-only MIT1003 layout | `splits/mit1003.json` |
| `osie` | NUS-VIP layout (maps built from the points) | `splits/osie.json` |
| `nus` | any data set in the NUS-VIP layout, named after its folder | `splits/<name>.json` or a file |
| `images` | a folder of images without human data (teacher maps only) | none: every image |

Samples are `datasets.sample.FileSample` (files on disk) or `datasets.nusvip.EyeSample` (points in memory).
"""

import os

from datasets import nusvip, splits
from datasets.mit1003 import list_mit1003
from datasets.folders import IMAGE_EXTENSIONS, files_by_stem
from datasets.salicon import list_salicon
from datasets.sample import FileSample

DATASETS = ("salicon", "mit1003", "osie", "nus", "images")


def dataset_name(dataset, data_dir):
    """The name stored in records and manifests: `dataset`, or the folder's name for `nus`."""
    if dataset == "nus":
        return os.path.basename(os.path.normpath(os.fspath(data_dir))).lower()
    return dataset


def split_names(dataset):
    """The splits `split="all"` stands for: SALICON's with maps (train, val), else all three."""
    return ("train", "val") if dataset == "salicon" else splits.SPLIT_NAMES


def list_samples(dataset, data_dir, split, split_file=None, sigma=nusvip.DEFAULT_SIGMA_PX):
    """The samples of one split of a data set, sorted by stem.

    Args:
        dataset: one of `DATASETS`.
        data_dir: its folder.
        split: "train", "val" or "test" (ignored for `images`: every image is listed).
        split_file: a split JSON overriding the stored one (same format as `datasets/splits/*.json`).
        sigma: Gaussian sigma in pixels for maps built from fixation points (NUS-VIP sets without `maps/`).

    Raises:
        FileNotFoundError: for a missing folder, split file or image (the message names it).
        ValueError: for an unknown data set or split, or malformed eye-tracking data (naming the file).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {DATASETS}")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{data_dir}: {dataset} folder not found")
    if dataset == "salicon":
        return list_salicon(data_dir, split)
    if dataset == "images":
        return [FileSample(stem, path) for stem, path in sorted(files_by_stem(data_dir, IMAGE_EXTENSIONS).items())]
    if split not in splits.SPLIT_NAMES:
        raise ValueError(f"split must be one of {splits.SPLIT_NAMES}, got {split!r}")
    name = dataset_name(dataset, data_dir)
    if dataset == "mit1003" and not nusvip.is_nusvip(data_dir):
        samples = list_mit1003(data_dir)  # the original / MSI-Net layouts: maps (and fixPts images) only
    else:
        samples = nusvip.list_nusvip(data_dir, sigma=sigma, name=name)
    by_stem = {sample.stem: sample for sample in samples}
    stems = splits.load_split(name, split, available=by_stem, path=split_file)
    return [by_stem[stem] for stem in sorted(stems)]
