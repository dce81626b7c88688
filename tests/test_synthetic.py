"""Synthetic SALICON generator: layout, determinism, the .mat structure, and that the data carry the density."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from scipy import ndimage

from datasets.io import read_image, read_map
from datasets.salicon import list_salicon
from datasets.synthetic import generate_synthetic_salicon, main

H, W = 48, 64


def _all_files(root):
    """Relative path -> bytes of every file under `root`."""
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def _cc(a, b):
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return float((a * b).mean())


def test_layout_and_counts(synthetic_salicon_dir):
    root = synthetic_salicon_dir
    for split, n in [("train", 8), ("val", 4), ("test", 2)]:
        stems = [s.stem for s in list_salicon(root, split)]
        assert stems == [f"COCO_{split}2014_{i:012d}" for i in range(1, n + 1)]
        for stem in stems:
            density = np.load(root / "densities" / split / f"{stem}.npy")
            assert density.dtype == np.float32 and density.shape == (H, W)
            assert density.min() > 0 and abs(float(density.sum(dtype=np.float64)) - 1.0) < 1e-5
    assert not (root / "maps" / "test").exists() and not (root / "fixations" / "test").exists()


def test_mat_has_the_salicon_2017_structure(synthetic_salicon_dir):
    path = synthetic_salicon_dir / "fixations" / "train" / "COCO_train2014_000000000003.mat"
    contents = scipy.io.loadmat(path)
    assert contents["__header__"].startswith(b"MATLAB 5.0 MAT-file")
    assert str(contents["image"][0]) == "COCO_train2014_000000000003"
    np.testing.assert_array_equal(contents["resolution"], [[H, W]])
    gaze = contents["gaze"]
    assert gaze.shape == (16, 1) and set(gaze.dtype.names) == {"location", "timestamp", "fixations"}
    for subject in gaze[:, 0]:
        fixations, location, timestamp = subject["fixations"], subject["location"], subject["timestamp"]
        assert fixations.shape[1] == 2 and len(fixations) >= 1
        assert len(location) > len(fixations) and timestamp.shape == (len(location), 1)
        assert np.all(np.diff(timestamp[:, 0]) > 0)
        for xy in (fixations, location):  # 1-based x in 1..W, y in 1..H
            assert xy[:, 0].min() >= 1 and xy[:, 0].max() <= W and xy[:, 1].min() >= 1 and xy[:, 1].max() <= H


def _fixations_and_density(root, stem):
    gaze = scipy.io.loadmat(root / "fixations" / "train" / f"{stem}.mat")["gaze"]
    xy = np.concatenate([s["fixations"] for s in gaze[:, 0]]).astype(int)
    return xy[:, 1] - 1, xy[:, 0] - 1, np.load(root / "densities" / "train" / f"{stem}.npy")


def test_map_is_the_blurred_fixations(synthetic_salicon_dir):
    for sample in list_salicon(synthetic_salicon_dir, "train")[:3]:
        rows, cols, _ = _fixations_and_density(synthetic_salicon_dir, sample.stem)
        counts = np.zeros((H, W))
        np.add.at(counts, (rows, cols), 1.0)
        blurred = ndimage.gaussian_filter(counts, sigma=19.0 * W / 640, mode="constant")  # SALICON's 19 px at 640
        expected = blurred / blurred.max() * 255
        np.testing.assert_allclose(read_map(sample.map_path), expected, atol=2.0)


def test_fixations_follow_the_density_and_the_image_predicts_it(synthetic_salicon_dir):
    gain, cc_image, cc_center = [], [], []
    yy, xx = np.mgrid[0:H, 0:W]
    center = np.exp(-0.5 * (((yy - (H - 1) / 2) / (0.25 * H)) ** 2 + ((xx - (W - 1) / 2) / (0.25 * W)) ** 2))
    for sample in list_salicon(synthetic_salicon_dir, "train"):
        rows, cols, density = _fixations_and_density(synthetic_salicon_dir, sample.stem)
        gain.append(density[rows, cols].mean() * H * W)  # 1.0 for fixations uniform over the image
        # An image-only cue that knows nothing of the generator: local colour saturation, blurred.
        saturation = cv2.cvtColor(read_image(sample.image_path), cv2.COLOR_RGB2HSV)[:, :, 1].astype(float)
        cue = ndimage.gaussian_filter(np.maximum(saturation - np.median(saturation), 0), 2.0) + 1e-3 * center
        cc_image.append(_cc(cue, density))
        cc_center.append(_cc(center, density))
    assert np.mean(gain) > 3.0
    assert np.mean(cc_image) > np.mean(cc_center) + 0.2, (cc_image, cc_center)


def test_same_seed_gives_identical_bytes_and_reruns_are_no_ops(tmp_path):
    kwargs = dict(n_train=2, n_val=1, n_test=1, image_size=(24, 32), n_observers=3, seed=7)
    generate_synthetic_salicon(tmp_path / "a", **kwargs)
    generate_synthetic_salicon(tmp_path / "b", **kwargs)
    files = _all_files(tmp_path / "a")
    assert len(files) == 1 + 4 * 3 + 2  # config + 4 files per train/val image + image and density for test
    assert files == _all_files(tmp_path / "b")

    other = _all_files(generate_synthetic_salicon(tmp_path / "c", **{**kwargs, "seed": 8}))
    first_image = os.path.join("images", "train", "COCO_train2014_000000000001.jpg")
    assert other[first_image] != files[first_image]

    map_path = tmp_path / "a" / "maps" / "train" / "COCO_train2014_000000000002.png"
    image_path = tmp_path / "a" / "images" / "train" / "COCO_train2014_000000000002.jpg"
    map_path.unlink()
    mtime = image_path.stat().st_mtime_ns
    unchanged = tmp_path / "a" / "images" / "train" / "COCO_train2014_000000000001.jpg"
    unchanged_mtime = unchanged.stat().st_mtime_ns
    generate_synthetic_salicon(tmp_path / "a", **kwargs)  # regenerates only the incomplete sample
    assert _all_files(tmp_path / "a") == files
    assert unchanged.stat().st_mtime_ns == unchanged_mtime and image_path.stat().st_mtime_ns >= mtime


def test_other_parameters_into_a_generated_folder_are_refused(tmp_path):
    generate_synthetic_salicon(tmp_path, n_train=1, n_val=1, image_size=(16, 16), n_observers=2)
    with pytest.raises(ValueError, match=r"synthetic\.json: this folder was generated with other parameters \(seed: 0"):
        generate_synthetic_salicon(tmp_path, n_train=1, n_val=1, image_size=(16, 16), n_observers=2, seed=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_train=-1, n_val=1), "n_train must be a non-negative integer, got -1"),
        (dict(n_train=1, n_val=1, image_size=(4, 64)), r"image_size must be \(H, W\) with both sides >= 8"),
        (dict(n_train=1, n_val=1, n_observers=0), "n_observers and fixations_per_observer must be >= 1"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic_salicon(tmp_path, **kwargs)


def test_cli_and_progress_bar(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--n-train", "2", "--n-val", "1", "--size", "24", "32", "--seed", "3"])
    assert len(list_salicon(tmp_path / "cli", "train")) == 2
    assert read_image(tmp_path / "cli" / "images" / "val" / "COCO_val2014_000000000001.jpg").shape == (24, 32, 3)
    generate_synthetic_salicon(tmp_path / "bar", n_train=2, n_val=0, image_size=(16, 16), n_observers=2, verbose=True)
    assert "2/2" in capsys.readouterr().out
    result = subprocess.run(
        [sys.executable, "-m", "datasets.synthetic", "--help"], capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert "--n-train" in result.stdout and "--size H W" in result.stdout
