"""The distillation record schema: one self-contained `tf.train.Example` per image.

Training reads only these records, so each one carries everything about its image:

| key | type | content |
|---|---|---|
| `stem` | bytes | file stem, e.g. `COCO_train2014_000000000009` |
| `image/encoded` | bytes | the original encoded image file, unchanged (re-encoded as PNG by the export if it had an EXIF orientation or transparency, which tf.io.decode_image ignores and drops: upright, laid over white as `datasets.io.read_image` does) |
| `image/height`, `image/width` | int64 | original size |
| `saliency/encoded` | bytes | the human map as an 8-bit grayscale PNG at the original size (empty if none) |
| `teacher/encoded` | bytes | the teacher map as a 16-bit grayscale PNG, values `round(map * 65535)` (empty if none) |
| `teacher/height`, `teacher/width` | int64 | the teacher map's size (the teacher's resolution, padding removed) |
| `fixations/row`, `fixations/col` | int64 list | 0-based fixation coordinates at the original size (may be empty) |
| `fixations/observer` | int64 list | the observer of each fixation (0-based), or empty when unknown (SALICON) |
| `fixations/duration` | float list | each fixation's duration in ms, or empty when unknown |
| `dataset` | bytes | the data set the image comes from (`mit1003`, `osie`, `salicon`, ...; empty if unknown) |

Every fixation is kept, duplicates included (several observers fixating one pixel): per-fixation metrics
(NSS, AUC) count them, and the inter-observer baseline needs each observer's own points.

The teacher map is stored as a 16-bit PNG: lossless for the 16-bit quantisation (max error 7.6e-6 on a [0, 1]
map, far below the float16 alternative's 4.9e-4 near 1) and compressed.
"""

import glob
import json
import os

import numpy as np
import tensorflow as tf

from datasets import augment, geometry
from datasets.geometry import PAD_COLOUR, RESIZE_MODES  # noqa: F401 (re-exported)
from datasets.io import encode_png

TEACHER_SCALE = 65535.0

