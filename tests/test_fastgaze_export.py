"""The built-in FastGaze through every export format, as a student: SavedModel, ONNX, OpenVINO, LiteRT and int8.

"fastgaze" is exported at 48x64 through export_student.py (FastGaze upsamples that to 240x320 inside: the
Lanczos resize is a matrix product in the files); "fastgaze-centre" at 240x320 (no resize; the centre prior rides
on the grid-to-image products) through the library, with int8. Each file's maps of images at its size must equal
`load_predictor(name)`'s (the Keras FastGaze) within the student files' tolerances (tests/test_deploy.py).
"""

import glob
import os

import numpy as np
import pytest
from tests.helpers import cc as _cc

import export_student as export_cli
from datasets.io import read_image
from inference import export as deploy
from inference.builtin_export import fastgaze_student
from inference.predictors import RuntimeStudentPredictor, StudentPredictor, load_predictor, resize_to
from student.model import spatial_softmax

CASES = {"fastgaze": (48, 64), "fastgaze-centre": (240, 320)}
RUNTIMES = ("onnx", "openvino", "litert")


@pytest.fixture(scope="module")
def test_images(synthetic_salicon_dir):
    """Per model: a synthetic scene, and two real MIT1003 photos when the shared sample is there, at its size."""
    from conftest import MIT1003_SAMPLE

    synthetic = [read_image(min(glob.glob(str(synthetic_salicon_dir / "images" / "val" / "*.jpg"))))]
    photos = [read_image(p) for p in sorted(glob.glob(str(MIT1003_SAMPLE / "stimuli" / "*.jpg")))[:2]]
    return {name: {"synthetic": [resize_to(im, size) for im in synthetic],
                   "photos": [resize_to(im, size) for im in photos]} for name, size in CASES.items()}


@pytest.fixture(scope="module")
def exports(calibration_records, tmp_path_factory):  # noqa: F811
    """Each built-in model in every format; "fastgaze" through the command line, "fastgaze-centre" with int8."""
    for module in ("onnxruntime", "openvino", "ai_edge_litert", "tf2onnx", "nncf"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("fastgaze_exports")
    assert export_cli.main(["fastgaze", "--out", str(out), "--input-size", *map(str, CASES["fastgaze"])]) == 0
    paths = {"fastgaze": {"saved_model": str(out / "fastgaze_saved_model"),
                          **{fmt: str(out / f"fastgaze{deploy.EXTENSIONS[fmt]}") for fmt in RUNTIMES}}}
    paths["fastgaze-centre"] = deploy.export_student(
        "fastgaze-centre", out, input_size=CASES["fastgaze-centre"], int8=True, records_dir=calibration_records,
        calibration_count=8, name="fastgaze_centre")
    return paths


def test_the_wrapper_is_fastgaze_at_a_fixed_size():
    from teacher.fastgaze import load_fastgaze

    x = np.random.default_rng(0).uniform(0, 255, (2, 40, 30, 3)).astype(np.float32)  # portrait, upsampled inside
    for name in CASES:
        density = load_fastgaze(name)(x).numpy()
        logits = fastgaze_student(name, x.shape[1:3])(x)["saliency"]
        np.testing.assert_allclose(spatial_softmax(logits).numpy(), density / density.sum(axis=(1, 2), keepdims=True),
                                   rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="input_size"):
        fastgaze_student("fastgaze", None)
    with pytest.raises(ValueError, match="fastgaze-centre"):
        fastgaze_student("fastgaze-bigger", (32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["synthetic", "photos"])
@pytest.mark.parametrize("name", list(CASES))
def test_every_file_matches_the_builtin_model(exports, test_images, name, kind):
    images = test_images[name][kind]
    if not images:
        pytest.skip("the MIT1003 sample is only present in the project workspace (../shared/data/mit1003_sample)")
    reference = load_predictor(name)
    expected = reference.predict_batch(images)
    densities = [reference.predict_density(im) for im in images]
    for fmt in ("saved_model", *RUNTIMES):
        predictor = load_predictor(exports[name][fmt], threads=2)
        assert isinstance(predictor, RuntimeStudentPredictor if fmt in RUNTIMES else StudentPredictor)
        if fmt in RUNTIMES:
            assert predictor.input_size == CASES[name] and predictor.resize == "letterbox"
        for image, saliency_map, density in zip(images, expected, densities):
            np.testing.assert_allclose(predictor.predict(image), saliency_map, atol=1e-5, err_msg=fmt)
            np.testing.assert_allclose(predictor.predict_density(image), density, rtol=1e-4, atol=1e-9, err_msg=fmt)


@pytest.mark.slow
def test_other_sizes_are_letterboxed_like_the_saved_model(exports, synthetic_salicon_dir):
    image = read_image(sorted(glob.glob(str(synthetic_salicon_dir / "images" / "val" / "*.jpg")))[1])  # 48x64
    images = [image, np.ascontiguousarray(image.transpose(1, 0, 2))]  # and a portrait one
    reference = load_predictor(exports["fastgaze-centre"]["saved_model"]).predict_batch(images)
    for fmt in RUNTIMES:
        for got, expected in zip(load_predictor(exports["fastgaze-centre"][fmt]).predict_batch(images), reference):
            assert got.shape == expected.shape and got.max() == pytest.approx(1.0)
            assert _cc(got, expected) > 0.99  # OpenCV resizes instead of TensorFlow's antialiased bilinear


def _weight_bytes(path):
    """Bytes of an export's weights: ONNX initializers, OpenVINO's .bin, the .tflite file."""
    if path.endswith(".onnx"):
        import onnx
        from onnx import numpy_helper

        return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer)
    return os.path.getsize(path[: -len(".xml")] + ".bin" if path.endswith(".xml") else path)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [f"{fmt}_int8" for fmt in RUNTIMES])
def test_int8_files_are_int8_and_close_to_float(exports, test_images, fmt):
    paths = exports["fastgaze-centre"]
    float_fmt = fmt[: -len("_int8")]
    # The weights, not the files: ONNX's QDQ nodes and names outweigh FastGaze's 0.12M int8 weights.
    assert _weight_bytes(paths[fmt]) < 0.4 * _weight_bytes(paths[float_fmt])
    if fmt == "openvino_int8":
        import openvino as ov

        model = ov.Core().read_model(paths[fmt])
        convolutions = [op for op in model.get_ops() if op.get_type_name() == "Convolution"]
        int8_weights = [op for op in model.get_ops()
                        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
        assert len(int8_weights) >= len(convolutions) > 0
        softmax_inputs = {t.get_node().get_type_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
                          for out in op.outputs() for t in out.get_target_inputs()}
        assert softmax_inputs and not softmax_inputs & {"Exp", "Log", "ReduceSum", "ReduceMax", "Divide"}
    # Calibrated on the synthetic train scenes, checked on a synthetic val scene as test_deploy.py does (real
    # photos, whose log-density spans more than those scenes', need calibration on photos).
    images = test_images["fastgaze-centre"]["synthetic"]
    int8_maps = load_predictor(paths[fmt]).predict_batch(images)
    float_maps = load_predictor(paths[float_fmt]).predict_batch(images)
    for a, b in zip(int8_maps, float_maps):
        assert a.max() == pytest.approx(1.0)
        assert not np.allclose(a, b, atol=1e-4)  # really quantized
        assert _cc(a, b) > 0.9


def test_cli_asks_a_builtin_model_for_its_input_size(tmp_path, capsys):
    assert export_cli.main(["fastgaze-centre", "--out", str(tmp_path / "out")]) == 1
    assert "--input-size" in capsys.readouterr().err
