"""The public Python API, `saliency_kd`: its names are the library's own, and its conveniences (`load`,
`predict`, `crop`) take an array, a file or a loaded model and say what to use for folders and videos.

A stub `Predictor` (the red channel as the map) keeps these tests free of TensorFlow; tests/test_readme.py runs
the README's example with a real built-in model.
"""

from pathlib import Path

import numpy as np
import pytest
from setuptools import find_packages

import saliency_kd
from datasets.io import encode_png
from inference.predictors import Predictor

ROOT = Path(__file__).resolve().parents[1]


class RedPredictor(Predictor):
    """The red channel, divided by 255, as the saliency map."""

    def __init__(self):
        super().__init__("red-stub")

    def _predict_group(self, images):
        return images[..., 0].astype(np.float32) / 255.0


def _image(height=30, width=80, bright_col=None):
    """A dark RGB image, with one bright red column at `bright_col` if given."""
    image = np.full((height, width, 3), 20, np.uint8)
    if bright_col is not None:
        image[:, bright_col, 0] = 255
    return image


def test_every_public_name_resolves_to_the_library_object():
    import evaluation.scoring
    import inference.crop
    import inference.files
    import inference.predictors
    import inference.video
    import metrics.saliency

    for name in saliency_kd.__all__:
        assert getattr(saliency_kd, name) is not None, name
    assert saliency_kd.load_predictor is inference.predictors.load_predictor
    assert saliency_kd.builtin_names is inference.predictors.builtin_names  # the registry's names, not a copy
    assert saliency_kd.DEFAULT_MODEL in saliency_kd.builtin_names()
    assert {"fastgaze", "fastgaze-centre", "attention-center"} <= set(saliency_kd.builtin_names())
    assert saliency_kd.predict_files is inference.files.predict_files
    assert saliency_kd.predict_video is inference.video.predict_video
    assert saliency_kd.crop_box is inference.crop.crop_box and saliency_kd.crop_files is inference.crop.crop_files
    assert saliency_kd.metrics is metrics.saliency
    assert saliency_kd.evaluate is evaluation.scoring.evaluate
    assert saliency_kd.fixation_scores is evaluation.scoring.fixation_scores
    assert set(saliency_kd.__all__) <= set(dir(saliency_kd))
    with pytest.raises(AttributeError, match="no_such_name"):
        saliency_kd.no_such_name  # noqa: B018


def test_the_installed_distribution_ships_the_package():
    found = find_packages(str(ROOT), include=_setup_cfg_includes())
    assert "saliency_kd" in found, found


def _setup_cfg_includes():
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return [line.strip() for line in config["options.packages.find"]["include"].splitlines() if line.strip()]


def test_load_passes_a_loaded_model_through_and_loads_names():
    model = RedPredictor()
    assert saliency_kd.load(model) is model
    with pytest.raises(ValueError, match="already loaded"):
        saliency_kd.load(model, batch_size=2)
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        saliency_kd.load("no/such/model")


def test_predict_takes_an_array_or_a_file(tmp_path):
    image = _image(bright_col=60)
    model = RedPredictor()
    from_array = saliency_kd.predict(image, model=model)
    assert from_array.shape == (30, 80) and from_array.dtype == np.float32
    assert np.all(from_array[:, 60] == 1.0) and np.allclose(from_array[:, :60], 20 / 255)
    path = tmp_path / "photo.png"
    path.write_bytes(encode_png(image))
    np.testing.assert_array_equal(saliency_kd.predict(path, model=model), from_array)
    np.testing.assert_array_equal(saliency_kd.predict(str(path), model=model), from_array)


@pytest.mark.parametrize("name, fix", [("photos", "predict_files"), ("clip.mp4", "predict_video")])
def test_predict_names_the_function_for_folders_and_videos(tmp_path, name, fix):
    target = tmp_path / name
    target.mkdir() if "." not in name else target.write_bytes(b"")
    with pytest.raises(ValueError, match=fix):
        saliency_kd.predict(target, model=RedPredictor())


def test_predict_refuses_a_float_image_naming_it():
    with pytest.raises(ValueError, match="uint8 RGB"):
        saliency_kd.predict(np.zeros((4, 4, 3), np.float32), model=RedPredictor())


def test_crop_puts_the_box_on_the_salient_part_and_returns_that_part():
    image = _image(bright_col=70)
    crop, box = saliency_kd.crop(image, "1:1", model=RedPredictor())
    assert (box.width, box.height) == (30, 30)
    assert box.x <= 70 < box.x + box.width and box.x > (80 - 30) // 2  # not the centre box (x = 25)
    np.testing.assert_array_equal(crop, image[box.y:box.y + 30, box.x:box.x + 30])
    _, centred = saliency_kd.crop(image, "1:1", model=RedPredictor(), method="centre")
    assert centred == saliency_kd.Box(25, 0, 30, 30)


def test_crop_centre_loads_no_model_and_bad_arguments_fail_before_loading():
    _, box = saliency_kd.crop(_image(), "2:1", model="no/such/model", method="centre", scale=0.5)
    assert (box.width, box.height) == (30, 15)
    with pytest.raises(ValueError, match="aspect"):
        saliency_kd.crop(_image(), "0:1", model="no/such/model")
    with pytest.raises(ValueError, match="scale"):
        saliency_kd.crop(_image(), "1:1", model="no/such/model", scale=2)


def test_one_path_is_one_input_not_a_string_of_letters(tmp_path):
    """`predict_files(model, "photo.png")`: one path works as a list of one (it was iterated letter by letter)."""
    from inference.inputs import plan_inputs

    path = tmp_path / "photo.png"
    path.write_bytes(encode_png(_image()))
    for one in (str(path), path):
        report = saliency_kd.predict_files(RedPredictor(), one, out_dir=tmp_path / "maps", progress=False)
        assert report.written == [str(tmp_path / "maps" / "photo.png")] and report.failures == []
        report = saliency_kd.crop_files(RedPredictor(), one, tmp_path / "crops", aspects=["1:1"], progress=False)
        assert report.num_images == 1 and report.failures == []
        assert plan_inputs(one, tmp_path / "out").image_inputs == [one]
