"""Reader for the NUS-VIP eye-tracking layout (OSIE, the NUS-VIP copy of MIT1003, and that lab's other sets).

Layout under `root`::

    stimuli/<name>.jpg          the images
    eye/fixations.mat           variable `fixations`: one entry per image with `img` (the file name) and
                                `subjects` (one per observer: `fix_x`, `fix_y` 1-based MATLAB pixels,
                                fractional; `fix_duration` in ms)
    maps/<name>.jpg             optional: the data set's own continuous maps (MIT1003's official maps)

`list_nusvip` returns one `EyeSample` per image, sorted by stem, with every fixation as 0-based (row, col),
its observer (the 0-based position in `subjects`) and its duration; duplicates are kept. Messages number
entries and observers from 1, as MATLAB indexes them: "fixations entry 3 (...), observer 2" is
`fixations(3).subjects(2)`, observer id 1 in the records. Points are handled as the lab's MATLAB code
(`computeFixationMaps.m` in NUS-VIP/predicting-human-gaze-beyond-pixels) does: rounded, then clamped to
[1, w] x [1, h]. Clamped points are counted per image and reported with a warning; an image with more than
`max_outside` (5%) of its points outside, NaN/inf coordinates, or no fixation at all is refused. The file is
MATLAB v5 (scipy.io.loadmat) or v7.3 (HDF5, h5py).

The continuous map is the `maps/` file when the folder exists, otherwise `fixation_density`: the lab's recipe
(binary map of the rounded points, Gaussian blur with zero padding and a ceil(7 sigma) window, divided by its
maximum). Sigma should be the data set's blur in pixels, usually about one degree of visual angle:
`sigma_px = sigma_deg * pixels_per_degree`, with `pixels_per_degree = image_width_px / (2 * degrees(atan(
image_width_on_screen / (2 * viewing_distance))))` from the data set's viewing geometry. OSIE's 24 px is the
lab's `params.eye.radius` for its 800x600 stimuli, i.e. what that lab uses as one degree there (the viewing
geometry itself is not recorded in this workspace); a set shown at twice OSIE's pixels per degree needs 48 px.
MIT1003's official maps are a Gaussian blur too (Judd et al.); its sigma was not found in a source here, so
it was measured: against the official maps over all 1003 images of this copy, 24 px reproduces them best
(`MIT1003_SIGMA_PX`). Where a data set has its own maps (MIT1003), those are used and sigma does not matter.
"""

import dataclasses
import math
import os
import warnings

import h5py
import numpy as np
import scipy.io

from datasets.io import EXIF_ORIENTATION_TAG
from datasets.sample import Sample, sized_map
from datasets.folders import IMAGE_EXTENSIONS, MAP_EXTENSIONS, check_pairs, files_by_stem

# OSIE's reference maps: the lab's `params.eye.radius` for its 800x600 stimuli.
OSIE_SIGMA_PX = 24.0
# Sigma whose rebuilt maps match MIT1003's official maps best, measured over all 1003 images (CC per image,
# mean): 18 px 0.944, 21 px 0.956, 24 px 0.960, 27 px 0.958, 30 px 0.953, 35 px 0.938; 24 px is the best
# sigma for 827 of the 1003 images (tests/test_nusvip.py::test_real_mit1003_maps_match_official checks it).
MIT1003_SIGMA_PX = 24.0
DEFAULT_SIGMA_PX = OSIE_SIGMA_PX
WINDOW_SIGMAS = 7.0  # the lab's window: ceil(7 sigma) pixels wide
MAX_OUTSIDE = 0.05  # refuse an image when more than this fraction of its points is outside
REQUIRED_ENTRY_FIELDS = ("img", "subjects")
REQUIRED_SUBJECT_FIELDS = ("fix_x", "fix_y")
FORMAT_HINT = (
    "expected the NUS-VIP format: a variable 'fixations' with one entry per image, fields 'img' (stimulus file "
    "name) and 'subjects' (per observer 'fix_x', 'fix_y' 1-based pixels and 'fix_duration' in ms)"
)


