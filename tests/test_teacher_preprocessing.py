"""The author's resize/pad pipelines and their inverse (teacher/preprocessing.py)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from datasets.io import read_image, read_map
from teacher.preprocessing import INPUT_SIZES, crop_padding, postprocess, preprocess

MIT1003_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mit1003_sample")


def _blob(height, width, sigma_fraction=0.25):
    """A smooth off-centre Gaussian map in [0, 1] whose position reveals flips, shifts and transposes."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = 0.35 * (height - 1), 0.65 * (width - 1)
    sy, sx = sigma_fraction * height, sigma_fraction * width
    return np.exp(-0.5 * (((rows - cy) / sy) ** 2 + ((cols - cx) / sx) ** 2))


# Boxes [top, left, height, width] worked out by hand from scale = min(240/h, 320/w), sides rounded.
@pytest.mark.parametrize(
    "size, target, box",
    [
        ((480, 640), (240, 320), [0, 0, 240, 320]),  # SALICON: exactly half, no padding
        ((37, 53), (240, 320), [8, 0, 223, 320]),  # 37 * 320/53 = 223.4; pad 17 -> 8 top, 9 bottom
        ((101, 33), (240, 320), [0, 121, 240, 78]),  # 33 * 240/101 = 78.4; pad 242 -> 121 / 121
        ((480, 640), (360, 360), [45, 0, 270, 360]),  # MIT1003 size: 480 * 0.5625 = 270; pad 90 -> 45 / 45
        ((1024, 506), (216, 384), [0, 138, 216, 107]),  # 506 * 216/1024 = 106.7; pad 277 -> 138 / 139
    ],
)
@pytest.mark.parametrize("pipeline", ["repo", "hub"])
def test_box_and_pad_values(size, target, box, pipeline):
    image = np.full((*size, 3), 200, np.uint8)
    padded, got_box = preprocess(image, target, pipeline=pipeline)
    padded = padded.numpy()

    assert padded.shape == (*target, 3) and padded.dtype == np.float32
    np.testing.assert_array_equal(got_box.numpy(), box)
    top, left, height, width = box
    inside = np.zeros(target, bool)
    inside[top : top + height, left : left + width] = True
    pad_value = 126.0 if pipeline == "repo" else 0.0
    assert np.all(padded[~inside] == pad_value)
    # Area, bicubic and bilinear resizes keep a constant image constant (area sums in float32: ~7e-3 off).
    np.testing.assert_allclose(padded[inside], 200.0, atol=1e-2)
    np.testing.assert_allclose(crop_padding(padded, got_box).numpy(), 200.0, atol=1e-2)


def test_repo_pipeline_pads_maps_with_zero_on_request_and_clips_bicubic_overshoot():
    # A hard 0/255 edge upsampled bicubically overshoots; the repo clips to [0, 255].
    image = np.zeros((10, 20, 1), np.uint8)
    image[:, 10:] = 255
    padded, box = preprocess(image, (240, 320), pad_value=0)
    padded = padded.numpy()
    np.testing.assert_array_equal(box.numpy(), [40, 0, 160, 320])
    assert padded.min() == 0.0 and padded.max() == 255.0
    assert np.all(padded[:40] == 0.0) and np.all(padded[200:] == 0.0)


