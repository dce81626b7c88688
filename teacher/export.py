"""Stream a SALICON split through the teacher into sharded, verified, resumable distillation records.

`export_split` writes, in `out_dir`:

* `<split>.plan.json` first: which stems go into which shard (sorted stems, balanced contiguous chunks), the
  teacher and the preprocessing. A rerun reuses it, so an interrupted export resumes into the same shards.
* `<split>-NNNNN-of-NNNNN.tfrecord`: records in the `datasets.records` schema (original image bytes, human map
  PNG, teacher map at the teacher's resolution with the padding removed, fixations), about `shard_size_mb`
  each. A shard is written under a hidden temporary name and renamed when complete; after the rename its
  count and sha256 go into `<split>.progress.json`.
* `<split>.json` last, the manifest: counts, per-shard count/bytes/sha256, the teacher (file, sha256),
  the preprocessing, image and teacher-map sizes, and the skipped files. `<split>.progress.json` is then removed.

Rerun after a kill: shards whose file still matches its recorded sha256 are kept, the unfinished shard and
anything after it are redone, and the result holds every image exactly once. An image removed after a failed
run (a bad file) is dropped from the unfinished shards; a plan without any finished shard is simply replaced.

Images are checked for what training will decode (tf.io.decode_image: JPEG, PNG, BMP, GIF, WebP) and human maps
for mass (an all-black map is refused). An image with an EXIF orientation is stored re-encoded upright as PNG
(the teacher saw it upright and tf.io.decode_image ignores EXIF); every other image is stored unchanged. Decoding (a parallel `tf.data`
map with prefetch) and serialising/writing (a writer thread) overlap with the teacher; memory stays bounded by a
few batches, whatever the split size.

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
"""

import collections
import concurrent.futures
import datetime
import glob
import hashlib
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from datasets import nusvip, records, sources
from datasets.io import atomic_write, check_tf_decodable, decode_image, encode_png, exif_orientation, read_map
from datasets.salicon import IMAGE_EXTENSIONS, list_salicon, load_fixations
from teacher import preprocessing

FORMAT_VERSION = 1
DEFAULT_DATA_DIR = os.path.join("data", "salicon")
DEFAULT_TEACHER = os.path.join("weights", "model_salicon_cpu.pb")
DEFAULT_OUT_DIR = os.path.join("data", "distill")
DEFAULT_SHARD_SIZE_MB = 150
DEFAULT_BATCH_SIZE = 8
ALL_SPLITS = ("train", "val")  # what `split="all"` exports: the splits with maps (test has none)
# A smooth [0, 1] map as a 16-bit PNG takes about 0.8 of its raw 2 bytes/pixel (measured on blurred maps).
TEACHER_PNG_RATIO = 0.8
RECORD_OVERHEAD_BYTES = 200  # keys, lengths and CRCs of one record
FIXATION_BYTES = 4  # two varints of 1-2 bytes each
ESTIMATE_SAMPLES = 16
PENDING_WRITES = 2  # batches queued for the writer thread beyond the one being written
# Test hook: the process dies (os._exit) after finishing this many shards, leaving the next one half-written.
KILL_AFTER_SHARDS_ENV = "SALIENCY_KD_EXPORT_KILL_AFTER_SHARDS"
KILL_EXIT_CODE = 75
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DATA_HINT = (
    "Get SALICON (2017 / LSUN'17 release: images, maps and fixations) from http://salicon.net/challenge-2017/ and "
    "unpack it as <data-dir>/images/{train,val}, maps/{train,val}, fixations/{train,val}; or run MSI-Net's "
    "download script (github.com/alexanderkroner/saliency, download.py download_salicon), which makes "
    "data/salicon/stimuli, saliency, fixations. Pass the folder with --data-dir (default data/salicon)."
)


def _plan_path(out_dir, split):
    return os.path.join(out_dir, f"{split}.plan.json")


def _progress_path(out_dir, split):
    return os.path.join(out_dir, f"{split}.progress.json")


def manifest_path(out_dir, split):
    """The manifest of `split` in `out_dir`: `<out_dir>/<split>.json`."""
    return os.path.join(os.fspath(out_dir), f"{split}.json")


