"""SALICON reader: both layouts, pairing by stem, .mat fixations (v5 and v7.3/HDF5) and the error messages."""

import os
import shutil

import h5py
import numpy as np
import pytest
import scipy.io

from datasets.io import encode_png, write_bytes_atomic
from datasets.salicon import fixation_map, list_salicon, load_salicon_fixations, load_sample

# Three subjects in MATLAB's 1-based (x, y): the second has a point past the right border (x = 70 > 64) and
# one on row 0 of MATLAB's 1-based grid (y = 0); the third has no fixations. `location` holds decoys that a
# reader using the raw mouse samples instead of the fixations would return.
SUBJECT_FIXATIONS = [
    np.array([[1.0, 1.0], [64.0, 48.0]]),
    np.array([[10.0, 20.0], [70.0, 5.0], [3.0, 0.0]]),
    np.zeros((0, 0)),
]
DECOY_LOCATION = np.array([[30.0, 30.0], [31.0, 31.0]])
# Expected 0-based (row, col) on a 48x64 image, computed by hand from the table above.
EXPECTED_ROWS_COLS = np.array([[0, 0], [47, 63], [19, 9], [4, 63], [0, 2]])


def _write_v5(path, with_gaze=True, resolution=(48, 64)):
    fields = [("location", object), ("timestamp", object), ("fixations", object)]
    gaze = np.empty((len(SUBJECT_FIXATIONS), 1), dtype=fields)
    for i, fixations in enumerate(SUBJECT_FIXATIONS):
        gaze[i, 0] = (DECOY_LOCATION, np.array([[10.0], [20.0]]), fixations)
    contents = {"image": "COCO_val2014_000000000001"}
    if resolution is not None:
        contents["resolution"] = np.array([resolution], dtype=np.float64)
    if with_gaze:
        contents["gaze"] = gaze
    scipy.io.savemat(path, contents)


def _write_matlab_array(group, name, array):
    """Store a MATLAB double array the way v7.3 does: transposed, or as its shape with MATLAB_empty."""
    array = np.asarray(array, dtype=np.float64)
    if array.size == 0:
        dataset = group.create_dataset(name, data=np.array(array.shape, dtype=np.uint64))
        dataset.attrs["MATLAB_empty"] = np.uint8(1)
    else:
        dataset = group.create_dataset(name, data=array.T)
    dataset.attrs["MATLAB_class"] = np.bytes_("double")
    return dataset