class OutsideImageWarning(UserWarning):
    """Fixation points outside their image were clamped to the border (as the lab's code does)."""


@dataclasses.dataclass(frozen=True, eq=False)
class EyeSample(Sample):
    """One stimulus with its observers' fixations.

    `fixations` is int32 (N, 2) 0-based (row, col) inside the image, `observers` int32 (N,) the observer of
    each point, `durations` float32 (N,) in ms (NaN when the file has none); `map_path` is the data set's own
    map or None (the map is then built from the points with `sigma`). `fixations_path` is always None: the
    points are in memory (the attribute keeps the sample usable where a `FileSample` is expected).
    """

    stem: str
    image_path: str
    height: int
    width: int
    fixations: np.ndarray
    observers: np.ndarray
    durations: np.ndarray
    num_observers: int
    num_outside: int = 0
    map_path: str | None = None
    dataset: str = ""
    sigma: float = DEFAULT_SIGMA_PX
    fixations_path: None = None

    points_in_memory = True

    @property
    def human_map_origin(self):
        if self.map_path:
            return "the data set's own maps (maps/)"
        return (f"built from the fixation points (datasets.nusvip.fixation_density: rounded, clamped, Gaussian "
                f"sigma {self.sigma:g} px, window ceil(7 sigma), divided by the maximum)")

    def check_image(self, image):
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"{self.image_path}: decoded as {image.shape[0]}x{image.shape[1]}, its header says "
                             f"{self.height}x{self.width}")

    def human_map(self, image_shape=None):
        return load_human_map(self)

    def fixation_points(self, image_shape=None):
        return self.fixations, self.observers, self.durations


# ---------------------------------------------------------------------------------------------------------
# fixations.mat -> [{"img": str, "subjects": [{"fix_x": array, ...}]}]


def _v5_value(value):
    """A scipy.io.loadmat(squeeze_me=True, struct_as_record=False) value as plain dicts, lists and arrays."""
    if isinstance(value, scipy.io.matlab.mat_struct):
        return {name: _v5_value(getattr(value, name)) for name in value._fieldnames}
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_v5_value(v) for v in value.ravel()]
    if isinstance(value, str):
        return value
    return np.asarray(value)


def _h5_value(handle, obj):
    """A MATLAB v7.3 object as plain dicts (structs), lists (cells, struct arrays), str (char) and arrays."""
    if isinstance(obj, h5py.Group):
        fields = dict(obj.items())
        columns = {
            name: np.asarray(field[()]).T.ravel()
            for name, field in fields.items()
            if isinstance(field, h5py.Dataset) and field.dtype == h5py.ref_dtype
            and field.attrs.get("MATLAB_class", b"") != b"cell"
        }
        if columns:  # a struct array: each field holds one reference per element
            n = max(len(c) for c in columns.values())
            return [{name: _h5_value(handle, handle[columns[name][i]]) for name in columns} for i in range(n)]
        return {name: _h5_value(handle, field) for name, field in fields.items()}
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros(0)
    if obj.dtype == h5py.ref_dtype:  # a cell array
        return [_h5_value(handle, handle[ref]) for ref in np.asarray(obj[()]).T.ravel()]
    data = np.asarray(obj[()]).T
    if obj.attrs.get("MATLAB_class", b"") == b"char":
        return "".join(chr(int(c)) for c in data.ravel())
    return data


def _as_list(value):
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return [] if np.asarray(value).size == 0 else [value]


