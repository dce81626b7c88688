"""The exported student SavedModel: a uint8-in, map-out signature that loads with plain TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from student.model import build_student, spatial_softmax
from student.serving import export_saved_model, predict_saliency, read_metadata, saliency_from_logits

INPUT_SIZE = (64, 96)  # a small "training resolution" keeps the test fast; not a multiple of the image size


@pytest.fixture(scope="module")
def student():
    return build_student("B", seed=0)


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    directory = tmp_path_factory.mktemp("export") / "saved_model"
    export_saved_model(student, directory, input_size=INPUT_SIZE)
    return directory


def _tiny_student():
    """A two-layer model with the student's output contract (dict of logits), for tests of the file handling."""
    inputs = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(1, 3, padding="same")(inputs / 255.0)
    return keras.Model(inputs, {"saliency": logits})


def _reference(student, images, input_size, letterbox=True):
    """The signature's documented computation, step by step, with the student module's own softmax.

    Letterbox: scale by min(H / h, W / w), round, centre, pad with the ImageNet mean colour; softmax over the
    image's box only."""
    h, w = images.shape[1:3]
    if letterbox:
        scale = min(input_size[0] / h, input_size[1] / w)
        box_h, box_w = round(h * scale), round(w * scale)
    else:
        box_h, box_w = input_size
    top, left = (input_size[0] - box_h) // 2, (input_size[1] - box_w) // 2
    x = tf.image.resize(tf.cast(images, tf.float32), (box_h, box_w), method="bilinear", antialias=True).numpy()
    frame = np.empty((len(images), *input_size, 3), np.float32)
    frame[:] = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
    frame[:, top:top + box_h, left:left + box_w] = x
    logits = student(tf.clip_by_value(frame, 0.0, 255.0), training=False)["saliency"]
    density = spatial_softmax(logits[:, top:top + box_h, left:left + box_w])
    density = tf.image.resize(density, images.shape[1:3], method="bilinear", antialias=True).numpy()
    density = density / density.sum(axis=(1, 2, 3), keepdims=True)
    return density, density / density.max(axis=(1, 2, 3), keepdims=True)


_PLAIN_TF_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    images = np.load(sys.argv[2])
    out = served(images=tf.constant(images))
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
    spec = served.structured_input_signature[1]["images"]
    project = sorted(m for m in sys.modules if m.split(".")[0] in ("student", "teacher", "datasets", "metrics"))
    print(json.dumps({"dtype": spec.dtype.name, "shape": spec.shape.as_list(), "project_modules": project}))
    """
)


def test_savedmodel_round_trip_in_plain_tensorflow(student, exported, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (1, 37, 53, 3), dtype=np.uint8)  # odd size, not 64x96
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # Run outside the repository with no PYTHONPATH, so nothing of this project is importable.
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_TF_SCRIPT, str(exported), str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"dtype": "uint8", "shape": [None, None, None, 3], "project_modules": []}

    out = np.load(tmp_path / "out.npz")
    assert sorted(out.files) == ["density", "saliency_map"]
    for key in out.files:
        assert out[key].shape == (1, 37, 53, 1) and out[key].dtype == np.float32
    assert out["saliency_map"].min() >= 0.0 and out["saliency_map"].max() == pytest.approx(1.0, abs=1e-6)
    assert out["density"].min() >= 0.0 and out["density"].sum() == pytest.approx(1.0, abs=1e-4)

    density, saliency_map = _reference(student, images, INPUT_SIZE)
    np.testing.assert_allclose(out["density"], density, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(out["saliency_map"], saliency_map, atol=1e-3)
    assert read_metadata(exported)["input_size"] == list(INPUT_SIZE)


def test_stretch_mode_resizes_without_padding(student):
    images = np.random.default_rng(2).integers(0, 256, (1, 37, 53, 3), dtype=np.uint8)
    out = predict_saliency(student, images, INPUT_SIZE, resize="stretch")
    density, _ = _reference(student, images, INPUT_SIZE, letterbox=False)
    np.testing.assert_allclose(out["density"].numpy(), density, rtol=1e-3, atol=1e-7)
    letterboxed = predict_saliency(student, images, INPUT_SIZE)["density"].numpy()
    assert not np.allclose(letterboxed, density, rtol=1e-2)  # the two modes differ for this aspect ratio


def test_batch_equals_single_images_and_in_process_prediction(student, exported):
    served = tf.saved_model.load(str(exported)).signatures["serving_default"]
    images = np.random.default_rng(1).integers(0, 256, (2, 30, 41, 3), dtype=np.uint8)
    batch = served(images=tf.constant(images))["saliency_map"].numpy()
    assert batch.shape == (2, 30, 41, 1)
    for i in range(2):
        single = served(images=tf.constant(images[i:i + 1]))["saliency_map"].numpy()
        np.testing.assert_allclose(batch[i:i + 1], single, atol=1e-5)
    assert not np.allclose(batch[0], batch[1], atol=1e-3)  # the map depends on the image
    in_process = predict_saliency(student, images, INPUT_SIZE)["saliency_map"].numpy()
    np.testing.assert_allclose(batch, in_process, atol=1e-5)


def test_saliency_from_logits_hand_computed():
    # softmax([0, ln 3]) = [1/4, 3/4]; at the logits' own size the resize is the identity.
    logits = tf.constant(np.log([[1.0, 3.0]], dtype=np.float32).reshape(1, 1, 2, 1))
    out = saliency_from_logits(logits, (1, 2))
    np.testing.assert_allclose(out["density"].numpy().ravel(), [0.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(out["saliency_map"].numpy().ravel(), [1 / 3, 1.0], atol=1e-6)


def test_constant_logits_give_a_uniform_density_at_any_output_size():
    out = saliency_from_logits(tf.fill((2, 4, 4, 1), 3.0), (5, 7))
    np.testing.assert_allclose(out["density"].numpy(), np.full((2, 5, 7, 1), 1 / 35), rtol=1e-5)
    np.testing.assert_allclose(out["saliency_map"].numpy(), np.ones((2, 5, 7, 1)), rtol=1e-5)


def test_export_replaces_a_previous_export_atomically(tmp_path):
    model = _tiny_student()
    target = tmp_path / "sm"
    export_saved_model(model, target, input_size=(8, 8))
    model.layers[-1].kernel.assign(np.zeros((3, 3, 3, 1), np.float32))  # constant logits: uniform density
    assert export_saved_model(model, target, input_size=(8, 8)) == os.path.abspath(target)
    assert sorted(os.listdir(tmp_path)) == ["sm"]  # no temporary or old folders left behind
    served = tf.saved_model.load(str(target)).signatures["serving_default"]
    out = served(images=tf.zeros((1, 3, 5, 3), tf.uint8))
    np.testing.assert_allclose(out["density"].numpy(), np.full((1, 3, 5, 1), 1 / 15), rtol=1e-5)


def test_export_refuses_a_folder_that_is_not_a_savedmodel(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a SavedModel"):
        export_saved_model(_tiny_student(), tmp_path, input_size=(8, 8))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.parametrize("input_size", [(0, 32), (32,), "240x320", None])
def test_bad_input_size_is_named(input_size, tmp_path):
    with pytest.raises(ValueError, match="input_size"):
        export_saved_model(_tiny_student(), tmp_path / "sm", input_size=input_size)


def test_model_without_saliency_output_is_rejected(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs))
    with pytest.raises(ValueError, match="'saliency' logits"):
        export_saved_model(model, tmp_path / "sm")
    assert not (tmp_path / "sm").exists()
