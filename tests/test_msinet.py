"""The Keras MSI-Net (teacher/msinet.py): architecture, custom layers, dynamic sizes, XLA, mixed precision, saving.

Parity with the original graph is tested in test_teacher_loading.py against tests/msinet_reference.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from teacher.msinet import (
    SCOPE_TO_LAYER,
    LegacyBilinearUpsampling,
    MinMaxNormalization,
    build_msinet,
)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_msinet(return_logits=True)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)


def _legacy_bilinear_reference(x, factor):
    """TF1 legacy bilinear (align_corners=False, half_pixel_centers=False) written out in numpy."""
    n, h, w, c = x.shape
    out = np.zeros((n, h * factor, w * factor, c), np.float64)
    for i in range(h * factor):
        sy = i * h / (h * factor)
        y0, fy = int(np.floor(sy)), sy - np.floor(sy)
        y1 = min(y0 + 1, h - 1)
        for j in range(w * factor):
            sx = j * w / (w * factor)
            x0, fx = int(np.floor(sx)), sx - np.floor(sx)
            x1 = min(x0 + 1, w - 1)
            top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
            bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


def test_parameter_count_layer_names_and_shapes(model):
    # 14,714,688 (VGG16 convs) + 9,831,936 (ASPP) + 387,585 (decoder), counted from the author's model.py.
    assert model.count_params() == 24_934_209
    assert len(SCOPE_TO_LAYER) == 23 and all("/" not in name for name in SCOPE_TO_LAYER.values())
    shapes = {scope: tuple(model.get_layer(name).kernel.shape) for scope, name in SCOPE_TO_LAYER.items()}
    assert shapes["conv1/conv1_1"] == (3, 3, 3, 64)
    assert shapes["conv5/conv5_1"] == (3, 3, 512, 512)
    assert shapes["aspp/conv1_1"] == (1, 1, 1280, 256)
    assert shapes["aspp/conv1_4"] == (3, 3, 1280, 256)
    assert shapes["aspp/conv2"] == (1, 1, 1280, 256)
    assert shapes["decoder/conv1"] == (3, 3, 256, 128)
    assert shapes["decoder/conv4"] == (3, 3, 32, 1)
    dilations = {scope: model.get_layer(name).dilation_rate[0] for scope, name in SCOPE_TO_LAYER.items()}
    assert [dilations[f"aspp/conv1_{i}"] for i in (2, 3, 4)] == [4, 8, 12]
    assert dilations["conv5/conv5_2"] == 2 and dilations["conv4/conv4_3"] == 1
    assert model.get_layer("decoder_conv4").activation.__name__ == "linear"


def test_legacy_bilinear_upsampling_uses_tf1_mapping():
    # By hand: src = dst * 2 / 4 -> [0, 0.5, 1, 1.5 clamped to 1] for the row [0, 1].
    row = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
    out = LegacyBilinearUpsampling(2)(row).numpy()
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.5, 1.0, 1.0])

    x = np.random.default_rng(1).normal(size=(2, 3, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(LegacyBilinearUpsampling(2)(x).numpy(), _legacy_bilinear_reference(x, 2), atol=1e-6)
    half_pixel = keras.layers.UpSampling2D(2, interpolation="bilinear")(x).numpy()
    assert np.abs(half_pixel - _legacy_bilinear_reference(x, 2)).max() > 0.1


def test_min_max_normalization_by_hand():
    logits = np.array([[[1.0], [3.0]], [[5.0], [9.0]]], np.float32)[None]
    expected = (logits - 1.0) / (1e-7 + 8.0)
    np.testing.assert_allclose(MinMaxNormalization()(logits).numpy(), expected, rtol=1e-6)


def test_dynamic_sizes_batches_and_logits(model, images):
    outputs = model(images)
    saliency, logits = outputs["saliency"].numpy(), outputs["logits"].numpy()
    assert saliency.shape == logits.shape == (2, 64, 96, 1)
    for i in range(2):
        shifted = logits[i] - logits[i].min()
        np.testing.assert_allclose(saliency[i], shifted / (1e-7 + shifted.max()), atol=1e-6)
        assert saliency[i].min() == 0.0 and 0.999 < saliency[i].max() <= 1.0
        np.testing.assert_allclose(model(images[i : i + 1])["saliency"].numpy()[0], saliency[i], atol=1e-5)
    assert model(images[:1, :40, :48])["saliency"].shape == (1, 40, 48, 1)


def test_static_input_shape_must_be_multiple_of_8():
    with pytest.raises(ValueError, match=r"multiples of 8.*\(100, 96, 3\)"):
        build_msinet((100, 96, 3))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*\(64, 64, 1\)"):
        build_msinet((64, 64, 1))


def test_xla_matches_eager(model, images):
    run = tf.function(lambda x: model(x, training=False)["saliency"], jit_compile=True)
    np.testing.assert_allclose(run(images).numpy(), model(images)["saliency"].numpy(), atol=1e-5)


def test_mixed_precision(model, images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = build_msinet(return_logits=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    half.set_weights(model.get_weights())
    small = images[:, :32, :48]
    outputs = half(small)
    assert outputs["logits"].dtype == tf.float16 and outputs["saliency"].dtype == tf.float32
    np.testing.assert_allclose(outputs["saliency"].numpy(), model(small)["saliency"].numpy(), atol=2e-2)


def test_fine_tuning_reaches_every_weight(model, images):
    small = tf.constant(images[:1, :32, :48])
    with tf.GradientTape() as tape:
        logits = model(small, training=True)["logits"]
        loss = tf.reduce_mean(tf.square(logits - 1.0))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert len(gradients) == 46
    assert all(g is not None and bool(tf.reduce_all(tf.math.is_finite(g))) for g in gradients)
    assert float(tf.norm(gradients[-2])) > 0  # decoder_conv4 kernel


def test_keras_file_round_trip(model, images, tmp_path):
    path = str(tmp_path / "msinet.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]
    small = images[:1, :32, :48]
    np.testing.assert_array_equal(restored(small)["saliency"].numpy(), model(small)["saliency"].numpy())
