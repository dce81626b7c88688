"""Fixed train/val/test splits of the eye-tracking data sets, stored as JSON files of image stems.

`<name>.json` in this folder holds `{"dataset", "seed", "sizes", "num_images", "train", "val", "test"}`
with each split's stems sorted. The files were made once with `make_splits` (seed `SPLIT_SEED`) from the
sorted stems of the data set's `stimuli/` and are the reference from then on: nothing regenerates them
silently. `python -m datasets.splits --dataset NAME --data-dir DIR --out FILE` writes a new file (it refuses
to overwrite one); a test checks that the stored files equal what `make_splits` gives for their stems and
seed, and that they match the real folders when those are present.

| data set | train | val | test | note |
|---|---|---|---|---|
| `mit1003` | 803 | 100 | 100 | no official split (UNISAL uses 903/100 train/val) |
| `osie` | 500 | 100 | 100 | no official split (its authors use random 5-fold splits) |

Stems rather than file names, so that one split serves every MIT1003 layout (`.jpg` or `.jpeg`).
"""

import argparse
import json
import os
import sys

import numpy as np

SPLIT_SEED = 0
SPLIT_NAMES = ("train", "val", "test")
SIZES = {"mit1003": (803, 100, 100), "osie": (500, 100, 100)}
SPLIT_DIR = os.path.dirname(os.path.abspath(__file__))


def split_file(dataset):
    """The stored split file of `dataset` (`datasets/splits/<dataset>.json`)."""
    return os.path.join(SPLIT_DIR, f"{dataset}.json")


def make_splits(stems, sizes, seed=SPLIT_SEED):
    """Split `stems` at random into train/val/test of `sizes` (one permutation of the sorted stems).

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each sorted.

    Raises:
        ValueError: when the sizes do not add up to the number of stems.
    """
    stems = sorted(set(stems))
    if sum(sizes) != len(stems):
        raise ValueError(f"split sizes {tuple(sizes)} add up to {sum(sizes)}, but there are {len(stems)} images")
    order = np.random.default_rng(seed).permutation(len(stems))
    bounds = np.cumsum([0, *sizes])
    return {name: sorted(stems[i] for i in order[bounds[k]:bounds[k + 1]]) for k, name in enumerate(SPLIT_NAMES)}


def splits_document(dataset, stems, sizes, seed=SPLIT_SEED):
    """The JSON document stored for a data set."""
    splits = make_splits(stems, sizes, seed)
    return {"dataset": dataset, "seed": int(seed), "sizes": dict(zip(SPLIT_NAMES, map(int, sizes))),
            "num_images": len(set(stems)), "made_by": "datasets.splits.make_splits", **splits}


def read_splits(path):
    """Read a split file; an error names the file when it is missing or malformed."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            document = json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: split file not found; make one with `python -m datasets.splits "
                                "--dataset NAME --data-dir DIR --out FILE`") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON split file ({e})") from e
    if not isinstance(document, dict) or not any(name in document for name in SPLIT_NAMES):
        raise ValueError(f"{path}: expected a JSON object with lists of image stems under 'train', 'val', 'test'")
    return document


def load_split(dataset, split, available=None, path=None):
    """The stems of one split, checked against the images that exist.

    Args:
        dataset: the data set's name (selects `datasets/splits/<dataset>.json` unless `path` is given).
        split: "train", "val" or "test".
        available: optional collection of the stems present in the data folder.
        path: a split file overriding the stored one (same format).

    Raises:
        FileNotFoundError: for a missing split file, or (naming the file) when the split names images that
            are not in `available`.
        ValueError: for an unknown split name.
    """
    path = os.fspath(path) if path is not None else split_file(dataset)
    if path is None or not os.path.exists(path):
        known = sorted(os.path.splitext(n)[0] for n in os.listdir(SPLIT_DIR) if n.endswith(".json"))
        raise FileNotFoundError(f"{path}: no split file for data set {dataset!r} (stored: {known}); pass --split-file "
                                "FILE, made with `python -m datasets.splits --dataset NAME --data-dir DIR --out FILE`")
    document = read_splits(path)
    if split not in document:
        raise ValueError(f"{path}: no split {split!r}; it has {[n for n in SPLIT_NAMES if n in document]}")
    stems = list(document[split])
    if available is not None:
        missing = sorted(set(stems) - set(available))
        if missing:
            raise FileNotFoundError(f"{path}: split {split!r} names {len(missing)} image(s) missing from the data "
                                    f"folder, e.g. {missing[:3]}; use the data set this split was made for")
    return stems


def main(argv=None):
    """Write a split file for a data set folder (refuses to overwrite an existing file)."""
    parser = argparse.ArgumentParser(prog="python -m datasets.splits", description=main.__doc__)
    parser.add_argument("--dataset", required=True, help="name stored in the file")
    parser.add_argument("--data-dir", required=True, help="a folder with stimuli/")
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                        help="split sizes (default: the stored data sets' sizes)")
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    from datasets.io import atomic_write
    from datasets.folders import IMAGE_EXTENSIONS, files_by_stem

    if os.path.exists(args.out):
        print(f"{args.out}: exists; splits are never regenerated over a stored file, delete it first", file=sys.stderr)
        return 1
    sizes = args.sizes or SIZES.get(args.dataset)
    if sizes is None:
        print(f"no default sizes for {args.dataset!r}; pass --sizes TRAIN VAL TEST", file=sys.stderr)
        return 2
    stems = files_by_stem(os.path.join(args.data_dir, "stimuli"), IMAGE_EXTENSIONS)
    document = splits_document(args.dataset, stems, sizes, args.seed)
    with atomic_write(args.out, "w") as f:
        json.dump(document, f, indent=0)
        f.write("\n")
    print(f"{args.out}: {' / '.join(str(len(document[n])) for n in SPLIT_NAMES)} images")
    return 0