FEATURES = {
    "stem": tf.io.FixedLenFeature([], tf.string),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "saliency/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "teacher/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "teacher/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "teacher/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "fixations/row": tf.io.VarLenFeature(tf.int64),
    "fixations/col": tf.io.VarLenFeature(tf.int64),
    "fixations/observer": tf.io.VarLenFeature(tf.int64),
    "fixations/duration": tf.io.VarLenFeature(tf.float32),
    "dataset": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def encode_teacher_map(teacher_map):
    """Encode a [0, 1] float map of shape (h, w) or (h, w, 1) as 16-bit PNG bytes."""
    teacher_map = np.asarray(teacher_map, dtype=np.float64)
    if teacher_map.ndim == 3:
        teacher_map = teacher_map[:, :, 0]
    if teacher_map.ndim != 2:
        raise ValueError(f"teacher map must be 2-D (h, w) or (h, w, 1), got shape {teacher_map.shape}")
    return encode_png(np.round(np.clip(teacher_map, 0.0, 1.0) * TEACHER_SCALE).astype(np.uint16))


def serialize_example(stem, image_bytes, height, width, saliency_png=b"", teacher_map=None, fixations=None,
                      observers=None, durations=None, dataset=""):
    """Serialise one image's record.

    Args:
        stem: the image's file stem (str).
        image_bytes: the original encoded image file, stored unchanged.
        height, width: the original image size.
        saliency_png: the human map as encoded 8-bit PNG/JPEG bytes at the original size, or b"" if none.
        teacher_map: float array (h, w) or (h, w, 1) in [0, 1] at the teacher's resolution, or None.
        fixations: int array (N, 2) of 0-based (row, col) at the original size, or None.
        observers: int array (N,), the observer of each fixation, or None when unknown.
        durations: float array (N,), each fixation's duration in ms, or None when unknown.
        dataset: the data set's name (str), stored so that evaluation can group images by data set.

    Returns:
        The serialised `tf.train.Example` bytes.
    """
    fixations = np.zeros((0, 2), np.int64) if fixations is None else np.asarray(fixations).reshape(-1, 2)
    if len(fixations) and (fixations.min() < 0 or fixations[:, 0].max() >= height or fixations[:, 1].max() >= width):
        raise ValueError(f"{stem}: fixations must lie inside the {height}x{width} image (0-based row, col)")
    extras = {}
    for key, values, feature in (("fixations/observer", observers, _ints), ("fixations/duration", durations, _floats)):
        if values is None:
            continue
        values = np.asarray(values).ravel()
        if len(values) != len(fixations):
            raise ValueError(f"{stem}: {len(values)} values for {key} but {len(fixations)} fixations")
        extras[key] = feature(values)
    feature = {
        "stem": _bytes(stem.encode()),
        "image/encoded": _bytes(bytes(image_bytes)),
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "saliency/encoded": _bytes(bytes(saliency_png)),
        "fixations/row": _ints(fixations[:, 0]),
        "fixations/col": _ints(fixations[:, 1]),
        "dataset": _bytes(str(dataset).encode()),
        **extras,
    }
    if teacher_map is not None:
        teacher_map = np.asarray(teacher_map)
        feature["teacher/encoded"] = _bytes(encode_teacher_map(teacher_map))
        feature["teacher/height"] = _ints([teacher_map.shape[0]])
        feature["teacher/width"] = _ints([teacher_map.shape[1]])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _decode_map(encoded, height, width, dtype, scale):
    """Decode a 1-channel PNG/JPEG map to float32 (h, w, 1) in [0, 1]; an empty field gives zeros."""

    def decode():
        decoded = tf.io.decode_image(encoded, channels=1, dtype=dtype, expand_animations=False)
        return tf.cast(decoded, tf.float32) / scale

    return tf.cond(
        tf.strings.length(encoded) > 0,
        decode,
        lambda: tf.zeros(tf.stack([height, width, 1]), tf.float32),
    )


def parse_example(serialized):
    """Parse and decode one record into tensors.

    Returns a dict: `stem` (string), `image` (uint8 (H, W, 3)), `height`, `width` (int32), `saliency`
    (float32 (H, W, 1) in [0, 1]), `teacher` (float32 (h, w, 1) in [0, 1]; (1, 1, 1) zeros when absent),
    `has_saliency`, `has_teacher` (bool), `fixations` (int32 (N, 2), 0-based row, col), `observers` (int32 (N,),
    -1 where unknown), `durations` (float32 (N,), NaN where unknown), `dataset` (string).
    """
    ex = tf.io.parse_single_example(serialized, FEATURES)
    height = tf.cast(ex["image/height"], tf.int32)
    width = tf.cast(ex["image/width"], tf.int32)
    image = tf.io.decode_image(ex["image/encoded"], channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    teacher_h = tf.maximum(tf.cast(ex["teacher/height"], tf.int32), 1)
    teacher_w = tf.maximum(tf.cast(ex["teacher/width"], tf.int32), 1)
    fixations = tf.stack(
        [tf.sparse.to_dense(ex["fixations/row"]), tf.sparse.to_dense(ex["fixations/col"])], axis=1
    )
    n_fix = tf.shape(fixations)[0]
    observers = tf.cast(tf.sparse.to_dense(ex["fixations/observer"]), tf.int32)
    durations = tf.sparse.to_dense(ex["fixations/duration"])
    observers = tf.cond(tf.size(observers) == n_fix, lambda: observers, lambda: tf.fill([n_fix], -1))
    durations = tf.cond(tf.size(durations) == n_fix, lambda: durations, lambda: tf.fill([n_fix], float("nan")))
    return {
        "stem": ex["stem"],
        "dataset": ex["dataset"],
        "image": image,
        "height": height,
        "width": width,
        "saliency": _decode_map(ex["saliency/encoded"], height, width, tf.uint8, 255.0),
        "teacher": _decode_map(ex["teacher/encoded"], teacher_h, teacher_w, tf.uint16, TEACHER_SCALE),
        "has_saliency": tf.strings.length(ex["saliency/encoded"]) > 0,
        "has_teacher": tf.strings.length(ex["teacher/encoded"]) > 0,
        "fixations": tf.cast(fixations, tf.int32),
        "observers": observers,
        "durations": durations,
    }


def shard_name(split, index, num_shards):
    """The file name of shard `index` (0-based) of `num_shards`: `<split>-00000-of-00004.tfrecord`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def list_shards(records_dir, split, require_finished=True):
    """The sorted shard files of `split` in `records_dir`; an error says how to make them when there are none.

    With `require_finished` (the default), a split whose export started but never finished (export_teacher's
    `<split>.plan.json` or `<split>.progress.json` without the manifest `<split>.json`) is refused: its shards
    hold only part of the images. Shards written by other means (no plan, no manifest) are accepted.
    """
    records_dir = os.fspath(records_dir)
    files = sorted(glob.glob(os.path.join(records_dir, f"{split}-*-of-*.tfrecord")))
    finish = f"`python export_teacher.py --split {split} --out {records_dir}` (with the data and teacher options"
    if require_finished and not os.path.exists(os.path.join(records_dir, f"{split}.json")):
        started = [name for name in (f"{split}.plan.json", f"{split}.progress.json")
                   if os.path.exists(os.path.join(records_dir, name))]
        if started:
            raise FileNotFoundError(
                f"{records_dir}: the export of split '{split}' has not finished ({started[0]} but no {split}.json "
                f"manifest; {len(files)} shard(s) so far): finish it with {finish} of the first run; it resumes)"
            )
    if not files:
        raise FileNotFoundError(
            f"no distillation records for split '{split}' in {records_dir} "
            f"(expected {split}-00000-of-NNNNN.tfrecord): run `python export_teacher.py --split {split} "
            f"--out {records_dir}` first"
        )
    return files


# The manifests' teacher entries are compared whole (every key: the teacher, its input size or contract bounds,
# the pipeline, the oracle's settings...) except where the teacher file was read from: a copy elsewhere is the
# same teacher (its sha256 says so). These come first in the messages.
_TEACHER_KEYS = ("name", "sha256", "input_size", "pipeline")
_TEACHER_IGNORED = ("path",)


def check_distinct_folders(records_dirs, option="--records-dir"):
    """Refuse a records folder given twice (however spelled: `d`, `d/`, a link to it): each image would count twice.

    Raises:
        ValueError: naming the folder, both spellings and `option`.
    """
    seen = {}
    for directory in records_dirs:
        key = os.path.realpath(os.fspath(directory))
        if key in seen:
            same = "" if os.fspath(seen[key]) == os.fspath(directory) else f" (as {seen[key]} and {directory})"
            raise ValueError(f"{option}: {seen[key]} is given twice{same}; every image in it would count twice. "
                             "Give each folder once")
        seen[key] = directory


def read_manifest(records_dir, split):
    """export_teacher's manifest `<records_dir>/<split>.json` as a dict, or None when there is none."""
    path = os.path.join(os.fspath(records_dir), f"{split}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_same_teacher(sources, allow_mixed=False):
    """Refuse record splits whose manifests name different teachers, teacher input sizes or pipelines.

    The teacher entries are compared whole (a contract teacher's `max_input_side` and `map_max_side`, the
    oracle's settings...), except the `path` the teacher was read from.

    Args:
        sources: (records_dir, split) pairs, e.g. the training and the validation split.
        allow_mixed: only warn (the user asked for mixed records explicitly, e.g. --allow-mixed-records).

    Returns:
        The list of differences found (empty when they agree or a split has no manifest).

    Raises:
        ValueError: naming both manifests and what differs, unless `allow_mixed`.
    """
    described = []
    for records_dir, split in sources:
        manifest = read_manifest(records_dir, split)
        if manifest is not None and isinstance(manifest.get("teacher"), dict):
            teacher = {k: v for k, v in manifest["teacher"].items() if k not in _TEACHER_IGNORED}
            described.append((os.path.join(os.fspath(records_dir), f"{split}.json"), teacher))
    differences = []
    for path, teacher in described[1:]:
        first_path, first = described[0]
        keys = list(_TEACHER_KEYS) + sorted((set(first) | set(teacher)) - set(_TEACHER_KEYS))
        diff = [f"{k} {first.get(k)!r} vs {teacher.get(k)!r}" for k in keys if first.get(k) != teacher.get(k)]
        if diff:
            differences.append(f"{first_path} and {path} differ: " + ", ".join(diff))
    if differences and not allow_mixed:
        raise ValueError(
            "the records were made by different teachers or teacher settings (" + "; ".join(differences)
            + "): export both splits with the same teacher, --input-size, --teacher-max-side and --pipeline, or pass "
            "--allow-mixed-records to use them anyway"
        )
    return differences


def read_records(files, num_parallel_calls=tf.data.AUTOTUNE):
    """A dataset of decoded records (original sizes, unbatched), in file order, for evaluation and export checks."""
    ds = tf.data.TFRecordDataset(list(files), num_parallel_reads=1)
    return ds.map(parse_example, num_parallel_calls=num_parallel_calls, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )


def _resize(tensor, size):
    return tf.image.resize(tf.cast(tensor, tf.float32), size, method="bilinear", antialias=True)


def fit_box(height, width, size):
    """The (top, left, h, w) box of an image of `height` x `width` resized to fit `size` (H, W), aspect kept.

    `datasets.geometry.fit_box` (the one letterbox rule) on scalar int tensors or Python ints, in int64, so the
    box is the one the fixed-size exports compute in Python for the same size. Returns int32 tensors.
    """
    def as_int64(value):
        return tf.cast(value, tf.int64)

    box = geometry.fit_box(as_int64(height), as_int64(width), size,
                           minimum=lambda a, b: tf.minimum(as_int64(a), as_int64(b)),
                           maximum=lambda a, b: tf.maximum(as_int64(a), as_int64(b)))
    return tuple(tf.cast(value, tf.int32) for value in box)


def letterbox(tensor, box, size, fill=0.0):
    """Resize `tensor` (h, w, C) or (B, h, w, C) into `box` of a `size` frame, filling the rest with `fill`."""
    top, left, h, w = box
    fill = tf.constant(fill, tf.float32)
    resized = _resize(tensor, tf.stack([h, w])) - fill
    padded = tf.image.pad_to_bounding_box(resized, top, left, size[0], size[1])
    return padded + fill


LABEL_BUCKETS = 10000


def keeps_human_map(stems, label_fraction):
    """Whether each record keeps its human map when only `label_fraction` of the records may (label-scarce
    training): a fixed pseudo-random subset, chosen by a fingerprint hash of the stem, so it is the same in every
    epoch, run, variant and process, and nested (the 10% subset lies inside the 20% one)."""
    buckets = tf.strings.to_hash_bucket_fast(stems, LABEL_BUCKETS)
    return buckets < int(round(float(label_fraction) * LABEL_BUCKETS))


def _fit(example, image_size, resize, with_teacher):
    """Bring one decoded record to `image_size`: image, maps and the `valid` mask of real (unpadded) pixels."""
    if resize == "stretch":
        box = (0, 0, image_size[0], image_size[1])
    else:
        box = fit_box(example["height"], example["width"], image_size)
    out = {
        "image": letterbox(example["image"], box, image_size, PAD_COLOUR),
        "saliency": letterbox(example["saliency"], box, image_size),
        "valid": letterbox(tf.ones([box[2], box[3], 1]), box, image_size),
        "has_saliency": tf.cast(example["has_saliency"], tf.float32),
    }
    if with_teacher:
        out["teacher"] = letterbox(example["teacher"], box, image_size)
    return out


def training_dataset(
    files,
    batch_size,
    image_size=(240, 320),
    training=True,
    flips="horizontal",
    shuffle_buffer=2048,
    seed=None,
    with_teacher=True,
    drop_remainder=None,
    resize="letterbox",
    labelled_only=None,
    label_fraction=1.0,
    examples=None,
):
    """Batches of `(images, targets)` for training and validation, from the records of one or more record sets.

    Images of any size and orientation are brought to `image_size` without distortion: resized to fit with their
    aspect ratio kept (bilinear with antialiasing), centred and padded with the ImageNet mean colour (`fit_box`).
    The maps are resized and padded (with zeros) the same way, and `targets["valid"]` marks the real pixels, so
    that losses and metrics ignore the padding. SALICON's 480x640 goes to 240x320 exactly, without padding.
    `resize="stretch"` resizes to `image_size` ignoring the aspect ratio (the earlier behaviour).

    Targets: `saliency` (the human map; zeros for a record without one), `valid`, `has_saliency` (1.0 or 0.0 per
    example) and, with `with_teacher`, `teacher`; maps are float32 (B, H, W, 1) in [0, 1].

    Args:
        files: record shard paths (of any number of record sets).
        batch_size: the global batch size.
        image_size: (H, W) fed to the student.
        training: shuffle (shard order, then records), flip and (by default) drop the last partial batch.
        flips: "none", "horizontal", or "both" (horizontal and vertical, the seed project's choice).
        shuffle_buffer: serialized records held for shuffling.
        seed: makes shuffling and flips reproducible; None draws fresh randomness.
        with_teacher: include the teacher map (variant B); an error names a record that has none.
        drop_remainder: defaults to `training`.
        resize: "letterbox" (default) or "stretch".
        labelled_only: keep only records with a human map; defaults to `not with_teacher` (variant A, and
            validation, have nothing to learn from or score on a record without one).
        label_fraction: use the human maps of only this fraction of the records (`keeps_human_map`); the others
            count as records without one.
        examples: decoded examples from `decoded_examples` (typically `.cache()`d, so that every epoch reuses
            them instead of decoding the images again) to batch instead of reading `files`. With `training`
            they are shuffled in a buffer of `shuffle_buffer` decoded examples (make it hold them all) and
            flipped; `files`, `image_size`, `with_teacher`, `resize`, `labelled_only` and `label_fraction` are
            then ignored.
    """
    if examples is not None:
        return _batches(examples, batch_size, training, flips, seed, drop_remainder, shuffle_buffer)
    files = [os.fspath(f) for f in files]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = _interleave(ds, len(files))
    if training:
        # Shuffle the serialized records, not decoded tensors: a SALICON record is ~0.25 MB against ~1.5 MB
        # decoded at 240x320, so the default buffer holds ~0.5 GB instead of ~3 GB.
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = _decode(ds, image_size, with_teacher, resize, labelled_only, label_fraction,
                 deterministic=seed is not None or not training)
    return _batches(ds, batch_size, training, flips, seed, drop_remainder, shuffle_buffer=None)


def decoded_examples(files, image_size=(240, 320), with_teacher=True, resize="letterbox", labelled_only=None,
                     label_fraction=1.0):
    """The records' examples decoded and brought to `image_size` (as `training_dataset` does), in a fixed order.

    `decoded_examples(...).cache()` passed to `training_dataset(examples=...)` decodes every image once per
    run instead of once per epoch; it holds about H * W * 24 bytes per record in memory (a 96x128 example is
    0.3 MB, so MIT1003 + OSIE's 1,303 training images take 0.4 GB; SALICON's 10,000 at 240x320, 18 GB).
    """
    files = [os.fspath(f) for f in files]
    ds = _interleave(tf.data.Dataset.from_tensor_slices(files), len(files))
    return _decode(ds, image_size, with_teacher, resize, labelled_only, label_fraction, deterministic=True)


def _interleave(files_ds, n_files):
    return files_ds.interleave(
        tf.data.TFRecordDataset, cycle_length=min(n_files, 4) or 1, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _decode(ds, image_size, with_teacher, resize, labelled_only, label_fraction, deterministic):
    """Serialized records -> examples at `image_size` (see `training_dataset` for the arguments)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}. Received: resize={resize!r}")
    image_size = tuple(int(s) for s in image_size)
    labelled_only = (not with_teacher) if labelled_only is None else labelled_only
    if not 0.0 <= float(label_fraction) <= 1.0:
        raise ValueError(f"label_fraction must be in [0, 1]. Received: label_fraction={label_fraction!r}")
    spec = {"saliency/encoded": FEATURES["saliency/encoded"], "stem": FEATURES["stem"]}

    def labelled(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        has = tf.strings.length(ex["saliency/encoded"]) > 0
        return has if label_fraction >= 1.0 else tf.logical_and(has, keeps_human_map(ex["stem"], label_fraction))

    if labelled_only:
        ds = ds.filter(labelled)

    def decode(serialized):
        ex = parse_example(serialized)
        if label_fraction < 1.0:
            keep = labelled(serialized)
            ex["has_saliency"] = keep
            ex["saliency"] = ex["saliency"] * tf.cast(keep, tf.float32)
        if with_teacher:
            tf.debugging.assert_equal(
                ex["has_teacher"], True, message="a record has no teacher map: export it with a teacher"
            )
        return _fit(ex, image_size, resize, with_teacher)

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def _batches(ds, batch_size, training, flips, seed, drop_remainder, shuffle_buffer):
    """Examples -> `(images, targets)` batches; with `training`, shuffled (unless `shuffle_buffer` is None) and
    flipped."""
    drop_remainder = training if drop_remainder is None else drop_remainder
    if training and shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if training and flips != "none":
        ds = augment.random_flips(ds, flips, seed=seed)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def split(batch):
        targets = {k: v for k, v in batch.items() if k != "image"}
        return batch["image"], targets

    return ds.map(split, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
