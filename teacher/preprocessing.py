"""The author's MSI-Net input pipeline and its inverse, in TF ops (usable eagerly and inside `tf.data`).

Two pipelines (the author's `data.py`, and the TF2 / Hugging Face model card):

* "repo" (default; what the published `.pb` results were made with): aspect-preserving resize with
  `scale = min(target_h / h, target_w / w)`, new size rounded, TF1 `resize_area` when shrinking and
  `resize_bicubic` otherwise (both `align_corners=True`), clipped to [0, 255], then symmetric padding with the
  value 126 (top/left get `floor(diff / 2)`, bottom/right the rest).
* "hub" (the Hugging Face card): TF2 `tf.image.resize(preserve_aspect_ratio=True)` (bilinear, half-pixel
  centres) and zero padding, split the same way.

`preprocess` returns the padded image and the box `[top, left, height, width]` of the image inside it;
`crop_padding` removes the padding from a network-resolution map and `postprocess` maps it back onto the
original image. For "repo", `postprocess` does what the author's `postprocess_saliency_map` does (data.py
`_resize_image(map * 255, original_size, overfull=True)` then `_crop_image`): the whole padded map is
resized, aspect preserved, until it covers the original size, then centre-cropped (floor offsets). Cropping
the padding first and resizing to the original size (`resize="crop"`, the Hub card's order) differs from it
by about one grey level on average on real photos; it stays available as an option.
"""

import tensorflow as tf

# (H, W) each published model was trained at (the author's config.py).
INPUT_SIZES = {
    "salicon": (240, 320),
    "osie": (240, 320),
    "mit1003": (360, 360),
    "dutomron": (360, 360),
    "pascals": (360, 360),
    "cat2000": (216, 384),
    "fiwi": (216, 384),
}
PIPELINES = ("repo", "hub")
PAD_VALUES = {"repo": 126.0, "hub": 0.0}


def _check_pipeline(pipeline):
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}. Received: pipeline={pipeline!r}")


def _as_batch(images, name):
    """Return (float32 4-D batch, original rank) for a (H, W), (H, W, C) or (N, H, W, C) input."""
    images = tf.convert_to_tensor(images)
    rank = images.shape.rank
    if rank not in (2, 3, 4):
        raise ValueError(f"{name}: expected (H, W), (H, W, C) or (N, H, W, C), got shape {tuple(images.shape)}")
    batch = tf.cast(images, tf.float32)
    if rank == 2:
        batch = batch[:, :, None]
    if rank in (2, 3):
        batch = batch[None]
    return batch, rank


def _restore_rank(batch, rank):
    if rank == 4:
        return batch
    return batch[0, :, :, 0] if rank == 2 else batch[0]


def author_fit_size(size, target_size):
    """The author's aspect-preserving size inside `target_size` and the ratio: (`round(size * ratio)` per side,
    int32 (2,); `ratio = min(target / size)`).

    Computed in float64 like the author's `int / int` ratio; a side equal to its target stays exact. (Students
    use `datasets.geometry.fit_box`; this one reproduces the published MSI-Net results.)
    """
    size = tf.cast(size, tf.float64)
    ratio = tf.reduce_min(tf.cast(target_size, tf.float64) / size)
    return tf.maximum(tf.cast(tf.round(size * ratio), tf.int32), 1), ratio


def _resize_repo(batch, size, shrink):
    """TF1 area (shrinking) or bicubic (otherwise) resize with `align_corners=True`, clipped like the repo."""
    area = lambda: tf.raw_ops.ResizeArea(images=batch, size=size, align_corners=True)  # noqa: E731
    bicubic = lambda: tf.raw_ops.ResizeBicubic(  # noqa: E731
        images=batch, size=size, align_corners=True, half_pixel_centers=False
    )
    return tf.cond(shrink, area, bicubic)