def read_fixations_mat(path):
    """Read a NUS-VIP `fixations.mat` (MATLAB v5 or v7.3).

    Returns:
        A list with one dict per entry: `img` (str) and `subjects`, a list with one dict per observer of
        1-D float64 arrays `fix_x`, `fix_y` and `fix_duration` (None when the file has no durations).

    Raises:
        ValueError: naming the file when it is unreadable, has no `fixations` variable, or an entry or
            observer lacks a required field (the message lists the fields found and those expected).
    """
    path = os.fspath(path)
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as handle:
                keys = [k for k in handle if k != "#refs#"]
                raw = _h5_value(handle, handle["fixations"]) if "fixations" in handle else None
        else:
            contents = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
            keys = [k for k in contents if not k.startswith("__")]
            raw = _v5_value(contents["fixations"]) if "fixations" in contents else None
    except (OSError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as e:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e}); {FORMAT_HINT}") from e
    if raw is None:
        raise ValueError(f"{path}: no 'fixations' variable (found {sorted(keys)}); {FORMAT_HINT}")
    entries = []
    for index, entry in enumerate(_as_list(raw)):
        if isinstance(entry, list) and len(entry) == 1:
            entry = entry[0]  # a cell holding a 1x1 struct
        if not isinstance(entry, dict) or any(f not in entry for f in REQUIRED_ENTRY_FIELDS):
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"{path}: fixations entry {index + 1} has fields {found}, not 'img' and 'subjects'; "
                             f"{FORMAT_HINT}")
        subjects = []
        for k, subject in enumerate(_as_list(entry["subjects"])):
            if not isinstance(subject, dict) or any(f not in subject for f in REQUIRED_SUBJECT_FIELDS):
                found = sorted(subject) if isinstance(subject, dict) else type(subject).__name__
                raise ValueError(f"{path}: fixations entry {index + 1} ({entry['img']}), observer {k + 1} has fields "
                                 f"{found}, not 'fix_x', 'fix_y' (and 'fix_duration'); {FORMAT_HINT}")
            duration = subject.get("fix_duration")
            subjects.append({
                "fix_x": np.asarray(subject["fix_x"], np.float64).ravel(),
                "fix_y": np.asarray(subject["fix_y"], np.float64).ravel(),
                "fix_duration": None if duration is None else np.asarray(duration, np.float64).ravel(),
            })
        entries.append({"img": str(entry["img"]), "subjects": subjects})
    return entries


# ---------------------------------------------------------------------------------------------------------
# Listing


def _image_size(path):
    """(height, width) of the image as displayed, from its header (PIL opens lazily: no decoding).

    An EXIF orientation of 5 to 8 (a phone photo stored sideways) swaps the stored sides, as `datasets.io.read_image`
    turns the pixels upright: the points were recorded on the upright image.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            try:
                orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
            except Exception:  # noqa: BLE001 - odd EXIF: read_image ignores it too (datasets.io.exif_orientation)
                orientation = 1
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e}); re-download or remove it") from e
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def matlab_round(values):
    """MATLAB's round (halves away from zero), which the lab's code applies to the points."""
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def _points(mat_path, entry, hw, max_outside):
    """One entry's points as 0-based (row, col), observers and durations; returns (arrays, n_outside, error)."""
    xs, ys, durations, observers = [], [], [], []
    for k, subject in enumerate(entry["subjects"]):
        x, y, d = subject["fix_x"], subject["fix_y"], subject["fix_duration"]
        if len(x) != len(y) or (d is not None and len(d) not in (0, len(x))):
            return None, 0, (f"{entry['img']}: observer {k + 1} has {len(x)} fix_x, {len(y)} fix_y and "
                             f"{len(d) if d is not None else 0} fix_duration values; they must have one per fixation")
        xs.append(x), ys.append(y), observers.append(np.full(len(x), k, np.int32))
        durations.append(d if d is not None and len(d) else np.full(len(x), np.nan))
    x, y = np.concatenate(xs) if xs else np.zeros(0), np.concatenate(ys) if ys else np.zeros(0)
    if len(x) == 0:
        return None, 0, f"{entry['img']}: no observer has a fixation on this image; remove its entry and stimulus"
    bad = int((~np.isfinite(x) | ~np.isfinite(y)).sum())
    if bad:
        return None, 0, f"{entry['img']}: {bad} of {len(x)} fixations have NaN or infinite coordinates"
    h, w = hw
    cols, rows = matlab_round(x), matlab_round(y)
    outside = (cols < 1) | (cols > w) | (rows < 1) | (rows > h)
    n_outside = int(outside.sum())
    if n_outside > max_outside * len(x):
        return None, n_outside, (f"{entry['img']}: {n_outside} of {len(x)} fixations lie outside the {w}x{h} image "
                                 f"(more than {max_outside:.0%}); the points do not belong to this image or its size")
    rows_cols = np.stack([np.clip(rows, 1, h), np.clip(cols, 1, w)], axis=1).astype(np.int32) - 1
    arrays = (rows_cols, np.concatenate(observers), np.concatenate(durations).astype(np.float32))
    return arrays, n_outside, None