@pytest.mark.parametrize("size", [(37, 53), (101, 33), (480, 640)])
@pytest.mark.parametrize("pipeline", ["repo", "hub"])
def test_map_survives_preprocess_then_postprocess(size, pipeline):
    """A map painted into the image comes back in place, at the original size, after the round trip."""
    truth = _blob(*size)
    image = np.repeat((truth * 255.0)[:, :, None], 3, axis=2)
    padded, box = preprocess(image, (240, 320), pipeline=pipeline)
    network_map = padded[:, :, :1] / 255.0  # what a perfect teacher would answer, padding included

    restored = postprocess(network_map, box, size, pipeline=pipeline, resize="crop").numpy()

    assert restored.shape == (*size, 1)
    error = np.abs(restored[:, :, 0] - truth)
    # TF1 area/bicubic with align_corners=True are not exact inverses (sub-pixel shift); TF2 bilinear nearly is.
    mean_limit, max_limit = (0.02, 0.05) if pipeline == "repo" else (2e-3, 1e-2)
    assert error.mean() < mean_limit and error.max() < max_limit
    # The author's order (resize the padded map to cover the image, centre-crop) rounds the padding to whole
    # output pixels: up to one outer row/column of a small image mixes with the padding, and the map shifts by
    # up to half a pixel; inside, it agrees to the repo pipeline's limits.
    overfull = postprocess(network_map, box, size, pipeline=pipeline, resize="overfull").numpy()[:, :, 0]
    inner = np.abs(overfull - truth)[1:-1, 1:-1]
    assert inner.mean() < 0.02 and inner.max() < 0.07
    # Forgetting the crop would drag the padding into the map and stretch it.
    if box.numpy().tolist() != [0, 0, 240, 320]:
        stretched = tf.image.resize(network_map[None], size)[0, :, :, 0].numpy()
        assert np.abs(stretched - truth).mean() > 2 * error.mean()


def test_batched_matches_single_and_keeps_rank():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    padded, box = preprocess(batch, (240, 320))
    for i in range(2):
        single, single_box = preprocess(batch[i], (240, 320))
        np.testing.assert_array_equal(padded[i].numpy(), single.numpy())
        np.testing.assert_array_equal(box.numpy(), single_box.numpy())

    maps = padded[..., :1] / 255.0
    assert postprocess(maps, box, (37, 53)).shape == (2, 37, 53, 1)
    assert postprocess(maps[0, :, :, 0], box, (37, 53)).shape == (37, 53)
    assert crop_padding(maps, box).shape == (2, 223, 320, 1)
    assert crop_padding(maps[0, :, :, 0], box).shape == (223, 320)


def test_works_inside_tf_data_with_mixed_sizes():
    sizes = [(37, 53), (101, 33), (64, 64)]
    images = [np.full((*s, 3), 90, np.uint8) for s in sizes]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.uint8)
    ).map(lambda image: preprocess(image, (240, 320)))

    results = list(dataset)
    assert [tuple(p.shape) for p, _ in results] == [(240, 320, 3)] * 3
    for (padded, box), image in zip(results, images):
        eager_padded, eager_box = preprocess(image, (240, 320))
        np.testing.assert_array_equal(box.numpy(), eager_box.numpy())
        np.testing.assert_allclose(padded.numpy(), eager_padded.numpy(), atol=1e-4)


def test_input_sizes_are_the_authors():
    assert INPUT_SIZES["salicon"] == (240, 320) and INPUT_SIZES["cat2000"] == (216, 384)


def test_unknown_pipeline_and_bad_rank_are_clear_errors():
    with pytest.raises(ValueError, match="pipeline=.*tf1"):
        preprocess(np.zeros((8, 8, 3)), (240, 320), pipeline="tf1")
    with pytest.raises(ValueError, match=r"preprocess: images.*\(1, 2, 8, 8, 3\)"):
        preprocess(np.zeros((1, 2, 8, 8, 3)), (240, 320))


def _mit1003_pairs():
    stimuli = os.path.join(MIT1003_SAMPLE, "stimuli")
    if not os.path.isdir(stimuli):
        pytest.skip(f"MIT1003 sample not found at {os.path.abspath(MIT1003_SAMPLE)} (shared test data)")
    names = sorted(os.listdir(stimuli))
    return [(os.path.join(stimuli, n), os.path.join(MIT1003_SAMPLE, "maps", n)) for n in names]