def preprocess(images, target_size=INPUT_SIZES["salicon"], pipeline="repo", pad_value=None):
    """Resize (aspect preserved) and pad images to the network's input size, as the author does.

    Args:
        images: (H, W, C) or a batch (N, H, W, C) of same-size images, RGB 0..255, any real dtype.
        target_size: (H, W) network input, e.g. `INPUT_SIZES["salicon"]` (the default, 240x320).
        pipeline: "repo" (TF1 area/bicubic, pad 126; default) or "hub" (TF2 bilinear, pad 0).
        pad_value: overrides the pipeline's pad value (the repo pads 1-channel maps with 0).

    Returns:
        (padded, box): float32 images of shape (*target_size, C) (batched if the input was), and int32
        `[top, left, height, width]` of the resized image inside the padding.
    """
    _check_pipeline(pipeline)
    batch, rank = _as_batch(images, "preprocess: images")
    target = tf.constant([int(s) for s in target_size], tf.int32)
    if pipeline == "repo":
        new_size, ratio = author_fit_size(tf.shape(batch)[1:3], target)
        resized = tf.clip_by_value(_resize_repo(batch, new_size, ratio < 1.0), 0.0, 255.0)
    else:
        resized = tf.image.resize(batch, target, preserve_aspect_ratio=True)
        new_size = tf.shape(resized)[1:3]
    diff = target - new_size
    before = diff // 2
    paddings = [[0, 0], [before[0], diff[0] - before[0]], [before[1], diff[1] - before[1]], [0, 0]]
    value = PAD_VALUES[pipeline] if pad_value is None else float(pad_value)
    padded = tf.pad(resized, paddings, constant_values=value)
    padded = tf.ensure_shape(padded, [None, int(target_size[0]), int(target_size[1]), batch.shape[-1]])
    box = tf.concat([before, new_size], axis=0)
    return _restore_rank(padded, 3 if rank == 2 else rank), box


def crop_padding(saliency_map, box):
    """Remove the padding added by `preprocess`, staying at network resolution.

    Args:
        saliency_map: (H, W), (H, W, C) or (N, H, W, C) at the padded (network) size.
        box: `[top, left, height, width]` from `preprocess` (one box for the whole batch).

    Returns:
        float32 tensor of the same rank, spatially `height x width`.
    """
    batch, rank = _as_batch(saliency_map, "crop_padding: saliency_map")
    box = tf.cast(box, tf.int32)
    cropped = batch[:, box[0] : box[0] + box[2], box[1] : box[1] + box[3], :]
    return _restore_rank(cropped, rank)


POSTPROCESS_RESIZES = ("overfull", "crop")


def postprocess(saliency_map, box, original_size, pipeline="repo", resize=None):
    """Map a network-resolution saliency map back onto the original image, as the author does.

    Args:
        saliency_map: (H, W), (H, W, C) or (N, H, W, C) at the padded size, values in [0, 1].
        box: `[top, left, height, width]` from `preprocess` (used by `resize="crop"`).
        original_size: (H, W) of the image before `preprocess`.
        pipeline: "repo" (TF1 area/bicubic `align_corners=True`, clipped to [0, 1]; default) or "hub" (TF2
            bilinear).
        resize: "overfull" (resize the padded map, aspect preserved, to cover `original_size`, then
            centre-crop: the repo's `postprocess_saliency_map`) or "crop" (crop the padding with `box`, then
            resize to `original_size`: the Hub card's order). None = the author's order for `pipeline`
            ("overfull" for "repo", "crop" for "hub").

    Returns:
        float32 tensor of the same rank at `original_size`. No re-normalisation (the author has none); the
        repo's values before its `round(map * 255)` to uint8 for the JPEG file.
    """
    _check_pipeline(pipeline)
    resize = resize or ("overfull" if pipeline == "repo" else "crop")
    if resize not in POSTPROCESS_RESIZES:
        raise ValueError(f"resize must be one of {POSTPROCESS_RESIZES} or None. Received: resize={resize!r}")
    size = tf.stack([tf.cast(original_size[0], tf.int32), tf.cast(original_size[1], tf.int32)])
    if resize == "overfull":
        batch, rank = _as_batch(saliency_map, "postprocess: saliency_map")
        current = tf.shape(batch)[1:3]
        ratio = tf.reduce_max(tf.cast(size, tf.float64) / tf.cast(current, tf.float64))
        cover = tf.cast(tf.round(tf.cast(current, tf.float64) * ratio), tf.int32)
        if pipeline == "repo":
            scaled = batch * 255.0  # the author resizes 0..255 values and clips there
            shrink = tf.reduce_any(current > cover)
            resized = tf.clip_by_value(_resize_repo(scaled, cover, shrink), 0.0, 255.0) / 255.0
        else:
            resized = tf.image.resize(batch, cover)
        offset = (cover - size) // 2
        resized = resized[:, offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1], :]
        return _restore_rank(resized, rank)
    cropped, rank = _as_batch(crop_padding(saliency_map, box), "postprocess: saliency_map")
    if pipeline == "repo":
        shrink = tf.reduce_any(size < tf.shape(cropped)[1:3])
        resized = tf.clip_by_value(_resize_repo(cropped, size, shrink), 0.0, 1.0)
    else:
        resized = tf.image.resize(cropped, size)
    return _restore_rank(resized, rank)
