"""Running a teacher over a stream of samples: the records' inputs and teacher maps, batch by batch.

Teachers: anything with `input_size` (H, W) and a call on float32 (N, H, W, 3) RGB 0..255 batches returning
(N, H, W, 1) maps in [0, 1] (`teacher.loading.Teacher`); `manifest()` describes it. A teacher whose
`needs_stems` is True (`teacher.oracle.OracleTeacher`) is called as `teacher(images, stems=stems)`.

A contract teacher (`teacher.loading.ContractTeacher`: any saliency model, e.g. FastGaze) has no input size
and no MSI-Net padding: it receives each original image at its own size (shrunk first, area, aspect kept, when
its longest side exceeds the teacher's `max_input_side`, `--teacher-max-side`; by default never), equal-size
images of a batch together. Its unnormalised density is resized (area) so that its longest side is at most
`map_max_side` (320; aspect kept) and divided by its maximum, so the stored map is in [0, 1] with maximum 1;
the manifest's `preprocessing` says so and `sizes.teacher` counts the stored sizes. Training resizes that map
to the training size exactly as it resizes the image (both cover the whole image).

Images are checked for what training will decode (tf.io.decode_image: JPEG, PNG, BMP, GIF, WebP) and human maps
for mass (an all-black map is refused); so is a constant teacher map (all zeros, say: weights that never loaded),
naming the teacher and the image. An image with an EXIF orientation or transparency is stored re-encoded as PNG
of the pixels the teacher saw (upright, laid over white: tf.io.decode_image ignores EXIF and drops alpha); every
other image is stored unchanged. Decoding (a parallel `tf.data` map with prefetch) and serialising/writing
(`datasets.shards`, a writer thread) overlap with the teacher; memory stays bounded by a few batches, whatever
the split size.
"""

import collections
import concurrent.futures
import os
import sys

import numpy as np
import tensorflow as tf

from datasets import shards
from datasets.geometry import capped_size, resize_map
from datasets.io import check_tf_decodable, decode_image, encode_png, exif_orientation, has_transparency
from datasets.progress import Progress
from datasets.sample import no_points
from teacher import preprocessing

PENDING_WRITES = 2  # batches queued for the writer thread beyond the one being written


def resolve_teacher(teacher, data_dir=None, input_size=None, pipeline="repo", teacher_format="auto",
                    teacher_max_side=None):
    """Turn `teacher` into a teacher object.

    Args:
        teacher: a teacher object, "oracle" (the synthetic data's `OracleTeacher` for `data_dir`), or the path
            of MSI-Net weights for `teacher.loading.load_teacher`.
        data_dir: the data set folder (used by the oracle).
        input_size: optional (H, W) overriding the teacher's input size (the dataset's size by default).
        pipeline: the preprocessing pipeline the oracle is made for ("repo" or "hub").
        teacher_format: "auto", "msinet" or "contract" (`teacher.loading.teacher_kind`).
        teacher_max_side: a contract teacher's `max_input_side` (None: each image at its own size).

    Raises:
        FileNotFoundError: for a missing weights file; the message says where to get it.
        ValueError: `input_size` for a contract teacher or `teacher_max_side` for another one.
    """
    if isinstance(teacher, (str, os.PathLike)):
        if os.fspath(teacher) == "oracle":
            from teacher.oracle import OracleTeacher

            kwargs = {} if input_size is None else {"input_size": input_size}
            return OracleTeacher(data_dir, pipeline=pipeline, **kwargs)
        from teacher.loading import load_teacher

        teacher = load_teacher(os.fspath(teacher), teacher_format=teacher_format, max_input_side=teacher_max_side)
    if is_contract(teacher):
        if input_size is not None:
            raise ValueError(f"{teacher.path}: --input-size (input_size) is MSI-Net's padded input size; a contract "
                             "teacher receives each image at its own size (bound it with --teacher-max-side)")
        return teacher
    if teacher_max_side is not None:
        raise ValueError("--teacher-max-side (teacher_max_side) applies to contract teachers only; MSI-Net runs at "
                         "its --input-size")
    if input_size is not None:
        teacher.input_size = tuple(int(s) for s in input_size)
    return teacher


def is_contract(teacher):
    """True for a `teacher.loading.ContractTeacher` (or its manifest entry): no input size, no padding."""
    contract = teacher.get("contract") if isinstance(teacher, dict) else getattr(teacher, "contract", None)
    return contract not in (None, "msinet")


