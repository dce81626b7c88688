"""The built-in attention-center (teacher.attention_center) and the model specs of teacher.builtin.

The saliency map is read as a declared output of the rewritten flatbuffer; the reference here is the same tensor
read from the unmodified file with `experimental_preserve_all_tensors` (a debugging switch, used only in this
test as an independent reference). One interpreter is shared by the module: each call takes about 1 s.
"""

import hashlib
import re

import cv2
import numpy as np
import pytest

from teacher import attention_center as ac
from teacher import builtin

pytest.importorskip("ai_edge_litert", reason="attention-center runs in LiteRT (the deploy extra)")


@pytest.fixture(scope="module")
def model():
    return ac.AttentionCenter()


def _image(shape, seed=0):
    """A smooth image with one bright blob, so the map is not flat."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(40, 120, (6, 8, 3), dtype=np.uint8), shape[::-1], interpolation=cv2.INTER_LINEAR)
    h, w = shape
    image[h // 4:h // 2, w // 2:3 * w // 4] = (250, 220, 40)
    return image


def test_shipped_file_licence_and_notice():
    data = ac.read_model()
    assert len(data) == 2_111_740 and hashlib.sha256(data).hexdigest() == ac.MODEL_SHA256
    folder = ac.model_path().rsplit("/", 1)[0]
    assert open(f"{folder}/LICENSE").read().lstrip().startswith("Apache License")
    notice = open(f"{folder}/NOTICE").read()
    assert "google/attention-center" in notice and "91f6d6ea46903f0fefaa71a880b4cfe1f735fdc2" in notice
    assert ac.MODEL_SHA256 in notice


def test_a_changed_file_is_refused(tmp_path):
    data = bytearray(ac.read_model())
    data[-1] ^= 1
    path = tmp_path / "center.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"center\.tflite: sha256 .* not attention-center's"):
        ac.read_model(path)


def test_the_map_is_a_declared_output_equal_to_the_internal_tensor(model):
    from ai_edge_litert.interpreter import Interpreter

    frame, _ = ac.letterbox(_image((30, 50)))
    ours = model.run_frame(frame)
    details = model._interpreter.get_output_details()
    assert ac.SALIENCY_TENSOR in [d["name"] for d in details]  # declared, not preserved for debugging

    reference = Interpreter(model_content=ac.read_model(), experimental_preserve_all_tensors=True)
    reference.allocate_tensors()
    inputs = {d["name"]: d["index"] for d in reference.get_input_details()}
    reference.set_tensor(inputs["image:0"], frame[None])
    reference.set_tensor(inputs["filename:0"], np.array(b""))
    reference.invoke()
    index = next(d["index"] for d in reference.get_tensor_details() if d["name"] == ac.SALIENCY_TENSOR)
    expected = reference.get_tensor(index)[0]
    assert ours.shape == (480, 640) and ours.max() > 100 * ours.min() > 0  # a map that varies
    # Bit-equal on AVX2; with AVX-512 the interpreter's kernels round differently once every tensor is preserved
    # (relative differences up to 7.7e-6, seen on a Xeon with AVX-512 and VNNI). Another tensor would differ by far more.
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("shape", [(100, 300), (500, 200)])
def test_any_image_size_gives_a_map_of_its_size(model, shape):
    image = _image(shape)
    frame, box = ac.letterbox(image)
    from datasets.records import fit_box

    assert box == tuple(int(v) for v in fit_box(*shape, (480, 640)))  # the project's one box rule
    top, left, h, w = box
    bars = np.ones(frame.shape[:2], bool)
    bars[top:top + h, left:left + w] = False
    assert np.all(frame[bars] == ac.pad_value(image) / 255.0)
    raw = model.raw_map(image)
    assert raw.shape == shape and raw.dtype == np.float32 and 0 < raw.min() and raw.max() < 1
    # The blob (rows h/4..h/2, columns w/2..3w/4) is where the map is highest.
    peak = np.unravel_index(np.argmax(cv2.blur(raw, (5, 5))), shape)
    assert shape[0] // 8 <= peak[0] <= 5 * shape[0] // 8 and 3 * shape[1] // 8 <= peak[1] <= 7 * shape[1] // 8


def test_postprocess_is_a_power_times_a_centred_gaussian():
    raw = np.full((5, 7), 0.25, np.float32)
    out = ac.postprocess(raw, power=0.5, sigma=0.25)
    assert out[2, 3] == pytest.approx(0.5)  # the centre: the prior is 1
    assert out[0, 3] == pytest.approx(0.5 * np.exp(-0.5 * (2 / (0.25 * 5)) ** 2))
    np.testing.assert_allclose(ac.postprocess(raw, 1.0, None), raw)


# ---------------------------------------------------------------------------------------------------------
# Specs


@pytest.mark.parametrize("spec, terms", [
    ("attention-center", [("attention-center", None, False)]),
    ("Attention-Center:FLIP", [("attention-center", None, True)]),
    ("fastgaze-centre+attention-center", [("fastgaze-centre", 0.7, False), ("attention-center", 0.3, False)]),
    ("attention-center:flip+fastgaze-centre:flip", [("attention-center", 0.4, True), ("fastgaze-centre", 0.6, True)]),
    ("fastgaze-centre+attention-center:flip", [("fastgaze-centre", 0.5, False), ("attention-center", 0.5, True)]),
    ("3*fastgaze + 1*attention-center:flip", [("fastgaze", 0.75, False), ("attention-center", 0.25, True)]),
    ("fastgaze+fastgaze-centre+attention-center", [("fastgaze", 1 / 3, False), ("fastgaze-centre", 1 / 3, False),
                                                   ("attention-center", 1 / 3, False)]),
])
def test_specs_that_parse(spec, terms):
    parsed = [(t.name, t.weight, t.flip) for t in builtin.parse_spec(spec)]
    assert [p[0] for p in parsed] == [t[0] for t in terms] and [p[2] for p in parsed] == [t[2] for t in terms]
    for (_, got, _), (_, want, _) in zip(parsed, terms):
        assert got == pytest.approx(want) if want is not None else got is None
    assert builtin.is_builtin(spec)


@pytest.mark.parametrize("spec, message", [
    ("fastgaze-centre+", "an empty term around '+'"),
    ("fastgaze-center", "did you mean 'fastgaze-centre'"),
    ("x*fastgaze+attention-center", "weight 'x' is not a number"),
    ("-1*fastgaze+2*attention-center", "must be a positive number"),
    ("0.5*fastgaze+attention-center", "weights on some terms only"),
    ("fastgaze+fastgaze:flip", "a member appears twice"),
    ("attention-center:mirror", "unknown suffix"),
    ("runs/model+other", "is not a built-in model"),
])
def test_specs_that_do_not_parse(spec, message):
    with pytest.raises(builtin.SpecError, match=re.escape(message)):
        builtin.parse_spec(spec)
    assert not builtin.is_builtin(spec)


def test_a_bad_spec_is_reported_by_the_loaders():
    from inference.predictors import load_predictor

    with pytest.raises(FileNotFoundError, match="not a built-in model spec: .*weights on some terms only"):
        load_predictor("0.5*fastgaze+attention-center")


def test_combine():
    a, b = np.array([[1.0, 3.0]]), np.array([[2.0, 2.0]])
    geometric = builtin.combine([a, b], [0.5, 0.5], "geometric")
    expected = np.sqrt([0.25 * 0.5, 0.75 * 0.5])
    np.testing.assert_allclose(geometric[0], expected / expected.sum())
    np.testing.assert_allclose(builtin.combine([a, b], [0.25, 0.75], "arithmetic")[0],
                               [0.25 * 0.25 + 0.75 * 0.5, 0.25 * 0.75 + 0.75 * 0.5])


def test_an_ensemble_teacher_combines_its_members(model, monkeypatch):
    from teacher import fastgaze
    from teacher.loading import load_teacher

    # Share this module's interpreter with the built-in's loader: one interpreter per session.
    monkeypatch.setattr(ac, "load_contract", lambda name="attention-center": ac.AttentionCenterContract(model))
    teacher = load_teacher("0.3*fastgaze-centre+0.7*attention-center:flip")
    assert teacher.format == "builtin" and teacher.backend == "keras+litert"
    assert teacher.name == "0.3*fastgaze-centre+0.7*attention-center:flip"
    image = _image((40, 60), seed=1)
    (density,) = teacher.run_images([image.astype(np.float32)])
    fg = np.asarray(fastgaze.load_fastgaze("fastgaze-centre")(image[None].astype(np.float32)))[0, ..., 0]
    plain = ac.postprocess(model.raw_map(image))
    mirrored = ac.postprocess(model.raw_map(np.ascontiguousarray(image[:, ::-1])))[:, ::-1]
    expected = builtin.combine([fg, builtin.combine([plain, mirrored], [0.5, 0.5], "arithmetic")], [0.3, 0.7],
                               builtin.ENSEMBLE_MODE)
    np.testing.assert_allclose(density, expected, rtol=1e-4, atol=1e-9)


def test_predict_with_the_attention_center_model(tmp_path, model, monkeypatch):
    import predict

    monkeypatch.setattr(ac, "load_contract", lambda name="attention-center": ac.AttentionCenterContract(model))
    image = _image((36, 48))
    cv2.imwrite(str(tmp_path / "photo.png"), image[:, :, ::-1])
    assert predict.main([str(tmp_path / "photo.png"), "--model", "attention-center", "--out", str(tmp_path / "out"),
                         "--no-progress"]) == 0
    written = cv2.imread(str(tmp_path / "out" / "photo.png"), cv2.IMREAD_GRAYSCALE)
    assert written.shape == (36, 48) and written.max() == 255
