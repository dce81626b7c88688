"""NUS-VIP reader (datasets.nusvip), the lab's map recipe, the stored splits (datasets.splits) and the listing
dispatch (datasets.sources): small .mat files built with every real quirk, each error case, and the real
MIT1003 and OSIE folders when ../shared/data/eyetracking exists."""

import json
import shutil
import time
import warnings
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import scipy.ndimage

from datasets import nusvip, sources, splits
from tests.helpers import mit1003_original_layout
from tests.nusvip_fixtures import (
    A_EXPECTED, QUIRKS, SIZES, make_nusvip, subjects_array, write_fixations_v5, write_fixations_v73, write_images,
)

EYETRACKING = Path(__file__).resolve().parents[2] / "shared" / "data" / "eyetracking"


def _list(root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nusvip.OutsideImageWarning)
        return nusvip.list_nusvip(root, **kwargs)


@pytest.mark.parametrize("writer", [write_fixations_v5, write_fixations_v73], ids=["v5", "v7.3"])
def test_quirks_give_zero_based_points_observers_durations(tmp_path, writer):
    make_nusvip(tmp_path, writer=writer)
    with pytest.warns(nusvip.OutsideImageWarning, match=r"fixations\.mat: .*on 1 image\(s\): b\.jpg \(1 of 25\)"):
        a, b = nusvip.list_nusvip(tmp_path, name="quirks")
    assert (a.stem, b.stem) == ("a", "b") and a.image_path == str(tmp_path / "stimuli" / "a.jpg")
    assert (a.height, a.width, a.num_observers, a.dataset) == (12, 16, 4, "quirks")
    np.testing.assert_array_equal(a.fixations, A_EXPECTED["fixations"])  # duplicate (0, 0) kept
    np.testing.assert_array_equal(a.observers, A_EXPECTED["observers"])
    np.testing.assert_allclose(a.durations, A_EXPECTED["durations"])
    assert a.fixations.dtype == np.int32 and a.num_outside == 0 and a.map_path is None
    assert b.num_outside == 1 and len(b.fixations) == 25
    assert b.fixations[-1].tolist() == [3, 19]  # x = 20.6 -> 21 > w = 20, clamped to the last column
    for sample in (a, b):
        assert (sample.fixations >= 0).all() and (sample.fixations < [sample.height, sample.width]).all()


def test_durations_optional_and_other_dataset_names(tmp_path):
    """Another data set of the lab in this layout: no fix_duration field, other file names, no code changes."""
    write_images(tmp_path / "nusef", {"img_0001": (8, 8)})
    (tmp_path / "nusef" / "eye").mkdir()
    struct = np.empty((1, 1), dtype=[("img", object), ("subjects", object)])  # a struct array, not a cell array
    struct[0, 0] = ("img_0001.jpg", subjects_array([([2.0, 3.0], [4.0, 5.0])], fields=("fix_x", "fix_y")))
    scipy.io.savemat(tmp_path / "nusef" / "eye" / "fixations.mat", {"fixations": struct})
    (sample,) = nusvip.list_nusvip(tmp_path / "nusef")
    assert sample.dataset == "nusef" and sample.fixations.tolist() == [[3, 1], [4, 2]]
    assert np.isnan(sample.durations).all()


def test_fixation_density_is_the_labs_recipe():
    """Against scipy.ndimage: binary map, zero padding, square window ceil(7 sigma), divided by its maximum."""
    rng = np.random.default_rng(0)
    shape, sigma = (90, 120), 6.0
    points = np.concatenate([rng.integers(0, [90, 120], (40, 2)), [[0, 0], [89, 119], [0, 0]]])
    binary = np.zeros(shape)
    binary[points[:, 0], points[:, 1]] = 1.0
    radius = int(np.ceil(7 * sigma)) // 2
    reference = scipy.ndimage.gaussian_filter(binary, sigma, mode="constant", truncate=radius / sigma)
    reference /= reference.max()
    density = nusvip.fixation_density(points, shape, sigma)
    assert density.dtype == np.float32 and density.max() == 1.0
    np.testing.assert_allclose(density, reference, atol=2e-6)
    np.testing.assert_array_equal(nusvip.fixation_density(np.zeros((0, 2)), shape), np.zeros(shape))