def teacher_description(teacher, pipeline):
    description = dict(teacher.manifest()) if hasattr(teacher, "manifest") else {"name": type(teacher).__name__}
    if is_contract(teacher):
        description.update(path=os.path.abspath(teacher.path), pipeline=None)
        return description
    description["input_size"] = [int(s) for s in teacher.input_size]
    description["path"] = os.path.abspath(teacher.path) if getattr(teacher, "path", None) else None
    description["pipeline"] = pipeline
    return description


def load_inputs(sample):
    """Read one sample's files.

    Returns:
        dict: `image_bytes` (the file, unchanged; re-encoded as PNG of `image` if it has an EXIF orientation
        or transparency), `image` (uint8 RGB, EXIF orientation applied, transparency laid over white),
        `saliency_png` (b"" without a map),
        `fixations` (int32 (N, 2), 0-based (row, col); empty without a fixation file), `observers` (int32 (N,))
        and `durations` (float32 (N,)), empty when unknown (SALICON).

    Raises:
        ValueError: naming the file if any of them is unreadable or inconsistent.
    """
    try:
        with open(sample.image_path, "rb") as f:
            image_bytes = f.read()
    except OSError as e:
        raise ValueError(f"{sample.image_path}: cannot read image file ({e.strerror})") from e
    check_tf_decodable(image_bytes, sample.image_path)
    image = decode_image(image_bytes, sample.image_path)
    if exif_orientation(image_bytes) != 1 or has_transparency(image_bytes):
        # Training decodes records with tf.io.decode_image, which ignores EXIF and drops alpha: store the pixels
        # the teacher saw instead (upright, laid over white).
        image_bytes = encode_png(image)
    sample.check_image(image)
    saliency_png = sample.human_map_png(image.shape)
    points = sample.fixation_points(image.shape)
    fixations, observers, durations = no_points() if points is None else points
    return {"image_bytes": image_bytes, "image": image, "saliency_png": saliency_png, "fixations": fixations,
            "observers": observers, "durations": durations}


