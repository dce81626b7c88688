"""Any saliency model as the teacher (teacher.loading.ContractTeacher): the contract and its errors on small
models built here, MSI-Net versus contract recognition, the export / predict / evaluate routes on mixed image
sizes, and FastGaze (../shared/models/fastgaze, skipped when absent) through all three on MIT1003 images."""

import functools
import json
import os
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

import evaluate as evaluate_cli
import export_teacher
from datasets import records
from datasets.io import encode_png, read_image, read_map
from evaluation.scoring import evaluate
from inference.files import predict_files
from inference.predictors import ContractPredictor, TeacherPredictor, load_predictor
from teacher import export
from teacher.loading import CONTRACT, ContractTeacher, Teacher, load_teacher, teacher_kind

FASTGAZE = Path(__file__).resolve().parents[2] / "shared" / "models" / "fastgaze"
FASTGAZE_PLAIN = FASTGAZE / "fastgaze_savedmodel"
FASTGAZE_CENTRE = FASTGAZE / "fastgaze_centre_savedmodel"
BLOB_CENTRE, BLOB_SIGMA = (0.3, 0.6), 0.15  # relative (row, col) and width of the test model's bump


def bump(height, width):
    """The blob model's bump, computed independently at the pixel centres of (height, width)."""
    rows = (np.arange(height) + 0.5) / height - BLOB_CENTRE[0]
    cols = (np.arange(width) + 0.5) / width - BLOB_CENTRE[1]
    return np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * BLOB_SIGMA ** 2))


def blob(height, width):
    """The bump normalised to maximum 1 (what records and predictions hold)."""
    return bump(height, width) / bump(height, width).max()


def save_module(path, function, spec):
    """Save `function` (one tensor in, a dict out) as a SavedModel with a `serving_default` signature."""
    module = tf.Module()
    module.serve = tf.function(function, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="image")


@tf.autograph.experimental.do_not_convert
def blob_density(images):
    """A contract model: a Gaussian bump at a fixed relative position, times a per-image brightness factor."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    rows = (tf.range(height) + 0.5) / height - BLOB_CENTRE[0]
    cols = (tf.range(width) + 0.5) / width - BLOB_CENTRE[1]
    bump = tf.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * BLOB_SIGMA ** 2))
    scale = 1.0 + tf.reduce_mean(images, axis=[1, 2, 3]) / 255.0
    return {"density": scale[:, None, None, None] * bump[None, :, :, None]}


def mean_plus_one_keras():
    """A contract Keras model with a known answer: mean(R, G, B) + 1 per pixel."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, 1, activation="relu", kernel_initializer=keras.initializers.Constant(1 / 3),
                               bias_initializer=keras.initializers.Constant(1.0))
    return keras.Model(inputs, conv(inputs))


@pytest.fixture(scope="module")
def blob_model(tmp_path_factory):
    return save_module(tmp_path_factory.mktemp("contract") / "blob", blob_density, IMAGE_SPEC)