def is_nusvip(root):
    """Whether `root` has the NUS-VIP layout (`stimuli/` and `eye/fixations.mat`)."""
    root = os.fspath(root)
    return os.path.isdir(os.path.join(root, "stimuli")) and os.path.isfile(os.path.join(root, "eye", "fixations.mat"))


def list_nusvip(root, sigma=DEFAULT_SIGMA_PX, name=None, max_outside=MAX_OUTSIDE):
    """List every image of a NUS-VIP data set with its fixations, sorted by stem.

    Args:
        root: the data set folder (`stimuli/`, `eye/fixations.mat`, optional `maps/`).
        sigma: Gaussian sigma in pixels for maps built from the points (images without a `maps/` file);
            one degree of visual angle in the data set's setup (module docstring). Defaults to OSIE's 24.
        name: the data set's name stored with each sample; defaults to the folder's name in lower case.
        max_outside: the largest fraction of an image's points allowed outside it (clamped, with a warning).

    Returns:
        A list of `EyeSample`.

    Raises:
        FileNotFoundError: naming the folder or file when `stimuli/` or `eye/fixations.mat` is missing, an
            entry's `img` has no file in `stimuli/`, or a stimulus (or map) has no entry (or map).
        ValueError: naming `fixations.mat` for a malformed file, and listing the refused images (NaN/inf
            coordinates, too many points outside, no fixation) with the reason.
    """
    root = os.fspath(root)
    stimuli_dir, mat_path = os.path.join(root, "stimuli"), os.path.join(root, "eye", "fixations.mat")
    if not os.path.isdir(stimuli_dir) or not os.path.isfile(mat_path):
        raise FileNotFoundError(f"{root}: not a NUS-VIP eye-tracking folder; expected stimuli/*.jpg and "
                                "eye/fixations.mat (and optionally maps/)")
    name = os.path.basename(os.path.normpath(root)).lower() if name is None else name
    stimuli = files_by_stem(stimuli_dir, IMAGE_EXTENSIONS)
    by_file = {os.path.basename(path): stem for stem, path in stimuli.items()}
    entries, problems, warned = {}, [], []
    for index, entry in enumerate(read_fixations_mat(mat_path)):
        stem = by_file.get(entry["img"], os.path.splitext(entry["img"])[0])
        if stem not in stimuli:
            raise FileNotFoundError(f"{mat_path}: entry {index + 1} names {entry['img']!r}, which has no file in "
                                    f"{stimuli_dir}; add the image or remove the entry")
        if stem in entries:
            raise ValueError(f"{mat_path}: entries {entries[stem][0] + 1} and {index + 1} both name {entry['img']!r}; "
                             "keep one entry per image")
        entries[stem] = (index, entry)
    for stem, path in stimuli.items():
        if stem not in entries:
            raise FileNotFoundError(f"{path}: stimulus without an entry in {mat_path}; remove the image or add its "
                                    "fixations")
    maps = None
    if os.path.isdir(os.path.join(root, "maps")):
        maps = files_by_stem(os.path.join(root, "maps"), MAP_EXTENSIONS)
        check_pairs(stimuli, maps, "map")
    samples = []
    for stem in sorted(stimuli):
        _, entry = entries[stem]
        hw = _image_size(stimuli[stem])
        arrays, n_outside, problem = _points(mat_path, entry, hw, max_outside)
        if problem:
            problems.append(problem)
            continue
        if n_outside:
            warned.append(f"{entry['img']} ({n_outside} of {len(arrays[0])})")
        samples.append(EyeSample(
            stem, stimuli[stem], hw[0], hw[1], *arrays, num_observers=len(entry["subjects"]), num_outside=n_outside,
            map_path=maps[stem] if maps else None, dataset=name, sigma=float(sigma),
        ))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(f"{mat_path}: {len(problems)} image(s) refused: {shown}. Fix or remove these entries and "
                         "their stimuli")
    if warned:
        warnings.warn(OutsideImageWarning(
            f"{mat_path}: fixations outside the image clamped to its border (as the lab's computeFixationMaps.m "
            f"does) on {len(warned)} image(s): {', '.join(warned[:10])}"
        ), stacklevel=2)
    return samples