def _input_dataset(samples, input_size, pipeline, batch_size):
    """Batches of decoded, preprocessed samples (in order) with a per-sample `ok` flag and error text."""

    def load(index):
        sample = samples[int(index)]
        try:
            inputs = load_inputs(sample)
        except (ValueError, OSError) as e:
            return (False, str(e).encode(), b"", np.zeros((1, 1, 3), np.uint8), b"", np.zeros((0, 2), np.int32),
                    np.zeros(0, np.int32), np.zeros(0, np.float32))
        return (True, b"", inputs["image_bytes"], inputs["image"], inputs["saliency_png"], inputs["fixations"],
                np.asarray(inputs["observers"], np.int32), np.asarray(inputs["durations"], np.float32))

    def load_and_preprocess(index):
        ok, error, image_bytes, image, saliency_png, fixations, observers, durations = tf.numpy_function(
            load, [index], [tf.bool, tf.string, tf.string, tf.uint8, tf.string, tf.int32, tf.int32, tf.float32],
            stateful=False,
        )
        image = tf.ensure_shape(image, [None, None, 3])
        padded, box = preprocessing.preprocess(image, input_size, pipeline)
        return {
            "index": index,
            "ok": tf.ensure_shape(ok, []),
            "error": tf.ensure_shape(error, []),
            "image_bytes": tf.ensure_shape(image_bytes, []),
            "size": tf.shape(image)[:2],
            "saliency_png": tf.ensure_shape(saliency_png, []),
            "fixations": tf.io.serialize_tensor(tf.ensure_shape(fixations, [None, 2])),
            "observers": tf.io.serialize_tensor(tf.ensure_shape(observers, [None])),
            "durations": tf.io.serialize_tensor(tf.ensure_shape(durations, [None])),
            "padded": padded,
            "box": box,
        }

    ds = tf.data.Dataset.range(len(samples))
    ds = ds.map(load_and_preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(2)


def _run_teacher(teacher, images, stems):
    if getattr(teacher, "needs_stems", False):
        return np.asarray(teacher(images, stems=stems), np.float32)
    return np.asarray(teacher(images), np.float32)


def _check_varies(teacher_map, teacher, sample):
    """Refuse a constant teacher map (`teacher.loading.is_constant_map`), naming the image and the teacher."""
    from teacher.loading import is_constant_map

    if is_constant_map(teacher_map):
        raise ValueError(
            f"{sample.image_path}: teacher {getattr(teacher, 'name', teacher)!r} returned a constant map (every pixel "
            f"{float(np.asarray(teacher_map).flat[0]):.4g}) for this image; a saliency map must vary over the image: "
            "check the teacher's weights (an all-zero or untrained model gives constant maps)"
        )


def _batch_items(batch, samples, teacher, skip_bad):
    """Run the teacher on a batch's good images; return the writer's items in order."""
    ok = batch["ok"].numpy()
    indices = batch["index"].numpy()
    good = np.flatnonzero(ok)
    maps = None
    if len(good):
        stems = [samples[int(indices[i])].stem for i in good]
        maps = _run_teacher(teacher, tf.gather(batch["padded"], good), stems)
        expected = (len(good), *teacher.input_size, 1)
        if maps.shape != expected:
            raise ValueError(
                f"teacher {getattr(teacher, 'name', teacher)!r} returned maps of shape {maps.shape} for inputs of "
                f"{tuple(batch['padded'].shape[1:3])}; expected {expected} (N, H, W, 1) at its input size"
            )
        if not (np.isfinite(maps).all() and maps.min() >= -1e-6 and maps.max() <= 1 + 1e-6):
            raise ValueError(  # the records store [0, 1] maps; anything else would be clipped silently
                f"teacher {getattr(teacher, 'name', teacher)!r} returned values in [{np.nanmin(maps):.4g}, "
                f"{np.nanmax(maps):.4g}]; expected maps in [0, 1] (normalise an unnormalised density first)"
            )
    items, position = [], {int(i): k for k, i in enumerate(good)}
    for i, index in enumerate(indices):
        sample = samples[int(index)]
        if not ok[i]:
            error = batch["error"][i].numpy().decode()
            if not skip_bad:
                return items, error
            items.append({"stem": sample.stem, "skipped": {"stem": sample.stem, "error": error}})
            continue
        box = batch["box"][i]
        teacher_map = np.asarray(preprocessing.crop_padding(maps[position[i]], box))[:, :, 0]
        _check_varies(teacher_map, teacher, sample)
        items.append({
            "stem": sample.stem,
            "image_bytes": batch["image_bytes"][i].numpy(),
            "size": batch["size"][i].numpy(),
            "saliency_png": batch["saliency_png"][i].numpy(),
            "fixations": tf.io.parse_tensor(batch["fixations"][i], tf.int32).numpy(),
            "observers": tf.io.parse_tensor(batch["observers"][i], tf.int32).numpy(),
            "durations": tf.io.parse_tensor(batch["durations"][i], tf.float32).numpy(),
            "teacher_map": teacher_map,
        })
    return items, None


def _contract_batches(samples, batch_size):
    """Lists of up to `batch_size` read samples (index, ok, error, inputs), read in a parallel tf.data map."""

    def load(index):
        try:
            inputs = load_inputs(samples[int(index)])
        except (ValueError, OSError) as e:
            return (False, str(e).encode(), b"", np.zeros((1, 1, 3), np.uint8), b"", np.zeros((0, 2), np.int32),
                    np.zeros(0, np.int32), np.zeros(0, np.float32))
        return (True, b"", inputs["image_bytes"], inputs["image"], inputs["saliency_png"],
                np.asarray(inputs["fixations"], np.int32), np.asarray(inputs["observers"], np.int32),
                np.asarray(inputs["durations"], np.float32))

    def read(index):
        values = tf.numpy_function(
            load, [index], [tf.bool, tf.string, tf.string, tf.uint8, tf.string, tf.int32, tf.int32, tf.float32],
            stateful=False)
        return (index, *values)

    ds = tf.data.Dataset.range(len(samples))
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2 * batch_size)
    batch = []
    for index, ok, error, image_bytes, image, saliency_png, fixations, observers, durations in ds.as_numpy_iterator():
        batch.append({"index": int(index), "ok": bool(ok), "error": error.decode(), "image_bytes": image_bytes,
                      "image": image, "saliency_png": saliency_png, "fixations": fixations.reshape(-1, 2),
                      "observers": observers, "durations": durations})
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def contract_teacher_map(density, image_size, map_max_side):
    """The record's teacher map from a contract teacher's density: resized (area) so the longest side is at most
    `map_max_side` (aspect kept, from the image's size), divided by its maximum (all zeros stay zeros)."""
    stored = resize_map(density, capped_size(image_size[0], image_size[1], map_max_side))
    peak = float(stored.max())
    return stored / peak if peak > 0 else stored