@pytest.fixture(scope="module")
def mixed_sizes_dir(tmp_path_factory):
    """A SALICON-layout val split of three random images of two sizes (30x40 twice, 50x20), with maps."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for folder in ("images", "maps"):
        os.makedirs(root / folder / "val")
    for stem, size in (("a", (30, 40)), ("b", (30, 40)), ("c", (50, 20))):
        cv2.imwrite(str(root / "images" / "val" / f"{stem}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        (root / "maps" / "val" / f"{stem}.png").write_bytes(encode_png(rng.integers(0, 256, size, dtype=np.uint8)))
    return root


def test_contract_models_load_and_give_their_maps(blob_model, tmp_path):
    images = np.random.default_rng(1).uniform(0, 255, (2, 30, 40, 3)).astype(np.float32)
    teacher = load_teacher(blob_model)
    assert isinstance(teacher, ContractTeacher) and teacher_kind(blob_model) == "contract"
    assert teacher.manifest() == {
        "name": "blob", "sha256": teacher.sha256, "format": "saved_model", "backend": "graph", "contract": CONTRACT,
        "input_size": None, "max_input_side": None, "map_max_side": 320,
    }
    maps = teacher(images).numpy()
    assert maps.shape == (2, 30, 40, 1)
    for image, saliency_map in zip(images, maps):
        np.testing.assert_allclose(saliency_map[..., 0], bump(30, 40) * (1 + image.mean() / 255), rtol=1e-5)

    model = mean_plus_one_keras()
    for name in ("mean.keras", "mean.h5"):
        model.save(tmp_path / name)
        keras_teacher = load_teacher(tmp_path / name)
        assert isinstance(keras_teacher, ContractTeacher) and keras_teacher.format == "keras"
        assert keras_teacher.num_params == 4
        np.testing.assert_allclose(keras_teacher(images).numpy()[..., 0], images.mean(-1) + 1, rtol=1e-5)

    # max_input_side: the 30x40 image runs at 15x20; equal sizes are grouped, the odd one runs alone.
    small = load_teacher(blob_model, max_input_side=20)
    odd = np.zeros((50, 20, 3), np.uint8)
    out = small.run_images([images[0], odd, images[1]], batch_size=8)
    assert [m.shape for m in out] == [(15, 20), (20, 8), (15, 20)]
    np.testing.assert_allclose(out[1] / out[1].max(), blob(20, 8), rtol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("rank", r"bad_rank: does not follow the saliency-model contract .* input rank is 3"),
    ("dtype", r"bad_dtype: does not follow .* input dtype is int32 .*cast inside the model"),
    ("keras_dtype", r"bad_keras_dtype\.keras: does not follow .* input dtype is uint8"),
    ("fixed", r"bad_fixed\.keras: does not follow .* input shape \(None, 24, 24, 3\) .* fixes H and W"),
    ("shape", r"bad_shape: does not follow .* output shape is \(2, 37, 53, 3\) for an input of \(2, 37, 53, 3\)"),
    ("half", r"bad_half: does not follow .* output shape is \(2, 18, 26, 1\)"),
    ("negative", r"bad_negative\.keras: does not follow .* output has negative values \(min -"),
    ("two_outputs", r"bad_two_outputs: does not follow .* outputs: the model returns 2 tensors"),
])
def test_contract_violations_name_the_part(case, message, tmp_path):
    if case in ("keras_dtype", "fixed", "negative"):
        dtype, shape = ("uint8", (None, None, 3)) if case == "keras_dtype" else ("float32", (None, None, 3))
        shape = (24, 24, 3) if case == "fixed" else shape
        inputs = keras.Input(shape, dtype=dtype)
        bias = -300.0 if case == "negative" else 0.0
        outputs = keras.layers.Conv2D(1, 1, bias_initializer=keras.initializers.Constant(bias))(inputs)
        path = tmp_path / f"bad_{case}.keras"
        keras.Model(inputs, outputs).save(path)
    else:
        spec = {
            "rank": tf.TensorSpec([None, None, 3], tf.float32),
            "dtype": tf.TensorSpec([None, None, None, 3], tf.int32),
        }.get(case, IMAGE_SPEC)
        function = {
            "rank": lambda x: {"map": x[..., :1]},
            "dtype": lambda x: {"map": tf.cast(x[..., :1], tf.float32)},
            "shape": lambda x: {"map": x},
            "half": lambda x: {"map": tf.nn.max_pool2d(x[..., :1], 2, 2, "VALID")},
            "two_outputs": lambda x: {"map": x[..., :1], "other": x[..., 1:2]},
        }[case]
        path = save_module(tmp_path / f"bad_{case}", function, spec)
    with pytest.raises(ValueError, match=message):
        load_teacher(path)


def test_msinet_or_contract_is_recognised_and_can_be_forced(blob_model, tmp_path):
    @tf.autograph.experimental.do_not_convert
    def msinet_like(images):  # MSI-Net's published constant names, a [0, 1] map
        kernel = tf.constant(np.full((1, 1, 3, 1), 1 / 765, np.float32), name="conv1/conv1_1/kernel")
        bias = tf.constant(np.zeros(1, np.float32), name="decoder/conv4/kernel")
        return {"saliency": tf.nn.conv2d(images, kernel, 1, "SAME") + bias}

    fake = save_module(tmp_path / "hf", msinet_like, IMAGE_SPEC)  # recognised by its constants
    assert teacher_kind(fake) == "msinet" and teacher_kind(fake, "contract") == "contract"
    by_signature = save_module(tmp_path / "hf2", lambda x: {"layer_from_saved_model": x[..., :1] / 255},
                               tf.TensorSpec([None, None, None, 3], tf.float32, name="input_1"))
    assert teacher_kind(by_signature) == "msinet" and teacher_kind(blob_model) == "contract"
    msinet = load_teacher(fake)
    assert isinstance(msinet, Teacher) and msinet.input_size == (240, 320) and msinet.manifest()["contract"] == "msinet"
    assert isinstance(load_teacher(fake, teacher_format="contract"), ContractTeacher)
    assert isinstance(load_teacher(blob_model, teacher_format="msinet"), Teacher)
    assert isinstance(load_predictor(fake), TeacherPredictor)
    assert isinstance(load_predictor(blob_model), ContractPredictor)
    assert isinstance(load_predictor(fake, teacher_format="contract"), ContractPredictor)

    # A Keras file with teacher.msinet's layer names is MSI-Net (tiny convolutions stand in for its layers).
    from teacher.msinet import SCOPE_TO_LAYER

    inputs = x = keras.Input((None, None, 3))
    for name in SCOPE_TO_LAYER.values():
        x = keras.layers.Conv2D(1, 1, name=name)(x)
    keras.Model(inputs, x).save(tmp_path / "msinet.keras")
    assert teacher_kind(tmp_path / "msinet.keras") == "msinet"

    pb = tmp_path / "model_salicon_cpu.pb"
    pb.write_bytes(b"")
    with pytest.raises(ValueError, match=r"model_salicon_cpu\.pb: a \.pb file cannot be a contract teacher"):
        load_teacher(pb, teacher_format="contract")
    with pytest.raises(ValueError, match=r"teacher_format must be one of"):
        teacher_kind(blob_model, "onnx")
    with pytest.raises(ValueError, match=r"blob: --input-size .* MSI-Net's padded input size"):
        export.resolve_teacher(blob_model, input_size=(48, 48))


def test_export_stores_the_contract_map_at_each_images_own_aspect(blob_model, mixed_sizes_dir, tmp_path):
    teacher = load_teacher(blob_model, map_max_side=24)
    out = tmp_path / "distill"
    manifest = export.export_split(mixed_sizes_dir, "val", teacher, out, batch_size=3, verify=True, progress=False)
    assert manifest["teacher"]["contract"] == CONTRACT and manifest["teacher"]["input_size"] is None
    assert manifest["preprocessing"]["map_max_side"] == 24 and manifest["preprocessing"]["pipeline"] is None
    # Longest side 24, aspect kept: 30x40 -> 18x24, 50x20 -> 24x10 (round(9.6)).
    assert manifest["sizes"] == {"image": {"30x40": 2, "50x20": 1}, "teacher": {"18x24": 2, "24x10": 1}}

    examples = {ex["stem"].decode(): ex for ex in records.read_records(records.list_shards(out, "val"))
                .as_numpy_iterator()}
    for stem, size in (("a", (18, 24)), ("b", (18, 24)), ("c", (24, 10))):
        stored = examples[stem]["teacher"][..., 0]
        assert stored.shape == size and stored.max() == 1.0
        # The whole image at its own size, no padding: the bump sits where it does at any resolution.
        np.testing.assert_allclose(stored, blob(*size), atol=0.02)
        human = read_map(mixed_sizes_dir / "maps" / "val" / f"{stem}.png") / 255.0
        np.testing.assert_allclose(examples[stem]["saliency"][..., 0], human, atol=1e-6)

    # Training resizes the stored map like the image (letterboxed, aspect kept): both cover the image's box.
    ds = records.training_dataset(records.list_shards(out, "val"), 1, image_size=(32, 32), training=False)
    for _, targets in ds:
        valid = targets["valid"].numpy()[0, ..., 0] > 0
        rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
        box = targets["teacher"].numpy()[0, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1, 0]
        assert np.argmax(box) == np.argmax(blob(*box.shape))
        np.testing.assert_allclose(box, blob(*box.shape), atol=0.05)  # 10 -> 13 columns blunt the peak
        assert targets["teacher"].numpy()[0, ..., 0][~valid].max(initial=0) == 0

    # Rerun with another stored size is refused (the shards would mix two resolutions).
    with pytest.raises(ValueError, match=r"not blob"):
        export.export_split(mixed_sizes_dir, "val", load_teacher(blob_model), out, progress=False)


def test_predict_and_evaluate_with_a_contract_model(blob_model, mixed_sizes_dir, tmp_path):
    predictor = load_predictor(blob_model)
    report = predict_files(predictor, [mixed_sizes_dir / "images" / "val"], out_dir=tmp_path / "pred",
                           progress=False)
    assert not report.failures and len(report.written) == 3
    np.testing.assert_allclose(read_map(tmp_path / "pred" / "c.png") / 255.0, blob(50, 20), atol=0.5 / 255 + 1e-6)
    density = predictor.predict_density(np.zeros((30, 40, 3), np.uint8))
    np.testing.assert_allclose(density, blob(30, 40) / blob(30, 40).sum(), rtol=1e-5)

    export.export_split(mixed_sizes_dir, "val", blob_model, tmp_path / "distill", progress=False)
    results = evaluate(tmp_path / "distill", "val", {"blob": blob_model}, progress=False)
    stored, direct = (results["models"][name]["metrics"] for name in ("teacher (records)", "blob"))
    assert set(direct) == {"kld", "cc", "sim"}  # no fixations in this folder
    # Not KLD: the bump's tails (down to 1e-5 of its peak) round to 0 in the records' 16-bit PNG.
    for metric in ("cc", "sim"):
        assert abs(direct[metric] - stored[metric]) < 0.01, metric


# ---------------------------------------------------------------------------------------------------------
# FastGaze: the first real contract teacher (../shared/models/fastgaze; skipped when absent).

FASTGAZE_IMAGES = ("i05june05_static_street_boston_p1010764", "i05june05_static_street_boston_p1010785",
                   "i1000274881", "i1060622926")  # 768x1024 twice, 1024x683, 506x1024


@pytest.fixture(scope="module")
def fastgaze():
    if not (FASTGAZE_PLAIN / "saved_model.pb").is_file():
        pytest.skip(f"FastGaze not found at {FASTGAZE} (only present in the project workspace)")
    return FASTGAZE_PLAIN


@functools.cache
def plain_fastgaze():
    return tf.saved_model.load(str(FASTGAZE_PLAIN))


def reference_density(image):
    """FastGaze's density the way its README runs it: plain TensorFlow, no project code."""
    serve = plain_fastgaze().signatures["serving_default"]
    return list(serve(tf.cast(image[None], tf.float32)).values())[0].numpy()[0, ..., 0]


