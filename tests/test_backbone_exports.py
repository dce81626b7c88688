"""Every backbone through every export: BN folding, SavedModel, ONNX, OpenVINO, LiteRT, and int8 per family.

Each backbone's student (seeded, BatchNormalization statistics randomised so that folding matters) is exported
once by `inference.export.export_student`, at a size that is not a multiple of the student's stride 32 (so its
`PadToMultiple` pads inside every converted graph: OpenVINO's Pad fusion once dropped EfficientNet-Lite's SAME
padding there, CC 0.91-0.97); the sizes include the README's 144x192 and the benchmarks' 240x320. ResNet18's files
are the ones tests/test_deploy.py checks (conftest.py's `resnet18_exports`, at a third size, int8 included):
exported once for both. EfficientNet-Lite0 has the light decoder (`DECODERS`), as the shipped saliency-kd: its x8
bilinear upsampling of the logits goes through every converter too. The tests compare what the module-scoped
fixture computed with the tolerances of tests/test_deploy.py.
"""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tests.helpers import assert_int8_weights_cannot_saturate as _assert_weights_cannot_saturate
from tests.helpers import RESNET18_EXPORT_SIZE, randomize_batchnorm
from tests.helpers import cc as _cc, weights_file as _weights_file

from datasets.io import read_image
from inference import export as deploy
from inference.predictors import RuntimeStudentPredictor, load_predictor, resize_to
from student.backbones import BACKBONES
from student.model import build_student, spatial_softmax
from student.serving import inference_student

# Each backbone's export size: none a multiple of 32 (the padding inside differs from one runtime to another).
SIZES = {"resnet18": RESNET18_EXPORT_SIZE, "efficientnet-lite0": (240, 320), "efficientnet-lite1": (144, 192),
         "efficientnet-lite2": (240, 320), "mobilenetv2": (144, 192)}
# The decoder of each backbone's student where it is not the card's: the shipped saliency-kd's pair.
DECODERS = {"efficientnet-lite0": "light"}
RUNTIMES = ("onnx", "openvino", "litert")
# One backbone of each family (ResNet18's int8 files are also checked by tests/test_deploy.py).
INT8 = ("resnet18", "efficientnet-lite0", "mobilenetv2")
# Float32 maps ([0, 1]) of two graphs of the same student differ by rounding: within 1e-5 for ResNet18 and
# MobileNetV2, up to 3.7e-5 for the deeper EfficientNet-Lites at these sizes (measured: SavedModel against the Keras
# student and every runtime against the SavedModel). OpenVINO's dropped padding gave 0.17-0.32.
MAP_ATOL = {"resnet18": 1e-5, "mobilenetv2": 1e-5}
LITE_MAP_ATOL = 6e-5


@pytest.fixture(scope="module")
def scenes(synthetic_salicon_dir):
    """The synthetic val scenes (48x64)."""
    return [read_image(p) for p in sorted(glob.glob(str(synthetic_salicon_dir / "images" / "val" / "*.jpg")))]


def test_every_backbone_has_a_size_that_pads():
    assert set(SIZES) == set(BACKBONES)
    assert all(h % 32 or w % 32 for h, w in SIZES.values())
    assert {(144, 192), (240, 320)} <= set(SIZES.values())


@pytest.fixture(scope="module", params=list(BACKBONES))
def exported(request, scenes, calibration_records, tmp_path_factory):  # noqa: F811
    """One backbone's student, its files at `SIZES` (int8 too for `INT8`), and every file's maps of the scenes
    resized to that size (`images`)."""
    for module in ("onnxruntime", "openvino", "ai_edge_litert", "tf2onnx", "nncf"):
        pytest.importorskip(module)
    backbone = request.param
    size = SIZES[backbone]
    images = np.stack([resize_to(scene, size) for scene in scenes])
    if backbone == "resnet18":  # the same student, exported the same way: conftest.py's, shared with test_deploy.py
        student, paths = request.getfixturevalue("resnet18_student"), request.getfixturevalue("resnet18_exports")
    else:
        student = randomize_batchnorm(build_student("B", backbone=backbone, seed=3,
                                                    decoder=DECODERS.get(backbone, "card")))
        out = tmp_path_factory.mktemp(f"exports_{backbone}")
        paths = deploy.export_student(student, out, input_size=size, int8=backbone in INT8,
                                      records_dir=calibration_records, calibration_count=8)
    results = {}
    for fmt, path in paths.items():
        predictor = load_predictor(path, threads=2)
        results[fmt] = {"maps": np.stack(predictor.predict_batch(images)),
                        "densities": np.stack([predictor.predict_density(im) for im in images]),
                        "predictor": predictor}
    return {"backbone": backbone, "student": student, "paths": paths, "results": results, "size": size,
            "images": images}


def test_every_backbone_is_exported(exported):
    decoder = DECODERS.get(exported["backbone"], "card")
    names = {layer.name for layer in exported["student"].layers}
    assert ({"decoder_lateral5", "saliency_up"} <= names) == (decoder == "light")  # the light decoder's layers
    expected = {"saved_model", *RUNTIMES}
    if exported["backbone"] in INT8:
        expected |= {f"{fmt}_int8" for fmt in RUNTIMES}
    assert set(exported["paths"]) == expected


