"""MIT1003 reader: the shared real sample, the original release layout and pairing errors."""

import numpy as np
import pytest

from datasets.io import encode_jpeg, encode_png, write_bytes_atomic
from datasets.mit1003 import list_mit1003, load_sample
from tests.helpers import mit1003_original_layout as _original_layout


def test_shared_sample_pairs_every_stimulus_with_its_map(mit1003_sample_dir):
    samples = list_mit1003(mit1003_sample_dir)
    names = sorted(p.stem for p in (mit1003_sample_dir / "stimuli").glob("*.jpg"))
    assert len(samples) == 10 and [s.stem for s in samples] == names
    for sample in samples:
        assert sample.map_path == str(mit1003_sample_dir / "maps" / f"{sample.stem}.jpg")
        loaded = load_sample(sample)
        assert loaded["image"].ndim == 3 and loaded["image"].shape[2] == 3
        assert loaded["saliency"].shape == loaded["image"].shape[:2]
        assert max(loaded["image"].shape[:2]) == 1024  # README: longest side 1024 px
        assert loaded["saliency"].max() > 200 and loaded["fixations"] is None


def test_original_layout_reads_fixation_points(tmp_path):
    _original_layout(tmp_path, [[0, 15], [5, 3], [11, 0]])
    samples = list_mit1003(tmp_path)
    assert [s.stem for s in samples] == ["a", "b"]
    assert samples[0].map_path == str(tmp_path / "ALLFIXATIONMAPS" / "a_fixMap.jpg")
    loaded = load_sample(samples[1])
    assert loaded["saliency"].shape == (12, 16)
    np.testing.assert_array_equal(loaded["fixations"], [[0, 15], [5, 3], [11, 0]])  # row-major order


def test_msinet_layout(tmp_path):
    rng = np.random.default_rng(1)
    write_bytes_atomic(tmp_path / "stimuli" / "i1.jpeg", encode_jpeg(rng.integers(0, 256, (8, 10, 3), np.uint8)))
    write_bytes_atomic(tmp_path / "saliency" / "i1_fixMap.jpg", encode_jpeg(np.zeros((8, 10), np.uint8)))
    (sample,) = list_mit1003(tmp_path)
    assert sample.stem == "i1" and sample.fixations_path is None


def test_missing_map_extra_points_and_wrong_size_are_named(tmp_path):
    _original_layout(tmp_path, [[1, 1]])
    (tmp_path / "ALLFIXATIONMAPS" / "b_fixMap.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.jpeg: no fixation map file b\.\*"):
        list_mit1003(tmp_path)
    write_bytes_atomic(tmp_path / "ALLFIXATIONMAPS" / "b_fixMap.jpg", encode_jpeg(np.zeros((12, 16), np.uint8)))
    write_bytes_atomic(tmp_path / "ALLFIXATIONMAPS" / "c_fixPts.png", encode_png(np.zeros((12, 16), np.uint8)))
    with pytest.raises(ValueError, match=r"c_fixPts\.png: fixation points file without an image"):
        list_mit1003(tmp_path)
    (tmp_path / "ALLFIXATIONMAPS" / "c_fixPts.png").unlink()
    write_bytes_atomic(tmp_path / "ALLFIXATIONMAPS" / "a_fixPts.png", encode_png(np.zeros((6, 8), np.uint8)))
    with pytest.raises(ValueError, match=r"a_fixPts\.png: fixation image is 6x8, expected 12x16"):
        load_sample(list_mit1003(tmp_path)[0])
    with pytest.raises(FileNotFoundError, match="not an MIT1003 folder"):
        list_mit1003(tmp_path / "ALLSTIMULI")
