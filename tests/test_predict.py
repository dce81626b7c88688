"""predict.py and the shared model loader `inference.predictors.load_predictor`."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

import predict
from inference.files import OUTPUT_MARKER, list_images, overlay_heatmap, predict_files
from inference.predictors import StudentPredictor, TeacherPredictor, load_predictor
from student.model import build_student
from student.serving import export_saved_model
from tests.msinet_reference import build_reference_pb

INPUT_SIZE = (32, 48)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as train.py leaves it: the student's SavedModel under saved_model/."""
    run = tmp_path_factory.mktemp("run")
    export_saved_model(build_student("A", seed=0), run / "saved_model", input_size=INPUT_SIZE)
    return run


@pytest.fixture(scope="module")
def served(run_dir):
    return tf.saved_model.load(str(run_dir / "saved_model")).signatures["serving_default"]


@pytest.fixture(scope="module")
def student_predictor(run_dir):
    return load_predictor(run_dir, batch_size=2)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """An odd-sized RGB JPEG, a grayscale PNG and an RGBA PNG (in a subfolder), plus the RGB each decodes to (the
    RGBA laid over white)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgba = rng.integers(0, 256, (25, 17, 4), dtype=np.uint8)
    assert cv2.imwrite(str(root / "photo.JPG"), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert cv2.imwrite(str(root / "gray.png"), gray)
    assert cv2.imwrite(str(root / "sub" / "alpha.png"), rgba[:, :, [2, 1, 0, 3]])  # cv2 writes BGRA
    (root / "notes.txt").write_text("not an image")
    decoded = {
        "photo": cv2.imread(str(root / "photo.JPG"))[:, :, ::-1],  # JPEG is lossy: compare with what decodes
        "gray": np.repeat(gray[:, :, None], 3, axis=2),
        "sub/alpha": np.round(rgba[:, :, :3] * (alpha := rgba[:, :, 3:] / 255) + 255 * (1 - alpha)).astype(np.uint8),
    }
    return root, decoded


def test_cli_writes_a_map_per_image_at_its_size(run_dir, served, image_dir, tmp_path, capsys):
    root, decoded = image_dir
    out = tmp_path / "pred"
    assert predict.main(["--model", str(run_dir), str(root), "--out", str(out), "--overlay", "--no-progress"]) == 0
    assert "3 image(s) written" in capsys.readouterr().out
    for stem, rgb in decoded.items():
        written = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and written.shape == rgb.shape[:2], stem
        # Independent reference: the SavedModel's own signature on the RGB the file decodes to.
        expected = served(images=tf.constant(rgb[None]))["saliency_map"].numpy()[0, :, :, 0] * 255
        assert np.abs(written.astype(np.float64) - expected).max() <= 1.0, stem
        assert written.max() == 255
        overlay = cv2.imread(str(out / f"{stem}_overlay.jpg"))
        assert overlay is not None and overlay.shape == rgb.shape, stem
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        [OUTPUT_MARKER, "sub", "alpha.png", "alpha_overlay.jpg", "gray.png", "gray_overlay.jpg", "photo.png",
         "photo_overlay.jpg"]
    )


def test_cli_reports_an_unreadable_image_and_writes_the_others(run_dir, image_dir, tmp_path, capsys):
    root, _ = image_dir
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "pred"
    code = predict.main(["--model", str(run_dir / "saved_model"), str(broken), str(root / "gray.png"),
                         "--out", str(out), "--no-progress"])
    assert code == 1
    assert str(broken) in capsys.readouterr().err
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "gray.png"]  # no output (or temporary file) for the broken one


def test_cli_names_a_missing_model(tmp_path, image_dir, capsys):
    missing = tmp_path / "no_such_run"
    assert predict.main(["--model", str(missing), str(image_dir[0]), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "run folder" in err


def test_unrecognised_folder_names_the_path_and_what_was_expected(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match="saved_model.pb") as info:
        load_predictor(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "run" / "saved_model").mkdir(parents=True)  # a run that has not exported yet
    with pytest.raises(ValueError, match="has not finished"):
        load_predictor(tmp_path / "run")


def test_run_folder_and_savedmodel_load_the_same_student(run_dir):
    from_run = load_predictor(run_dir)
    from_savedmodel = load_predictor(run_dir / "saved_model")
    assert isinstance(from_run, StudentPredictor) and isinstance(from_savedmodel, StudentPredictor)
    assert from_run.input_size == INPUT_SIZE and from_run.kind == "student"
    assert 10_000_000 < from_run.num_params < 20_000_000  # ResNet18 (11.7M) plus the decoder


def test_predictions_have_the_image_size_and_batches_match_single_images(student_predictor):
    predictor = student_predictor
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(21, 33, 3), (40, 28, 3), (21, 33, 3),
                                                                          (21, 33, 3)]]
    maps = predictor.predict_batch(images)
    for image, saliency_map in zip(images, maps):
        single = predictor.predict(image)
        assert saliency_map.shape == image.shape[:2] and saliency_map.dtype == np.float32
        assert 0.0 <= saliency_map.min() and saliency_map.max() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(saliency_map, single, atol=1e-5)
    density = predictor.predict_density(images[0])
    assert density.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(density / density.max(), maps[0], atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8)])
def test_predict_rejects_non_rgb_uint8(student_predictor, bad):
    with pytest.raises(ValueError, match=r"uint8 RGB array of shape \(H, W, 3\)"):
        student_predictor.predict(bad)


def test_overlay_blends_the_colour_mapped_map_with_alpha():
    image = np.full((2, 3, 3), 100, np.uint8)
    # With the "gray" colormap, map value 0 is black and 1 is white: blend = (1 - a) * 100 + a * {0, 255}.
    np.testing.assert_array_equal(overlay_heatmap(image, np.zeros((2, 3)), "gray", 0.5), np.full((2, 3, 3), 50))
    np.testing.assert_array_equal(overlay_heatmap(image, np.ones((2, 3)), "gray", 0.25), np.full((2, 3, 3), 139))
    with pytest.raises(ValueError, match="not a matplotlib colormap"):
        overlay_heatmap(image, np.zeros((2, 3)), "no-such-map")
    with pytest.raises(ValueError, match=r"\(3, 2\) != image \(2, 3\)"):
        overlay_heatmap(image, np.zeros((3, 2)))


def test_list_images_recurses_skips_the_output_folder_and_refuses_name_clashes(tmp_path):
    for rel in ["a.jpg", "b.PNG", "c.bmp", "d.txt", "deep/e.jpeg", "out/a.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    pairs = list_images([tmp_path], exclude=tmp_path / "out")
    assert [stem for _, stem in pairs] == ["a", "b", "c", os.path.join("deep", "e")]
    with pytest.raises(ValueError, match="would both be written as a.png"):
        list_images([tmp_path / "a.jpg", tmp_path / "out" / "a.png"])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        list_images([tmp_path / "missing.jpg"])


def test_hidden_files_in_input_folders_are_not_inputs(tmp_path):
    """macOS leaves `._<name>` metadata files beside copied photos: not images, so not failures of the run."""
    from inference.video import list_videos

    for rel in ["a.jpg", "._a.jpg", "deep/.b.png", "._clip.mp4", ".DS_Store"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    skipped = []
    assert [stem for _, stem in list_images([tmp_path], skipped=skipped)] == ["a"] and skipped == []
    assert list_videos([tmp_path]) == []
    assert [stem for _, stem in list_images([tmp_path / "._a.jpg"])] == ["._a"]  # given directly: read


@pytest.fixture(scope="module")
def fake_msinet_savedmodel(tmp_path_factory):
    """A SavedModel shaped like the author's TF2 MSI-Net export (float32 "input_1" in, one "output" map out)
    whose "saliency" is the red channel / 255, so its predictions can be written down by hand."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="input_1")])
    def serve(images):
        return {"output": images[..., :1] / 255.0}

    directory = tmp_path_factory.mktemp("msinet") / "MSI-Net"
    tf.saved_model.save(module, str(directory), signatures={"serving_default": serve})
    return directory


