"""Fixation files read into 0-based (row, col) points: SALICON 2017 `.mat` files and binary fixation-point images
(MIT1003 `*_fixPts.jpg`), chosen by extension (`load_fixations`, what `datasets.sample.FileSample` reads)."""

import os

import numpy as np

from datasets.io import read_map
from datasets.matfile import read_gaze_mat


def image_hw(image_shape, argument="image_shape"):
    """(H, W) of an (H, W) or (H, W, C) shape as ints, None for None; ValueError naming `argument` otherwise."""
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
    hw = image_hw(image_shape)
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
    hw = image_hw(image_shape)
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