def test_real_mit1003_images_round_trip():
    """Landscape, portrait, near-square and 506x1024 stimuli: right boxes, grey pad, fixation maps come back."""
    for target in ((240, 320), (360, 360)):
        for image_path, map_path in _mit1003_pairs():
            image, truth = read_image(image_path), read_map(map_path).astype(np.float64) / 255.0
            h, w = image.shape[:2]
            scale = min(target[0] / h, target[1] / w)
            height, width = round(h * scale), round(w * scale)
            box = [(target[0] - height) // 2, (target[1] - width) // 2, height, width]

            padded, got_box = preprocess(image, target)
            np.testing.assert_array_equal(got_box.numpy(), box, err_msg=image_path)
            padded = padded.numpy()
            assert np.all(padded[: box[0]] == 126.0) and np.all(padded[:, : box[1]] == 126.0), image_path
            assert np.all(padded[box[0] + height :] == 126.0) and np.all(padded[:, box[1] + width :] == 126.0)

            map_padded, map_box = preprocess(truth[:, :, None] * 255.0, target, pad_value=0)
            np.testing.assert_array_equal(map_box.numpy(), box)
            restored = postprocess(map_padded / 255.0, map_box, (h, w)).numpy()[:, :, 0]
            assert restored.shape == (h, w)
            assert np.abs(restored - truth).mean() < 0.01, image_path


def _author_postprocess(saliency_map, target_size):
    """MSI-Net's data.py `postprocess_saliency_map`, written from the author's code in TF1 ops.

    map * 255 -> `_resize_image(overfull=True)`: scale = max(target / current) (Python division), new size
    rounded, `resize_area` if any side shrinks else `resize_bicubic` (align_corners=True), clip [0, 255] ->
    `_crop_image`: centre crop with offsets int((current - target) / 2). Returned /255, before the uint8 rounding.
    """
    image = tf.constant(saliency_map, tf.float32) * 255.0
    h, w = int(image.shape[0]), int(image.shape[1])
    ratio = max(target_size[0] / h, target_size[1] / w)
    new = [int(round(h * ratio)), int(round(w * ratio))]
    if h > new[0] or w > new[1]:
        resized = tf.compat.v1.image.resize_area(image[None], new, align_corners=True)[0]
    else:
        resized = tf.compat.v1.image.resize_bicubic(image[None], new, align_corners=True)[0]
    resized = tf.clip_by_value(resized, 0.0, 255.0)
    top, left = int((new[0] - target_size[0]) / 2), int((new[1] - target_size[1]) / 2)
    return tf.image.crop_to_bounding_box(resized, top, left, *target_size).numpy() / 255.0


@pytest.mark.parametrize("size", [(480, 640), (300, 500), (600, 401), (37, 53), (1000, 700), (240, 320)])
def test_repo_postprocess_is_the_authors_overfull_resize_and_centre_crop(size):
    rng = np.random.default_rng(sum(size))
    smooth = tf.image.resize(rng.uniform(0, 1, (12, 16, 1)), (240, 320)).numpy()
    network_map = np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)
    _, box = preprocess(np.zeros((*size, 3), np.uint8), (240, 320))

    ours = postprocess(network_map, box, size).numpy()
    reference = _author_postprocess(network_map, size)
    assert ours.shape == reference.shape == (*size, 1)
    np.testing.assert_allclose(ours, reference, atol=1e-6)

    crop_first = postprocess(network_map, box, size, resize="crop").numpy()
    assert crop_first.shape == ours.shape
    if box.numpy().tolist() != [0, 0, 240, 320]:  # with padding, the other order is close but not the author's
        assert 1e-4 < np.abs(crop_first - reference).mean() < 0.05
    else:
        np.testing.assert_allclose(crop_first, reference, atol=1e-6)


def test_postprocess_resize_option_is_checked():
    with pytest.raises(ValueError, match="resize must be one of"):
        postprocess(np.zeros((240, 320, 1), np.float32), [0, 0, 240, 320], (240, 320), resize="stretch")
