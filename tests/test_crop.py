"""Saliency-guided cropping (inference.crop) and crop.py: box sizes, the three methods against hand-computed and
brute-force boxes, the files and JSON crop_files writes (with a fake predictor: no model, no TensorFlow) and the
CLI's centre crops."""

import errno
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import crop
from datasets.io import encode_png, read_image
from inference import crop as crops
from inference.crop import Box, box_size, centre_box, crop_box, crop_files, crop_image, fixations_in_box, parse_aspect
from inference.files import OUTPUT_MARKER
from inference.predictors import Predictor

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(100, 100), (600, 800), (800, 600), (37, 53), (53, 37), (1, 50), (50, 1), (5, 7), (9, 16)]
ASPECTS = ["1:1", "16:9", "4:5", "2:1", "1.91:1", "1:3"]


def test_parse_aspect():
    assert parse_aspect("1:1") == 1.0
    assert parse_aspect("16:9") == 16 / 9
    assert parse_aspect("4:5") == 0.8
    assert parse_aspect("2:1") == 2.0
    assert parse_aspect("1.91:1") == 1.91
    assert parse_aspect(" 16 : 09 ") == 16 / 9
    assert parse_aspect(".5:1") == 0.5
    assert crops.aspect_label("16:09") == ("16:9", "16x9")
    assert crops.aspect_label("1.910:1") == ("1.91:1", "1.91x1")
    for bad in ["", "16", "16x9", "16/9", "0:1", "1:0", "-1:2", "1:2:3", "inf:1", "nan:1", "a:b", None, 1.5]:
        with pytest.raises(ValueError, match=r"W:H.*" + re.escape(f"Received: {bad!r}")):
            parse_aspect(bad)


def _exact_size(height, width, ratio):
    """The largest box of `ratio` fitting (height, width), unrounded: (width, height)."""
    return (height * ratio, height) if width / height >= ratio else (width, width / ratio)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3])
def test_box_is_the_largest_fitting_box_times_scale_rounded(shape, scale):
    height, width = shape
    for aspect in ASPECTS:
        ratio = parse_aspect(aspect)
        w, h = box_size(height, width, aspect, scale)
        exact_w, exact_h = (scale * v for v in _exact_size(height, width, ratio))
        assert 1 <= w <= width and 1 <= h <= height, (shape, aspect)
        assert abs(w - exact_w) < 1 or w == 1, (shape, aspect, w, exact_w)
        assert abs(h - exact_h) < 1 or h == 1, (shape, aspect, h, exact_h)
        if scale == 1.0:
            assert w == width or h == height, (shape, aspect, w, h)  # one side is the image's
        # No other rounding of the sides (down or up, inside the image) keeps the ratio closer.
        error = abs(math.log(w / h / ratio))
        for w2 in {max(math.floor(exact_w), 1), max(math.ceil(exact_w), 1)}:
            for h2 in {max(math.floor(exact_h), 1), max(math.ceil(exact_h), 1)}:
                if w2 <= width and h2 <= height:
                    assert error <= abs(math.log(w2 / h2 / ratio)) + 1e-12, (shape, aspect, (w, h), (w2, h2))
        for method in crops.CROP_METHODS:
            box = crop_box(np.ones(shape), aspect, method, scale)
            assert (box.width, box.height) == (w, h)


def test_box_sizes_by_hand():
    assert box_size(600, 800, "4:5") == (480, 600)
    assert box_size(600, 800, "4:5", scale=0.5) == (240, 300)
    assert box_size(600, 800, "16:9") == (800, 450)
    assert box_size(600, 800, "16:9", scale=0.5) == (400, 225)
    assert box_size(600, 800, "1:1") == (600, 600)
    assert box_size(600, 800, "2:1") == (800, 400)
    assert box_size(100, 100, "16:9") == (100, 56)  # 56.25 rounds down: 100/56 is nearer 16/9 than 100/57
    assert box_size(100, 100, "1.91:1") == (100, 52)
    assert box_size(768, 1024, 1.5) == (1024, 683)  # a number is a ratio too


