"""The sharded, verified, resumable record writer behind `export_teacher.py`.

In `out_dir`, for a split:

* `<split>.plan.json` first: which stems go into which shard (sorted stems, balanced contiguous chunks) and the
  source of the labels (the teacher). A rerun reuses it, so an interrupted export resumes into the same shards.
* `<split>-NNNNN-of-NNNNN.tfrecord`: records in the `datasets.records` schema, about `shard_size_mb` each. A
  shard is written under a hidden temporary name and renamed when complete; after the rename its count and
  sha256 go into `<split>.progress.json`.
* `<split>.json` last, the manifest: counts, per-shard count/bytes/sha256, the teacher, the preprocessing, image
  and teacher-map sizes, and the skipped files. `<split>.progress.json` is then removed.

Rerun after a kill: shards whose file still matches its recorded sha256 are kept, the unfinished shard and
anything after it are redone, and the result holds every image exactly once. An image removed after a failed
run (a bad file) is dropped from the unfinished shards; a plan without any finished shard is simply replaced.

An export deletes only shards named in its own plan. A folder holding another export's records (a manifest or
shards without this split's plan, a plan made from another data folder, or shard files no plan lists) is
refused with the reason, never cleaned.
What fills the records (a teacher run over samples) is `teacher.labelling`; this module knows nothing of models.
"""

import collections
import datetime
import glob
import json
import os
import sys

import numpy as np
import tensorflow as tf

from datasets import records
from datasets.io import atomic_write, file_sha256
from datasets.salicon import load_fixations

FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE_MB = 150
# A smooth [0, 1] map as a 16-bit PNG takes about 0.8 of its raw 2 bytes/pixel (measured on blurred maps).
TEACHER_PNG_RATIO = 0.8
RECORD_OVERHEAD_BYTES = 200  # keys, lengths and CRCs of one record
FIXATION_BYTES = 4  # two varints of 1-2 bytes each
ESTIMATE_SAMPLES = 16
# Test hook: the process dies (os._exit) after finishing this many shards, leaving the next one half-written.
KILL_AFTER_SHARDS_ENV = "SALIENCY_KD_EXPORT_KILL_AFTER_SHARDS"
KILL_EXIT_CODE = 75


def plan_path(out_dir, split):
    return os.path.join(out_dir, f"{split}.plan.json")


def progress_path(out_dir, split):
    return os.path.join(out_dir, f"{split}.progress.json")


def manifest_path(out_dir, split):
    """The manifest of `split` in `out_dir`: `<out_dir>/<split>.json`."""
    return os.path.join(os.fspath(out_dir), f"{split}.json")


