"""Random flips applied identically to an image, its maps and its fixations.

Maps may have other resolutions than the image (the teacher map is at the teacher's resolution); a flip is
resolution-independent, so each array is flipped along its own axes. Fixations (0-based row, col at the
image's size) become `width - 1 - col` and `height - 1 - row`.
"""

import tensorflow as tf

FLIP_MODES = ("none", "horizontal", "both")
_ARRAY_KEYS = ("image", "saliency", "teacher", "valid")


def flip_example(example, flip_left_right, flip_up_down):
    """Flip every array of `example` (a dict) and its `fixations` by the two boolean scalars."""
    out = dict(example)
    for key in _ARRAY_KEYS:
        if key in out:
            x = out[key]
            x = tf.cond(flip_left_right, lambda x=x: tf.reverse(x, axis=[-2]), lambda x=x: x)
            x = tf.cond(flip_up_down, lambda x=x: tf.reverse(x, axis=[-3]), lambda x=x: x)
            out[key] = x
    if "fixations" in out:
        fix = out["fixations"]
        height = tf.cast(example.get("height", tf.shape(example["image"])[-3]), fix.dtype)
        width = tf.cast(example.get("width", tf.shape(example["image"])[-2]), fix.dtype)
        rows = tf.where(flip_up_down, height - 1 - fix[:, 0], fix[:, 0])
        cols = tf.where(flip_left_right, width - 1 - fix[:, 1], fix[:, 1])
        out["fixations"] = tf.stack([rows, cols], axis=1)
    return out


def random_flips(dataset, flips="horizontal", seed=None):
    """Map `dataset` of example dicts through random flips with probability 0.5 each.

    Args:
        dataset: a `tf.data.Dataset` of dicts with `image` and optionally `saliency`, `teacher`, `fixations`.
        flips: "none", "horizontal" (the default: natural scenes are left-right symmetric in statistics), or
            "both" (horizontal and vertical, as the seed project did).
        seed: reproducible flips for a given seed; they differ between epochs either way.
    """
    if flips not in FLIP_MODES:
        raise ValueError(f"flips must be one of {FLIP_MODES}. Received: flips={flips!r}")
    if flips == "none":
        return dataset
    coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def apply(example, coin):
        flip_lr = tf.equal(coin % 2, 1)
        flip_ud = tf.logical_and(tf.constant(flips == "both"), tf.equal((coin // 2) % 2, 1))
        return flip_example(example, flip_lr, flip_ud)

    return tf.data.Dataset.zip((dataset, coins)).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