def test_human_map_built_from_points_or_read_from_maps(tmp_path):
    make_nusvip(tmp_path)
    a = _list(tmp_path, sigma=3.0)[0]
    want = np.round(nusvip.fixation_density(A_EXPECTED["fixations"], (12, 16), 3.0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(nusvip.load_human_map(a), want)
    loaded = nusvip.load_sample(a)
    assert loaded["image"].shape == (12, 16, 3) and loaded["saliency"].shape == (12, 16)

    maps = {"a": np.full((12, 16), 77, np.uint8), "b": np.full((10, 20), 99, np.uint8)}
    (tmp_path / "maps").mkdir()
    for stem, values in maps.items():
        cv2.imwrite(str(tmp_path / "maps" / f"{stem}.png"), values)
    a, b = _list(tmp_path)
    assert a.map_path == str(tmp_path / "maps" / "a.png")
    np.testing.assert_array_equal(nusvip.load_human_map(b), maps["b"])
    cv2.imwrite(str(tmp_path / "maps" / "a.png"), np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match=r"a\.png: map is 6x8 but its image .*a\.jpg is 12x16"):
        nusvip.load_human_map(_list(tmp_path)[0])
    (tmp_path / "maps" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.jpg: no map file b\.\*"):
        _list(tmp_path)


def _folder(tmp_path, entries, sizes=None, writer=write_fixations_v5):
    root = tmp_path / "data"
    shutil.rmtree(root, ignore_errors=True)
    return make_nusvip(root, entries, sizes or SIZES, writer)


@pytest.mark.parametrize("writer", [write_fixations_v5, write_fixations_v73], ids=["v5", "v7.3"])
def test_malformed_files_name_the_file(tmp_path, writer):
    root = _folder(tmp_path, QUIRKS, writer=writer)
    mat = root / "eye" / "fixations.mat"
    if writer is write_fixations_v73:
        with h5py.File(mat, "w") as f:
            f.create_dataset("fixes", data=np.zeros(3))
    else:
        scipy.io.savemat(mat, {"fixes": np.zeros(3)})
    with pytest.raises(ValueError, match=rf"{mat}: no 'fixations' variable \(found \['fixes'\]\); expected the NUS"):
        nusvip.list_nusvip(root)
    write_fixations_v5(mat, QUIRKS, entry_fields=("image", "subjects"))
    with pytest.raises(ValueError, match=rf"{mat}: fixations entry 1 has fields \['image', 'subjects'\], not 'img'"):
        nusvip.list_nusvip(root)
    mat.write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match=rf"{mat}: not a readable MATLAB"):
        nusvip.list_nusvip(root)


def test_stimulus_and_entry_pairing_errors(tmp_path):
    root = _folder(tmp_path, {**QUIRKS, "c.jpg": QUIRKS["a.jpg"]})
    with pytest.raises(FileNotFoundError, match=r"fixations\.mat: entry 3 names 'c\.jpg', which has no file in"):
        nusvip.list_nusvip(root)
    root = _folder(tmp_path, {"a.jpg": QUIRKS["a.jpg"]})
    with pytest.raises(FileNotFoundError, match=r"stimuli/b\.jpg: stimulus without an entry in .*fixations\.mat"):
        nusvip.list_nusvip(root)
    with pytest.raises(FileNotFoundError, match="not a NUS-VIP eye-tracking folder"):
        nusvip.list_nusvip(root / "stimuli")


def test_refused_images_are_named_with_the_reason(tmp_path):
    outside = [([1.0, 30.0, 40.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])]  # 2 of 3 past w = 16
    nan = [([1.0, np.nan, 3.0], [1.0, 2.0, np.inf], [1.0, 1.0, 1.0])]
    nobody = [([], [], []), ([], [], [])]
    for subjects, message in ((outside, r"a\.jpg: 2 of 3 fixations lie outside the 16x12 image \(more than 5%\)"),
                              (nan, r"a\.jpg: 2 of 3 fixations have NaN or infinite coordinates"),
                              (nobody, r"a\.jpg: no observer has a fixation on this image")):
        root = _folder(tmp_path, {"a.jpg": subjects, "b.jpg": QUIRKS["b.jpg"]})
        with pytest.raises(ValueError, match=rf"fixations\.mat: 1 image\(s\) refused: {message}"):
            _list(root)
    root = _folder(tmp_path, {"a.jpg": [([1.0, 2.0], [1.0], [5.0])], "b.jpg": QUIRKS["b.jpg"]})
    with pytest.raises(ValueError, match=r"a\.jpg: observer 1 has 2 fix_x, 1 fix_y"):
        _list(root)


def test_messages_number_observers_from_one_as_matlab_does(tmp_path):
    """The second element of `subjects` is "observer 2" in every message (a malformed file, a bad point count)."""
    good = ([1.0, 2.0], [1.0, 2.0], [5.0, 5.0])
    root = _folder(tmp_path, {"a.jpg": [good, ([1.0, 2.0], [1.0], [5.0])], "b.jpg": QUIRKS["b.jpg"]})
    with pytest.raises(ValueError, match=r"a\.jpg: observer 2 has 2 fix_x, 1 fix_y"):
        _list(root)
    mat = root / "eye" / "fixations.mat"
    subjects = np.empty((1, 2), dtype=object)  # a cell array: its observers may have different fields
    subjects[0, 0] = subjects_array([good])
    subjects[0, 1] = subjects_array([good[:1]], fields=("fix_x",))
    struct = np.empty((1, 1), dtype=[("img", object), ("subjects", object)])
    struct[0, 0] = ("a.jpg", subjects)
    scipy.io.savemat(mat, {"fixations": struct})
    with pytest.raises(ValueError, match=rf"{mat}: fixations entry 1 \(a\.jpg\), observer 2 has fields \['fix_x'\]"):
        nusvip.list_nusvip(root)


def test_split_files_and_dispatch(tmp_path):
    root = make_nusvip(tmp_path / "mini")
    split = tmp_path / "mini.json"
    split.write_text(json.dumps({"train": ["a"], "val": ["b"], "test": []}))
    (a,) = sources.list_samples("nus", root, "train", split_file=split)
    assert a.stem == "a" and a.dataset == "mini" and sources.dataset_name("nus", root) == "mini"
    assert [s.stem for s in sources.list_samples("osie", root, "val", split_file=split)] == ["b"]
    split.write_text(json.dumps({"train": ["a", "zz"], "val": [], "test": []}))
    with pytest.raises(FileNotFoundError, match=rf"{split}: split 'train' names 1 image\(s\) missing .*\['zz'\]"):
        sources.list_samples("nus", root, "train", split_file=split)
    with pytest.raises(FileNotFoundError, match=r"no split file for data set 'mini'.*--split-file"):
        sources.list_samples("nus", root, "train")
    images = sources.list_samples("images", root / "stimuli", "train")
    assert [(s.stem, s.map_path, s.fixations_path) for s in images] == [("a", None, None), ("b", None, None)]


def test_stored_splits_are_what_the_seed_gives():
    for dataset, sizes in splits.SIZES.items():
        document = json.loads(Path(splits.split_file(dataset)).read_text())
        stems = document["train"] + document["val"] + document["test"]
        assert len(stems) == len(set(stems)) == document["num_images"] == sum(sizes)
        assert [len(document[n]) for n in splits.SPLIT_NAMES] == list(sizes)
        assert document["seed"] == splits.SPLIT_SEED
        regenerated = splits.make_splits(stems, sizes, document["seed"])
        assert all(regenerated[n] == document[n] for n in splits.SPLIT_NAMES)
        assert splits.make_splits(stems, sizes, seed=1)["test"] != document["test"]  # the seed matters


def test_split_tool_refuses_to_overwrite(tmp_path, capsys):
    root = make_nusvip(tmp_path / "mini")
    out = tmp_path / "mini.json"
    assert splits.main(["--dataset", "mini", "--data-dir", str(root), "--sizes", "1", "1", "0", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert sorted(document["train"] + document["val"]) == ["a", "b"] and document["test"] == []
    assert splits.main(["--dataset", "mini", "--data-dir", str(root), "--sizes", "1", "1", "0", "--out", str(out)]) == 1
    assert "never regenerated" in capsys.readouterr().err


def test_split_json_is_package_data():
    import configparser

    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert config["options.package_data"]["datasets.splits"].strip() == "*.json"


# ---------------------------------------------------------------------------------------------------------
# The real folders


@pytest.fixture(scope="module")
def real():
    if not (EYETRACKING / "mit1003" / "eye" / "fixations.mat").is_file():
        pytest.skip(f"real eye-tracking data not found at {EYETRACKING} (only present in the project workspace)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = {name: nusvip.list_nusvip(EYETRACKING / name) for name in ("mit1003", "osie")}
    return data, [str(w.message) for w in caught]


def test_real_folders_load_with_points_inside(real):
    data, caught = real
    assert [len(data["mit1003"]), len(data["osie"])] == [1003, 700]
    for name, samples in data.items():
        assert {s.num_observers for s in samples} == {15}
        for sample in samples:
            assert (sample.fixations >= 0).all() and (sample.fixations < [sample.height, sample.width]).all()
            assert sample.observers.min() >= 0 and sample.observers.max() < 15
            assert np.isfinite(sample.durations).all() and (sample.durations > 0).all()
        stems = {s.stem for s in samples}
        document = json.loads(Path(splits.split_file(name)).read_text())
        assert set(document["train"] + document["val"] + document["test"]) == stems
    assert all(s.map_path for s in data["mit1003"]) and not any(s.map_path for s in data["osie"])
    assert {(s.height, s.width) for s in data["osie"]} == {(600, 800)}
    # README: 129 observers without a fixation and 283 with one in MIT1003; about 104 and 140 points per image.
    counts = np.concatenate([np.bincount(s.observers, minlength=15) for s in data["mit1003"]])
    assert ((counts == 0).sum(), (counts == 1).sum()) == (129, 283)
    assert 100 < np.mean([len(s.fixations) for s in data["mit1003"]]) < 108
    assert 135 < np.mean([len(s.fixations) for s in data["osie"]]) < 145
    clamped = sum(s.num_outside for s in data["mit1003"])
    assert clamped == sum(1 for s in data["mit1003"] for _ in range(s.num_outside)) and clamped < 10
    assert any("clamped" in message for message in caught) == (clamped > 0)


def _cc(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_real_mit1003_maps_match_official(real):
    """Maps rebuilt from the points (sigma 24 px) against MIT1003's official maps, every image.

    Measured on this copy: mean CC 0.960, and 3 of 1003 images below 0.85 (i2312920143 0.72, i1325243029 0.77,
    i1043252298 0.83): their official maps weight the same regions differently (they were made from the original
    recordings, not from these points); no sigma brings them above 0.85. The test bounds each image and the share.
    """
    data, _ = real
    start = time.monotonic()
    ccs = {}
    for sample in data["mit1003"]:
        official = cv2.imread(sample.map_path, cv2.IMREAD_GRAYSCALE).astype(np.float32)
        rebuilt = nusvip.fixation_density(sample.fixations, official.shape, nusvip.MIT1003_SIGMA_PX)
        ccs[sample.stem] = _cc(rebuilt, official)
    values = np.array(list(ccs.values()))
    low = sorted((round(v, 3), stem) for stem, v in ccs.items() if v < 0.85)
    print(f"MIT1003 rebuilt vs official maps: mean CC {values.mean():.4f}, min {values.min():.4f}, below 0.85: {low}; "
          f"{time.monotonic() - start:.1f} s")
    assert values.mean() >= 0.95
    assert values.min() >= 0.70
    assert len(low) <= 3, low


def test_real_exports_list_the_stored_splits(real):
    data, _ = real
    for name, sizes in splits.SIZES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nusvip.OutsideImageWarning)
            lists = [sources.list_samples(name, EYETRACKING / name, split) for split in splits.SPLIT_NAMES]
        assert [len(x) for x in lists] == list(sizes)
        assert all(s.dataset == name for x in lists for s in x)


def test_mit1003_maps_only_layouts_still_list_by_split(tmp_path):
    """The original release layout (ALLSTIMULI/, no fixations.mat) goes through datasets.mit1003 with the split."""
    mit1003_original_layout(tmp_path / "mit", [[1, 1]])
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["b"], "val": ["a"], "test": []}))
    (b,) = sources.list_samples("mit1003", tmp_path / "mit", "train", split_file=split)
    assert b.stem == "b" and b.map_path.endswith("b_fixMap.jpg") and b.fixations_path.endswith("b_fixPts.png")


def test_exif_rotated_stimulus_is_listed_at_its_displayed_size(tmp_path):
    """Issue 18: a stimulus stored sideways with EXIF orientation 6 was listed at its stored (header) size, so its
    points were refused as not belonging to it."""
    from PIL import Image

    from datasets.io import read_image

    make_nusvip(tmp_path)
    path = tmp_path / "stimuli" / "a.jpg"
    displayed = read_image(path)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(displayed, 1)))  # 16x12; orientation 6 turns it back
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(path, format="JPEG", quality=98, exif=exif)
    a, _ = _list(tmp_path)
    assert (a.height, a.width) == SIZES["a"] == (12, 16)
    np.testing.assert_array_equal(a.fixations, A_EXPECTED["fixations"])
    assert a.load()["image"].shape == (12, 16, 3)
