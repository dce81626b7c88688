"""FastGaze built in (teacher.fastgaze): the `.vxm` parser on small synthetic files written here, the Keras model
on a synthetic net against an independent numpy forward pass, the resampling layers against the TensorFlow ops
the references use, the shipped weights, parity with the reference SavedModels on real photos and through
`load_teacher` (../shared, skipped when absent)."""

import hashlib
import re
import struct
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from teacher import builtin, fastgaze
from teacher.fastgaze import (VARIANTS, AspectFitResize, GridToImage, build_fastgaze, load_fastgaze, read_vxm,
                              weights_path)
from teacher.loading import ContractTeacher, load_contract_teacher, load_teacher, teacher_kind

SHARED = Path(__file__).resolve().parents[2] / "shared"
FASTGAZE_DIR = SHARED / "models" / "fastgaze"
REFERENCES = {"fastgaze": "fastgaze_savedmodel", "fastgaze-centre": "fastgaze_centre_savedmodel"}
MIT1003_STIMULI = SHARED / "data" / "mit1003_sample" / "stimuli"
PHOTOS = SHARED / "data" / "photos" / "images"
# (folder, stem): landscape 768x1024, portrait 1024x683, landscape 235x352, portrait 352x234
REAL_IMAGES = ((MIT1003_STIMULI, "i05june05_static_street_boston_p1010764"), (MIT1003_STIMULI, "i1000274881"),
               (PHOTOS, "bsds_test_100007"), (PHOTOS, "ina_n01494475_hammerhead"))
TINY_SIZE = (9, 13)  # (H, W): a real photo shrunk to this, upsampled to 221x320 inside the model
BGR_MEAN = np.array([103.939, 116.779, 123.68])

# ---------------------------------------------------------------------------------------------------------
# A synthetic .vxm, written here byte by byte (the layout in teacher/fastgaze/vxm.py's docstring), not with the code under test.


def _entry(key, value):
    key = key.encode() + b"\0"
    return struct.pack("<I", len(key)) + key + struct.pack("<I", len(value)) + value


def _int(value):
    return struct.pack("<i", value)


def _array(name, array):
    array = np.asarray(array, "<f4")
    entries = [(name, array.tobytes()), (f"{name}.dtype", b"float32"), (f"{name}.ndims", _int(array.ndim)),
               (f"{name}.shape", np.asarray(array.shape, "<i4").tobytes())]
    if array.ndim > 1:
        entries.append((f"{name}.shape.listlength", _int(array.ndim)))
        entries += [(f"{name}.shape[{k}]", _int(dim)) for k, dim in enumerate(array.shape)]
    return entries


def vxm_bytes(entries, count=None):
    body = b"".join(_entry(key, value) for key, value in entries)
    return b"\x01tPM" + struct.pack("<I", len(entries) if count is None else count) + body


def make_layers(seed=0):
    """conv 3x3 3->4 ReLU, max pool, conv 3x3 4->3 ReLU, max pool, conv 1x1 3->1 PReLU, blur (never applied)."""
    rng = np.random.default_rng(seed)
    return [
        {"Type": 0, "Act": 1, "w": rng.normal(0, 0.02, (4, 3, 3, 3)), "b": rng.normal(0, 0.1, 4)},
        {"Type": 2, "Pool": 2},
        {"Type": 0, "Act": 1, "w": rng.normal(0, 0.3, (3, 4, 3, 3)), "b": rng.normal(0, 0.1, 3)},
        {"Type": 2, "Pool": 2},
        {"Type": 0, "Act": 4, "w": rng.normal(0, 0.5, (1, 3, 1, 1)), "b": rng.normal(0, 0.1, 1), "alpha": [0.3]},
        {"Type": 3, "KernelSize": 19, "Std": 3},
    ]


def synthetic_entries(layers):
    entries = [("modelType", _int(2)), ("layerCount", _int(len(layers)))]
    for i, layer in enumerate(layers):
        for key, value in layer.items():
            if isinstance(value, int):
                entries.append((f"{i}{key}", _int(value)))
            else:
                entries += _array(f"{i}{key}", value)
    return entries


@pytest.fixture(scope="session")
def synthetic_net():
    return make_layers()


