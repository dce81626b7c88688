"""One letterbox box for every path: training (tf.data), the student SavedModel (dynamic sizes) and the fixed-size
runtime exports (`fit_to_input`), checked against exact rational rounding over swept image sizes."""

from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf

from datasets import geometry, records
from datasets.io import encode_png
from inference.predictors import fit_to_input
from student import serving

FRAMES = ((240, 320), (144, 192))
# A few ranges of sides (small, around the frames' sides, large), and sizes where the float versions of the rule
# were a pixel off: float32 (training and the SavedModel before) and float64 (the exports before), at both frames.
SIDES = sorted(set(range(1, 41)) | set(range(110, 131)) | set(range(186, 196)) | set(range(236, 246))
               | set(range(316, 325)) | set(range(1990, 2001)))
DRIFTED = [(224, 119), (45, 1152), (448, 238), (95, 640), (480, 175), (352, 143), (224, 91), (55, 1408)]
DRIFTED += [(w, h) for h, w in DRIFTED]
SIZES = [(h, w) for h in SIDES for w in SIDES] + DRIFTED
# The exports resize real arrays: a sample of the small sizes keeps that part fast.
SMALL = [(h, w) for h, w in SIZES if h <= 130 and w <= 130 and h % 3 == w % 3 == 1] + DRIFTED


def exact_box(height, width, frame):
    """The box from exact rational arithmetic: scale = min(H / height, W / width), sides round half to even."""
    scale = min(Fraction(frame[0], height), Fraction(frame[1], width))
    h = min(max(round(height * scale), 1), frame[0])
    w = min(max(round(width * scale), 1), frame[1])
    return (frame[0] - h) // 2, (frame[1] - w) // 2, h, w


def _columns(sizes):
    return tf.constant([h for h, _ in sizes], tf.int32), tf.constant([w for _, w in sizes], tf.int32)


def training_boxes(sizes, frame):
    """`datasets.records.fit_box` as the training pipeline runs it: inside a tf.data map (a graph)."""
    heights, widths = _columns(sizes)
    ds = tf.data.Dataset.from_tensor_slices((heights, widths)).batch(len(sizes))
    box = next(iter(ds.map(lambda h, w: tf.stack(records.fit_box(h, w, frame), axis=1))))
    return [tuple(int(v) for v in row) for row in box.numpy()]


def savedmodel_boxes(sizes, frame):
    """`student.serving.image_box` traced with unknown image sizes, as the SavedModel's signature is."""
    @tf.function(input_signature=[tf.TensorSpec([4, None], tf.int32)])
    def boxes(shape):
        return tf.stack(serving.image_box(shape, frame), axis=1)

    heights, widths = _columns(sizes)
    shape = tf.stack([tf.ones_like(heights), heights, widths, 3 * tf.ones_like(heights)])
    return [tuple(int(v) for v in row) for row in boxes(shape).numpy()]


@pytest.mark.parametrize("frame", FRAMES)
def test_the_box_is_exact_rounding_on_every_path(frame):
    expected = [exact_box(h, w, frame) for h, w in SIZES]
    assert [geometry.fit_box(h, w, frame) for h, w in SIZES] == expected
    assert training_boxes(SIZES, frame) == expected
    assert savedmodel_boxes(SIZES, frame) == expected
    exports = [fit_to_input(np.zeros((h, w, 3), np.uint8), frame)[1] for h, w in SMALL]
    assert exports == [exact_box(h, w, frame) for h, w in SMALL]


def test_the_size_that_drifted():
    """224x119 at 240x320 got width 128 at run time and 127 in training and the SavedModel; now 128 everywhere."""
    assert exact_box(224, 119, (240, 320)) == (0, 96, 240, 128)
    frame, box = fit_to_input(np.full((224, 119, 3), 255, np.uint8), (240, 320))
    assert box == (0, 96, 240, 128)
    image_columns = np.flatnonzero((frame == 255).all(axis=(0, 2)))
    assert (image_columns[0], image_columns[-1]) == (96, 96 + 128 - 1)


def test_the_training_pipeline_uses_the_box(tmp_path):
    """A 224x119 record through `training_dataset`: its valid mask (the image's pixels) is the box."""
    image = np.full((224, 119, 3), 200, np.uint8)
    path = tmp_path / records.shard_name("train", 0, 1)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(records.serialize_example("a", encode_png(image), 224, 119, encode_png(image[:, :, 0]),
                                               np.ones((4, 2))))
    _, targets = next(iter(records.training_dataset([path], 1, (240, 320), training=False)))
    valid = targets["valid"].numpy()[0, :, :, 0]
    columns = np.flatnonzero(valid.max(axis=0) > 0.5)
    assert (columns[0], len(columns)) == (96, 128) and valid[:, 96:224].min() == pytest.approx(1.0)


def _ramp_student():
    """A "student" whose logits are a ramp over the frame's rows and columns: the served density shows which part
    of the frame the SavedModel cropped as the image's box."""
    image = keras.Input((None, None, 3), name="image")

    def ramp(x):
        ones = keras.ops.ones_like(x[..., :1])
        return 0.05 * keras.ops.cumsum(ones, axis=2) + 0.03 * keras.ops.cumsum(ones, axis=1)

    return keras.Model(image, {"saliency": keras.layers.Lambda(ramp, name="ramp")(image)})


def _density_for_box(frame, box, image_size):
    """What the SavedModel serves for `box`: the ramp cropped to it, softmax, resized to the image, renormalised."""
    rows, cols = np.mgrid[1:frame[0] + 1, 1:frame[1] + 1]
    logits = (0.05 * cols + 0.03 * rows)[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
    density = np.exp(logits - logits.max())
    density /= density.sum()
    resized = tf.image.resize(density[None, :, :, None].astype(np.float32), image_size, "bilinear", antialias=True)
    resized = np.maximum(resized.numpy()[0, :, :, 0], 0)
    return resized / resized.sum()


def test_a_real_savedmodel_serves_the_runtime_box(tmp_path):
    frame = (240, 320)
    directory = serving.export_saved_model(_ramp_student(), tmp_path / "sm", frame, fold_batchnorm=False)
    served = tf.saved_model.load(str(directory)).signatures[serving.SIGNATURE_KEY]
    for size in ((224, 119), (119, 224), (37, 100)):
        out = served(images=tf.zeros((1, *size, 3), tf.uint8))["density"].numpy()[0, :, :, 0]
        _, box = fit_to_input(np.zeros((*size, 3), np.uint8), frame)
        np.testing.assert_allclose(out, _density_for_box(frame, box, size), rtol=1e-4, atol=1e-9)
        top, left, h, w = box
        if h < frame[0]:  # the comparison tells a box one pixel off apart
            off_by_one = _density_for_box(frame, (top, left, h - 1, w), size)
        else:
            off_by_one = _density_for_box(frame, (top, left, h, w - 1), size)
        assert np.abs(out - off_by_one).max() > 100 * np.abs(out - _density_for_box(frame, box, size)).max()
