"""Saliency out of the box: with no --model, predict.py, crop.py, videos and the web page use the built-in
FastGaze shipped in the package (no model file, no download)."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import crop
import predict
from inference import web
from inference.predictors import DEFAULT_MODEL, STUDENT_BUILTINS, ContractPredictor, builtin_names, load_predictor
from teacher import builtin, fastgaze
from teacher.loading import load_teacher

ROOT = Path(__file__).resolve().parents[1]


def _photo(path, shape=(60, 90)):
    """A photo-like image with one bright object off-centre (right third)."""
    rng = np.random.default_rng(0)
    image = rng.integers(60, 90, (*shape, 3), dtype=np.uint8)
    image[20:40, 60:80] = (250, 40, 40)
    cv2.imwrite(str(path), image[:, :, ::-1])
    return image


def test_one_registry_of_built_in_names():
    assert builtin_names()[:3] == ("fastgaze", "fastgaze-centre", "attention-center") and DEFAULT_MODEL in builtin_names()
    assert set(fastgaze.VARIANTS) <= set(builtin.names())
    for name in builtin.names():
        entry = builtin.BUILTINS[name]
        assert entry.licence == "Apache-2.0" and entry.description and entry.input_convention
        assert all((Path(builtin.__file__).parent / f).is_file() for f in entry.files)


def test_the_registry_imports_no_tensorflow():
    code = ("import sys; import inference.predictors, teacher.builtin; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')], 'imported'; "
            "print(inference.predictors.builtin_names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "attention-center" in out.stdout


@pytest.fixture(scope="module")
def builtin_predictor():
    return load_predictor("fastgaze-centre")


def test_load_predictor_takes_the_built_in_names(builtin_predictor, tmp_path):
    image = _photo(tmp_path / "p.png")
    assert isinstance(builtin_predictor, ContractPredictor) and builtin_predictor.num_params == 121_064
    saliency = builtin_predictor.predict(image)
    assert saliency.shape == image.shape[:2] and saliency.max() == pytest.approx(1.0)
    # The same map as the Keras model built directly from the shipped weights, normalised by its max.
    direct = np.asarray(fastgaze.load_fastgaze("fastgaze-centre")(image[None].astype("float32")))[0, ..., 0]
    np.testing.assert_allclose(saliency, direct / direct.max(), atol=1e-5)
    with pytest.raises(ValueError, match="each image's own size"):
        load_predictor("fastgaze", teacher_input_size=(240, 320))


def test_predict_without_a_model_uses_the_built_in_one(tmp_path, capsys):
    _photo(tmp_path / "photo.jpg")
    assert predict.main([str(tmp_path / "photo.jpg"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    written = cv2.imread(str(tmp_path / "out" / "photo.png"), cv2.IMREAD_GRAYSCALE)
    assert written.shape == (60, 90) and written.max() == 255


def test_predict_a_video_without_a_model(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        frame = np.full((48, 64, 3), 70, np.uint8)
        frame[10:30, 5 + 8 * i:25 + 8 * i] = 250
        writer.write(frame)
    writer.release()
    assert predict.main([str(path), "--out", str(tmp_path / "out"), "--no-progress", "--batch-size", "2"]) == 0
    video = cv2.VideoCapture(str(tmp_path / "out" / "clip_saliency.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_crop_without_a_model_uses_the_built_in_one_and_follows_the_object(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.jpg")
    out = tmp_path / "crops"
    assert crop.main([str(folder), "--aspect", "1:1", "--scale", "0.5", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "crops.json").read_text())
    assert summary["model"] == DEFAULT_MODEL
    box = summary["images"]["a"]["crops"]["1:1"]
    # The object sits at columns 60-80 of 90: a mass crop moves right of the centre crop (x = 30).
    assert box["width"] == 30 and box["x"] > 30


def test_a_built_in_model_is_one_model_in_any_spelling(tmp_path):
    """crops.json names the model of its crops: the default in capitals (`--model FastGaze-Centre`) and the
    default are the same one."""
    _photo(tmp_path / "a.jpg")
    assert load_predictor("FastGaze-Centre").path == "fastgaze-centre"
    out = tmp_path / "crops"
    for model in (["--model", DEFAULT_MODEL.title()], []):
        assert crop.main([str(tmp_path / "a.jpg"), *model, "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "crops.json").read_text())["model"] == DEFAULT_MODEL


def test_the_web_page_defaults_to_the_built_in_models():
    assert web.DEFAULT_MODELS[0] == DEFAULT_MODEL and {"fastgaze", "fastgaze-centre"} <= set(web.DEFAULT_MODELS)
    assert set(web.DEFAULT_MODELS) <= {"fastgaze-centre", "fastgaze", "attention-center",
                                       "fastgaze-centre:flip+attention-center:flip", *STUDENT_BUILTINS}


def test_a_built_in_name_that_is_also_a_local_folder_is_named_on_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fastgaze").mkdir()
    _photo(tmp_path / "photo.jpg")
    assert predict.main(["photo.jpg", "--model", "fastgaze", "--out", "out", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "'fastgaze' is the built-in model 'fastgaze'" in err and "./fastgaze" in err, err
    assert (tmp_path / "out" / "photo.png").is_file()


def test_built_in_names_ignore_case_and_near_misses_are_suggested(tmp_path, capsys):
    import export_teacher

    teacher = load_teacher("FastGaze-Centre")
    assert teacher.name == "fastgaze-centre" and teacher.sha256 == builtin.sha256("fastgaze-centre")
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.jpg")
    assert export_teacher.main(["--images", str(folder), "--teacher", "fastgaze-center", "--out",
                                str(tmp_path / "records"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'fastgaze-centre'" in err and "MSI-Net" not in err, err


def test_export_teacher_takes_a_built_in_teacher(tmp_path):
    import export_teacher
    from datasets import records

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b"):
        _photo(folder / f"{name}.jpg")
    out = tmp_path / "records"
    assert export_teacher.main(["--images", str(folder), "--teacher", "fastgaze", "--out", str(out),
                                "--no-progress"]) == 0
    manifest = json.loads((out / "train.json").read_text())
    assert manifest["num_images"] == 2 and manifest["teacher"]["name"] == "fastgaze"
    example = next(iter(records.read_records(sorted(str(p) for p in out.glob("train-*.tfrecord")))))
    teacher_map = example["teacher"].numpy()
    assert teacher_map.max() == pytest.approx(1.0, abs=1e-4)


def test_export_student_names_the_built_ins_it_cannot_export(tmp_path, capsys):
    import export_student

    assert export_student._default_name("FastGaze-Centre") == "fastgaze_centre"
    assert export_student._default_name("runs/b") == "student"
    for spec in ("attention-center", "fastgaze-centre+attention-center", "fastgaze:flip"):
        assert export_student.main([spec, "--out", str(tmp_path / "out"), "--input-size", "32", "32"]) == 1
        err = capsys.readouterr().err
        assert "cannot be exported" in err and "fastgaze, fastgaze-centre can" in err, err


@pytest.mark.parametrize("cli", [predict, crop], ids=["predict", "crop"])
def test_the_model_option_names_the_default_and_every_other_built_in(cli, monkeypatch):
    """--help follows DEFAULT_MODEL and the registry (one text, `predictors.model_help`): a shipped student joins
    the built-ins and may become the default (here a stand-in for one)."""
    names = builtin_names() + ("kd-standin",)
    from inference import predictors

    monkeypatch.setattr(cli, "DEFAULT_MODEL", "kd-standin")
    monkeypatch.setattr(predictors, "DEFAULT_MODEL", "kd-standin")
    monkeypatch.setattr(predictors, "builtin_names", lambda: names)
    action = next(a for a in cli.build_parser()._actions if "--model" in a.option_strings)
    assert action.default == "kd-standin" and "built-in kd-standin" in action.help
    assert all(name in action.help for name in names)
