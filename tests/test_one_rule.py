"""Each rule once, at floor 0, used by every caller: transparency, high bit depths, image extensions, map resize,
file sha256, the progress reporter and the file-backed sample."""

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from datasets import geometry
from datasets.io import composite_over_white, decode_image, file_sha256
from datasets.progress import Progress


def _rgba_png(path, seed=0):
    """A 20x30 RGBA PNG with random colours and every kind of alpha (0, 255 and in between)."""
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[:5, :, 3], rgba[5:10, :, 3] = 0, 255
    Image.fromarray(rgba, "RGBA").save(path)
    return rgba


def test_composite_over_white_is_the_rounded_blend():
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 100, 255, 128], [200, 0, 51, 1]]], np.uint8)
    # round((c * a + 255 * (255 - a)) / 255), worked by hand
    expected = [[[255, 255, 255], [10, 20, 30], [127, 177, 255], [255, 254, 254]]]
    assert composite_over_white(rgba).tolist() == expected
    with pytest.raises(ValueError, match="uint8 \\(H, W, 4\\)"):
        composite_over_white(rgba[..., :3])


def test_a_transparent_png_reaches_the_model_alike_from_predict_and_from_the_page(tmp_path):
    from inference import web
    from inference.files import predict_files
    from inference.predictors import Predictor

    seen = []

    class Recording(Predictor):
        kind = "student"

        def _predict_group(self, images):
            seen.extend(np.array(image) for image in images)
            return np.ones(images.shape[:3], np.float32)

    path = tmp_path / "logo.png"
    rgba = _rgba_png(path)
    predict_files(Recording("r"), [path], out_dir=tmp_path / "out", progress=False)
    result = web.predict_page({"r": Recording("r")}, str(path), "r", downloads=web.DownloadFolder(tmp_path / "dl"))
    assert result.error in (None, ""), result.error
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], composite_over_white(rgba))
    assert seen[0][:5].min() == 255  # fully transparent rows are white, not the hidden colours


@pytest.mark.parametrize("mode", ["LA", "P", "L", "RGB"])
def test_gray_alpha_and_palette_transparency_follow_the_same_rule(mode):
    """... and a grey or RGB PNG's transparent colour (tRNS), which OpenCV ignores for grey and Pillow for both."""
    from inference import web

    if mode == "LA":
        image = Image.fromarray(np.dstack([np.full((8, 8), 50, np.uint8), np.tile([0, 255], 32).reshape(8, 8)
                                           .astype(np.uint8)]), "LA")
        kwargs = {}
    elif mode in ("L", "RGB"):
        image = Image.new(mode, (8, 8), 50 if mode == "L" else (50, 0, 100))
        image.paste(0 if mode == "L" else (0, 0, 0), (0, 0, 4, 8))
        kwargs = {"transparency": 0 if mode == "L" else (0, 0, 0)}
    else:
        image = Image.new("P", (8, 8), 1)
        image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
        image.paste(0, (0, 0, 4, 8))
        kwargs = {"transparency": 0}
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    np.testing.assert_array_equal(decode_image(buffer.getvalue()), web.decode_photo(buffer.getvalue()).image)
    assert decode_image(buffer.getvalue()).max(axis=2).max() == 255  # transparent parts are white


@pytest.mark.parametrize("kind", ["float_tiff", "uint16_png"])
def test_high_bit_depth_photos_reach_the_model_alike_from_predict_and_from_the_page(kind):
    import cv2

    from inference import web

    rng = np.random.default_rng(1)
    if kind == "float_tiff":  # values in [0, 1]: x 255, not truncated to 0 and 1
        values = rng.random((20, 30)).astype(np.float32)
        expected = np.round(values.astype(np.float64) * 255.0)
    else:
        values = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
        expected = np.round(values / 257.0)
    ok, data = cv2.imencode(".tiff" if kind == "float_tiff" else ".png", values)
    assert ok
    from_file = decode_image(data.tobytes())
    from_page = web.decode_photo(data.tobytes(), name="scan").image
    np.testing.assert_array_equal(from_file, np.repeat(expected[..., None], 3, axis=2).astype(np.uint8))
    np.testing.assert_array_equal(from_page, from_file)


