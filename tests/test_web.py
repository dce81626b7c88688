"""The web page (inference/web.py, app.py): its pure functions on good and bad uploads, and the page in a browser.

The browser test serves the page with a fake predictor on 127.0.0.1 and drives Debian's chromium through
playwright; it skips when gradio, playwright or /usr/bin/chromium is missing.
"""

import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from inference import web
from inference.crop import Box, crop_image, parse_aspect
from inference.files import map_to_uint8

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class FakePredictor:
    """A Gaussian blob at (70 % of the width, 30 % of the height): a map with one clear place to crop to."""

    calls = 0

    def predict(self, image):
        self.calls += 1
        height, width = image.shape[:2]
        y, x = np.mgrid[:height, :width]
        blob = np.exp(-(((x - 0.7 * width) / (0.1 * width)) ** 2 + ((y - 0.3 * height) / (0.1 * height)) ** 2))
        return blob.astype(np.float32)


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _photo(width=64, height=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_header_only(width, height):
    """A PNG whose header claims width x height RGB pixels, with (almost) no pixel data: Pillow reads the header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


# --- decode_photo: every kind of upload -------------------------------------------------------------------------


def test_decode_rgb_jpeg_from_path_and_bytes(tmp_path):
    path = tmp_path / "holiday photo.jpg"
    path.write_bytes(_encode(Image.fromarray(_photo()), "JPEG", quality=95))
    photo = web.decode_photo(str(path))
    assert photo.image.dtype == np.uint8 and photo.image.shape == (48, 64, 3)
    assert photo.notes == [] and photo.name == "holiday photo"
    again = web.decode_photo(path.read_bytes(), name="x.jpg")
    np.testing.assert_array_equal(again.image, photo.image)


def test_not_an_image_is_a_message_not_a_traceback(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a photo")
    with pytest.raises(web.PhotoError, match=r"notes\.txt is not an image this page can read.*JPEG, PNG"):
        web.decode_photo(str(path))
    with pytest.raises(web.PhotoError, match="damaged or truncated"):
        web.decode_photo(_encode(Image.fromarray(_photo(400, 300)), "PNG")[:120], name="cut.png")


def test_huge_photo_is_refused_before_decoding():
    # 20000 x 10000 = 200 megapixels: over Pillow's decompression-bomb limit, refused from the header alone.
    with pytest.raises(web.PhotoError, match=r"big\.png is too large to open \(200 megapixels\).*Downscale"):
        web.decode_photo(_png_header_only(20000, 10000), name="big.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_photo_over_max_pixels_is_downscaled_and_says_so(fmt):
    data = _encode(Image.fromarray(_photo(400, 300)), fmt)
    photo = web.decode_photo(data, name="wide." + fmt.lower(), max_pixels=30_000)
    height, width = photo.image.shape[:2]
    assert width * height <= 30_000 and abs(width / height - 4 / 3) < 0.02
    assert any("400x300 pixels" in note and f"downscaled to {width}x{height}" in note for note in photo.notes)


def test_exif_orientation_is_applied_also_when_downscaling():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait
    data = _encode(Image.fromarray(_photo(80, 40)), "JPEG", exif=exif)
    assert web.decode_photo(data).image.shape == (80, 40, 3)
    small = web.decode_photo(data, max_pixels=800)
    assert small.image.shape == (40, 20, 3), small.notes


def test_cmyk_jpeg_becomes_rgb_with_a_note():
    data = _encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=100)  # cyan 0, magenta, yellow
    photo = web.decode_photo(data, name="print.jpg")
    assert photo.image.shape == (30, 40, 3)
    assert photo.image[15, 20, 0] > 200 and photo.image[15, 20, 1:].max() < 60  # red
    assert any("CMYK" in note for note in photo.notes)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_file_uses_the_first_frame(fmt):
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    buffer = io.BytesIO()
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], **lossless)
    photo = web.decode_photo(buffer.getvalue(), name=f"clip.{fmt.lower()}")
    assert photo.image.shape == (30, 40, 3)
    np.testing.assert_allclose(photo.image[15, 20], (255, 0, 0), atol=3)
    assert any("animated" in note and "3 frames" in note and "first frame" in note for note in photo.notes)


def test_16_bit_grayscale_png_is_scaled_not_clipped():
    values = np.full((30, 40), 40000, np.uint16)
    values[0, 0] = 65535
    photo = web.decode_photo(_encode(Image.fromarray(values), "PNG"), name="scan.png")
    assert photo.image[10, 10].tolist() == [156] * 3  # 40000 / 257, not clipped to 255
    assert photo.image[0, 0].tolist() == [255] * 3
    assert any("16 bits" in note for note in photo.notes) and any("grayscale" in note for note in photo.notes)


def test_16_bit_rgb_png_is_reduced_to_8_bits():
    rgb16 = np.random.default_rng(0).integers(0, 65536, (30, 40, 3), dtype=np.uint16)
    ok, data = cv2.imencode(".png", rgb16[..., ::-1])  # OpenCV writes BGR
    assert ok
    photo = web.decode_photo(data.tobytes(), name="raw.png")
    np.testing.assert_array_equal(photo.image, (rgb16 >> 8).astype(np.uint8))
    assert any("16 bits" in note for note in photo.notes)


def test_grayscale_is_copied_to_three_channels():
    photo = web.decode_photo(_encode(Image.new("L", (40, 30), 100), "PNG"), name="gray.png")
    assert photo.image.shape == (30, 40, 3) and np.all(photo.image == 100)
    assert any("grayscale" in note for note in photo.notes)


def test_rgba_transparency_is_laid_over_white():
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :20, 3] = 255  # left half opaque red, right half transparent
    photo = web.decode_photo(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), name="logo.png")
    assert photo.image[5, 5].tolist() == [255, 0, 0] and photo.image[5, 30].tolist() == [255, 255, 255]
    assert any("transparent" in note for note in photo.notes)
    rgba[..., 3] = 255  # an opaque RGBA photo: the alpha channel goes silently
    assert web.decode_photo(_encode(Image.fromarray(rgba, "RGBA"), "PNG")).notes == []


def test_palette_with_transparency_and_gray_alpha():
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    photo = web.decode_photo(_encode(palette, "PNG", transparency=0), name="icon.png")
    assert photo.image[0, 0].tolist() == [0, 200, 0]
    la = Image.fromarray(np.dstack([np.full((30, 40), 50, np.uint8), np.zeros((30, 40), np.uint8)]), "LA")
    photo = web.decode_photo(_encode(la, "PNG"), name="la.png")
    assert photo.image[0, 0].tolist() == [255, 255, 255]
    assert any("transparent" in n for n in photo.notes) and any("grayscale" in n for n in photo.notes)


def test_too_small_photo_is_refused():
    with pytest.raises(web.PhotoError, match=r"3x2 pixels; the page needs at least"):
        web.decode_photo(_encode(Image.new("RGB", (3, 2)), "PNG"), name="dot.png")


def test_bundled_examples_decode_and_carry_a_licence():
    assert len(web.EXAMPLES) == 3
    for path in web.EXAMPLES:
        photo = web.decode_photo(path)
        assert photo.notes == [] and min(photo.image.shape[:2]) >= 300
        assert os.path.getsize(path) < 100_000
    assert "CC0" in (Path(web.EXAMPLES_DIR) / "LICENSE.md").read_text()


# --- ratios, analysis, downloads ---------------------------------------------------------------------------------


def test_parse_ratios_merges_ticks_and_text():
    assert web.parse_ratios(["16:9", "1:1"], " 3 : 2 , 1.91:1;32:18") == ["1:1", "16:9", "3:2", "1.91:1"]
    assert web.parse_ratios([], "") == []
    with pytest.raises(web.PhotoError, match=r"'wide' is not an aspect ratio"):
        web.parse_ratios(["1:1"], "wide")
    with pytest.raises(web.PhotoError, match=r"'0:1' is not an aspect ratio"):
        web.parse_ratios([], "0:1")


def test_analyse_gives_overlay_density_boxes_and_crops():
    image = _photo(96, 64)
    saliency_map = FakePredictor().predict(image)
    analysis = web.analyse(image, saliency_map, ["1:1", "2:1"])
    assert analysis.overlay.shape == image.shape and analysis.overlay.dtype == np.uint8
    np.testing.assert_array_equal(analysis.density, map_to_uint8(saliency_map))
    assert analysis.boxes_image.shape == image.shape and not np.array_equal(analysis.boxes_image, image)
    assert [label for label, _ in analysis.boxes] == ["1:1", "2:1"]
    for (label, box), (crop, caption) in zip(analysis.boxes, analysis.crops):
        np.testing.assert_array_equal(crop, crop_image(image, box))
        assert abs(crop.shape[1] / crop.shape[0] - parse_aspect(label)) < 0.05
        assert caption == f"{label}: {box.width}x{box.height}"
    square = analysis.boxes[0][1]
    assert square.x + square.width > 0.7 * 96 > square.x  # the crop holds the blob


def test_thin_boxes_after_others_are_drawn_inside_themselves():
    """Issue 24, item 8: "1:1, 100:1" in Other ratios on a 352x235 photo crashed in draw_boxes (the outline's
    inset grew past a 4-pixel-high box)."""
    image = _photo(352, 235)
    ratios = web.parse_ratios(["16:9"], "1:1, 100:1")
    analysis = web.analyse(image, FakePredictor().predict(image), ratios)
    (_, wide), (_, square), (_, thin) = analysis.boxes
    assert thin.width == 352 and thin.height <= 4
    outline = np.all(analysis.boxes_image == web.BOX_COLOURS[2], axis=2)
    assert outline[thin.y:thin.y + thin.height].sum(axis=1).max() > 300  # the thin box is drawn, inside its rows
    result = web.recrop_page({"image": image, "map": FakePredictor().predict(image), "name": "photo"}, ["16:9"],
                             "1:1, 100:1")
    assert result.error is None and len(result.crops) == 3
    assert web.draw_boxes(image, [(str(i), Box(5, 7, 1, 1)) for i in range(4)]).shape == image.shape


def test_check_map_refuses_wrong_shapes_and_nan():
    with pytest.raises(web.PhotoError, match="shape"):
        web.check_map(np.zeros((4, 5)), (5, 4))
    with pytest.raises(web.PhotoError, match="NaN"):
        web.check_map(np.full((4, 5), np.nan), (4, 5))
    assert web.check_map(np.full((4, 5, 1), 2.0), (4, 5)).max() == 1.0


def test_save_downloads_writes_png_and_npy(tmp_path):
    saliency_map = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    png, npy = web.save_downloads(saliency_map, tmp_path, "my photo (1)")
    assert os.path.basename(png) == "my_photo_1_saliency.png" and npy.endswith("my_photo_1_saliency.npy")
    np.testing.assert_array_equal(np.asarray(Image.open(png)), map_to_uint8(saliency_map))
    loaded = np.load(npy)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, saliency_map)


def test_download_folder_prunes_old_predictions(tmp_path):
    downloads = web.DownloadFolder(root=str(tmp_path), max_age_s=60)
    old = downloads.new()
    os.utime(old, (0, 0))
    new = downloads.new()
    assert not os.path.exists(old) and os.path.isdir(new)


# --- the page's actions without a browser ------------------------------------------------------------------------


def test_predict_page_end_to_end(tmp_path):
    path = tmp_path / "balloon.jpg"
    shutil.copy(web.EXAMPLES[0], path)
    result = web.predict_page({"fake": FakePredictor()}, str(path), "fake", ["1:1"], "2:1",
                              web.DownloadFolder(root=str(tmp_path / "dl")))
    assert result.error is None and result.notes == []
    assert "**fake** on balloon (640x427 pixels)" in result.status
    assert result.overlay.shape == (427, 640, 3) and result.density.shape == (427, 640)
    assert [caption.split(":")[0] + ":" + caption.split(":")[1] for _, caption in result.crops] == ["1:1", "2:1"]
    assert [os.path.basename(f) for f in result.files] == ["balloon_saliency.png", "balloon_saliency.npy"]
    assert result.state["map"].shape == (427, 640)
    again = web.recrop_page(result.state, [], "3:2")
    assert [caption.split(": ")[0] for _, caption in again.crops] == ["3:2"] and again.overlay is None
    assert web.recrop_page(result.state, [], "x").error.startswith("'x' is not an aspect ratio")
    assert web.recrop_page(None, ["1:1"], "") is None


@pytest.mark.parametrize("case, expected", [
    ("text", "is not an image this page can read"),
    ("ratio", "'3x2' is not an aspect ratio"),
    ("unknown model", "Unknown model 'nope'"),
    ("missing model", "could not be loaded from /nonexistent/model"),
    ("failing model", "failed on this photo: RuntimeError: out of memory"),
    ("wrong map", "returned a map of shape (2, 2)"),
])
def test_predict_page_turns_every_failure_into_a_message(tmp_path, case, expected):
    class Broken:
        def predict(self, image):
            raise RuntimeError("out of memory")

    class WrongShape:
        def predict(self, image):
            return np.zeros((2, 2), np.float32)

    models = {"fake": FakePredictor(), "missing": "/nonexistent/model", "broken": Broken(), "wrong": WrongShape()}
    photo = tmp_path / "photo.png"
    photo.write_bytes(_encode(Image.fromarray(_photo()), "PNG"))
    if case == "text":
        photo.write_text("hello")
    model = {"unknown model": "nope", "missing model": "missing", "failing model": "broken",
             "wrong map": "wrong"}.get(case, "fake")
    other = "3x2" if case == "ratio" else ""
    result = web.predict_page(models, str(photo), model, ["1:1"], other, web.DownloadFolder(str(tmp_path)))
    assert expected in result.error and expected in result.status and "Traceback" not in result.status
    assert result.overlay is None and result.files is None and result.state is None


def test_predict_page_with_nothing_uploaded_clears_the_outputs():
    result = web.predict_page({"fake": FakePredictor()}, None, "fake")
    assert result.error is None and result.overlay is None and "Drop a photo" in result.status


def test_models_load_lazily_once(monkeypatch):
    loads = []

    def fake_load(path):
        loads.append(path)
        return FakePredictor()

    monkeypatch.setattr("inference.predictors.load_predictor", fake_load)
    models = web.Models({"a": "runs/a", "b": FakePredictor()})
    assert models.names == ["a", "b"] and models.default == "a" and loads == []
    assert models.get("a") is models.get("a") and loads == ["runs/a"]
    with pytest.raises(web.PhotoError, match="Unknown model"):
        models.get("c")
    with pytest.raises(ValueError):
        web.Models({})


def test_model_names_from_the_command_line():
    assert web.model_name("runs/b-seed0/") == "b-seed0"
    assert web.model_name("runs/b-seed0/saved_model") == "b-seed0"
    assert web.model_name("exports/student.onnx") == "student.onnx"
    assert web.models_from_args(["fastgaze", "a/run", "b/run", "teacher=w/model.pb"]) == {
        "fastgaze": "fastgaze", "run": "a/run", "run (2)": "b/run", "teacher": "w/model.pb"}


# --- app.py ------------------------------------------------------------------------------------------------------


def test_app_help_is_quick_and_imports_no_tensorflow():
    code = ("import runpy, sys; sys.argv = ['app.py', '--help']\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'tensorflow' not in sys.modules and 'gradio' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: app.py" in result.stdout and "--model" in result.stdout and "127.0.0.1" in result.stdout
    assert "fastgaze" in result.stdout


def test_app_reports_a_model_that_does_not_load(monkeypatch, capsys):
    pytest.importorskip("gradio")
    import app

    monkeypatch.setattr("datasets.io.import_tensorflow_quietly", lambda: None)
    assert app.main(["--model", "/nonexistent/run"]) == 1
    assert "app.py: error: The model 'run' could not be loaded from /nonexistent/run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        app.main(["--port", "0"])
    assert "--port must be 1..65535" in capsys.readouterr().err


def test_build_app_makes_blocks():
    gr = pytest.importorskip("gradio")
    app = web.build_app({"fake": FakePredictor()}, examples=())
    assert isinstance(app, gr.Blocks)


# --- in a browser ------------------------------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowFakePredictor(FakePredictor):
    """FakePredictor taking a second per map, as a real model on a busy CPU does: events overlap."""

    def predict(self, image):
        time.sleep(1.0)
        return super().predict(image)


@pytest.fixture(scope="module")
def served_page(tmp_path_factory):
    """The page with a slow fake predictor, served on 127.0.0.1 in this process's threads: (its URL, the predictor)."""
    pytest.importorskip("gradio", reason="the web extra is not installed: pip install -e '.[web]'")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    predictor = SlowFakePredictor()
    app = web.build_app({"fake": predictor},
                        downloads=web.DownloadFolder(str(tmp_path_factory.mktemp("downloads"))))
    port = _free_port()
    web.launch(app, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", predictor
    app.close()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_page_in_a_browser(browser, served_page, tmp_path):
    url, predictor = served_page
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.get_by_label("1:1", exact=True).check()
    page.locator("#photo input[type=file]").set_input_files(web.EXAMPLES[0])
    page.locator("#predict").click()
    page.wait_for_selector("#density img", timeout=60_000)
    page.wait_for_selector("#overlay img", timeout=60_000)
    crops = page.locator("#crops")
    crops.get_by_text("1:1: 427x427", exact=False).first.wait_for(timeout=60_000)
    assert "16:9: 640x360" in crops.inner_text()
    assert "**" not in page.locator("#status").inner_text()
    assert "fake on balloon (640x427 pixels)" in page.locator("#status").inner_text()
    downloads = page.locator("#downloads").inner_text()
    assert "balloon_saliency" in downloads and ".png" in downloads and ".npy" in downloads
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    # A ratio typed after the prediction re-crops without predicting again. The upload and the button each asked
    # for a prediction; the re-crop waits for the second, so that its crops are the last word (they once flashed
    # and were overwritten by the second prediction's, made with the ratios of the moment the button was clicked).
    page.locator("#other textarea, #other input").first.fill("3:2")
    page.locator("#other textarea, #other input").first.press("Enter")
    crops.get_by_text("3:2: 640x427", exact=False).first.wait_for(timeout=60_000)
    deadline = time.monotonic() + 60
    while predictor.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert predictor.calls == 2
    page.wait_for_timeout(3000)  # whatever was still on its way has landed
    assert "3:2: 640x427" in crops.inner_text()

    # A file that is not an image: a message on the page, the outputs cleared, no traceback.
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    page.locator("#photo button[aria-label='Clear'], #photo button:has-text('×')").first.click()
    page.locator("#photo input[type=file]").set_input_files(str(bad))
    page.locator("#status").get_by_text("is not an image this page can read").wait_for(timeout=30_000)
    assert "Traceback" not in page.content()
    page.close()