@pytest.fixture(scope="session")
def synthetic_vxm(tmp_path_factory, synthetic_net):
    path = tmp_path_factory.mktemp("vxm") / "synthetic.vxm"
    path.write_bytes(vxm_bytes(synthetic_entries(synthetic_net)))
    return path


def write(tmp_path, data, name="broken.vxm"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------------
# The parser.


def test_parser_reads_the_synthetic_file(synthetic_vxm, synthetic_net):
    parsed = read_vxm(synthetic_vxm)
    assert parsed.model_type == 2 and [layer.kind for layer in parsed.layers] == [
        "conv", "pool", "conv", "pool", "conv", "blur"]
    assert [layer.activation for layer in parsed.layers] == ["relu", None, "relu", None, "prelu", None]
    assert parsed.layers[1].pool == "max" and (parsed.layers[5].kernel_size, parsed.layers[5].std) == (19, 3)
    for layer, expected in zip(parsed.layers, synthetic_net):
        for name in ("w", "b", "alpha"):
            if name in expected:
                assert layer.weights[name].dtype == np.float32
                np.testing.assert_array_equal(layer.weights[name], np.asarray(expected[name], np.float32))
    assert parsed.layers[0].filters == 4 and parsed.layers[2].in_channels == 4 and parsed.layers[0].kernel_size == 3
    assert parsed.num_params == 4 * 27 + 4 + 3 * 36 + 3 + 3 + 1 + 1


def test_parser_refuses_broken_containers(tmp_path, synthetic_net):
    good = vxm_bytes(synthetic_entries(synthetic_net))
    cases = {
        "short.vxm": (good[:6], "truncated"),
        "magic.vxm": (b"\x89PNG" + good[4:], "bad magic"),
        "cut_key.vxm": (good[:8 + 4 + 3], "truncated"),
        "cut_value.vxm": (good[:-3], "truncated"),
        "count.vxm": (vxm_bytes(synthetic_entries(synthetic_net), count=len(synthetic_entries(synthetic_net)) + 1),
                      "truncated"),
        "trailing.vxm": (good + b"\0\0", "2 bytes left after"),
        "nul.vxm": (b"\x01tPM" + struct.pack("<I", 1) + struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0),
                    "NUL-terminated"),
    }
    for name, (data, message) in cases.items():
        path = write(tmp_path, data, name)
        with pytest.raises(ValueError, match=message) as error:
            read_vxm(path)
        assert str(path) in str(error.value), name


def _without(entries, key):
    return [(k, v) for k, v in entries if k != key]


def _replaced(entries, key, value):
    return [(k, value if k == key else v) for k, v in entries]


def test_parser_refuses_bad_layers(tmp_path, synthetic_net):
    entries = synthetic_entries(synthetic_net)
    bad_channels = make_layers(0)
    bad_channels[2]["w"] = np.zeros((3, 5, 3, 3))
    cases = {
        "missing_w": (_without(entries, "2w"), "missing key '2w'"),
        "missing_alpha": (_without(entries, "4alpha"), "missing key '4alpha'"),
        "missing_count": (_without(entries, "layerCount"), "missing key 'layerCount'"),
        "dtype": (_replaced(entries, "0w.dtype", b"float64"), "dtype 'float64'"),
        "bytes": (_replaced(entries, "0b", b"\0" * 12), "has 12 bytes; float32 of shape \\[4\\] needs 16"),
        "shape_k": (_replaced(entries, "0w.shape[1]", _int(4)), "'0w.shape\\[1\\]' is 4"),
        "type": (_replaced(entries, "1Type", _int(7)), "unknown Type 7"),
        "act": (_replaced(entries, "0Act", _int(9)), "unknown Act code 9"),
        "stray": (entries + [("9Type", _int(2))], "beyond layerCount"),
        "channels": (synthetic_entries(bad_channels), "layer 2 takes 5 channels but gets 4 from layer 0"),
    }
    for name, (case, message) in cases.items():
        path = write(tmp_path, vxm_bytes(case), f"{name}.vxm")
        with pytest.raises(ValueError, match=message) as error:
            read_vxm(path)
        assert str(path) in str(error.value), name