def test_an_msinet_savedmodel_is_recognised_by_its_signature_and_runs_as_the_teacher(fake_msinet_savedmodel):
    predictor = load_predictor(fake_msinet_savedmodel, teacher_input_size=(16, 24))
    assert isinstance(predictor, TeacherPredictor) and predictor.kind == "teacher"
    assert load_predictor(fake_msinet_savedmodel).input_size == (240, 320)  # SALICON's, the default
    image = np.random.default_rng(4).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    # At the teacher's own input size the author's resize/pad and its inverse are the identity.
    np.testing.assert_allclose(predictor.predict(image), image[:, :, 0] / 255.0, atol=1e-6)
    odd = np.random.default_rng(5).integers(0, 256, (13, 29, 3), dtype=np.uint8)
    saliency_map = predictor.predict(odd)
    assert saliency_map.shape == (13, 29) and 0.0 <= saliency_map.min() and saliency_map.max() <= 1.0
    with pytest.raises(ValueError, match="multiples of 8"):
        load_predictor(fake_msinet_savedmodel, teacher_input_size=(20, 30))


@pytest.fixture(scope="module")
def reference_pb(tmp_path_factory):
    """MSI-Net's frozen graph with random weights, in the author's format (24.9M parameters, ~100 MB)."""
    path = tmp_path_factory.mktemp("weights") / "model_salicon_cpu.pb"
    build_reference_pb(str(path), seed=0)
    return path