@pytest.fixture(scope="module")
def fastgaze_records(fastgaze, mit1003_sample_dir, tmp_path_factory):
    """Four MIT1003 sample images (three sizes) in a SALICON-layout val split, exported with export_teacher.py."""
    root = tmp_path_factory.mktemp("fastgaze")
    for folder, source in (("images", "stimuli"), ("maps", "maps")):
        os.makedirs(root / "data" / folder / "val")
        for stem in FASTGAZE_IMAGES:
            os.symlink(mit1003_sample_dir / source / f"{stem}.jpg", root / "data" / folder / "val" / f"{stem}.jpg")
    code = export_teacher.main(["--split", "val", "--data-dir", str(root / "data"), "--teacher", str(fastgaze),
                                "--out", str(root / "distill"), "--batch-size", "4", "--verify", "--no-progress"])
    assert code == 0
    return root


def test_fastgaze_is_a_contract_teacher(fastgaze, mit1003_sample_dir):
    teacher = load_teacher(fastgaze)
    assert isinstance(teacher, ContractTeacher) and 120_000 < teacher.num_params < 122_000  # README: 121k
    image = read_image(mit1003_sample_dir / "stimuli" / f"{FASTGAZE_IMAGES[3]}.jpg")
    (density,) = teacher.run_images([image])
    np.testing.assert_array_equal(density, reference_density(image))