def _contract_batch_items(batch, samples, teacher, skip_bad):
    """`_batch_items` for a contract teacher: the good images of a batch at their own sizes, same-size together."""
    good = [entry for entry in batch if entry["ok"]]
    densities = teacher.run_images([entry["image"] for entry in good], batch_size=max(len(good), 1))
    maps = {entry["index"]: density for entry, density in zip(good, densities)}
    items = []
    for entry in batch:
        sample = samples[entry["index"]]
        if not entry["ok"]:
            if not skip_bad:
                return items, entry["error"]
            items.append({"stem": sample.stem, "skipped": {"stem": sample.stem, "error": entry["error"]}})
            continue
        size = entry["image"].shape[:2]
        _check_varies(maps[entry["index"]], teacher, sample)
        items.append({
            "stem": sample.stem,
            "image_bytes": entry["image_bytes"],
            "size": size,
            "saliency_png": entry["saliency_png"],
            "fixations": entry["fixations"],
            "observers": entry["observers"],
            "durations": entry["durations"],
            "teacher_map": contract_teacher_map(maps[entry["index"]], size, teacher.map_max_side),
        })
    return items, None


def _contract_preprocessing(description):
    side = description.get("max_input_side")
    return {
        "pipeline": None,
        "teacher_input": "each original image at its own size" if side is None else
                         f"each original image, shrunk (area, aspect kept) when its longest side exceeds {side}",
        "teacher_map": f"the teacher's density resized (area) to a longest side of at most "
                       f"{description['map_max_side']} (aspect kept) and divided by its maximum, stored as 16-bit "
                       "PNG round(map * 65535); sizes.teacher counts the stored sizes",
        "max_input_side": side,
        "map_max_side": description["map_max_side"],
    }


def label_stream(todo, teacher, writer, batch_size, skip_bad, progress, pipeline, plan):
    """Run the teacher over `todo` in batches while a thread writes the previous batches."""
    bar = None
    if progress:  # on stderr: stdout carries results only (export_teacher.py's summary)
        kept = plan["num_shards"] - len(writer.remaining_shards)
        print(f"{plan['split']}: exporting {len(todo)} of {plan['num_images']} images into "
              f"{len(writer.remaining_shards)} shards" + (f" ({kept} finished shards kept)" if kept else ""),
              file=sys.stderr, flush=True)
        bar = Progress(len(todo), plan["split"])
    count = 0
    pending = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as executor:
        try:
            contract = is_contract(teacher)
            batches = (_contract_batches(todo, batch_size) if contract
                       else _input_dataset(todo, teacher.input_size, pipeline, batch_size))
            for batch in batches:
                items, error = (_contract_batch_items if contract else _batch_items)(batch, todo, teacher, skip_bad)
                pending.append(executor.submit(shards.write_batch, writer, items))
                if error is not None:
                    while pending:
                        pending.popleft().result()
                    raise ValueError(
                        f"{error}. Finished shards are kept: fix the file, or remove it (with its map and fixation "
                        "file), then run the same command again to resume; or pass --skip-bad (skip_bad=True) to "
                        "skip such files"
                    )
                while len(pending) > PENDING_WRITES:
                    pending.popleft().result()
                count += len(items)
                if bar is not None:
                    bar.update(len(items))
            while pending:
                pending.popleft().result()
            if bar is not None:
                bar.close()
        except BaseException:
            for future in pending:
                future.cancel()
            concurrent.futures.wait(pending)
            writer.abort()
            raise


def preprocessing_entry(description, pipeline):
    """The manifest's `preprocessing` entry for a teacher `description` (`teacher_description`)."""
    if is_contract(description):
        return _contract_preprocessing(description)
    return {
        "pipeline": pipeline,
        "input_size": description["input_size"],
        "pad_value": preprocessing.PAD_VALUES[pipeline],
        "teacher_map": "teacher output at its input size with the padding cropped (teacher.preprocessing"
                       ".crop_padding), stored as 16-bit PNG round(map * 65535)",
    }

