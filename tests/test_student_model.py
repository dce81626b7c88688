"""Student model: variants, sizes, parameter counts, A/B weight sharing, serialisation, jit and mixed precision."""

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from student.model import (
    CropLike,
    PadToMultiple,
    build_student,
    copy_common_weights,
    load_all_weights,
    count_params,
    saliency_map,
    spatial_softmax,
)
from student.backbones.resnet18 import build_resnet18_encoder, torchvision_key_map


def _conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


# torchvision resnet18 without fc; decoder 512->256->128->64->32 (3x3 + bias); head 32->1.
ENCODER_TRAINABLE = 11_689_512 - 513_000
DECODER_AND_HEAD_A = (
    _conv_params(3, 512, 256) + _conv_params(3, 256, 128) + _conv_params(3, 128, 64) + _conv_params(3, 64, 32)
    + _conv_params(3, 32, 1)
)
TEACHER_BRANCH = _conv_params(3, 32, 16) + _conv_params(3, 16, 1)


@pytest.fixture(scope="module")
def students():
    return {"A": build_student("A", seed=7), "B": build_student("B", seed=7)}


def _images(h, w, n=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype("float32")


def test_parameter_counts(students):
    assert DECODER_AND_HEAD_A == 1_567_489
    assert count_params(students["A"]) == {
        "trainable": ENCODER_TRAINABLE + DECODER_AND_HEAD_A,
        "non_trainable": 9_600,
        "total": ENCODER_TRAINABLE + DECODER_AND_HEAD_A + 9_600,
    }
    assert count_params(students["A"])["trainable"] == 12_744_001
    assert count_params(students["B"])["trainable"] == 12_744_001 + TEACHER_BRANCH == 12_748_770


@pytest.mark.parametrize("height, width", [(50, 70), (64, 64), (33, 97)])
def test_output_size_equals_input_size(students, height, width):
    for variant, heads in (("A", ["saliency"]), ("B", ["saliency", "teacher"])):
        out = students[variant](_images(height, width, n=2), training=False)
        assert sorted(out) == heads
        for head in heads:
            assert tuple(out[head].shape) == (2, height, width, 1)
            assert out[head].dtype == "float32"
            assert np.all(np.isfinite(np.asarray(out[head])))


def test_invalid_arguments_raise_early():
    with pytest.raises(ValueError, match=r"Received: variant='C'"):
        build_student("C")
    with pytest.raises(ValueError, match=r"Received: input_shape=\(64, 64\)"):
        build_student("A", input_shape=(64, 64))


def test_pad_and_crop_are_symmetric_inverses():
    x = np.arange(50 * 70, dtype="float32").reshape(1, 50, 70, 1) + 1.0
    padded = np.asarray(PadToMultiple(32)(x))
    assert padded.shape == (1, 64, 96, 1)
    # 64 - 50 = 14 rows -> 7 above, 7 below; 96 - 70 = 26 columns -> 13 left, 13 right.
    np.testing.assert_array_equal(padded[0, 7:57, 13:83, 0], x[0, :, :, 0])
    assert padded[0, :7].sum() == padded[0, 57:].sum() == padded[0, :, :13].sum() == padded[0, :, 83:].sum() == 0
    np.testing.assert_array_equal(np.asarray(CropLike()(padded, x)), x)
    # Already a multiple: unchanged.
    same = np.ones((1, 64, 32, 2), "float32")
    np.testing.assert_array_equal(np.asarray(PadToMultiple(32)(same)), same)


def test_density_and_map_hand_computed():
    logits = np.log(np.array([1.0, 3.0, 4.0, 2.0], "float32")).reshape(1, 2, 2, 1)
    density = np.asarray(spatial_softmax(logits))[0, :, :, 0]
    np.testing.assert_allclose(density, [[0.1, 0.3], [0.4, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(saliency_map(logits))[0, :, :, 0], [[0.25, 0.75], [1.0, 0.5]], rtol=1e-6)
    # Per image: a second image with a constant map gives the uniform density.
    two = np.concatenate([logits, np.full_like(logits, 5.0)])
    np.testing.assert_allclose(np.asarray(spatial_softmax(two))[1, :, :, 0], np.full((2, 2), 0.25), rtol=1e-6)


def test_same_seed_gives_same_initial_weights_for_common_layers(students):
    a, b = students["A"], students["B"]
    common = [layer.name for layer in a.layers if layer.weights]
    assert {"resnet18", "decoder_block1_conv", "decoder_block4_conv", "saliency_conv"} <= set(common)
    for name in common:
        for wa, wb in zip(a.get_layer(name).weights, b.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb), err_msg=name)
    x = _images(64, 64)
    np.testing.assert_allclose(
        np.asarray(a(x, training=False)["saliency"]), np.asarray(b(x, training=False)["saliency"]), atol=1e-6
    )
    other = build_student("A", seed=8)
    assert not np.allclose(np.asarray(other.get_layer("saliency_conv").kernel), np.asarray(a.get_layer("saliency_conv").kernel))


def test_copy_common_weights_makes_a_equal_to_b():
    b = build_student("B")
    a = build_student("A")  # unseeded: different initial weights
    x = _images(32, 64)
    assert not np.allclose(np.asarray(a(x)["saliency"]), np.asarray(b(x)["saliency"]))
    copied = copy_common_weights(b, a)
    assert set(copied) == {"resnet18", *(f"decoder_block{i}_conv" for i in range(1, 5)), "saliency_conv"}
    np.testing.assert_allclose(np.asarray(a(x)["saliency"]), np.asarray(b(x)["saliency"]), atol=1e-6)


def test_backbone_weights_are_loaded(tmp_path):
    source = build_resnet18_encoder(seed=11)
    state = {}
    for key, (layer, weight) in torchvision_key_map().items():
        value = np.asarray(getattr(source.get_layer(layer), weight))
        state[key] = np.ascontiguousarray(np.transpose(value, (3, 2, 0, 1)) if weight == "kernel" else value)
    path = str(tmp_path / "r18.safetensors")
    save_file(state, path)
    student = build_student("A", backbone_weights=path)
    for w_src, w_dst in zip(source.weights, student.get_layer("resnet18").weights, strict=True):
        np.testing.assert_array_equal(np.asarray(w_src), np.asarray(w_dst))


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_save_and_load_round_trip(tmp_path, students, suffix):
    model = students["B"]
    x = _images(40, 56)
    expected = model(x, training=False)
    path = str(tmp_path / f"student{suffix}")
    if suffix == ".keras":
        model.save(path)
        restored = keras.saving.load_model(path)
    else:
        model.save_weights(path)
        restored = build_student("B")
        restored.load_weights(path)
    out = restored(x, training=False)
    for head in ("saliency", "teacher"):
        np.testing.assert_allclose(np.asarray(out[head]), np.asarray(expected[head]), atol=1e-6)


@pytest.fixture
def dtype_policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


# An XLA compile of the training step costs 15-60 s on 2 CPU cores, so only the harder case (float16 compute
# with float32 heads) is compiled; it covers the float32 graph's layers too.
@pytest.mark.parametrize("dtype_policy", ["mixed_float16"], indirect=True)
def test_jit_compiled_mixed_precision_training_step(dtype_policy):
    model = build_student("B", seed=0)
    assert model.get_layer("decoder_block1_conv").compute_dtype == "float16"
    assert model.get_layer("saliency_conv").compute_dtype == "float32"
    assert model.get_layer("teacher_conv2").compute_dtype == "float32"
    x = _images(32, 48, n=2)
    out = model(x, training=False)
    for head in ("saliency", "teacher"):
        assert out[head].dtype == "float32" and tuple(out[head].shape) == (2, 32, 48, 1)
        assert np.all(np.isfinite(np.asarray(out[head])))
    # A loss scale of 1 so that the first step is not skipped as an overflow.
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01), initial_scale=1.0)
    model.compile(optimizer=optimizer, loss={"saliency": "mse", "teacher": "mse"}, jit_compile=True)
    y = {"saliency": np.zeros((2, 32, 48, 1), "float32"), "teacher": np.ones((2, 32, 48, 1), "float32")}
    head_before = np.asarray(model.get_layer("teacher_conv2").kernel).copy()
    bn = model.get_layer("resnet18").get_layer("conv1_bn")
    mean_before = np.asarray(bn.moving_mean).copy()
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(np.asarray(model.get_layer("teacher_conv2").kernel), head_before)
    assert not np.allclose(np.asarray(bn.moving_mean), mean_before)


def test_load_all_weights_refuses_a_file_that_lacks_some_layers(tmp_path):
    def dense_stack(n):
        inputs = keras.Input((3,))
        x = inputs
        for k in range(n):
            x = keras.layers.Dense(2, name=f"dense_{k}")(x)
        return keras.Model(inputs, x)

    path = str(tmp_path / "two.weights.h5")
    two = dense_stack(2)
    two.save_weights(path)
    with pytest.raises(ValueError, match="two.weights.h5"):
        load_all_weights(dense_stack(3), path)  # Keras alone would only warn and keep dense_2 random
    loaded = load_all_weights(dense_stack(2), path)
    for a, b in zip(two.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