def _write_v73(path, with_gaze=True):
    """Write a MATLAB v7.3 file by hand: 512-byte user block, struct array fields as references into #refs#."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        _write_matlab_array(f, "resolution", [[48.0, 64.0]])
        if with_gaze:
            gaze = f.create_group("gaze")
            gaze.attrs["MATLAB_class"] = np.bytes_("struct")
            fields = {"location": [DECOY_LOCATION] * 3, "fixations": SUBJECT_FIXATIONS}
            for field, arrays in fields.items():
                targets = [_write_matlab_array(refs, f"{field}{i}", a) for i, a in enumerate(arrays)]
                # The 3x1 MATLAB struct array becomes a (1, 3) reference dataset (transposed).
                gaze.create_dataset(field, data=np.array([[t.ref for t in targets]], dtype=h5py.ref_dtype))
        else:
            _write_matlab_array(f, "I", np.eye(3))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = header.ljust(116)
    with open(path, "r+b") as f:
        f.write(header + b"\x00" * 8 + b"\x00\x02IM")


@pytest.mark.parametrize("writer", [_write_v5, _write_v73], ids=["v5", "v7.3"])
def test_fixations_are_zero_based_row_col_clipped(tmp_path, writer):
    path = tmp_path / "fix.mat"
    writer(path)
    np.testing.assert_array_equal(load_salicon_fixations(path), EXPECTED_ROWS_COLS)
    np.testing.assert_array_equal(load_salicon_fixations(path, image_shape=(48, 64, 3)), EXPECTED_ROWS_COLS)
    assert load_salicon_fixations(path).dtype == np.int32


def test_v73_file_is_recognised_as_matlab_header(tmp_path):
    path = tmp_path / "fix.mat"
    _write_v73(path)
    assert path.read_bytes().startswith(b"MATLAB 7.3 MAT-file")
    assert h5py.is_hdf5(path)


@pytest.mark.parametrize("writer", [_write_v5, _write_v73], ids=["v5", "v7.3"])
def test_mat_without_gaze_names_the_file(tmp_path, writer):
    path = tmp_path / "COCO_val2014_000000000001.mat"
    writer(path, with_gaze=False)
    with pytest.raises(ValueError, match=r"COCO_val2014_000000000001\.mat: no 'gaze' variable"):
        load_salicon_fixations(path)


def test_mat_resolution_checks(tmp_path):
    path = tmp_path / "fix.mat"
    _write_v5(path)
    with pytest.raises(ValueError, match="resolution 48x64 differs from the image size 480x640"):
        load_salicon_fixations(path, image_shape=(480, 640))
    _write_v5(path, resolution=None)
    with pytest.raises(ValueError, match="pass image_shape"):
        load_salicon_fixations(path)
    np.testing.assert_array_equal(load_salicon_fixations(path, (48, 64)), EXPECTED_ROWS_COLS)


def test_unreadable_mat_names_the_file(tmp_path):
    path = tmp_path / "broken.mat"
    path.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="broken.mat: not a readable"):
        load_salicon_fixations(path)


def test_fixation_map_marks_exactly_the_fixated_pixels():
    result = fixation_map(np.array([[0, 0], [2, 3], [2, 3]]), (3, 4, 3))
    expected = np.zeros((3, 4), np.float32)
    expected[0, 0] = expected[2, 3] = 1.0
    np.testing.assert_array_equal(result, expected)
    assert fixation_map(np.zeros((0, 2), int), (3, 4)).sum() == 0
    with pytest.raises(ValueError, match=r"\[3, 0\] lies outside the 3x4 image"):
        fixation_map(np.array([[3, 0]]), (3, 4))


def test_list_2017_layout(synthetic_salicon_dir):
    root = synthetic_salicon_dir
    train = list_salicon(root, "train")
    assert [s.stem for s in train] == [f"COCO_train2014_{i:012d}" for i in range(1, 9)]
    for s in train:
        assert s.image_path == os.path.join(root, "images", "train", s.stem + ".jpg")
        assert s.map_path == os.path.join(root, "maps", "train", s.stem + ".png")
        assert s.fixations_path == os.path.join(root, "fixations", "train", s.stem + ".mat")
    assert len(list_salicon(root, "val")) == 4
    test = list_salicon(root, "test")
    assert [s.stem for s in test] == ["COCO_test2014_000000000001", "COCO_test2014_000000000002"]
    assert all(s.map_path is None and s.fixations_path is None for s in test)


def test_list_msinet_layout_without_fixations(synthetic_salicon_dir, tmp_path):
    root = tmp_path / "salicon"
    shutil.copytree(synthetic_salicon_dir / "images", root / "stimuli")
    shutil.copytree(synthetic_salicon_dir / "maps", root / "saliency")
    val = list_salicon(root, "val")
    assert [s.stem for s in val] == [s.stem for s in list_salicon(synthetic_salicon_dir, "val")]
    assert all(s.map_path == str(root / "saliency" / "val" / f"{s.stem}.png") for s in val)
    assert all(s.fixations_path is None for s in val)
    assert load_sample(val[0])["fixations"] is None


def test_load_sample(synthetic_salicon_dir):
    sample = list_salicon(synthetic_salicon_dir, "train")[0]
    loaded = load_sample(sample)
    assert loaded["stem"] == sample.stem
    assert loaded["image"].shape == (48, 64, 3) and loaded["image"].dtype == np.uint8
    assert loaded["saliency"].shape == (48, 64) and loaded["saliency"].dtype == np.uint8
    assert loaded["saliency"].max() == 255  # SALICON maps are scaled to a 255 peak
    fixations = loaded["fixations"]
    assert fixations.ndim == 2 and fixations.shape[1] == 2 and len(fixations) >= 16  # >= 1 per observer
    assert fixations.min() >= 0 and fixations[:, 0].max() < 48 and fixations[:, 1].max() < 64
    test_sample = list_salicon(synthetic_salicon_dir, "test")[0]
    assert load_sample(test_sample)["saliency"] is None


def _small_tree(tmp_path, source):
    """A copy of the synthetic val split that a test may break."""
    root = tmp_path / "salicon"
    for kind in ("images", "maps", "fixations"):
        shutil.copytree(source / kind / "val", root / kind / "val")
    return root


def test_pairing_is_by_stem_and_odd_files_are_named(synthetic_salicon_dir, tmp_path):
    root = _small_tree(tmp_path, synthetic_salicon_dir)
    (root / "maps" / "val" / "COCO_val2014_000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_val2014_000000000002\.jpg: no saliency map file"):
        list_salicon(root, "val")

    root = _small_tree(tmp_path / "extra", synthetic_salicon_dir)
    shutil.copy(root / "maps" / "val" / "COCO_val2014_000000000001.png", root / "maps" / "val" / "COCO_val2014_0.png")
    with pytest.raises(ValueError, match=r"COCO_val2014_0\.png: saliency map file without an image"):
        list_salicon(root, "val")

    root = _small_tree(tmp_path / "fix", synthetic_salicon_dir)
    (root / "fixations" / "val" / "COCO_val2014_000000000004.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_val2014_000000000004\.jpg: no fixation file"):
        list_salicon(root, "val")


def test_empty_or_missing_split_folders(synthetic_salicon_dir, tmp_path):
    root = _small_tree(tmp_path, synthetic_salicon_dir)
    (root / "images" / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"images[/\\]train: no .* files in this split folder"):
        list_salicon(root, "train")
    with pytest.raises(FileNotFoundError, match=r"images[/\\]test: folder not found"):
        list_salicon(root, "test")
    with pytest.raises(FileNotFoundError, match="not a SALICON folder"):
        list_salicon(tmp_path / "nowhere", "val")
    with pytest.raises(ValueError, match="split must be one of"):
        list_salicon(root, "validation")


def test_map_of_another_size_names_both_files(synthetic_salicon_dir, tmp_path):
    root = _small_tree(tmp_path, synthetic_salicon_dir)
    small_map = encode_png(np.zeros((24, 32), np.uint8))
    write_bytes_atomic(root / "maps" / "val" / "COCO_val2014_000000000003.png", small_map)
    sample = list_salicon(root, "val")[2]
    with pytest.raises(ValueError, match=r"COCO_val2014_000000000003\.png: map is 24x32 but its image .*"
                       r"COCO_val2014_000000000003\.jpg is 48x64"):
        load_sample(sample)


def test_unreadable_image_names_the_file(synthetic_salicon_dir, tmp_path):
    root = _small_tree(tmp_path, synthetic_salicon_dir)
    (root / "images" / "val" / "COCO_val2014_000000000001.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"COCO_val2014_000000000001\.jpg: not a readable image"):
        load_sample(list_salicon(root, "val")[0])


def test_nan_or_infinite_fixations_are_refused_naming_the_file_and_count(tmp_path):
    fields = [("location", object), ("timestamp", object), ("fixations", object)]
    gaze = np.empty((2, 1), dtype=fields)
    gaze[0, 0] = (DECOY_LOCATION, np.array([[10.0]]), np.array([[5.0, 6.0], [np.nan, 3.0]]))
    gaze[1, 0] = (DECOY_LOCATION, np.array([[10.0]]), np.array([[np.inf, 2.0], [7.0, 8.0], [9.0, -np.inf]]))
    path = tmp_path / "broken.mat"
    scipy.io.savemat(path, {"gaze": gaze, "resolution": np.array([[48.0, 64.0]])})
    with pytest.raises(ValueError, match=rf"{path}: 3 of 5 fixations have NaN or infinite coordinates"):
        load_salicon_fixations(path)