def test_cli_runs_a_frozen_msinet_graph_through_the_same_code(reference_pb, tmp_path, capsys):
    image = np.random.default_rng(6).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "img.png"), image[:, :, ::-1])
    out = tmp_path / "pred"
    code = predict.main(["--model", str(reference_pb), str(tmp_path / "img.png"), "--out", str(out),
                         "--teacher-size", "48", "64", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    written = cv2.imread(str(out / "img.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (37, 53) and written.dtype == np.uint8
    assert written.max() > written.min()  # a real map, not a constant


# --- issue 10: output inside the input tree, empty inputs, skipped files, warnings, bad model paths, EXIF ----


def _one_image_folder(root, name="photos"):
    folder = root / name
    folder.mkdir()
    rng = np.random.default_rng(1)
    assert cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    return folder


def test_output_folder_above_the_input_still_predicts_every_image(run_dir, tmp_path, monkeypatch, capsys):
    _one_image_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert predict.main(["--model", str(run_dir), "photos", "--out", ".", "--no-progress"]) == 0
    assert cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_GRAYSCALE).shape == (20, 30)
    assert "1 image(s) written" in capsys.readouterr().out
    assert not (tmp_path / OUTPUT_MARKER).exists()  # it holds the input: a run above it must still read the photos


def test_output_folder_equal_to_the_input_or_no_images_is_an_error(run_dir, tmp_path, capsys):
    photos = _one_image_folder(tmp_path)
    assert predict.main(["--model", str(run_dir), str(photos), "--out", str(photos), "--no-progress"]) == 1
    assert "is the input folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "scan.tif").write_bytes(b"II*\x00")
    assert predict.main(["--model", str(run_dir), str(empty), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"no images to predict in {empty}" in err and "scan.tif" in err


def test_an_earlier_output_folder_inside_the_input_is_not_read_again(run_dir, student_predictor, tmp_path, capsys):
    """Issue 24, item 5: maps and overlays of an earlier run with another --out are not images to predict."""
    photos = _one_image_folder(tmp_path)
    report = predict_files(student_predictor, [photos], out_dir=photos / "maps", overlay=True, progress=False)
    assert len(report.written) == 2 and (photos / "maps" / OUTPUT_MARKER).is_file()
    skipped = []
    assert list_images([photos], exclude=tmp_path / "again", skipped_outputs=skipped) == [(str(photos / "a.png"), "a")]
    assert skipped == [str(photos / "maps")]
    assert predict.main(["--model", str(run_dir), str(photos), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    assert "1 image(s) written" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "again")) == [OUTPUT_MARKER, "a.png"]


def test_files_of_other_types_are_listed_and_inapplicable_flags_warned(run_dir, tmp_path, capsys):
    photos = _one_image_folder(tmp_path)
    (photos / "scan.tif").write_bytes(b"II*\x00")
    (photos / "notes.txt").write_text("x")
    code = predict.main(["--model", str(run_dir), str(photos), "--out", str(tmp_path / "o"), "--colormap",
                         "inferno", "--teacher-size", "240", "320", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0
    assert "skipped 2 file(s)" in err and "notes.txt" in err and "scan.tif" in err
    assert "--colormap only applies with --overlay" in err
    assert "--teacher-size only applies to an MSI-Net teacher" in err


def test_unwritable_out_is_refused_before_loading_the_model(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    photos = _one_image_folder(tmp_path)
    assert predict.main(["--model", str(tmp_path / "no-model"), str(photos), "--out", str(blocker / "o")]) == 1
    assert f"{blocker / 'o'}: cannot write output there" in capsys.readouterr().err


def test_a_missing_input_leaves_no_empty_output_folder(tmp_path, capsys):
    out = tmp_path / "new" / "maps"
    assert predict.main(["--model", str(tmp_path / "no-model"), str(tmp_path / "no-photo.jpg"), "--out", str(out)]) == 1
    assert "no-photo.jpg" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_corrupt_saved_model_pb_is_a_clear_error(run_dir, tmp_path, capsys):
    import shutil

    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (copy / "saved_model" / "saved_model.pb").write_bytes(b"\x0a\xff\xff garbage")
    with pytest.raises(ValueError, match=r"saved_model.pb: not a readable SavedModel \(corrupt or truncated"):
        load_predictor(copy)
    photos = _one_image_folder(tmp_path)
    assert predict.main(["--model", str(copy), str(photos), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "not a readable SavedModel" in capsys.readouterr().err


def test_a_student_checkpoint_as_model_says_to_pass_the_run_folder(tmp_path):
    run = tmp_path / "runs" / "B"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    build_student("B", seed=0).save_weights(str(run / "checkpoints" / "best.weights.h5"))
    with pytest.raises(ValueError, match=rf"student training checkpoint; pass its run folder {run}"):
        load_predictor(run / "checkpoints" / "best.weights.h5")
    loose = tmp_path / "student.weights.h5"
    build_student("A", seed=0).save_weights(str(loose))
    with pytest.raises(ValueError, match="not MSI-Net teacher weights.*student checkpoint, pass its run folder"):
        load_predictor(loose)


def test_exif_orientation_6_jpeg_is_predicted_as_displayed(student_predictor, tmp_path):
    import io

    from PIL import Image, ImageOps

    from datasets.io import read_image
    from inference.files import predict_files

    rng = np.random.default_rng(3)
    stored = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 40 high, 24 wide
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    (tmp_path / "phone.jpg").write_bytes(buffer.getvalue())
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB"))
    assert displayed.shape == (40, 24, 3)
    assert np.abs(read_image(tmp_path / "phone.jpg").astype(int) - displayed).mean() < 2
    report = predict_files(student_predictor, [tmp_path / "phone.jpg"], out_dir=tmp_path / "o", progress=False)
    assert not report.failures
    assert cv2.imread(str(tmp_path / "o" / "phone.png"), cv2.IMREAD_GRAYSCALE).shape == (40, 24)


def test_exit_status_is_2_for_usage_errors_and_1_for_other_errors(tmp_path, capsys):
    """Issue 18, item 12: one convention for every command line (handled errors used to exit 2 here)."""
    with pytest.raises(SystemExit) as info:
        predict.main([str(tmp_path), "--alpha", "half"])  # a usage error
    assert info.value.code == 2 and "--alpha" in capsys.readouterr().err
    assert predict.main(["--model", str(tmp_path / "none"), str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("predict.py: error: ") and err.count("\n") == 1


# --- issue 22: predict.py's logic is a library call (inference.inputs) ------------------------------------------

def test_images_and_videos_are_planned_and_predicted_without_the_command_line(tmp_path):
    """plan_inputs finds images, videos and other files (the output folder's old results are not inputs);
    predict_inputs writes them all and collects what failed."""
    from inference.inputs import plan_inputs, predict_inputs
    from inference.predictors import Predictor

    class Flat(Predictor):
        kind = "student"

        def _predict_group(self, images):
            return np.ones(images.shape[:3], np.float32)

    inputs = tmp_path / "in"
    (inputs / "out").mkdir(parents=True)
    for name in ("a.png", "out/old.png"):
        assert cv2.imwrite(str(inputs / name), np.zeros((8, 12, 3), np.uint8))
    writer = cv2.VideoWriter(str(inputs / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (12, 8))
    for _ in range(3):
        writer.write(np.zeros((8, 12, 3), np.uint8))
    writer.release()
    (inputs / "broken.mp4").write_bytes(b"not a video")
    (inputs / "notes.txt").write_text("")

    plan = plan_inputs([inputs], out_dir=inputs / "out")
    assert [stem for _, stem in plan.videos] == ["broken", "clip"] and plan.has_images
    assert plan.skipped == [str(inputs / "notes.txt")]
    seen = []
    run = predict_inputs(Flat("flat"), plan, inputs / "out", progress=False,
                         on_video=lambda path, video, error: seen.append((os.path.basename(path), error is None)))
    assert run.images.written == [str(inputs / "out" / "a.png")] and run.images.failures == []
    assert [v.frames for v in run.videos] == [3] and seen == [("broken.mp4", False), ("clip.avi", True)]
    assert run.video_failures[0][0] == str(inputs / "broken.mp4") and run.failed
    assert run.skipped == [str(inputs / "notes.txt")]