def test_records_store_the_pixels_the_teacher_saw(tmp_path):
    """tf.io.decode_image drops alpha: the export stores a transparent image re-encoded, as composited."""
    import tensorflow as tf

    from datasets.sample import FileSample
    from teacher.labelling import load_inputs

    path = tmp_path / "logo.png"
    rgba = _rgba_png(path)
    inputs = load_inputs(FileSample("logo", str(path)))
    np.testing.assert_array_equal(inputs["image"], composite_over_white(rgba))
    decoded = tf.io.decode_image(inputs["image_bytes"], channels=3, expand_animations=False).numpy()
    np.testing.assert_array_equal(decoded, inputs["image"])


def test_one_list_of_image_extensions_with_bmp(tmp_path):
    import cv2

    from datasets import folders
    from datasets.sources import list_samples
    from inference import files

    assert files.IMAGE_EXTENSIONS is folders.IMAGE_EXTENSIONS and ".bmp" in folders.IMAGE_EXTENSIONS
    assert cv2.imwrite(str(tmp_path / "a.bmp"), np.zeros((4, 4, 3), np.uint8))
    assert cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((4, 4, 3), np.uint8))
    assert [s.stem for s in list_samples("images", tmp_path, "test")] == ["a", "b"]
    assert [stem for _, stem in files.list_images([tmp_path])] == ["a", "b"]


def test_one_resize_of_maps_averages_when_shrinking():
    from evaluation import scoring

    assert scoring.resize_map is geometry.resize_map
    saliency_map = np.zeros((8, 8), np.float32)
    saliency_map[::4, ::4] = 16.0  # one fixation-like spike per 4x4 block
    # a 4x shrink averages each block: 1 everywhere (bilinear samples between the spikes and gives 0)
    np.testing.assert_allclose(scoring.resize_map(saliency_map, (2, 2)), np.ones((2, 2)), rtol=1e-6)
    grown = scoring.resize_map(np.array([[0, 1]], np.float32), (1, 4))
    np.testing.assert_allclose(grown, [[0, 0.25, 0.75, 1]])  # bilinear when growing


def test_capped_size_is_the_longest_side_cap():
    assert geometry.capped_size(1000, 500, 320) == (320, 160)
    assert geometry.capped_size(200, 100, 320) == (200, 100) and geometry.capped_size(999, 3, None) == (999, 3)
    assert geometry.capped_size(3, 1000, 320) == (1, 320)


def test_one_file_sha256_for_files_and_folders(tmp_path):
    from datasets import shards
    from teacher import loading

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "x.bin").write_bytes(b"abc")
    (tmp_path / "d" / "sub" / "y.bin").write_bytes(b"def" * 500000)
    assert file_sha256(tmp_path / "d" / "x.bin") == hashlib.sha256(b"abc").hexdigest()
    whole = hashlib.sha256(b"sub/y.bin\0" + b"def" * 500000 + b"x.bin\0abc").hexdigest()
    assert file_sha256(tmp_path / "d") == whole
    assert shards.file_sha256 is file_sha256 and loading.file_sha256 is file_sha256


def test_one_progress_reporter_plain_lines_off_a_terminal():
    from inference import files
    from teacher import labelling

    assert files.Progress is Progress and labelling.Progress is Progress
    stream = io.StringIO()
    bar = Progress(20, "val", stream=stream)
    for _ in range(20):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "val: 20 image(s)" and lines[1] == "val: 2/20 image(s) (10%)" and len(lines) == 11
    assert lines[-1].startswith("val: 20/20 image(s) done in ") and "\r" not in stream.getvalue()


def test_image_folders_and_mit1003_list_file_samples(tmp_path):
    from datasets.mit1003 import list_mit1003
    from datasets.salicon import SaliconSample
    from datasets.sample import FileSample
    from datasets.sources import list_samples

    assert SaliconSample is FileSample  # a SALICON sample is a file sample
    for folder in ("stimuli", "maps"):
        (tmp_path / "mit" / folder).mkdir(parents=True)
        Image.new("L", (4, 4), 9).save(tmp_path / "mit" / folder / "a.png")
    samples = list_mit1003(tmp_path / "mit") + list_samples("images", tmp_path / "mit" / "stimuli", "test")
    assert [type(s) for s in samples] == [FileSample, FileSample]
    assert samples[0].load()["saliency"].tolist() == [[9] * 4] * 4