def _write_json(path, value):
    with atomic_write(path, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def file_sha256(path):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_teacher(teacher, data_dir=DEFAULT_DATA_DIR, input_size=None, pipeline="repo", teacher_format="auto",
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
    if _is_contract(teacher):
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


def _is_contract(teacher):
    """True for a `teacher.loading.ContractTeacher` (or its manifest entry): no input size, no padding."""
    contract = teacher.get("contract") if isinstance(teacher, dict) else getattr(teacher, "contract", None)
    return contract not in (None, "msinet")


def _teacher_description(teacher, pipeline):
    description = dict(teacher.manifest()) if hasattr(teacher, "manifest") else {"name": type(teacher).__name__}
    if _is_contract(teacher):
        description.update(path=os.path.abspath(teacher.path), pipeline=None)
        return description
    description["input_size"] = [int(s) for s in teacher.input_size]
    description["path"] = os.path.abspath(teacher.path) if getattr(teacher, "path", None) else None
    description["pipeline"] = pipeline
    return description


def _same_teacher(a, b):
    keys = ("name", "sha256", "input_size", "pipeline", "max_input_side", "map_max_side")
    return all(a.get(k) == b.get(k) for k in keys)


def _list_samples(data_dir, split, dataset="salicon", split_file=None, sigma=nusvip.DEFAULT_SIGMA_PX):
    """The samples of `split` of `dataset` (`datasets.sources.list_samples`; SALICON errors say how to get it)."""
    data_dir = os.fspath(data_dir)
    if dataset != "salicon":
        return sources.list_samples(dataset, data_dir, split, split_file, sigma)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{data_dir}: SALICON folder not found. {DATA_HINT}")
    try:
        return list_salicon(data_dir, split)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}. {DATA_HINT}") from e


def _report_other_files(samples):
    """Name the files beside the images that the listing skipped (other types, e.g. .tif or .webp)."""
    folders = sorted({os.path.dirname(sample.image_path) for sample in samples})
    # Images of a known type that the listing left out belong to other splits; only other file types are news.
    others = [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))
              if not name.startswith(".") and os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS
              and os.path.isfile(os.path.join(folder, name))]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        print(f"export: skipped {len(others)} file(s) that are not images of a known type (.jpg/.jpeg/.png): {shown}",
              file=sys.stderr)
    return others


def estimate_record_bytes(samples, teacher_size, num_samples=ESTIMATE_SAMPLES):
    """Estimate one record's size from file sizes of up to `num_samples` evenly spread samples.

    Image and map bytes are the files' sizes (stored unchanged), fixations cost about 4 bytes each (counted
    in the sampled files), the teacher map is `TEACHER_PNG_RATIO` of its raw 16-bit size at `teacher_size`.
    """
    spread = np.linspace(0, len(samples) - 1, min(num_samples, len(samples)))
    picks = [samples[i] for i in np.unique(spread.astype(int))]
    sizes = []
    for sample in picks:
        size = os.path.getsize(sample.image_path)
        if sample.map_path:
            size += os.path.getsize(sample.map_path)
        if sample.fixations_path:
            try:
                size += FIXATION_BYTES * len(load_fixations(sample.fixations_path))
            except (ValueError, OSError):
                pass  # an unreadable file is reported by the export itself
        sizes.append(size)
    teacher_bytes = TEACHER_PNG_RATIO * 2 * teacher_size[0] * teacher_size[1]
    return float(np.mean(sizes)) + teacher_bytes + RECORD_OVERHEAD_BYTES


