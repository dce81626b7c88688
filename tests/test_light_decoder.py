"""The light decoder: stride-8 heads over three taps, logits upsampled x8 inside the model (its exports to every
runtime, int8 included, are checked in tests/test_backbone_exports.py, on EfficientNet-Lite0 as shipped)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from student.model import LIGHT_WIDTH, build_student, count_params, forward_gmac
from student.serving import inference_student


def _conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


@pytest.fixture(scope="module")
def light():
    return {v: build_student(v, backbone="efficientnet-lite0", decoder="light", seed=3) for v in ("A", "B")}


def _images(h, w, n=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype("float32")


def test_decoder_parameters_counted_by_hand(light):
    """Laterals 1x1 from the Lite0 taps (40, 112, 320) to 64, two 3x3 64->64 convs, the 3x3 heads."""
    card = build_student("A", backbone="efficientnet-lite0", decoder="card", seed=3)
    encoder = count_params(card.get_layer("efficientnet_lite0"))["total"]
    w = LIGHT_WIDTH
    decoder = (_conv_params(1, 320, w) + _conv_params(1, 112, w) + _conv_params(1, 40, w)
               + 2 * _conv_params(3, w, w))
    assert count_params(light["A"])["total"] == encoder + decoder + _conv_params(3, w, 1)
    assert count_params(light["B"])["total"] == (encoder + decoder + _conv_params(3, w, 1)
                                                + _conv_params(3, w, 16) + _conv_params(3, 16, 1))
    assert count_params(light["A"])["total"] < 5_000_000 < count_params(card)["total"] + 1_000_000


def test_far_cheaper_than_the_card_decoder(light):
    card = build_student("A", backbone="efficientnet-lite0", decoder="card", seed=3)
    assert forward_gmac(light["A"], (240, 320)) < 0.5 * forward_gmac(card, (240, 320))


@pytest.mark.parametrize("height, width", [(50, 70), (64, 96), (33, 97)])
def test_output_size_equals_input_size(light, height, width):
    out = light["B"](_images(height, width, n=2), training=False)
    assert sorted(out) == ["saliency", "teacher"]
    for head in out.values():
        assert tuple(head.shape) == (2, height, width, 1)
        assert head.dtype == "float32"


def test_logits_are_a_bilinear_x8_upsampling_of_the_stride8_head(light):
    """An independent reference: tf.image.resize of the head conv's stride-8 output, cropped like the model."""
    model = light["A"]
    x = _images(64, 96)
    probe = keras.Model(model.input, model.get_layer("saliency_conv").output)
    coarse = probe(x, training=False)
    assert tuple(coarse.shape) == (1, 8, 12, 1)
    expected = tf.image.resize(coarse, (64, 96), method="bilinear")
    got = model(x, training=False)["saliency"]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_same_seed_shares_the_decoder_between_a_and_b(light):
    again = build_student("B", backbone="efficientnet-lite0", decoder="light", seed=3)
    for name in ("decoder_lateral3", "decoder_lateral4", "decoder_lateral5", "decoder_conv1", "decoder_conv2",
                 "saliency_conv"):
        for a, b in zip(light["A"].get_layer(name).get_weights(), again.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_inference_graph_matches_the_student(light):
    x = _images(48, 80, n=2)
    folded = inference_student(light["B"])
    np.testing.assert_allclose(folded(x)["saliency"].numpy(), light["B"](x, training=False)["saliency"].numpy(),
                               atol=1e-4)


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder"):
        build_student("A", backbone="efficientnet-lite0", decoder="fpn")


def test_a_bare_weights_file_or_a_run_folder_loads_with_its_decoder(light, tmp_path):
    from inference.export import load_student

    path = tmp_path / "light_b.weights.h5"
    light["B"].save_weights(str(path))
    student, size = load_student(path, backbone="efficientnet-lite0")
    assert size is None and sorted(student.output) == ["saliency", "teacher"]
    assert student.get_layer("decoder_lateral3") is not None
    x = _images(40, 56)
    np.testing.assert_allclose(student(x)["saliency"].numpy(), light["B"](x, training=False)["saliency"].numpy(),
                               atol=1e-5)