def test_fastgaze_through_export(fastgaze_records, mit1003_sample_dir):
    manifest = json.loads((fastgaze_records / "distill" / "val.json").read_text())
    assert manifest["teacher"]["name"] == "fastgaze_savedmodel" and manifest["teacher"]["contract"] == CONTRACT
    assert manifest["sizes"]["teacher"] == {"240x320": 2, "320x213": 1, "158x320": 1}
    files = records.list_shards(fastgaze_records / "distill", "val")
    examples = {ex["stem"].decode(): ex for ex in records.read_records(files).as_numpy_iterator()}
    for stem, ex in examples.items():
        density = reference_density(ex["image"])
        h, w = density.shape
        scale = 320 / max(h, w)
        expected = tf.image.resize(density[..., None], (round(h * scale), round(w * scale)), method="area")
        expected = expected.numpy()[..., 0] / expected.numpy().max()
        stored = ex["teacher"][..., 0]
        assert stored.shape == expected.shape and stored.max() == 1.0, stem
        assert np.corrcoef(stored.ravel(), expected.ravel())[0, 1] > 0.999, stem
        np.testing.assert_allclose(stored, expected, atol=0.02)

    # Training-size teacher maps line up with the image (letterboxed): the same as resizing the full-resolution
    # density into the image's box.
    ds = records.training_dataset(files, 1, image_size=(96, 128), training=False)
    for (image, targets), ex in zip(ds, records.read_records(files).as_numpy_iterator()):
        valid = targets["valid"].numpy()[0, ..., 0] > 0
        rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
        box = targets["teacher"].numpy()[0, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1, 0]
        full = tf.image.resize(reference_density(ex["image"])[..., None], box.shape, antialias=True).numpy()[..., 0]
        assert np.corrcoef(box.ravel(), full.ravel())[0, 1] > 0.995