def make_plan(samples, split, teacher_description, shard_size_mb=DEFAULT_SHARD_SIZE_MB, images_per_shard=None):
    """The shard plan: sorted stems in balanced contiguous chunks of about `shard_size_mb` megabytes.

    Args:
        samples: the split's `SaliconSample`s.
        split: the split name (used in shard names).
        teacher_description: the teacher entry recorded with the plan.
        shard_size_mb: target shard size in MB (10^6 bytes), from `estimate_record_bytes`.
        images_per_shard: overrides the estimate (tests, or to force a shard count).

    Returns:
        A JSON-ready dict with `shards`: [{"name", "stems"}] in order.
    """
    stems = sorted(sample.stem for sample in samples)
    map_bound = teacher_description["input_size"] or [teacher_description["map_max_side"]] * 2  # contract: None
    estimate = estimate_record_bytes(samples, map_bound)
    if images_per_shard is None:
        if shard_size_mb <= 0:
            raise ValueError(f"shard_size_mb must be positive. Received: shard_size_mb={shard_size_mb}")
        images_per_shard = max(1, int(shard_size_mb * 1e6 // estimate))
    elif int(images_per_shard) < 1:
        raise ValueError(f"images_per_shard must be >= 1. Received: images_per_shard={images_per_shard}")
    num_shards = -(-len(stems) // int(images_per_shard))
    chunks = np.array_split(np.arange(len(stems)), num_shards)
    return {
        "format_version": FORMAT_VERSION,
        "split": split,
        "num_images": len(stems),
        "num_shards": num_shards,
        "images_per_shard": int(images_per_shard),
        "shard_size_mb": shard_size_mb,
        "estimated_record_bytes": int(estimate),
        "teacher": teacher_description,
        "shards": [
            {"name": records.shard_name(split, i, num_shards), "stems": [stems[j] for j in chunk]}
            for i, chunk in enumerate(chunks)
        ],
    }


def _drop_removed_stems(path, plan, finished, removed, fix):
    """The plan without `removed` stems (files deleted after a failed export), if no finished shard holds them.

    The stems left in the unfinished shards are spread over those shards again, so none is empty.
    """
    removed = set(removed)
    in_finished = sorted(stem for shard in plan["shards"] if shard["name"] in finished
                         for stem in shard["stems"] if stem in removed)
    if in_finished:
        raise ValueError(
            f"{path}: {len(in_finished)} image(s) planned for finished shards are gone from the data folder, e.g. "
            f"{in_finished[0]}; put them back to resume, or {fix}"
        )
    open_shards = [shard for shard in plan["shards"] if shard["name"] not in finished]
    stems = [stem for shard in open_shards for stem in shard["stems"] if stem not in removed]
    if len(stems) < len(open_shards):
        raise ValueError(f"{path}: too few images are left for the planned shards; {fix}")
    for shard, chunk in zip(open_shards, np.array_split(np.arange(len(stems)), len(open_shards))):
        shard["stems"] = [stems[i] for i in chunk]
    plan["num_images"] -= len(removed)
    plan.setdefault("removed", []).extend(sorted(removed))
    return plan


def _load_or_make_plan(out_dir, split, samples, teacher_description, shard_size_mb, images_per_shard):
    """The split's plan and its finished shards ({name: entry}).

    A plan without any finished shard is simply replaced when the data or teacher changed (e.g. a first run that
    stopped at a bad file). With finished shards, images removed since (a bad file deleted) are dropped from the
    unfinished shards, so the rerun resumes; new images or another teacher are refused.
    """
    path = _plan_path(out_dir, split)
    current = sorted(sample.stem for sample in samples)
    if os.path.exists(path):
        plan = _read_json(path)
        finished = _finished_shards(out_dir, split, plan)
        planned = [stem for shard in plan["shards"] for stem in shard["stems"]]
        if finished or (planned == current and _same_teacher(plan["teacher"], teacher_description)):
            return _check_plan(path, plan, finished, current, teacher_description, out_dir, split), finished
    # No shard was finished: nothing to keep, whatever an earlier plan said.
    for stale in glob.glob(os.path.join(out_dir, f"{split}-*-of-*.tfrecord")) + [_progress_path(out_dir, split)]:
        if os.path.exists(stale):
            os.remove(stale)
    plan = make_plan(samples, split, teacher_description, shard_size_mb, images_per_shard)
    _write_json(path, plan)
    return plan, {}


def _check_plan(path, plan, finished, current, teacher_description, out_dir, split):
    planned = [stem for shard in plan["shards"] for stem in shard["stems"]]
    fix = f"delete {out_dir}/{split}.* and {out_dir}/{split}-*.tfrecord to start over, or choose another --out"
    if planned != current:
        added = sorted(set(current) - set(planned))
        if added:
            raise ValueError(
                f"{path}: the data folder has {len(added)} image(s) the recorded plan does not list, e.g. {added[0]}; "
                f"the records would mix two versions of the data. Remove them to resume, or {fix}"
            )
        plan = _drop_removed_stems(path, plan, finished, set(planned) - set(current), fix)
        _write_json(path, plan)
    if not _same_teacher(plan["teacher"], teacher_description):
        raise ValueError(
            f"{path}: the finished shards come from teacher {plan['teacher'].get('name')} "
            f"(sha256 {str(plan['teacher'].get('sha256'))[:12]}, input {plan['teacher'].get('input_size')}, "
            f"pipeline {plan['teacher'].get('pipeline')}), not {teacher_description.get('name')} "
            f"(sha256 {str(teacher_description.get('sha256'))[:12]}, input {teacher_description['input_size']}, "
            f"pipeline {teacher_description['pipeline']}). {fix}"
        )
    return plan


def _finished_shards(out_dir, split, plan):
    """Shards already written and still intact: {name: entry}, from the manifest and the progress file."""
    recorded = {}
    for path in (manifest_path(out_dir, split), _progress_path(out_dir, split)):
        if os.path.exists(path):
            recorded.update({entry["name"]: entry for entry in _read_json(path)["shards"]})
    finished = {}
    for shard in plan["shards"]:
        entry = recorded.get(shard["name"])
        path = os.path.join(out_dir, shard["name"])
        if (
            entry is not None
            and os.path.exists(path)
            and os.path.getsize(path) == entry["bytes"]
            and file_sha256(path) == entry["sha256"]
        ):
            finished[shard["name"]] = entry
    return finished


def _remove_stale_files(out_dir, split, plan, finished):
    """Delete half-written temporaries and complete-looking shards that are not verified as finished."""
    for path in glob.glob(os.path.join(out_dir, f".{split}-*.tfrecord.tmp-*")):
        os.remove(path)
    for shard in plan["shards"]:
        path = os.path.join(out_dir, shard["name"])
        if shard["name"] not in finished and os.path.exists(path):
            os.remove(path)


# ---------------------------------------------------------------------------------------------------------
# Reading: one sample -> everything its record needs, plus the teacher's input.


def _map_png(path, image_shape):
    """The human map as 8-bit grayscale PNG bytes: the file itself when it already is one."""
    saliency = read_map(path)
    if not saliency.any():
        raise ValueError(
            f"{path}: the human map is all black (no saliency at all); it would train towards nothing and score "
            "nothing. Fix the map, or remove the image with its map and fixation file"
        )
    if saliency.shape != tuple(image_shape[:2]):
        raise ValueError(
            f"{path}: map is {saliency.shape[0]}x{saliency.shape[1]} but its image is "
            f"{image_shape[0]}x{image_shape[1]}; maps must have the image's size"
        )
    with open(path, "rb") as f:
        data = f.read()
    # PNG IHDR: bit depth at byte 24, colour type at byte 25 (0 = grayscale).
    if data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[24] == 8 and data[25] == 0:
        return data
    return encode_png(saliency)


def load_inputs(sample):
    """Read one sample's files.

    Returns:
        dict: `image_bytes` (the file, unchanged; re-encoded upright as PNG if it has an EXIF orientation),
        `image` (uint8 RGB, EXIF orientation applied), `saliency_png` (b"" without a map),
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
    if exif_orientation(image_bytes) != 1:
        # Training decodes records with tf.io.decode_image, which ignores EXIF: store the upright pixels instead.
        image_bytes = encode_png(image)
    saliency_png = _map_png(sample.map_path, image.shape) if sample.map_path else b""
    fixations = np.zeros((0, 2), np.int32)
    observers, durations = np.zeros(0, np.int32), np.zeros(0, np.float32)
    if sample.fixations_path:
        fixations = np.asarray(load_fixations(sample.fixations_path, image.shape), np.int32).reshape(-1, 2)
    if isinstance(sample, nusvip.EyeSample):  # points in memory; a map built from them when there is no file
        if image.shape[:2] != (sample.height, sample.width):
            raise ValueError(f"{sample.image_path}: decoded as {image.shape[0]}x{image.shape[1]}, its header says "
                             f"{sample.height}x{sample.width}")
        fixations, observers, durations = sample.fixations, sample.observers, sample.durations
        saliency_png = saliency_png or encode_png(nusvip.load_human_map(sample))
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


# ---------------------------------------------------------------------------------------------------------
# Writing: one thread serialises records and fills shards in plan order.


class _ShardWriter:
    """Fills the planned shards in order; a shard is renamed into place and recorded once all its stems are in.

    Only the writer thread calls `add`; `abort` runs after that thread has drained.
    """

    def __init__(self, out_dir, split, plan, finished, kill_after=None, dataset=""):
        self.out_dir = out_dir
        self.split = split
        self.dataset = dataset  # stored in every record
        self.progress = dict(finished)
        self.remaining_shards = [shard for shard in plan["shards"] if shard["name"] not in finished]
        self._position = 0  # index into self.remaining_shards
        self._handled = 0  # stems of the current shard written or skipped
        self._writer = None
        self._tmp = None
        self._entry = None
        self._kill_after = kill_after
        self.finished_this_run = 0

    def _open(self):
        shard = self.remaining_shards[self._position]
        self._tmp = os.path.join(self.out_dir, f".{shard['name']}.tmp-{os.getpid()}")
        self._writer = tf.io.TFRecordWriter(self._tmp)
        self._entry = {"name": shard["name"], "count": 0, "skipped": [], "image_sizes": {}, "teacher_sizes": {},
                       "with_human_map": 0}

    def add(self, stem, record=None, image_size=None, teacher_size=None, skipped=None, has_map=False):
        """Add one stem's record (or its `skipped` entry); stems must come in plan order."""
        if self._writer is None:
            self._open()
        shard = self.remaining_shards[self._position]
        expected = shard["stems"][self._handled]
        if stem != expected:
            raise RuntimeError(f"export order broken: got {stem!r}, expected {expected!r} in {shard['name']}")
        if skipped is not None:
            self._entry["skipped"].append(skipped)
        else:
            self._writer.write(record)
            self._entry["count"] += 1
            self._entry["with_human_map"] += int(bool(has_map))
            for key, size in (("image_sizes", image_size), ("teacher_sizes", teacher_size)):
                name = f"{size[0]}x{size[1]}"
                self._entry[key][name] = self._entry[key].get(name, 0) + 1
            if self._kill_after is not None and self.finished_this_run >= self._kill_after:
                self._writer.flush()
                os._exit(KILL_EXIT_CODE)
        self._handled += 1
        if self._handled == len(shard["stems"]):
            self._finish()

    def _finish(self):
        self._writer.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        final = os.path.join(self.out_dir, self._entry["name"])
        self._entry["bytes"] = os.path.getsize(self._tmp)
        self._entry["sha256"] = file_sha256(self._tmp)
        os.replace(self._tmp, final)
        self.progress[self._entry["name"]] = self._entry
        _write_json(_progress_path(self.out_dir, self.split), {"shards": list(self.progress.values())})
        self._writer = self._tmp = self._entry = None
        self._position += 1
        self._handled = 0
        self.finished_this_run += 1

    def abort(self):
        """Drop the unfinished shard's temporary file (finished shards stay)."""
        if self._writer is not None:
            self._writer.close()
            os.remove(self._tmp)
            self._writer = self._tmp = self._entry = None


def _write_batch(writer, items):
    for item in items:
        if "skipped" in item:
            writer.add(item["stem"], skipped=item["skipped"])
            continue
        fixations = item["fixations"]
        known = len(item["observers"]) == len(fixations) and len(fixations)  # empty: unknown (SALICON)
        record = records.serialize_example(
            item["stem"], item["image_bytes"], int(item["size"][0]), int(item["size"][1]),
            saliency_png=item["saliency_png"], teacher_map=item["teacher_map"], fixations=fixations,
            observers=item["observers"] if known else None, durations=item["durations"] if known else None,
            dataset=writer.dataset,
        )
        writer.add(item["stem"], record, tuple(item["size"]), item["teacher_map"].shape[:2],
                   has_map=bool(item["saliency_png"]))


def _run_teacher(teacher, images, stems):
    if getattr(teacher, "needs_stems", False):
        return np.asarray(teacher(images, stems=stems), np.float32)
    return np.asarray(teacher(images), np.float32)


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


# ---------------------------------------------------------------------------------------------------------
# Contract teachers (teacher.loading.ContractTeacher): the original images, any sizes, no padding.


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
    from teacher.loading import resize_map, scaled_size

    stored = resize_map(density, scaled_size(image_size[0], image_size[1], map_max_side))
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


def _kill_after_from_env():
    value = os.environ.get(KILL_AFTER_SHARDS_ENV)
    return int(value) if value else None


def export_split(
    data_dir,
    split,
    teacher,
    out_dir,
    batch_size=DEFAULT_BATCH_SIZE,
    shard_size_mb=DEFAULT_SHARD_SIZE_MB,
    images_per_shard=None,
    skip_bad=False,
    verify=False,
    progress=True,
    pipeline="repo",
    input_size=None,
    dataset="salicon",
    split_file=None,
    sigma=nusvip.DEFAULT_SIGMA_PX,
    teacher_format="auto",
    teacher_max_side=None,
):
    """Export one split (or "all") to sharded distillation records with a manifest.

    Resumable: rerun with the same arguments after an interruption and finished shards are kept (see the
    module docstring). A rerun over a complete export only re-checks the shards and rewrites the manifest.

    Args:
        data_dir: the SALICON folder (2017 release or MSI-Net download layout; synthetic data has the former).
        split: "train", "val", "test" or "all" ("train" and "val").
        teacher: a teacher object, "oracle", or the path of MSI-Net weights (`teacher.loading.load_teacher`).
        out_dir: output folder, created if needed.
        batch_size: images per teacher call. Defaults to 8.
        shard_size_mb: target shard size in MB (10^6 bytes), used for a new plan. Defaults to 150.
        images_per_shard: images per shard for a new plan, overriding `shard_size_mb`.
        skip_bad: skip unreadable or inconsistent images (listed in the manifest) instead of stopping.
        verify: reread every shard at the end (`verify_split`).
        progress: show a progress bar (images/s and ETA).
        pipeline: the teacher's preprocessing, "repo" (the author's TF1 pipeline, default) or "hub".
        input_size: (H, W) overriding the teacher's input size (e.g. small sizes in tests).
        dataset: the data set in `data_dir`, one of `datasets.sources.DATASETS` ("salicon" by default; "images"
            is a folder of images without human data, exported with the teacher maps only, whatever `split`).
        split_file: a split JSON overriding the data set's stored split (`datasets/splits/<name>.json`).
        sigma: Gaussian sigma in pixels for human maps built from fixation points (OSIE and other NUS-VIP
            sets without `maps/`; `datasets.nusvip`).
        teacher_format: how a teacher path loads: "auto" (default), "msinet" or "contract".
        teacher_max_side: a contract teacher's largest input side (None: each image at its own size).

    Returns:
        The manifest dict (for "all": {split: manifest}; SALICON's "all" is train and val, the other data
        sets' train, val and test).

    Raises:
        FileNotFoundError: missing data folder or teacher file (the message says what to download).
        ValueError: an unreadable or inconsistent image (naming the file) without `skip_bad`; a plan in
            `out_dir` made from other data or another teacher; a failed verification.
    """
    if split == "all":
        teacher = resolve_teacher(teacher, data_dir, input_size, pipeline, teacher_format, teacher_max_side)
        return {
            name: export_split(data_dir, name, teacher, out_dir, batch_size, shard_size_mb, images_per_shard,
                               skip_bad, verify, progress, pipeline, dataset=dataset, split_file=split_file,
                               sigma=sigma)
            for name in (ALL_SPLITS if dataset == "salicon" else sources.split_names(dataset))
        }
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    samples = _list_samples(data_dir, split, dataset, split_file, sigma)
    _report_other_files(samples)
    teacher = resolve_teacher(teacher, data_dir, input_size, pipeline, teacher_format, teacher_max_side)
    if getattr(teacher, "pipeline", pipeline) != pipeline:
        raise ValueError(
            f"the teacher was made for the {teacher.pipeline!r} preprocessing pipeline, the export uses {pipeline!r}"
        )
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    description = _teacher_description(teacher, pipeline)
    plan, finished = _load_or_make_plan(out_dir, split, samples, description, shard_size_mb, images_per_shard)
    _remove_stale_files(out_dir, split, plan, finished)

    by_stem = {sample.stem: sample for sample in samples}
    todo = [by_stem[stem] for shard in plan["shards"] if shard["name"] not in finished for stem in shard["stems"]]
    name = sources.dataset_name(dataset, data_dir)
    writer = _ShardWriter(out_dir, split, plan, finished, _kill_after_from_env(), dataset=name)
    if todo:
        _stream(todo, teacher, writer, batch_size, skip_bad, progress, pipeline, plan)

    manifest = _manifest(data_dir, split, plan, writer.progress, description, pipeline)
    manifest.update(_human_data(name, samples, manifest))
    _write_json(manifest_path(out_dir, split), manifest)
    if os.path.exists(_progress_path(out_dir, split)):
        os.remove(_progress_path(out_dir, split))
    if verify:
        verify_split(out_dir, split)
    return manifest


def _stream(todo, teacher, writer, batch_size, skip_bad, progress, pipeline, plan):
    """Run the teacher over `todo` in batches while a thread writes the previous batches."""
    bar = None
    if progress:
        import keras

        kept = plan["num_shards"] - len(writer.remaining_shards)
        print(f"{plan['split']}: exporting {len(todo)} of {plan['num_images']} images into "
              f"{len(writer.remaining_shards)} shards" + (f" ({kept} finished shards kept)" if kept else ""))
        bar = keras.utils.Progbar(len(todo), unit_name="image", stateful_metrics=["img/s"])
    count, start = 0, time.monotonic()
    pending = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as executor:
        try:
            contract = _is_contract(teacher)
            batches = (_contract_batches(todo, batch_size) if contract
                       else _input_dataset(todo, teacher.input_size, pipeline, batch_size))
            for batch in batches:
                items, error = (_contract_batch_items if contract else _batch_items)(batch, todo, teacher, skip_bad)
                pending.append(executor.submit(_write_batch, writer, items))
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
                    bar.update(count, values=[("img/s", count / max(time.monotonic() - start, 1e-9))])
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            concurrent.futures.wait(pending)
            writer.abort()
            raise


def _human_data(name, samples, manifest):
    """The manifest's data set entries: name, images with and without a human map, where the maps come from."""
    with_map = sum(entry.get("with_human_map", 0) for entry in manifest["shards"])
    eye = [sample for sample in samples if isinstance(sample, nusvip.EyeSample)]
    if eye and eye[0].map_path:
        maps = "the data set's own maps (maps/)"
    elif eye:
        maps = (f"built from the fixation points (datasets.nusvip.fixation_density: rounded, clamped, Gaussian "
                f"sigma {eye[0].sigma:g} px, window ceil(7 sigma), divided by the maximum)")
    else:
        maps = "the data set's map files" if with_map else "none"
    return {
        "dataset": name,
        "num_with_human_map": with_map,
        "num_without_human_map": manifest["num_images"] - with_map,
        "human_maps": maps,
        "fixations": {"images_with_observers": len(eye), "points": int(sum(len(s.fixations) for s in eye)),
                      "clamped_points": int(sum(s.num_outside for s in eye))},
    }


def _manifest(data_dir, split, plan, progress, description, pipeline):
    shards = [progress[shard["name"]] for shard in plan["shards"]]
    image_sizes, teacher_sizes = collections.Counter(), collections.Counter()
    for entry in shards:
        image_sizes.update(entry["image_sizes"])
        teacher_sizes.update(entry["teacher_sizes"])
    skipped = [item for entry in shards for item in entry["skipped"]]
    return {
        "format_version": FORMAT_VERSION,
        "split": split,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data_dir": os.path.abspath(os.fspath(data_dir)),
        "num_images": sum(entry["count"] for entry in shards),
        "num_listed": plan["num_images"],
        "num_skipped": len(skipped),
        "num_shards": plan["num_shards"],
        "images_per_shard": plan["images_per_shard"],
        "plan": os.path.basename(_plan_path("", split)),
        "teacher": description,
        "preprocessing": _contract_preprocessing(description) if _is_contract(description) else {
            "pipeline": pipeline,
            "input_size": description["input_size"],
            "pad_value": preprocessing.PAD_VALUES[pipeline],
            "teacher_map": "teacher output at its input size with the padding cropped (teacher.preprocessing"
                           ".crop_padding), stored as 16-bit PNG round(map * 65535)",
        },
        "sizes": {"image": dict(sorted(image_sizes.items())), "teacher": dict(sorted(teacher_sizes.items()))},
        "shards": [
            {key: entry[key] for key in ("name", "count", "bytes", "sha256", "skipped", "image_sizes", "teacher_sizes",
                                         "with_human_map") if key in entry}
            for entry in shards
        ],
        "skipped": skipped,
    }


def _shard_stems(path):
    """The stems of a shard's records, in order; TFRecord CRCs are checked while reading."""
    spec = {"stem": records.FEATURES["stem"]}
    ds = tf.data.TFRecordDataset([path]).batch(256).map(lambda x: tf.io.parse_example(x, spec)["stem"])
    return [stem.decode() for batch in ds for stem in batch.numpy()]


def verify_split(out_dir, split):
    """Reread every shard of `split` and check it against its manifest.

    Checks: each listed shard exists with its bytes and sha256, its records parse (CRCs included) and their
    count matches, no unlisted shard files, every stem appears exactly once, and the stems are the plan's
    minus the skipped ones.

    Returns:
        The manifest dict.

    Raises:
        FileNotFoundError: without a manifest (the export has not finished).
        ValueError: listing every problem found.
    """
    out_dir = os.fspath(out_dir)
    path = manifest_path(out_dir, split)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no manifest; the export of '{split}' has not finished. Run `python export_teacher.py "
            f"--split {split} --out {out_dir}` (it resumes an interrupted export)"
        )
    manifest = _read_json(path)
    problems, seen = [], collections.Counter()
    for entry in manifest["shards"]:
        shard_path = os.path.join(out_dir, entry["name"])
        if not os.path.exists(shard_path):
            problems.append(f"{shard_path}: missing")
            continue
        if file_sha256(shard_path) != entry["sha256"]:
            problems.append(f"{shard_path}: sha256 differs from the manifest (file changed or corrupt)")
        try:
            stems = _shard_stems(shard_path)
        except tf.errors.OpError as e:
            problems.append(f"{shard_path}: unreadable records ({e.message.splitlines()[0]})")
            continue
        if len(stems) != entry["count"]:
            problems.append(f"{shard_path}: {len(stems)} records, the manifest says {entry['count']}")
        seen.update(stems)
    listed = {entry["name"] for entry in manifest["shards"]}
    extra = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out_dir, f"{split}-*-of-*.tfrecord")))
    problems += [f"{os.path.join(out_dir, name)}: shard not in the manifest" for name in extra if name not in listed]
    duplicates = sorted(stem for stem, n in seen.items() if n > 1)
    if duplicates:
        problems.append(f"{len(duplicates)} stems appear more than once, e.g. {duplicates[:3]}")
    if sum(seen.values()) != manifest["num_images"]:
        problems.append(f"{sum(seen.values())} records in the shards, the manifest says {manifest['num_images']}")
    plan_file = _plan_path(out_dir, split)
    if os.path.exists(plan_file):
        skipped = {item["stem"] for item in manifest["skipped"]}
        expected = {stem for shard in _read_json(plan_file)["shards"] for stem in shard["stems"]} - skipped
        if set(seen) != expected:
            missing, unexpected = sorted(expected - set(seen)), sorted(set(seen) - expected)
            problems.append(f"stems differ from the plan: missing {missing[:3]} ({len(missing)}), "
                            f"unexpected {unexpected[:3]} ({len(unexpected)})")
    if problems:
        raise ValueError(f"{out_dir}: verification of '{split}' failed: " + "; ".join(problems))
    return manifest
