"""Build small NUS-VIP folders (stimuli/, eye/fixations.mat, optional maps/) with the real files' quirks.

`QUIRKS` is the hand-made entry set the tests check against hand-computed expectations: an observer without
fixations, one fixation stored as a 1x1 array (a scalar after `loadmat(squeeze_me=True)`), fractional values,
1-based values at 1 and at w/h, MATLAB's round-half-away (5.5 -> 6), a duplicate point, and one point outside
the image on a second image (1 of 25: under the 5% limit).
"""

import h5py
import numpy as np
import scipy.io

from datasets.io import encode_jpeg, write_bytes_atomic

# Image "a.jpg" is 12x16 (h x w); "b.jpg" is 10x20. Subjects: (fix_x, fix_y, fix_duration), MATLAB 1-based.
SIZES = {"a": (12, 16), "b": (10, 20)}
A_SUBJECTS = [
    ([1.0, 16.0, 3.4], [1.0, 12.0, 5.5], [100.0, 200.0, 300.0]),  # corners at 1 and w/h; 5.5 rounds to 6
    ([], [], []),  # an observer without fixations
    (8.0, 2.0, 250.0),  # one fixation: stored 1x1
    ([1.2], [0.6], [50.0]),  # rounds to (1, 1): a duplicate of the first point
]
A_EXPECTED = {  # by hand: row = round(y) - 1, col = round(x) - 1
    "fixations": [[0, 0], [11, 15], [5, 2], [1, 7], [0, 0]],
    "observers": [0, 0, 0, 2, 3],
    "durations": [100.0, 200.0, 300.0, 250.0, 50.0],
}
_B_X = list(np.linspace(1.0, 19.0, 24)) + [20.6]  # 20.6 rounds to 21 > w = 20: outside, clamped to col 19
_B_Y = list(np.linspace(1.0, 10.0, 24)) + [4.0]
B_SUBJECTS = [(_B_X[:12], _B_Y[:12], [80.0] * 12), (_B_X[12:], _B_Y[12:], [90.0] * 13)]
QUIRKS = {"a.jpg": A_SUBJECTS, "b.jpg": B_SUBJECTS}


def _matlab(values):
    """A MATLAB row vector (1xN double); a scalar stays 1x1, an empty list is 0x0."""
    values = np.atleast_1d(np.asarray(values, np.float64))
    return np.zeros((0, 0)) if values.size == 0 else values.reshape(1, -1)


def subjects_array(subjects, fields=("fix_x", "fix_y", "fix_duration")):
    """A 1xK MATLAB struct array of observers."""
    array = np.empty((1, len(subjects)), dtype=[(f, object) for f in fields])
    for k, subject in enumerate(subjects):
        array[0, k] = tuple(_matlab(v) for v in subject[: len(fields)])
    return array


def write_fixations_v5(path, entries, entry_fields=("img", "subjects"), variable="fixations"):
    """Write `entries` ({img: subjects}) as the lab does: a 1xN cell array of 1x1 structs (MATLAB v5)."""
    cell = np.empty((1, len(entries)), dtype=object)
    for i, (img, subjects) in enumerate(entries.items()):
        struct = np.empty((1, 1), dtype=[(f, object) for f in entry_fields])
        struct[0, 0] = (img, subjects_array(subjects))
        cell[0, i] = struct
    scipy.io.savemat(path, {variable: cell})


def _h5_double(group, name, values):
    array = np.atleast_1d(np.asarray(values, np.float64))
    if array.size == 0:
        dataset = group.create_dataset(name, data=np.array([0, 0], np.uint64))
        dataset.attrs["MATLAB_empty"] = np.uint8(1)
    else:
        dataset = group.create_dataset(name, data=array.reshape(1, -1).T)  # 1xN stored transposed
    dataset.attrs["MATLAB_class"] = np.bytes_("double")
    return dataset


def write_fixations_v73(path, entries):
    """The same cell array of structs as a MATLAB v7.3 (HDF5) file, written by hand as MATLAB lays it out."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        cells = []
        for i, (img, subjects) in enumerate(entries.items()):
            struct = refs.create_group(f"e{i}")
            struct.attrs["MATLAB_class"] = np.bytes_("struct")
            name = struct.create_dataset("img", data=np.array([[ord(c)] for c in img], np.uint16))
            name.attrs["MATLAB_class"] = np.bytes_("char")
            group = struct.create_group("subjects")  # a 1xK struct array: each field one reference per element
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            for j, field in enumerate(("fix_x", "fix_y", "fix_duration")):
                targets = [_h5_double(refs, f"e{i}s{k}f{j}", s[j]) for k, s in enumerate(subjects)]
                group.create_dataset(field, data=np.array([[t.ref] for t in targets], dtype=h5py.ref_dtype))
            cells.append(struct.ref)
        cell = f.create_dataset("fixations", data=np.array([[r] for r in cells], dtype=h5py.ref_dtype))
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def write_images(root, sizes, seed=0):
    """Random JPEG stimuli `<root>/stimuli/<stem>.jpg` of the given (h, w)."""
    rng = np.random.default_rng(seed)
    for stem, (h, w) in sizes.items():
        write_bytes_atomic(root / "stimuli" / f"{stem}.jpg", encode_jpeg(rng.integers(0, 256, (h, w, 3), np.uint8)))


def make_nusvip(root, entries=None, sizes=None, writer=write_fixations_v5):
    """A NUS-VIP folder with `entries` (default `QUIRKS`) on images of `sizes` (default `SIZES`)."""
    entries = QUIRKS if entries is None else entries
    write_images(root, SIZES if sizes is None else sizes)
    (root / "eye").mkdir(parents=True, exist_ok=True)
    writer(root / "eye" / "fixations.mat", entries)
    return root