def _float64_logits(student, backbone, x):
    """The student's saliency logits computed in float64: the exact values both float32 graphs approximate."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        exact = build_student("B", backbone=backbone, seed=3, decoder=DECODERS.get(backbone, "card"))
    finally:
        keras.config.set_dtype_policy(policy)
    for target, source in zip(exact.weights, student.weights):
        target.assign(np.asarray(source.numpy(), np.float64))
    return exact(x.astype(np.float64), training=False)["saliency"].numpy()


def _maps(logits):
    density = np.exp(logits - logits.max(axis=(1, 2), keepdims=True))[..., 0]
    return density / density.max(axis=(1, 2), keepdims=True)


def test_folded_graph_matches_the_keras_student(exported):
    """The folded logits as close to the Keras student's as test_deploy.py asks of ResNet18's, and its maps within
    test_deploy.py's 1e-5 of the exact (float64) student's.

    For the deeper EfficientNet-Lite1/2 the folded and the unfolded float32 graphs' maps are each 6e-6 to 1.7e-5
    from the exact ones and up to 1.6e-5 from each other, so the maps are compared with the float64 computation."""
    student = exported["student"]
    folded = inference_student(student)
    nested = [layer for layer in folded.layers if isinstance(layer, keras.Model)]
    layers = [layer for model in (folded, *nested) for layer in model.layers]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)
    x = np.random.default_rng(0).uniform(0, 255, (2, 70, 90, 3)).astype(np.float32)  # padded inside
    got, expected = folded(x)["saliency"].numpy(), student(x, training=False)["saliency"].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())
    exact = _float64_logits(student, exported["backbone"], x)
    np.testing.assert_allclose(got, exact, atol=2e-5 * np.abs(exact).max())
    np.testing.assert_allclose(_maps(got), _maps(exact), atol=1e-5)


def test_saved_model_matches_the_keras_student(exported):
    logits = exported["student"](tf.cast(exported["images"], tf.float32), training=False)["saliency"]
    density = spatial_softmax(logits).numpy()[..., 0]
    np.testing.assert_allclose(exported["results"]["saved_model"]["maps"],
                               density / density.max(axis=(1, 2), keepdims=True),
                               atol=MAP_ATOL.get(exported["backbone"], LITE_MAP_ATOL))


@pytest.mark.parametrize("fmt", RUNTIMES)
def test_runtime_files_match_the_saved_model(exported, fmt):
    got, reference = exported["results"][fmt], exported["results"]["saved_model"]
    assert isinstance(got["predictor"], RuntimeStudentPredictor) and got["predictor"].input_size == exported["size"]
    assert min(_cc(a, b) for a, b in zip(got["maps"], reference["maps"])) > 0.99999
    np.testing.assert_allclose(got["maps"], reference["maps"], atol=MAP_ATOL.get(exported["backbone"], LITE_MAP_ATOL))
    np.testing.assert_allclose(got["densities"], reference["densities"], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("fmt", [f"{fmt}_int8" for fmt in RUNTIMES])
def test_int8_files_are_int8_and_close_to_float(exported, fmt):
    if exported["backbone"] not in INT8:
        pytest.skip(f"int8 is checked on {', '.join(INT8)}, one backbone per family")
    paths, results = exported["paths"], exported["results"]
    float_fmt = fmt[: -len("_int8")]
    assert os.path.getsize(_weights_file(paths[fmt])) < 0.4 * os.path.getsize(_weights_file(paths[float_fmt]))
    if fmt == "openvino_int8":
        import openvino as ov

        model = ov.Core().read_model(paths[fmt])
        # Depthwise convolutions are GroupConvolution in OpenVINO; NNCF gives them int8 weights as well.
        convolutions = [op for op in model.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
        int8_weights = [op for op in model.get_ops()
                        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
        assert len(int8_weights) == len(convolutions) > 0
        assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        softmax_inputs = {t.get_node().get_type_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
                          for out in op.outputs() for t in out.get_target_inputs()}
        assert not softmax_inputs & {"Exp", "Log", "ReduceSum", "ReduceMax", "Divide"}
    if fmt in ("onnx_int8", "openvino_int8"):
        _assert_weights_cannot_saturate(paths[fmt])
    for a, b in zip(results[fmt]["maps"], results[float_fmt]["maps"]):
        assert a.max() == pytest.approx(1.0)
        assert not np.allclose(a, b, atol=1e-4)  # really quantized
        assert _cc(a, b) > 0.9



def test_randomize_batchnorm_reaches_nested_models_and_refuses_a_model_without_one():
    inner_in = keras.Input((4, 4, 2))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="inner_bn")(inner_in), name="inner")
    outer_in = keras.Input((4, 4, 2))
    outer = keras.Model(outer_in, keras.layers.BatchNormalization(name="outer_bn")(inner(outer_in)))
    randomize_batchnorm(outer, seed=1)
    for layer in (inner.get_layer("inner_bn"), outer.get_layer("outer_bn")):
        gamma, beta, mean, variance = layer.get_weights()
        assert not np.allclose(gamma, 1.0) and not np.allclose(mean, 0.0) and not np.allclose(variance, 1.0)
    dense_in = keras.Input((3,))
    with pytest.raises(ValueError, match="no BatchNormalization"):
        randomize_batchnorm(keras.Model(dense_in, keras.layers.Dense(2)(dense_in)))
