"""Reading the SALICON 2017 fixation `.mat` files, both MATLAB v5 (scipy) and v7.3 (HDF5, h5py).

Each file holds `image` (the stem), `resolution` ([H W]) and `gaze`, an N_subj x 1 struct array whose
per-subject fields are `location` (raw mouse samples), `timestamp` and `fixations` (inferred fixations);
coordinates are MATLAB's 1-based (x, y). This module only unpacks that structure into numpy; the
conversion to 0-based (row, col) lives in `datasets.salicon`.

MATLAB v7.3 files are HDF5 files behind a 512-byte user block. A struct array is an HDF5 group with one
dataset per field; each field dataset holds object references (one per struct element) into `#refs#`,
and every numeric array is stored transposed (MATLAB is column-major). A scalar struct stores its fields
directly. Empty arrays carry the attribute `MATLAB_empty` and store their shape as data.
"""

import os

import h5py
import numpy as np
import scipy.io

GAZE_FIELDS = ("location", "timestamp", "fixations")


def read_gaze_mat(path):
    """Read the `gaze` struct array and `resolution` of a SALICON 2017 fixation file.

    Args:
        path: a MATLAB v5 or v7.3 `.mat` file.

    Returns:
        A dict with `resolution` ((H, W) ints, or None when the file has none) and `gaze`, a list with one
        dict per subject mapping each field present (`location`, `timestamp`, `fixations`) to a 2-D float64
        array in MATLAB's orientation (rows = samples); missing or empty fields are (0, 2) / (0, 1) arrays.

    Raises:
        ValueError: naming the file if it is not a readable `.mat` file or holds no `gaze` variable.
    """
    path = os.fspath(path)
    if h5py.is_hdf5(path):
        resolution, gaze = _read_v73(path)
    else:
        resolution, gaze = _read_v5(path)
    return {"resolution": resolution, "gaze": gaze}


def _no_gaze_error(path, keys):
    return ValueError(
        f"{path}: no 'gaze' variable (found {sorted(keys)}); expected a SALICON 2017 fixation file with "
        "'gaze' (per-subject 'location', 'timestamp', 'fixations'). The 2015 JSON/'I'-map formats are not supported"
    )


def _as_points(array, field):
    """Return a field as a 2-D float64 array with rows = samples ((0, k) when empty)."""
    array = np.asarray(array, dtype=np.float64)
    width = 1 if field == "timestamp" else 2
    if array.size == 0:
        return np.zeros((0, width))
    return array.reshape(-1, width) if array.ndim != 2 else array


def _resolution(value):
    value = np.asarray(value).ravel()
    if value.size < 2:
        return None
    return int(value[0]), int(value[1])


def _read_v5(path):
    try:
        contents = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e})") from e
    if "gaze" not in contents:
        raise _no_gaze_error(path, [k for k in contents if not k.startswith("__")])
    gaze = contents["gaze"]
    if gaze.dtype.names is None:
        raise ValueError(f"{path}: 'gaze' is a {gaze.dtype} array, expected a struct array with 'fixations'")
    subjects = []
    for element in gaze.ravel():
        subjects.append({f: _as_points(element[f], f) for f in GAZE_FIELDS if f in gaze.dtype.names})
    resolution = _resolution(contents["resolution"]) if "resolution" in contents else None
    return resolution, subjects


def _h5_array(dataset):
    """Read a v7.3 numeric dataset back into MATLAB's orientation."""
    if dataset.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    return np.asarray(dataset[()]).T


def _read_v73(path):
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable MATLAB v7.3 (HDF5) .mat file ({e})") from e
    with handle:
        if "gaze" not in handle:
            raise _no_gaze_error(path, [k for k in handle if k != "#refs#"])
        gaze = handle["gaze"]
        if not isinstance(gaze, h5py.Group):
            raise ValueError(f"{path}: 'gaze' is not a MATLAB struct (HDF5 group), expected per-subject fields")
        fields = [f for f in GAZE_FIELDS if f in gaze]
        columns = {}
        for field in fields:
            dataset = gaze[field]
            if dataset.dtype == h5py.ref_dtype:
                # Struct array: one object reference per subject (stored transposed, so ravel in order).
                columns[field] = [_h5_array(handle[ref]) for ref in np.asarray(dataset[()]).T.ravel()]
            else:
                columns[field] = [_h5_array(dataset)]  # scalar struct: the field is the data itself
        n_subjects = max((len(c) for c in columns.values()), default=0)
        subjects = [
            {f: _as_points(columns[f][i], f) for f in fields if i < len(columns[f])} for i in range(n_subjects)
        ]
        resolution = _resolution(_h5_array(handle["resolution"])) if "resolution" in handle else None
    return resolution, subjects