def test_centre_is_centred():
    for shape in SHAPES:
        for aspect in ASPECTS:
            box = crop_box(np.random.default_rng(0).random(shape), aspect, "centre", 0.5)
            assert (box.x, box.y) == ((shape[1] - box.width) // 2, (shape[0] - box.height) // 2)
            assert box == centre_box(shape + (3,), aspect, 0.5)
    assert crop_box(np.zeros((600, 800)), "4:5", "centre") == Box(160, 0, 480, 600)


def test_point_centres_on_the_most_salient_pixel_and_clamps():
    saliency = np.zeros((60, 80), np.float32)
    saliency[30, 50] = 1.0
    assert crop_box(saliency, "1:1", "point", scale=0.5) == Box(50 - 15, 30 - 15, 30, 30)
    assert crop_box(saliency, "4:5", "point") == Box(50 - 24, 0, 48, 60)
    saliency[30, 50] = 0.0
    saliency[2, 78] = 1.0  # near the top right corner: the box is pushed back inside
    assert crop_box(saliency, "1:1", "point", scale=0.5) == Box(80 - 30, 0, 30, 30)
    saliency[50, 5] = 1.0  # two maxima: the one nearer the image's centre (29.5, 39.5) wins
    assert crop_box(saliency, "1:1", "point", scale=0.5) == Box(0, 60 - 30, 30, 30)
    saliency[57, 1] = 1.0  # as near the centre as (2, 78): the first in row-major order wins
    saliency[50, 5] = 0.0
    assert crop_box(saliency, "1:1", "point", scale=0.5) == Box(80 - 30, 0, 30, 30)
    # A flat map: the maximum nearest the centre, (29, 39) first of the four; an even side puts the pixel second of
    # the two middle ones, so the box sits one pixel up and left of the centred one.
    assert crop_box(np.ones((60, 80)), "1:1", "point", scale=0.5) == Box(39 - 15, 29 - 15, 30, 30)
    assert crop_box(np.ones((60, 80)), "1:1", "centre", scale=0.5) == Box(25, 15, 30, 30)
    assert crop_box(np.ones((61, 81)), "1:1", "point", scale=0.5) == Box(40 - 15, 30 - 15, 31, 31)  # 30.5 up


def _brute_force_mass(saliency, w, h):
    """Every position's sum by np.sum; the largest, ties to the nearest the centre, then row-major."""
    height, width = saliency.shape
    best, best_key = None, None
    for y in range(height - h + 1):
        for x in range(width - w + 1):
            total = saliency[y:y + h, x:x + w].sum()
            key = (-total, (y - (height - h) / 2) ** 2 + (x - (width - w) / 2) ** 2)
            if best_key is None or key < best_key:
                best, best_key = Box(x, y, w, h), key
    return best


@pytest.mark.parametrize("seed", range(4))
def test_mass_equals_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    for shape in [(13, 17), (20, 9), (8, 8), (1, 12), (31, 24)]:
        float_map = rng.random(shape) ** 4  # peaky, as saliency is
        integer_map = rng.integers(0, 3, shape).astype(np.float32)  # many exact ties
        for saliency in (float_map, integer_map):
            for aspect in ["1:1", "16:9", "4:5", "2:1"]:
                for scale in (1.0, 0.5, 0.3):
                    w, h = box_size(*shape, aspect, scale)
                    expected = _brute_force_mass(saliency.astype(np.float64), w, h)
                    assert crop_box(saliency, aspect, "mass", scale) == expected, (shape, aspect, scale)


def test_mass_finds_the_salient_corner_and_a_flat_map_gives_the_centre():
    saliency = np.zeros((60, 80))
    saliency[45:55, 2:12] = 1.0
    # Every box with y in 25..30 and x in 0..2 holds the whole blob: the one nearest the centred box (25, 15) wins.
    assert crop_box(saliency, "1:1", "mass", 0.5) == Box(2, 25, 30, 30)
    assert crop_box(saliency[:, :, None], "2:1") == Box(0, 15, 80, 40)  # (H, W, 1) maps are accepted
    for shape in SHAPES:
        for aspect in ASPECTS:
            flat = np.full(shape, 0.1, np.float32)  # float32 0.1 sums with rounding: still ties
            assert crop_box(flat, aspect, "mass", 0.5) == crop_box(flat, aspect, "centre", 0.5), (shape, aspect)


def test_bad_maps_methods_and_scales():
    saliency = np.ones((10, 10))
    for scale in (0, -0.5, 1.5, float("nan"), True, "0.5", None):
        with pytest.raises(ValueError, match=r"`scale` must be a number in \(0, 1\].*Received: scale="):
            crop_box(saliency, "1:1", scale=scale)
    with pytest.raises(ValueError, match=r"`method` must be one of \('centre', 'point', 'mass'\). Received: "
                                         r"method='middle'"):
        crop_box(saliency, "1:1", method="middle")
    with pytest.raises(ValueError, match="Received: '3-2'"):
        crop_box(saliency, "3-2")
    with pytest.raises(ValueError, match=r"2-D \(H, W\).*\(10,\)"):
        crop_box(np.ones(10), "1:1")
    with pytest.raises(ValueError, match="must hold numbers. Received dtype <U1"):
        crop_box(np.full((4, 4), "a"), "1:1")
    with pytest.raises(ValueError, match="NaN or infinite"):
        crop_box(np.full((4, 4), np.nan), "1:1")


def test_crop_image_and_fixations_in_box():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    box = Box(2, 1, 3, 2)
    np.testing.assert_array_equal(crop_image(image, box), image[1:3, 2:5])
    assert box.as_dict() == {"x": 2, "y": 1, "width": 3, "height": 2}
    with pytest.raises(ValueError, match="not inside the 8x6 image"):
        crop_image(image, Box(6, 0, 3, 2))
    # (row, col): rows 1-2 and cols 2-4 are inside.
    points = np.array([[1, 2], [2, 4], [0, 2], [3, 3], [1, 5], [1, 1], [2, 3], [5, 7]])
    assert fixations_in_box(points, box) == 3 / 8
    assert fixations_in_box(points[:2], Box(0, 0, 8, 6)) == 1.0
    with pytest.raises(ValueError, match="empty"):
        fixations_in_box(np.zeros((0, 2), int), box)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        fixations_in_box(np.zeros(4, int), box)


class CountingPredictor(Predictor):
    """A stand-in model: the map is the image's green channel over 255, and every call is counted."""

    def __init__(self):
        super().__init__("fake/model")
        self.calls = 0

    def _predict_group(self, images):
        self.calls += len(images)
        return images[..., 1].astype(np.float32) / 255.0


def _smooth_image(height, width, peak):
    """A smooth RGB image (JPEG keeps it closely) with a bright green blob at `peak` (row, col)."""
    rows, cols = np.mgrid[:height, :width]
    blob = np.exp(-((rows - peak[0]) ** 2 + (cols - peak[1]) ** 2) / (2 * 4.0 ** 2))
    image = np.stack([cols * 200 / width, 40 + 200 * blob, rows * 200 / height], axis=2)
    return np.round(image).astype(np.uint8)


@pytest.fixture
def photo_dir(tmp_path):
    """Two PNGs (one in a subfolder) and a text file; returns the folder and the images by stem."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    images = {"wide": _smooth_image(30, 48, (8, 40)), "sub/tall": _smooth_image(40, 24, (33, 6))}
    for stem, image in images.items():
        (root / f"{stem}.png").write_bytes(encode_png(image))
    (root / "notes.txt").write_text("not an image")
    return root, images


def test_crop_files_writes_each_aspect_and_the_json(photo_dir, tmp_path, monkeypatch):
    root, images = photo_dir
    out = tmp_path / "crops"
    atomic = []
    real_write = crops.write_bytes_atomic
    monkeypatch.setattr(crops, "write_bytes_atomic", lambda path, data: (atomic.append(path), real_write(path, data)))
    predictor = CountingPredictor()
    report = crop_files(predictor, [root], out, aspects=("16:9", "1:1", "16:09"), method="mass", scale=0.8,
                        progress=False)
    assert predictor.calls == 2  # one prediction per image, whatever the number of aspects
    assert report.failures == [] and report.num_images == 2 and report.skipped == [str(root / "notes.txt")]
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER)
    assert names == ["crops.json", "sub/tall_16x9.jpg", "sub/tall_1x1.jpg", "wide_16x9.jpg", "wide_1x1.jpg"]
    assert sorted(report.written) == sorted(str(out / n) for n in names)
    assert sorted(atomic) == sorted(str(out / n) for n in names if n.endswith(".jpg"))  # crops.json: atomic_write
    summary = json.loads((out / "crops.json").read_text())
    assert (summary["method"], summary["scale"], summary["model"]) == ("mass", 0.8, "fake/model")
    assert summary["aspects"] == {"16:9": "16x9", "1:1": "1x1"} and summary["failures"] == {}
    assert sorted(summary["images"]) == ["sub/tall", "wide"]
    for stem, image in images.items():
        entry = summary["images"][stem]
        assert entry["path"] == str(root / f"{stem}.png")
        assert (entry["height"], entry["width"]) == image.shape[:2]
        for aspect, name in summary["aspects"].items():
            box = crop_box(image[..., 1] / 255.0, aspect, "mass", 0.8)
            assert entry["crops"][aspect] == {**box.as_dict(), "file": f"{stem}_{name}.jpg"}
            written = read_image(out / f"{stem}_{name}.jpg")
            assert written.shape == crop_image(image, box).shape
            assert np.abs(written.astype(int) - crop_image(image, box)).mean() < 3  # JPEG of the same pixels
    # The green blob is kept: the mass crop holds it, the centre crop of the wide image does not.
    wide = summary["images"]["wide"]["crops"]["1:1"]
    assert wide["x"] <= 40 < wide["x"] + wide["width"] and wide["y"] <= 8 < wide["y"] + wide["height"]
    assert [p.name for p in out.rglob(".*")] == [OUTPUT_MARKER]  # no temporary file left


def test_crop_files_names_an_unreadable_image_and_writes_the_others(photo_dir, tmp_path):
    root, _ = photo_dir
    broken = root / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "crops"
    report = crop_files(CountingPredictor(), [root], out, aspects=["2:1"], method="point", progress=False)
    assert [path for path, _ in report.failures] == [str(broken)]
    assert report.failures[0][1].startswith(f"{broken}: not a readable image")
    summary = json.loads((out / "crops.json").read_text())
    assert sorted(summary["images"]) == ["sub/tall", "wide"] and list(summary["failures"]) == [str(broken)]
    assert (out / "wide_2x1.jpg").is_file() and not (out / "broken_2x1.jpg").exists()


def test_crop_files_refuses_bad_arguments_before_any_work(photo_dir, tmp_path):
    root, _ = photo_dir
    out = tmp_path / "crops"
    cases = [
        (dict(aspects=["16:9", "wide"]), "Received: 'wide'"),
        (dict(aspects=[]), "`aspects` is empty"),
        (dict(scale=2.0), r"Received: scale=2.0"),
        (dict(method="top"), "Received: method='top'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            crop_files(CountingPredictor(), [root], out, progress=False, **kwargs)
    with pytest.raises(ValueError, match="'mass' needs a saliency model"):
        crop_files(None, [root], out, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        crop_files(None, [tmp_path / "nowhere"], out, method="centre", progress=False)
    assert not out.exists()


def test_cli_a_missing_input_leaves_no_empty_output_folder(tmp_path, capsys):
    out = tmp_path / "crops"
    assert crop.main([str(tmp_path / "no-photo.jpg"), "--method", "centre", "--out", str(out)]) == 1
    assert "no-photo.jpg" in capsys.readouterr().err
    assert not out.exists()


def test_cli_centre_crops_without_a_model_or_tensorflow(photo_dir, tmp_path):
    root, images = photo_dir
    out = tmp_path / "out"
    code = (
        "import sys, crop\n"
        f"status = crop.main([{str(root)!r}, '--aspect', '4:5', '--aspect', '1.91:1', '--method', 'centre', "
        f"'--scale', '0.5', '--out', {str(out)!r}])\n"
        "assert 'tensorflow' not in sys.modules, 'centre crops imported TensorFlow'\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == (f"[crop] 2 image(s), 4 crop(s) (centre, scale 0.5) written to {out} with crops.json; "
                             "0 failed\n")  # nothing else on stdout: progress and notes go to stderr
    assert "notes.txt" in result.stderr
    summary = json.loads((out / "crops.json").read_text())
    assert (summary["method"], summary["scale"], summary["model"]) == ("centre", 0.5, None)
    for stem, image in images.items():
        for aspect, name in (("4:5", "4x5"), ("1.91:1", "1.91x1")):
            box = centre_box(image.shape, aspect, 0.5)
            assert summary["images"][stem]["crops"][aspect] == {**box.as_dict(), "file": f"{stem}_{name}.jpg"}
            assert cv2.imread(str(out / f"{stem}_{name}.jpg")).shape == (box.height, box.width, 3)


def test_cli_help_is_fast_and_quiet():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, str(ROOT / "crop.py"), "--help"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env=env)
    assert result.returncode == 0 and result.stderr == ""
    for option in ("--aspect W:H", "--method", "--scale", "--model", "--out", "--no-progress"):
        assert option in result.stdout


def test_cli_errors(photo_dir, tmp_path, capsys):
    root, _ = photo_dir
    out = str(tmp_path / "out")
    for args, message in [
        (["--aspect", "16/9", "--method", "centre"], "argument --aspect: aspect ratio must be \"W:H\""),
        (["--scale", "0", "--method", "centre"], "argument --scale: `scale` must be a number in (0, 1]"),
        (["--scale", "half", "--method", "centre"], "Received: scale='half'"),
    ]:
        with pytest.raises(SystemExit) as raised:
            crop.main([str(root), "--out", out, *args])
        assert raised.value.code == 2
        assert message in capsys.readouterr().err, args
    assert crop.main([str(tmp_path / "missing.jpg"), "--method", "centre", "--out", out, "--no-progress"]) == 1
    assert f"crop.py: error: {tmp_path / 'missing.jpg'}: no such image file or folder" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    assert crop.main([str(broken), "--method", "centre", "--model", "m", "--out", out, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--model m ignored" in err and f"crop.py: failed: {broken}: not a readable image" in err


# --- issue 24: reruns merge crops.json, earlier outputs are not inputs, Ctrl-C, a full disk, plain progress ---


def _listed_files(out):
    """The crop files crops.json lists, and those in the folder: equal when the JSON describes the folder."""
    summary = json.loads((out / "crops.json").read_text())
    listed = sorted(c["file"] for entry in summary["images"].values() for c in entry["crops"].values())
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    return summary, listed, on_disk


def test_a_rerun_with_another_aspect_merges_crops_json(photo_dir, tmp_path):
    root, images = photo_dir
    out = tmp_path / "crops"
    crop_files(CountingPredictor(), [root], out, aspects=["16:9"], progress=False)
    crop_files(CountingPredictor(), [root], out, aspects=["1:1", "16:9"], scale=1, progress=False)
    summary, listed, on_disk = _listed_files(out)
    assert listed == on_disk and len(on_disk) == 4
    assert summary["aspects"] == {"16:9": "16x9", "1:1": "1x1"}
    for stem, image in images.items():
        for aspect in ("16:9", "1:1"):
            box = crop_box(image[..., 1] / 255.0, aspect)
            assert summary["images"][stem]["crops"][aspect] == {**box.as_dict(),
                                                               "file": f"{stem}_{aspect.replace(':', 'x')}.jpg"}
    # One image failing now (unreadable) keeps its earlier crops listed and says that it failed.
    (root / "wide.png").write_bytes(b"broken")
    report = crop_files(CountingPredictor(), [root], out, aspects=["2:1"], progress=False)
    summary, listed, on_disk = _listed_files(out)
    assert listed == on_disk and len(on_disk) == 5 and report.num_images == 1
    assert sorted(summary["images"]["wide"]["crops"]) == ["16:9", "1:1"]
    assert list(summary["failures"]) == [str(root / "wide.png")]
    # Another method, scale or model is refused before any work: one crops.json describes one setting.
    before = (out / "crops.json").read_bytes()
    for kwargs, message in [(dict(method="centre"), "method 'mass'.*this run uses method 'centre'"),
                            (dict(scale=0.5), "method .mass., scale 1.0.*this run uses.*scale 0.5")]:
        predictor = CountingPredictor()
        with pytest.raises(ValueError, match=f"{re.escape(str(out / 'crops.json'))}: holds crops made with {message}"):
            crop_files(predictor, [root], out, aspects=["4:5"], progress=False, **kwargs)
        assert predictor.calls == 0
    assert (out / "crops.json").read_bytes() == before and not list(out.glob("*4x5.jpg"))


def test_another_image_under_the_same_stem_is_refused(photo_dir, tmp_path):
    root, _ = photo_dir
    out = tmp_path / "crops"
    crop_files(CountingPredictor(), [root / "wide.png"], out, aspects=["16:9"], progress=False)
    other = tmp_path / "elsewhere" / "wide.png"
    other.parent.mkdir()
    other.write_bytes((root / "wide.png").read_bytes())
    with pytest.raises(ValueError, match="wide is the crop of .*photos/wide.png.*without its 16:9 crop"):
        crop_files(CountingPredictor(), [other], out, aspects=["1:1"], progress=False)
    # The same aspects replace every earlier crop of that stem: nothing stale is left listed.
    crop_files(CountingPredictor(), [other], out, aspects=["16:9"], progress=False)
    summary, listed, on_disk = _listed_files(out)
    assert listed == on_disk and summary["images"]["wide"]["path"] == str(other)


def test_earlier_output_folders_inside_the_input_are_skipped(photo_dir, tmp_path):
    root, _ = photo_dir
    first = crop_files(CountingPredictor(), [root], root / "crops", aspects=["1:1"], progress=False)
    assert first.skipped_outputs == [] and (root / "crops" / OUTPUT_MARKER).is_file()
    # A crop folder from before the marker existed is recognised by its crops.json.
    legacy = root / "legacy"
    legacy.mkdir()
    (legacy / "wide_1x1.jpg").write_bytes((root / "crops" / "wide_1x1.jpg").read_bytes())
    (legacy / "crops.json").write_bytes((root / "crops" / "crops.json").read_bytes())
    predictor = CountingPredictor()
    report = crop_files(predictor, [root], tmp_path / "again", aspects=["1:1"], progress=False)
    assert predictor.calls == 2 and report.num_images == 2
    assert report.skipped_outputs == [str(root / "crops"), str(legacy)]
    assert sorted(json.loads((tmp_path / "again" / "crops.json").read_text())["images"]) == ["sub/tall", "wide"]
    # Given as an input itself, an output folder is read.
    assert crop_files(CountingPredictor(), [legacy], tmp_path / "of-legacy", progress=False).num_images == 1
    # An output folder that holds its input is not marked, and its crops.json lists crops only: a later run above
    # it still reads the photos.
    crop_files(None, [root / "sub"], root, method="centre", progress=False)
    assert (root / "tall_16x9.jpg").is_file() and not (root / OUTPUT_MARKER).exists()
    report = crop_files(None, [tmp_path], tmp_path / "above", method="centre", progress=False)
    assert report.skipped_outputs == [str(tmp_path / "again"), str(tmp_path / "of-legacy"), str(root / "crops"),
                                      str(legacy)]
    assert sorted(json.loads(Path(report.json_path).read_text())["images"]) == [
        "photos/sub/tall", "photos/tall_16x9", "photos/wide"]


def test_ctrl_c_writes_crops_json_for_the_images_that_finished(photo_dir, tmp_path):
    root, images = photo_dir

    class Interrupted(CountingPredictor):
        def _predict_group(self, batch):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super()._predict_group(batch)

    out = tmp_path / "crops"
    with pytest.raises(KeyboardInterrupt):
        crop_files(Interrupted(), [root], out, aspects=["1:1", "2:1"], progress=False)
    summary, listed, on_disk = _listed_files(out)
    assert list(summary["images"]) == ["wide"] and listed == on_disk == ["wide_1x1.jpg", "wide_2x1.jpg"]


def test_a_full_disk_names_the_crop_file_and_stops(photo_dir, tmp_path, monkeypatch, capsys):
    root, _ = photo_dir
    out = tmp_path / "crops"
    real_write, calls = crops.write_bytes_atomic, []

    def write(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(crops, "write_bytes_atomic", write)
    with pytest.raises(crops.DiskFullError) as info:
        crop_files(None, [root], out, aspects=["1:1", "2:1"], method="centre", progress=False)
    target = out / "wide_2x1.jpg"
    assert str(info.value).startswith(f"{target}: cannot write the crop of {root / 'wide.png'} (No space left on "
                                      "device)")
    assert len(calls) == 2  # the second image is not tried
    summary, listed, on_disk = _listed_files(out)
    assert listed == on_disk == ["wide_1x1.jpg"]
    calls.clear()
    assert crop.main([str(root), "--method", "centre", "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert f"crop.py: error: {tmp_path / 'o' / 'sub' / 'tall_16x9.jpg'}: cannot write" in capsys.readouterr().err
    # Other write errors fail that image only, naming the crop file too.
    monkeypatch.setattr(crops, "write_bytes_atomic", lambda path, data: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied")))
    report = crop_files(None, [root / "wide.png"], tmp_path / "p", method="centre", progress=False)
    assert report.failures == [(str(root / "wide.png"), f"{root / 'wide.png'}: cannot write its crop "
                                f"{tmp_path / 'p' / 'wide_16x9.jpg'} (Permission denied)")]


def test_progress_on_a_redirected_stderr_is_plain_lines(photo_dir, tmp_path, capsys):
    root, _ = photo_dir
    crop_files(None, [root], tmp_path / "crops", method="centre", progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "\r" not in captured.err and "\x1b" not in captured.err
    lines = captured.err.splitlines()
    assert lines[0] == "crop: 2 image(s)" and lines[-1].startswith("crop: 2/2 image(s) done in ")


def test_benchmark_counts_fixations_and_resumes(tmp_path, monkeypatch):
    """benchmarks/crop_fixations.py on a two-image NUS-VIP folder: counts by hand-checkable boxes, then a rerun
    computes nothing it holds and a new model only that model."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import crop_fixations
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import inference.predictors
    from datasets import nusvip
    from tests.nusvip_fixtures import make_nusvip

    root = make_nusvip(tmp_path / "osie")
    with pytest.warns(nusvip.OutsideImageWarning):
        samples = nusvip.list_nusvip(root)
    monkeypatch.setattr(crop_fixations, "list_test_samples", lambda dataset, data_dir, split="test": samples)
    loaded = []

    def load(path):
        loaded.append(path)
        return CountingPredictor()

    monkeypatch.setattr(inference.predictors, "load_predictor", load)
    results_path = str(tmp_path / "results.json")
    args = dict(datasets=("osie",), aspects=("1:1", "2:1"), scales=(1.0, 0.5), progress=False)
    results, measured = crop_fixations.measure(str(tmp_path), {"m": "m.keras"}, results_path, **args)
    assert measured == {"osie": ["a", "b"]} and loaded == ["m.keras"]
    for sample in samples:
        entry = results["datasets"]["osie"]["test"][sample.stem]
        assert entry["fixations"] == len(sample.fixations) and entry["size"] == [sample.height, sample.width]
        image = read_image(sample.image_path)
        for aspect, scale in [("1:1", 1.0), ("2:1", 0.5)]:
            key = f"{aspect}@{scale:g}"
            box = centre_box(image.shape, aspect, scale)
            assert entry["inside"]["centre"]["centre"][key] == fixations_in_box(sample.fixations, box) * len(
                sample.fixations)
            for source, saliency in (("m", image[..., 1] / 255.0), ("human", nusvip.load_human_map(sample))):
                for method in ("point", "mass"):
                    box = crop_box(saliency, aspect, method, scale)
                    expected = ((sample.fixations[:, 0] >= box.y) & (sample.fixations[:, 0] < box.y + box.height)
                                & (sample.fixations[:, 1] >= box.x) & (sample.fixations[:, 1] < box.x + box.width))
                    assert entry["inside"][source][method][key] == expected.sum(), (sample.stem, source, method, key)
    assert json.loads(Path(results_path).read_text()) == results
    table = crop_fixations.to_markdown(results, measured, ["m"], aspects=args["aspects"], scales=args["scales"])
    assert "| mass: m |" in table and "| point: human map (ceiling) |" in table and "osie, split `test`: 2 images" in table
    # A rerun loads no model and changes nothing; a second model is the only work done.
    monkeypatch.setattr(crop_fixations, "crop_counts", lambda *a: pytest.fail("recomputed a stored crop"))
    assert crop_fixations.measure(str(tmp_path), {"m": "m.keras"}, results_path, **args)[0] == results
    assert loaded == ["m.keras"]
    computed = []
    monkeypatch.setattr(crop_fixations, "crop_counts", lambda saliency, fixations, configs, methods: computed.append(
        methods) or {m: {crop_fixations.config_key(a, s): 0 for a, s in configs} for m in methods})
    again, _ = crop_fixations.measure(str(tmp_path), {"m": "m.keras", "n": "n.keras"}, results_path, **args)
    assert loaded == ["m.keras", "n.keras"] and computed == [("point", "mass")] * 2
    assert {k: v for k, v in again["datasets"]["osie"]["test"]["a"]["inside"].items() if k != "n"} == \
        results["datasets"]["osie"]["test"]["a"]["inside"]
    with pytest.raises(ValueError, match="model 'm' was measured from m.keras, not other.keras"):
        crop_fixations.measure(str(tmp_path), {"m": "other.keras"}, results_path, **args)


def test_crop_py_notes_the_earlier_output_folders_it_skipped(photo_dir, tmp_path, capsys):
    import crop

    root, _ = photo_dir
    assert crop.main([str(root), "--out", str(root / "first"), "--method", "centre", "--no-progress"]) == 0
    capsys.readouterr()
    assert crop.main([str(root), "--out", str(tmp_path / "second"), "--method", "centre", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "note: skipped 1 earlier output folder(s) inside the input" in err and str(root / "first") in err
