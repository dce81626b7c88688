"""Image sizes and map resizes, each rule written once: the letterbox box (`fit_box`), the longest-side cap
(`capped_size`) and the resize of a saliency map (`resize_map`).

The letterbox rule decides where an image of any size lands in a student's fixed-size input frame. One
function, `fit_box`, decides the box for every path: training (`datasets.records`, in the tf.data graph), the
student SavedModel (`student.serving`, in its signature, for any image size) and the fixed-size runtime exports
(`inference.predictors.fit_to_input`, in numpy). It is written in integer arithmetic only (+, -, *, //, % and a
minimum/maximum passed in), so Python ints and int64 tensors give the same box, bit for bit; the float32 and
float64 versions of one formula that it replaces disagreed by a pixel on 210 of the 4 million image sizes up to
2000x2000 at 240x320.

No TensorFlow here: the runtime exports (ONNX, OpenVINO, LiteRT) letterbox without importing it.
"""

import numpy as np

RESIZE_MODES = ("letterbox", "stretch")
# The student normalises RGB with the ImageNet mean, so this padding is zero after its normalisation, the same
# value the student's own pad-to-a-multiple-of-32 uses.
PAD_COLOUR = (123.675, 116.28, 103.53)


def _round_half_even(numerator, denominator, minimum):
    """round(numerator / denominator) for non-negative integers, halves to even (as Python's and TF's round)."""
    doubled = 2 * numerator + denominator
    half_up, rest = doubled // (2 * denominator), doubled % (2 * denominator)
    tie = 1 - minimum(rest, 1)  # 1 exactly when the quotient was k + 1/2
    return half_up - tie * (half_up % 2)


def fit_box(height, width, size, minimum=min, maximum=max):
    """The (top, left, h, w) box of a `height` x `width` image resized to fit `size` (H, W), aspect kept.

    The image is scaled by min(H / height, W / width): the limiting side fills the frame and the other is
    `round(side * scale)` computed exactly (halves to even), at least 1; the box is centred (floor offsets)
    and the rest of the frame is padding.

    Args:
        height, width: the image's size, Python ints, or scalar int64 tensors with `minimum=tf.minimum` and
            `maximum=tf.maximum` (`datasets.records.fit_box` does that).
        size: (H, W) of the frame, Python ints.
    """
    target_h, target_w = (int(s) for s in size)
    # round(height * min(H / height, W / width)) == min(H, round(height * W / width)), and likewise for the width.
    h = minimum(target_h, _round_half_even(height * target_w, width, minimum))
    w = minimum(target_w, _round_half_even(width * target_h, height, minimum))
    h, w = maximum(h, 1), maximum(w, 1)
    return (target_h - h) // 2, (target_w - w) // 2, h, w


def capped_size(height, width, max_side):
    """(h, w) with the longest side at most `max_side`, aspect kept (rounded, >= 1); unchanged if it fits or
    `max_side` is None. Contract teachers' inputs and the teacher maps stored in records are capped so."""
    height, width = int(height), int(width)
    if max_side is None or max(height, width) <= int(max_side):
        return height, width
    scale = int(max_side) / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_map(saliency_map, size):
    """A 2-D float map resized to `size` (h, w) as float32: area averaging when both sides shrink, else bilinear.

    The one resize of maps outside TensorFlow: stored teacher maps to the image's size (evaluation, the studies),
    a contract teacher's density to the record's size (labelling) or back to the image's (prediction).
    """
    import cv2

    saliency_map = np.asarray(saliency_map, np.float32)
    size = (int(size[0]), int(size[1]))
    if saliency_map.shape == size:
        return saliency_map
    shrink = size[0] <= saliency_map.shape[0] and size[1] <= saliency_map.shape[1]
    return cv2.resize(saliency_map, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