def test_fastgaze_through_predict_and_evaluate(fastgaze_records, tmp_path):
    predictor = load_predictor(FASTGAZE_PLAIN)
    images = fastgaze_records / "data" / "images" / "val"
    report = predict_files(predictor, [images], out_dir=tmp_path / "pred", progress=False)
    assert not report.failures and len(report.written) == 4
    rgb = read_image(images / f"{FASTGAZE_IMAGES[2]}.jpg")
    assert read_map(tmp_path / "pred" / f"{FASTGAZE_IMAGES[2]}.png").shape == rgb.shape[:2]
    reference = reference_density(rgb).astype(np.float64)
    np.testing.assert_allclose(predictor.predict_density(rgb), reference / reference.sum(), rtol=1e-4, atol=1e-12)

    code = evaluate_cli.main(["--records-dir", str(fastgaze_records / "distill"), "--split", "val", "--models",
                              str(FASTGAZE_PLAIN), "--teacher-format", "contract", "--out", str(tmp_path / "eval"),
                              "--quiet"])
    assert code == 0
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    stored, direct = (results["models"][name]["metrics"] for name in ("teacher (records)", "fastgaze_savedmodel"))
    assert direct["cc"] > 0.2  # a real model on real maps, well above chance
    for metric in ("kld", "cc", "sim"):
        assert abs(direct[metric] - stored[metric]) < 0.02, metric


# --- issue 18: a constant teacher is refused like an all-black human map ------------------------------------------

@pytest.mark.parametrize("bias", [0.0, 2.5])
def test_constant_contract_teacher_is_refused_by_the_probe(bias, tmp_path):
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(1, 1, kernel_initializer="zeros",
                                  bias_initializer=keras.initializers.Constant(bias))(inputs)
    path = tmp_path / "constant.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match=rf"constant\.keras: does not follow .* output values are constant "
                                         rf"\(every pixel {bias:g}\) on the probe images.*weights"):
        load_teacher(path)


def test_export_refuses_a_constant_contract_map_naming_teacher_and_image(mixed_sizes_dir, tmp_path):
    def zero_for_tall_images(images):  # passes the probe (37x53); constant on image c (50x20)
        return blob_density(images)["density"] * tf.cast(tf.shape(images)[1] < tf.shape(images)[2], tf.float32)

    teacher = ContractTeacher(zero_for_tall_images, name="half-dead", sha256="0", path="half-dead", format="keras",
                              backend="keras")
    image = mixed_sizes_dir / "images" / "val" / "c.png"
    with pytest.raises(ValueError, match=rf"{image}: teacher 'half-dead' returned a constant map \(every pixel 0\)"):
        export.export_split(mixed_sizes_dir, "val", teacher, tmp_path / "distill", batch_size=3, progress=False)