# ---------------------------------------------------------------------------------------------------------
# Maps


def fixation_density(fixations, shape, sigma=DEFAULT_SIGMA_PX):
    """The lab's map of `fixations`: binary fixation map blurred by a Gaussian, divided by its maximum.

    The blur is MATLAB's `imfilter(map, fspecial('gaussian', ceil(7 sigma), sigma))`: zero padding and a square
    window, here of odd width 2 floor(ceil(7 sigma) / 2) + 1 (an even MATLAB window would shift the map by half
    a pixel). The binary map marks each fixated pixel once. The window is separable and the points are few, so
    the map is computed exactly as a sum of one windowed outer product per fixated pixel: about 130 additions of
    a 169x169 block instead of a dense 169-tap convolution of the whole image (10x faster on a 1024x768 map).

    Args:
        fixations: int array (N, 2) of 0-based (row, col) inside `shape`.
        shape: (H, W) or (H, W, C).
        sigma: Gaussian sigma in pixels.

    Returns:
        float32 (H, W) in [0, 1] with maximum 1 (zeros when there is no fixation).
    """
    h, w = int(shape[0]), int(shape[1])
    density = np.zeros((h, w), np.float32)
    points = np.unique(np.asarray(fixations, np.int64).reshape(-1, 2), axis=0)
    if len(points) == 0:
        return density
    radius = int(math.ceil(WINDOW_SIGMAS * sigma)) // 2
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    for row, col in points:
        r0, r1, c0, c1 = max(row - radius, 0), min(row + radius + 1, h), max(col - radius, 0), min(col + radius + 1, w)
        density[r0:r1, c0:c1] += np.outer(kernel[r0 - row + radius:r1 - row + radius],
                                          kernel[c0 - col + radius:c1 - col + radius])
    density /= density.max()
    return density


def load_human_map(sample):
    """The sample's continuous map as uint8 (H, W): its `maps/` file, else `fixation_density` * 255 rounded.

    Raises:
        ValueError: naming the map file when it is unreadable or not of the image's size.
    """
    if sample.map_path:
        return sized_map(sample.map_path, sample.image_path, (sample.height, sample.width))
    density = fixation_density(sample.fixations, (sample.height, sample.width), sample.sigma)
    return np.round(density * 255.0).astype(np.uint8)


def load_sample(sample):
    """Load one `EyeSample` (`Sample.load`): dict with `stem`, `image` (uint8 RGB), `saliency` (uint8 (H, W)),
    `fixations`, `observers`, `durations`.

    Raises:
        ValueError: naming the file when the image is unreadable or its size differs from the listed one.
    """
    return sample.load()
