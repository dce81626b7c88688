"""Saliency out of the box: with no --model, predict.py, crop.py, videos and the web page use the built-in
FastGaze shipped in the package (no model file, no download)."""

import json

import cv2
import numpy as np
import pytest

import crop
import predict
from inference import web
from inference.predictors import DEFAULT_MODEL, BUILTIN_MODELS, ContractPredictor, load_predictor
from teacher import fastgaze


def _photo(path, shape=(60, 90)):
    """A photo-like image with one bright object off-centre (right third)."""
    rng = np.random.default_rng(0)
    image = rng.integers(60, 90, (*shape, 3), dtype=np.uint8)
    image[20:40, 60:80] = (250, 40, 40)
    cv2.imwrite(str(path), image[:, :, ::-1])
    return image


def test_the_names_match_the_built_in_package():
    assert BUILTIN_MODELS == fastgaze.BUILTIN_MODELS and DEFAULT_MODEL in BUILTIN_MODELS


@pytest.fixture(scope="module")
def builtin_predictor():
    return load_predictor(DEFAULT_MODEL)


def test_load_predictor_takes_the_built_in_names(builtin_predictor, tmp_path):
    image = _photo(tmp_path / "p.png")
    assert isinstance(builtin_predictor, ContractPredictor) and builtin_predictor.num_params == 121_064
    saliency = builtin_predictor.predict(image)
    assert saliency.shape == image.shape[:2] and saliency.max() == pytest.approx(1.0)
    # The same map as the Keras model built directly from the shipped weights, normalised by its max.
    direct = np.asarray(fastgaze.load_fastgaze(DEFAULT_MODEL)(image[None].astype("float32")))[0, ..., 0]
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


def test_the_web_page_defaults_to_the_built_in_models():
    assert web.DEFAULT_MODELS[0] == DEFAULT_MODEL and set(web.DEFAULT_MODELS) <= set(BUILTIN_MODELS)


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