def write_json(path, value):
    with atomic_write(path, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def same_source(a, b):
    keys = ("name", "sha256", "input_size", "pipeline", "max_input_side", "map_max_side")
    return all(a.get(k) == b.get(k) for k in keys)


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


def make_plan(samples, split, teacher_description, shard_size_mb=DEFAULT_SHARD_SIZE_MB, images_per_shard=None,
              source=None):
    """The shard plan: sorted stems in balanced contiguous chunks of about `shard_size_mb` megabytes.

    Args:
        samples: the split's samples (`datasets.sample.Sample`).
        split: the split name (used in shard names).
        teacher_description: the teacher entry recorded with the plan.
        shard_size_mb: target shard size in MB (10^6 bytes), from `estimate_record_bytes`.
        images_per_shard: overrides the estimate (tests, or to force a shard count).
        source: where the samples come from, {"data_dir": absolute folder, "dataset": name, "human_maps": how
            the human maps are made}, recorded so that a later export into the same folder can tell its own records
            from another export's, and resumes only with the same human maps.

    Returns:
        A JSON-ready dict with `shards`: [{"name", "stems"}] in order.
    """
    images_per_shard_arg = images_per_shard
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
        "requested": {"images_per_shard": None if images_per_shard_arg is None else int(images_per_shard_arg),
                      "shard_size_mb": shard_size_mb},
        "teacher": teacher_description,
        **({"source": dict(source)} if source else {}),
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


def shard_files(out_dir, split):
    """The names of the `<split>-NNNNN-of-NNNNN.tfrecord` files in `out_dir`, sorted."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(out_dir, f"{split}-*-of-*.tfrecord")))


def _start_over(out_dir, split):
    return (f"delete {os.path.join(out_dir, split)}.* and {os.path.join(out_dir, split)}-*.tfrecord yourself to "
            "start over, or choose another --out")


def _same_folder(a, b):
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def _refuse_another_export(out_dir, split, plan, current, source):
    """Refuse a plan (with records on disk) that another export made: other data from another folder."""
    recorded = dict(plan.get("source") or {})
    manifest_file = manifest_path(out_dir, split)
    if not recorded and os.path.exists(manifest_file):  # plans written before the source was recorded
        manifest = read_json(manifest_file)
        recorded = {"data_dir": manifest.get("data_dir"), "dataset": manifest.get("dataset", "salicon")}
    planned = {stem for shard in plan["shards"] for stem in shard["stems"]}
    if planned == set(current):
        return  # the same images (a data folder moved, say): the plan's own checks apply
    if recorded.get("data_dir") and source and source.get("data_dir"):
        other = not _same_folder(recorded["data_dir"], source["data_dir"]) or (
            recorded.get("dataset") not in (None, source.get("dataset")))
    else:
        other = not planned & set(current)  # nothing recorded: no image in common
    if not other:
        return
    on_disk = shard_files(out_dir, split)
    if not on_disk and not os.path.exists(manifest_file):
        return  # an abandoned plan of nothing: replaced like any plan without finished shards
    theirs = f"{recorded.get('dataset') or 'data'} from {recorded.get('data_dir') or 'another folder'}"
    ours = f"{source.get('dataset')} from {source.get('data_dir')}" if source else "this data"
    raise ValueError(
        f"{out_dir} holds the '{split}' records of another export ({theirs}: {len(planned)} images, "
        f"{len(on_disk)} shard file(s)), not of {source.get('data_dir') if source else 'this data'} ({ours}); "
        f"an export never deletes or mixes with records it did not write. Choose another --out for this export, "
        f"or {_start_over(out_dir, split)}"
    )


def _refuse_foreign_shards(out_dir, split, names, why):
    """Refuse `<split>-*-of-*.tfrecord` files that are not `names` (the plan's): they are not this export's."""
    foreign = [name for name in shard_files(out_dir, split) if name not in names]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ValueError(
            f"{os.path.join(out_dir, foreign[0])}{more}: a '{split}' shard that the plan {why} does not list; an "
            f"export never deletes or mixes with records it did not write. Move it away, or choose another --out"
        )


def load_or_make_plan(out_dir, split, samples, teacher_description, shard_size_mb, images_per_shard, source=None):
    """The split's plan and its finished shards ({name: entry}).

    A plan without any finished shard is simply replaced when the data or teacher changed (e.g. a first run that
    stopped at a bad file). With finished shards, images removed since (a bad file deleted) are dropped from the
    unfinished shards, so the rerun resumes; new images, another teacher or other human maps (`source`'s
    `human_maps`, e.g. another sigma) are refused.

    Only the shards a plan names are ever deleted. Records this export did not plan are refused (ValueError,
    saying why and what to do): a manifest or shards of `split` without its plan, a plan (with records) made by
    an export of other images from another `source` folder, and shard files that the plan does not list.
    """
    path = plan_path(out_dir, split)
    current = sorted(sample.stem for sample in samples)
    stale = []
    if os.path.exists(path):
        plan = read_json(path)
        _refuse_another_export(out_dir, split, plan, current, source)
        ours = {shard["name"] for shard in plan["shards"]}
        _refuse_foreign_shards(out_dir, split, ours, f"{path}")
        finished = finished_shards(out_dir, split, plan)
        planned = [stem for shard in plan["shards"] for stem in shard["stems"]]
        if finished or (planned == current and same_source(plan["teacher"], teacher_description)
                        and _same_human_maps(plan, source)):
            plan = _check_plan(path, plan, finished, current, teacher_description, out_dir, split, source)
            _report_kept_shard_size(path, plan, shard_size_mb, images_per_shard, out_dir, split)
            return plan, finished
        stale = sorted(ours)  # no shard was finished: nothing of this plan to keep
    else:
        on_disk = shard_files(out_dir, split)
        if on_disk or os.path.exists(manifest_path(out_dir, split)):
            made = ""
            if os.path.exists(manifest_path(out_dir, split)):
                manifest = read_json(manifest_path(out_dir, split))
                made = (f", made from {manifest.get('dataset', 'salicon')} in {manifest.get('data_dir')} with "
                        f"{manifest.get('num_images')} images")
            raise ValueError(
                f"{out_dir} already holds '{split}' records ({len(on_disk)} shard file(s)"
                f"{', the manifest ' + split + '.json' if os.path.exists(manifest_path(out_dir, split)) else ''}"
                f"{made}) but no {split}.plan.json, so no export in this folder planned them; an export never "
                f"deletes records it did not write. Choose another --out, or {_start_over(out_dir, split)}"
            )
    for name in stale:
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    if os.path.exists(progress_path(out_dir, split)):
        os.remove(progress_path(out_dir, split))
    plan = make_plan(samples, split, teacher_description, shard_size_mb, images_per_shard, source)
    write_json(path, plan)
    return plan, {}


def _same_human_maps(plan, source):
    """Whether this export makes its human maps as the plan's did (e.g. the same Gaussian sigma for maps built
    from fixation points); true where either side does not say (plans from before it was recorded)."""
    recorded, current = (plan.get("source") or {}).get("human_maps"), (source or {}).get("human_maps")
    return None in (recorded, current) or recorded == current


def _check_plan(path, plan, finished, current, teacher_description, out_dir, split, source=None):
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
        write_json(path, plan)
    if not same_source(plan["teacher"], teacher_description):
        raise ValueError(
            f"{path}: the finished shards come from teacher {plan['teacher'].get('name')} "
            f"(sha256 {str(plan['teacher'].get('sha256'))[:12]}, input {plan['teacher'].get('input_size')}, "
            f"pipeline {plan['teacher'].get('pipeline')}), not {teacher_description.get('name')} "
            f"(sha256 {str(teacher_description.get('sha256'))[:12]}, input {teacher_description['input_size']}, "
            f"pipeline {teacher_description['pipeline']}). {fix}"
        )
    if not _same_human_maps(plan, source):
        raise ValueError(
            f"{path}: the finished shards hold human maps {plan['source']['human_maps']}, not "
            f"{source['human_maps']}; the records would mix two kinds of human map. Rerun with the first run's "
            f"settings (e.g. its --sigma) to resume, or {fix}"
        )
    return plan


def _report_kept_shard_size(path, plan, shard_size_mb, images_per_shard, out_dir, split):
    """Say on stderr when a rerun asks for other shards than the plan it resumes (or re-checks) has: the plan wins."""
    requested = plan.get("requested")
    if images_per_shard is not None:
        differs = int(images_per_shard) != plan["images_per_shard"]
        asked = f"--images-per-shard {images_per_shard}"
    else:
        # Plans from before `requested` was recorded: only an explicit --images-per-shard can be compared.
        differs = requested is not None and (requested.get("images_per_shard") is not None
                                             or requested.get("shard_size_mb") != shard_size_mb)
        asked = f"--shard-size-mb {shard_size_mb:g}"
    if differs:
        print(f"export: {path}: keeps its {plan['num_shards']} shards of up to {plan['images_per_shard']} images "
              f"planned by the first run; {asked} is not applied to an export that already has finished shards. "
              f"To reshard, {_start_over(out_dir, split)}", file=sys.stderr)


def finished_shards(out_dir, split, plan):
    """Shards already written and still intact: {name: entry}, from the manifest and the progress file."""
    recorded = {}
    for path in (manifest_path(out_dir, split), progress_path(out_dir, split)):
        if os.path.exists(path):
            recorded.update({entry["name"]: entry for entry in read_json(path)["shards"]})
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


def remove_stale_files(out_dir, split, plan, finished):
    """Delete half-written temporaries and complete-looking shards that are not verified as finished."""
    for path in glob.glob(os.path.join(out_dir, f".{split}-*.tfrecord.tmp-*")):
        os.remove(path)
    for shard in plan["shards"]:
        path = os.path.join(out_dir, shard["name"])
        if shard["name"] not in finished and os.path.exists(path):
            os.remove(path)


class ShardWriter:
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

    @property
    def handled(self):
        """How many stems of the remaining shards this run has written or skipped, in plan order (after a stop,
        the position of the stem it stopped at)."""
        return sum(len(shard["stems"]) for shard in self.remaining_shards[:self._position]) + self._handled

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
        write_json(progress_path(self.out_dir, self.split), {"shards": list(self.progress.values())})
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


def write_batch(writer, items):
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


def kill_after_from_env():
    value = os.environ.get(KILL_AFTER_SHARDS_ENV)
    return int(value) if value else None


def build_manifest(data_dir, split, plan, progress, description, preprocessing):
    """The split's manifest from its plan and finished shards; `preprocessing` is the teacher side's entry."""
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
        "plan": os.path.basename(plan_path("", split)),
        "teacher": description,
        "preprocessing": preprocessing,
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
    manifest = read_json(path)
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
    plan_file = plan_path(out_dir, split)
    if os.path.exists(plan_file):
        skipped = {item["stem"] for item in manifest["skipped"]}
        expected = {stem for shard in read_json(plan_file)["shards"] for stem in shard["stems"]} - skipped
        if set(seen) != expected:
            missing, unexpected = sorted(expected - set(seen)), sorted(set(seen) - expected)
            problems.append(f"stems differ from the plan: missing {missing[:3]} ({len(missing)}), "
                            f"unexpected {unexpected[:3]} ({len(unexpected)})")
    if problems:
        raise ValueError(f"{out_dir}: verification of '{split}' failed: " + "; ".join(problems))
    return manifest