def test_build_refuses_a_net_without_one_output_channel(tmp_path):
    layers = make_layers()[:4]  # ends with a pool after a 3-channel conv
    path = write(tmp_path, vxm_bytes(synthetic_entries(layers)), "three.vxm")
    with pytest.raises(ValueError, match="gives 3 channels") as error:
        build_fastgaze(vxm_path=path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------------------------------------------------
# The Keras model on the synthetic net against numpy.


def np_aspect_size(height, width, max_side):
    scale = min(max_side / width, max_side / height)
    return int(np.floor(scale * height + 0.5)), int(np.floor(scale * width + 0.5))


def np_lanczos_matrix(out_size, in_size):
    """Antialiased Lanczos-3 weights (out, in): output pixel i centred at input (i + 0.5) in / out."""
    scale = out_size / in_size
    support = max(1.0 / scale, 1.0)
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) / scale
        x = (np.arange(in_size) + 0.5 - centre) / support
        weights[i] = np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)
        weights[i] /= weights[i].sum()
    return weights


def np_conv(x, w, b):
    """'same' cross-correlation of (H, W, I) with OIHW weights."""
    k = w.shape[2]
    padded = np.pad(x, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    out = np.zeros(x.shape[:2] + (w.shape[0],))
    for dy in range(k):
        for dx in range(k):
            out += padded[dy:dy + x.shape[0], dx:dx + x.shape[1]] @ w[:, :, dy, dx].T
    return out + b


def np_max_pool(x):
    h, w = -(-x.shape[0] // 2), -(-x.shape[1] // 2)
    padded = np.full((2 * h, 2 * w, x.shape[2]), -np.inf)
    padded[:x.shape[0], :x.shape[1]] = x
    return padded.reshape(h, 2, w, 2, -1).max(axis=(1, 3))


def np_forward(image, layers, max_side, centre_prior=False):
    """The FastGaze decode in float64 numpy: resize, BGR means, net, cells at stride r + (stride - 1) / 2,
    bilinear to (H, W), optional centre prior, exp."""
    height, width = image.shape[:2]
    h, w = np_aspect_size(height, width, max_side)
    x = np_lanczos_matrix(h, height) @ image.transpose(2, 0, 1).astype(np.float64) @ np_lanczos_matrix(w, width).T
    x = np.clip(x.transpose(1, 2, 0), 0, 255)[..., ::-1] - BGR_MEAN
    stride = 1
    for layer in layers:
        if layer["Type"] == 2:
            x, stride = np_max_pool(x), stride * 2
        elif layer["Type"] == 0:
            x = np_conv(x, np.asarray(layer["w"], np.float32), np.asarray(layer["b"], np.float32))
            x = np.maximum(x, 0) if layer["Act"] == 1 else np.where(x > 0, x, np.float32(layer["alpha"][0]) * x)
    grid = x[..., 0]
    rows_at = (np.arange(height) + 0.5) * h / height - 0.5  # output pixel centres in resized pixels
    cols_at = (np.arange(width) + 0.5) * w / width - 0.5
    cells_r = stride * np.arange(grid.shape[0]) + (stride - 1) / 2
    cells_c = stride * np.arange(grid.shape[1]) + (stride - 1) / 2
    grid = np.stack([np.interp(rows_at, cells_r, grid[:, c]) for c in range(grid.shape[1])], axis=1)
    log_map = np.stack([np.interp(cols_at, cells_c, row) for row in grid])
    if centre_prior:
        ys = (np.arange(height) - (height - 1) / 2) / (0.25 * height)
        xs = (np.arange(width) - (width - 1) / 2) / (0.25 * width)
        log_map = log_map - 0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2)
    return np.exp(log_map)


@pytest.fixture(scope="session")
def synthetic_models(synthetic_vxm):
    return {centre: build_fastgaze(centre_prior=centre, vxm_path=synthetic_vxm, max_side=32) for centre in (False, True)}


@pytest.mark.parametrize("size", [(20, 13), (11, 45), (64, 48), (5, 7)])
def test_keras_model_matches_numpy_on_the_synthetic_net(synthetic_models, synthetic_net, size):
    image = np.random.default_rng(size[0]).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    for centre, model in synthetic_models.items():
        density = keras.ops.convert_to_numpy(model(image))
        assert density.shape == (2, *size, 1) and density.dtype == np.float32 and density.min() > 0
        for k in range(2):
            expected = np_forward(image[k], synthetic_net, 32, centre)
            np.testing.assert_allclose(density[k, ..., 0] / density[k].max(), expected / expected.max(), atol=2e-5,
                                       err_msg=f"size {size}, centre prior {centre}")


def test_model_interface_and_keras_round_trip(synthetic_models, tmp_path):
    model = synthetic_models[False]
    assert [t.name for t in model.inputs] == ["image"] and model.output_names == ["density"]
    assert tuple(model.inputs[0].shape) == (None, None, None, 3) and model.name == "fastgaze"
    assert synthetic_models[True].name == "fastgaze_centre"
    path = tmp_path / "synthetic.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    image = np.random.default_rng(1).uniform(0, 255, (1, 17, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(image)), keras.ops.convert_to_numpy(model(image)))


@pytest.mark.parametrize("size", [(768, 1024), (1024, 683), (9, 13), (240, 320), (3, 500)])
def test_aspect_fit_resize_is_tf_lanczos3_antialias(size):
    image = np.random.default_rng(size[1]).uniform(0, 255, (1, *size, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(AspectFitResize(320)(image))
    target = np_aspect_size(*size, 320)
    reference = tf.clip_by_value(tf.image.resize(image, target, method="lanczos3", antialias=True), 0, 255).numpy()
    assert ours.shape == reference.shape == (1, *target, 3)
    np.testing.assert_allclose(ours, reference, atol=2e-3)


@pytest.mark.parametrize("grid,resized,image", [((15, 20), (240, 320), (480, 640)), ((7, 20), (100, 320), (5, 16)),
                                                ((1, 1), (9, 13), (3, 4)), ((3, 5), (40, 80), (800, 1600))])
def test_grid_to_image_is_scale_and_translate_triangle(grid, resized, image):
    values = np.random.default_rng(0).normal(size=(2, *grid, 1)).astype(np.float32)
    ours = GridToImage(16)([values, np.zeros((2, *resized, 3), np.float32), np.zeros((2, *image, 3), np.float32)])
    scale = [16 * image[0] / resized[0], 16 * image[1] / resized[1]]
    reference = tf.raw_ops.ScaleAndTranslate(images=values, size=image, scale=tf.constant(scale, tf.float32),
                                             translation=[0.0, 0.0], kernel_type="triangle", antialias=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), reference.numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The shipped weights and the public names.


def test_shipped_weights():
    path = Path(weights_path())
    assert path.is_file() and path.stat().st_size == 489_616
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fastgaze.WEIGHTS_SHA256
    assert (path.parent / "LICENSE").read_text().lstrip().startswith("Apache License")
    notice = (path.parent / "NOTICE").read_text()
    assert "twitter-research/image-crop-analysis" in notice and "d66ad3bb" in notice
    assert fastgaze.WEIGHTS_SHA256 in notice and "converted" in notice
    parsed = read_vxm(path)
    assert len(parsed.layers) == 19 and len(parsed.entries) == 239 and parsed.num_params == 121_064


def test_shipped_weights_match_the_shared_readme():
    readme = FASTGAZE_DIR / "README.md"
    if not readme.is_file():
        pytest.skip(f"FastGaze's README not found at {readme} (only present in the project workspace)")
    head, tail = re.search(r"sha256 ([0-9a-f]{8})\.\.\.([0-9a-f]{8})", readme.read_text()).groups()
    digest = hashlib.sha256(Path(weights_path()).read_bytes()).hexdigest()
    assert digest.startswith(head) and digest.endswith(tail)
    assert digest == hashlib.sha256((FASTGAZE_DIR / "fastgaze.vxm").read_bytes()).hexdigest()


def test_builtin_names():
    assert VARIANTS == ("fastgaze", "fastgaze-centre") and set(VARIANTS) <= set(builtin.names())
    is_builtin = builtin.is_builtin
    assert is_builtin("fastgaze") and is_builtin(Path("fastgaze-centre")) and not is_builtin("fastgaze.vxm")
    assert not is_builtin(None) and not is_builtin(3)
    with pytest.raises(ValueError, match=r"choose one of \['fastgaze', 'fastgaze-centre'\]"):
        load_fastgaze("deepgaze")
    assert teacher_kind("fastgaze") == "contract" and teacher_kind("fastgaze-centre", "contract") == "contract"
    with pytest.raises(ValueError, match="not MSI-Net"):
        load_teacher("fastgaze", teacher_format="msinet")
    assert builtin.sha256("fastgaze") != builtin.sha256("fastgaze-centre")
    # The digest manifests already hold: the .vxm's bytes, a NUL and the name.
    vxm = Path(weights_path()).read_bytes()
    assert builtin.sha256("fastgaze") == hashlib.sha256(vxm + b"\0fastgaze").hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Parity with the reference SavedModels on real photos (../shared; skipped when absent).


@pytest.fixture(scope="session")
def references():
    if not all((FASTGAZE_DIR / folder / "saved_model.pb").is_file() for folder in REFERENCES.values()):
        pytest.skip(f"FastGaze's reference SavedModels not found in {FASTGAZE_DIR} (only present in the project "
                    "workspace)")
    signatures = {name: tf.saved_model.load(str(FASTGAZE_DIR / folder)) for name, folder in REFERENCES.items()}
    return {name: (loaded, loaded.signatures["serving_default"]) for name, loaded in signatures.items()}


@pytest.fixture(scope="session")
def real_images():
    missing = [folder / f"{stem}.jpg" for folder, stem in REAL_IMAGES if not (folder / f"{stem}.jpg").is_file()]
    if missing:
        pytest.skip(f"real photos not found ({missing[0]}; only present in the project workspace)")
    images = {stem: cv2.cvtColor(cv2.imread(str(folder / f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
              for folder, stem in REAL_IMAGES}
    tiny = cv2.resize(images["bsds_test_100007"], TINY_SIZE[::-1], interpolation=cv2.INTER_AREA)
    images["tiny"] = tiny
    return images


def reference_density(references, name, image):
    _, signature = references[name]
    return list(signature(image=tf.constant(image[None], tf.float32)).values())[0].numpy()[0, ..., 0]


def normalised_difference(ours, reference):
    return float(np.abs(ours / ours.max() - reference / reference.max()).max())


@pytest.mark.parametrize("name", VARIANTS)
def test_parity_with_the_reference_savedmodels(references, real_images, name):
    model = load_fastgaze(name)
    run = tf.function(lambda images: model(images, training=False),
                      input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    shapes = set()
    for stem, image in real_images.items():
        ours = run(tf.constant(image[None], tf.float32)).numpy()[0, ..., 0]
        reference = reference_density(references, name, image)
        assert ours.shape == reference.shape == image.shape[:2], stem
        assert normalised_difference(ours, reference) < 1e-5, stem
        shapes.add(image.shape[:2])
    assert (768, 1024) in shapes and (1024, 683) in shapes and (352, 234) in shapes and TINY_SIZE in shapes


def test_load_teacher_gives_a_working_fastgaze(references, real_images):
    teacher = load_teacher("fastgaze")
    assert isinstance(teacher, ContractTeacher)
    assert (teacher.name, teacher.path, teacher.format, teacher.backend) == ("fastgaze", "fastgaze", "builtin", "keras")
    assert teacher.sha256 == builtin.sha256("fastgaze") and teacher.num_params == 121_064
    assert teacher.manifest()["sha256"] == teacher.sha256 and teacher.manifest()["contract"] == "saliency-model/v1"
    images = [real_images["ina_n01494475_hammerhead"], real_images["tiny"]]
    for image, density in zip(images, teacher.run_images(images)):
        assert normalised_difference(density, reference_density(references, "fastgaze", image)) < 1e-5

    centre = load_contract_teacher("fastgaze-centre", max_input_side=400)
    assert centre.name == "fastgaze-centre" and centre.max_input_side == 400 and centre.sha256 != teacher.sha256
    image = real_images["bsds_test_100007"]
    density = centre(image[None]).numpy()[0, ..., 0]
    assert normalised_difference(density, reference_density(references, "fastgaze-centre", image)) < 1e-5
