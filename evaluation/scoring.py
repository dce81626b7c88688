"""Score saliency models on a split of distillation records: the library behind evaluate.py.

Every model is scored the same way, at the ORIGINAL image resolution against the human map and fixations of
each record. The one resize involved is documented per source:

- the teacher's maps stored in the records (teacher resolution, padding removed) are resized to the image size
  with `datasets.geometry.resize_map` (bilinear, `cv2.INTER_LINEAR`; area averaging if the map is larger);
- a student (run folder or SavedModel) and a teacher file predict at the image size themselves (their own
  resize back, bilinear, inside `inference.predictors`).

KLD, CC and SIM compare with the human map; NSS, AUC-Judd, AUC-Borji and sAUC use the fixations when a record
has any (sAUC negatives: the union of the fixations of `sauc_other` other images of the same data set, seeded).
Images are grouped by the data set their record names (`dataset`), one table each. With `densities_dir` (the
synthetic generator's true densities), KLD and CC against the true density are added.

Each table has two reference rows, a floor and a ceiling for every fixation score:

- **centre bias**: one Gaussian fitted (mean and covariance of the fixations in coordinates normalised by the
  image's height and width) to all fixations of the data set's *training* split, the same map for every image;
- **inter-observer**: each observer's fixations predicted by the map of the other observers (their fixations
  as a binary map blurred with a Gaussian of `observer_sigma` px, the lab's map recipe
  `datasets.nusvip.fixation_density`; 24 px, which reproduces OSIE's and MIT1003's maps), averaged over observers,
  as the MIT benchmark's human baseline. Only the fixation metrics: the human map itself is made from all
  observers, so a distribution score against it would not be a ceiling but a tautology.
"""

import json
import os
import time

import numpy as np

from datasets import nusvip, records
from datasets.folders import path_list
from datasets.geometry import resize_map
from datasets.io import atomic_write
from metrics import saliency

DISTRIBUTION_METRICS = ("kld", "cc", "sim")
FIXATION_METRICS = ("nss", "auc_judd", "auc_borji", "sauc")
TRUTH_METRICS = ("kld_true", "cc_true")
COLUMNS = ("kld", "cc", "sim", "nss", "auc_judd", "auc_borji", "sauc", "kld_true", "cc_true")
TEACHER_RECORDS = "teacher (records)"
CENTRE_BIAS = "centre bias (train fixations)"
INTER_OBSERVER = "inter-observer (leave one out)"
REFERENCE_ROWS = (CENTRE_BIAS, INTER_OBSERVER)


def load_examples(records_dir, split, max_images=None):
    """Decoded records of a split as numpy dicts (stem, dataset, image, saliency, has_saliency, teacher,
    fixations, observers)."""
    files = records.list_shards(records_dir, split)
    ds = records.read_records(files)
    if max_images:
        ds = ds.take(max_images)
    examples = []
    for ex in ds.as_numpy_iterator():
        examples.append(
            {
                "stem": ex["stem"].decode(),
                "dataset": ex["dataset"].decode() or os.path.basename(os.path.normpath(os.fspath(records_dir))),
                "records_dir": os.fspath(records_dir),
                "image": ex["image"],
                "saliency": ex["saliency"][:, :, 0].astype(np.float64),
                "has_saliency": bool(ex["has_saliency"]),
                "teacher": ex["teacher"][:, :, 0] if ex["has_teacher"] else None,
                "fixations": ex["fixations"],
                "observers": ex["observers"],
            }
        )
    if not examples:
        raise ValueError(f"{records_dir}: split '{split}' has no records")
    return examples


def load_fixations(records_dir, split):
    """Every record's fixations and size, without decoding images: [(points (N, 2), (H, W))]."""
    keys = ("image/height", "image/width", "fixations/row", "fixations/col")
    spec = {k: records.FEATURES[k] for k in keys}
    import tensorflow as tf

    out = []
    for serialized in tf.data.TFRecordDataset(records.list_shards(records_dir, split)):
        ex = tf.io.parse_single_example(serialized, spec)
        points = np.stack([ex["fixations/row"].values.numpy(), ex["fixations/col"].values.numpy()], axis=1)
        out.append((points, (int(ex["image/height"]), int(ex["image/width"]))))
    return out


def load_density(path):
    """A true density `<stem>.npy` (`--densities-dir`) as float64 (H, W), checked; never unpickled.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file when it is not a plain numeric 2-D array (a pickled object array is refused
            unread), or has NaN/inf, negative values or no mass.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no true density for this record; --densities-dir holds one <stem>.npy "
                                "per image (datasets.synthetic writes them)")
    try:
        density = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a plain .npy array of numbers ({' '.join(str(e).split())}); a true density is "
                         "a float array saved with np.save (pickled objects are never loaded)") from e
    if not isinstance(density, np.ndarray) or density.dtype == object:  # an .npz archive, say
        raise ValueError(f"{path}: not a plain .npy array; a true density is a float array saved with np.save")
    if density.ndim != 2 or not np.issubdtype(density.dtype, np.number) or not density.size:
        raise ValueError(f"{path}: a true density is a 2-D numeric array (H, W); this one is {density.dtype} of shape "
                         f"{density.shape}")
    density = density.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(density)))
    if bad:
        raise ValueError(f"{path}: the true density has {bad} NaN or inf value(s) of {density.size}; regenerate it "
                         "(python -m datasets.synthetic) or remove --densities-dir")
    if density.min() < 0 or density.sum() <= 0:
        raise ValueError(f"{path}: the true density must be non-negative with a positive sum (min "
                         f"{density.min():.4g}, sum {density.sum():.4g}); regenerate it or remove --densities-dir")
    return density


def fit_centre_bias(fixations):
    """Mean and covariance of fixations in normalised image coordinates ((row + 0.5) / H, (col + 0.5) / W).

    Args:
        fixations: [(points (N, 2) 0-based (row, col), (H, W))], e.g. from `load_fixations` of a training split.

    Returns:
        (mean (2,), covariance (2, 2)).

    Raises:
        ValueError: fewer than 3 fixations in all.
    """
    coords = [(np.asarray(p, np.float64) + 0.5) / np.asarray(shape, np.float64) for p, shape in fixations if len(p)]
    coords = np.concatenate(coords) if coords else np.zeros((0, 2))
    if len(coords) < 3:
        raise ValueError(f"fit_centre_bias: needs at least 3 fixations, got {len(coords)}")
    return coords.mean(axis=0), np.cov(coords, rowvar=False)


def centre_bias_map(mean, covariance, shape):
    """The fitted Gaussian evaluated at the pixel centres of an image of `shape` (H, W), float64."""
    height, width = shape
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1) - np.asarray(mean)
    precision = np.linalg.inv(np.asarray(covariance))
    return np.exp(-0.5 * np.einsum("...i,ij,...j->...", grid, precision, grid))


def fixation_scores(prediction, points, other_map=None, seed=0):
    """NSS, AUC-Judd, AUC-Borji and (with `other_map`) sAUC of a prediction for a set of fixation points."""
    fixation_map = saliency.fixation_map_from_points(points, prediction.shape)
    out = {
        "nss": saliency.nss(prediction, fixation_map),
        "auc_judd": saliency.auc_judd(prediction, fixation_map, seed=seed),
        "auc_borji": saliency.auc_borji(prediction, fixation_map, seed=seed),
    }
    if other_map is not None:
        out["sauc"] = saliency.sauc(prediction, fixation_map, other_map, seed=seed)
    return out


def inter_observer_scores(example, other_map=None, sigma=None, seed=0):
    """Fixation scores of each observer's fixations under the map of all other observers, averaged over observers.

    Returns None when the record has fewer than two observers with fixations (or none known).
    """
    observers = np.asarray(example["observers"])
    known = sorted(set(observers[observers >= 0].tolist()))
    if len(known) < 2:
        return None
    shape = example["saliency"].shape
    sigma = nusvip.DEFAULT_SIGMA_PX if sigma is None else sigma
    per_observer = []
    for observer in known:
        mine = observers == observer
        prediction = nusvip.fixation_density(example["fixations"][~mine], shape, sigma).astype(np.float64)
        per_observer.append(fixation_scores(prediction, example["fixations"][mine], other_map, seed))
    return {k: float(np.mean([s[k] for s in per_observer])) for k in per_observer[0]}


def _other_maps(examples, n_other, seed):
    """Per image, the union of the fixations of `n_other` other random images of the same data set (sAUC
    negatives), or None."""
    rng = np.random.default_rng(seed)
    others = []
    for i, ex in enumerate(examples):
        pool = [j for j, other in enumerate(examples)
                if j != i and len(other["fixations"]) and other.get("dataset") == ex.get("dataset")]
        if not len(ex["fixations"]) or not pool:
            others.append(None)
            continue
        chosen = rng.choice(pool, size=min(n_other, len(pool)), replace=False)
        shape = np.array(ex["saliency"].shape)
        # Other images may have other sizes: rescale their fixations to this image.
        points = np.concatenate([
            np.clip(np.round(examples[j]["fixations"] * shape / examples[j]["saliency"].shape), 0, shape - 1)
            for j in chosen
        ])
        others.append(saliency.fixation_map_from_points(points.astype(int), tuple(shape)))
    return others


def _has_human_data(example):
    """Whether a record has anything human to score against: a human map with mass, or fixations."""
    return bool(example["has_saliency"] and example["saliency"].sum() > 0) or len(example["fixations"]) > 0


def score_map(prediction, example, other_map=None, true_density=None, seed=0):
    """All metrics of one prediction (2-D, at the image size) for one example; missing references are skipped."""
    out = {}
    if example["has_saliency"] and example["saliency"].sum() > 0:
        gt = example["saliency"]
        out["kld"] = saliency.kld(prediction, gt)
        out["cc"] = saliency.cc(prediction, gt)
        out["sim"] = saliency.sim(prediction, gt)
    if len(example["fixations"]):
        out.update(fixation_scores(prediction, example["fixations"], other_map, seed))
    if true_density is not None:
        out["kld_true"] = saliency.kld(prediction, true_density)
        out["cc_true"] = saliency.cc(prediction, true_density)
    return out


def _means(per_image):
    return {k: float(np.mean([s[k] for s in per_image if k in s])) for k in COLUMNS
            if any(k in s for s in per_image)}


def _centre_bias(examples, split, centre_bias_split):
    """The fitted centre-bias Gaussian of the examples' records folders' training split, or None (with why)."""
    fixations = []
    for directory in sorted({ex["records_dir"] for ex in examples}):
        try:
            fixations += load_fixations(directory, centre_bias_split)
        except FileNotFoundError:
            return None, f"no '{centre_bias_split}' records in {directory} to fit the centre bias on"
    if centre_bias_split == split:
        return None, f"the centre bias must be fitted on another split than the scored '{split}'"
    try:
        return fit_centre_bias(fixations), None
    except ValueError as e:
        return None, str(e)


def evaluate(records_dir, split, models=None, include_teacher=True, densities_dir=None, max_images=None,
             sauc_other=10, seed=0, progress=True, references=True, centre_bias_split="train",
             observer_sigma=None, teacher_format="auto"):
    """Score the teacher maps in the records, each model and the reference rows on one split.

    Args:
        records_dir: folder of distillation records, or a list of folders (e.g. MIT1003 and OSIE).
        split: the split to score ("val", or "test" for the real data sets' fixed splits).
        models: {name: path or Predictor}; paths are loaded with `inference.predictors.load_predictor`.
        include_teacher: also score the teacher maps stored in the records.
        densities_dir: folder of true densities `<stem>.npy` (synthetic data) for `kld_true` / `cc_true`.
        max_images: score only the first N records of each folder (None: all; otherwise >= 1).
        sauc_other: number of other images whose fixations are sAUC's negatives.
        seed: AUC-Judd jitter and sAUC / AUC-Borji sampling.
        progress: show the progress per model on stderr (a bar on a terminal, else plain lines).
        references: add the centre-bias and inter-observer rows where the records allow them.
        centre_bias_split: the split whose fixations the centre bias is fitted on.
        observer_sigma: blur (px) of the inter-observer maps; None = `datasets.nusvip.DEFAULT_SIGMA_PX` (24).
        teacher_format: how teacher paths in `models` load ("auto", "msinet" or "contract").

    Returns:
        {"split", "num_images", "records_dir", "models": {name: {"metrics": {metric: mean}, "num_params",
        "images_per_s"}}, "datasets": {name: {"num_images", "models", "notes"}}}. The top-level "models" are
        over all images; "datasets" holds one such table per data set, reference rows included.

    Raises:
        ValueError: a folder given twice, two folders holding the same images of a data set, or a folder whose
            records have no human data (no human map, no fixation) and no `densities_dir`: there would be nothing
            to score against.
    """
    records_dirs = path_list(records_dir)
    records.check_distinct_folders(records_dirs)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be None or >= 1 (--max-images). Received: max_images={max_images}")
    examples = _load_scorable_examples(records_dirs, split, max_images, densities_dir)
    others = _other_maps(examples, sauc_other, seed)
    truths = [None] * len(examples)
    if densities_dir:
        truths = [load_density(os.path.join(densities_dir, ex["stem"] + ".npy")) for ex in examples]
    groups = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex["dataset"], []).append(i)

    results = {"split": split, "num_images": len(examples), "records_dir": os.fspath(records_dirs[0]),
               "records_dirs": [os.fspath(d) for d in records_dirs], "models": {},
               "datasets": {name: {"num_images": len(idx), "models": {}, "notes": []} for name, idx in groups.items()}}
    for name, predictor in _map_sources(examples, models, include_teacher, teacher_format).items():
        per_image, seconds = _score_source(name, predictor, examples, others, truths, seed, progress)
        _add_model_rows(results, groups, name, predictor, per_image, seconds)
    if references:
        for dataset, indices in groups.items():
            _add_references(results["datasets"][dataset], [examples[i] for i in indices],
                            [others[i] for i in indices], split, centre_bias_split, observer_sigma, seed)
    return results


def _load_scorable_examples(records_dirs, split, max_images, densities_dir):
    """The examples of `split` in every folder; a folder without human data (and no densities) is an error, and
    so is an image of a data set that two folders hold (e.g. exports of one data set by two teachers): its table
    would score the image twice and average the two folders' teacher maps in one row."""
    examples, held_by = [], {}
    for directory in records_dirs:
        loaded = load_examples(directory, split, max_images)
        if not densities_dir and not any(_has_human_data(ex) for ex in loaded):
            raise ValueError(
                f"{directory}: the '{split}' records have no human data (no human map and no fixation in "
                f"{len(loaded)} records) to score against: teacher-only records (export_teacher.py --images) can "
                "teach variant B but not be evaluated. Evaluate records of a data set with eye-tracking data"
            )
        for ex in loaded:
            other = held_by.setdefault((ex["dataset"], ex["stem"]), directory)
            if other != directory:
                raise ValueError(
                    f"{other} and {directory} both hold image {ex['stem']} of {ex['dataset']} ('{split}' records, "
                    "e.g. one data set exported by two teachers): its table would score each image twice and mix "
                    "both folders' teacher maps in one row. Evaluate each of these folders on its own")
        examples += loaded
    return examples


def _map_sources(examples, models, include_teacher, teacher_format):
    """{name: Predictor, or None for the teacher maps stored in the records}, in scoring order."""
    from inference.predictors import load_predictor

    sources = {}
    if include_teacher and any(ex["teacher"] is not None for ex in examples):
        sources[TEACHER_RECORDS] = None
    for name, model in (models or {}).items():
        sources[name] = (load_predictor(model, teacher_format=teacher_format)
                         if isinstance(model, (str, os.PathLike)) else model)
    return sources


def _score_source(name, predictor, examples, others, truths, seed, progress):
    """Per-image scores of one source (None where it has no map) and the seconds its predictor took."""
    from inference.files import Progress

    per_image = [None] * len(examples)
    seconds = 0.0
    bar = Progress(len(examples), name, enabled=progress)  # on stderr: stdout carries the table only
    for i, ex in enumerate(examples):
        if predictor is None:
            if ex["teacher"] is None:
                bar.update()
                continue
            prediction = resize_map(ex["teacher"], ex["saliency"].shape)
        else:
            start = time.perf_counter()
            prediction = predictor.predict(ex["image"])
            seconds += time.perf_counter() - start
        true_density = None if truths[i] is None else resize_map(truths[i], ex["saliency"].shape)
        per_image[i] = score_map(np.asarray(prediction, np.float64), ex, others[i], true_density, seed)
        bar.update()
    bar.close()
    return per_image, seconds


def _add_model_rows(results, groups, name, predictor, per_image, seconds):
    """One source's row in the overall table and in each data set's table where it scored an image."""
    scored = [s for s in per_image if s is not None]
    entry = {
        "num_params": getattr(predictor, "num_params", None) if predictor is not None else None,
        "images_per_s": (len(scored) / seconds) if seconds > 0 else None,
    }
    results["models"][name] = dict(metrics=_means(scored), **entry)
    for dataset, indices in groups.items():
        group = [per_image[i] for i in indices if per_image[i] is not None]
        if group:
            results["datasets"][dataset]["models"][name] = dict(metrics=_means(group), **entry)


def _add_references(table, examples, others, split, centre_bias_split, observer_sigma, seed):
    """Add the centre-bias and inter-observer rows to one data set's table (or a note saying why not)."""
    entry = {"num_params": None, "images_per_s": None}
    fitted, why = _centre_bias(examples, split, centre_bias_split)
    if fitted is None:
        table["notes"].append(f"no centre-bias row: {why}")
    else:
        scores = [score_map(centre_bias_map(*fitted, ex["saliency"].shape), ex, other, None, seed)
                  for ex, other in zip(examples, others)]
        table["models"][CENTRE_BIAS] = dict(metrics=_means(scores), **entry,
                                            fit={"mean": fitted[0].tolist(), "covariance": fitted[1].tolist(),
                                                 "split": centre_bias_split})
    scores = [inter_observer_scores(ex, other, observer_sigma, seed) for ex, other in zip(examples, others)]
    scores = [s for s in scores if s is not None]
    if scores:
        table["models"][INTER_OBSERVER] = dict(metrics=_means(scores), **entry, num_images=len(scores))
    else:
        table["notes"].append("no inter-observer row: the records do not say which observer made each fixation")


_NAMES = {"kld": "KLD ↓", "cc": "CC ↑", "sim": "SIM ↑", "nss": "NSS ↑", "auc_judd": "AUC-Judd ↑",
          "auc_borji": "AUC-Borji ↑", "sauc": "sAUC ↑", "kld_true": "KLD vs truth ↓", "cc_true": "CC vs truth ↑"}


def _table(models):
    columns = [c for c in COLUMNS if any(c in m["metrics"] for m in models.values())]
    header = ["model"] + [_NAMES[c] for c in columns] + ["params", "images/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, entry in models.items():
        cells = [model] + [f"{entry['metrics'][c]:.4f}" if c in entry["metrics"] else "" for c in columns]
        cells.append(f"{entry['num_params'] / 1e6:.2f}M" if entry["num_params"] else "")
        reference = model in REFERENCE_ROWS
        cells.append("" if reference else f"{entry['images_per_s']:.1f}" if entry["images_per_s"] else "precomputed")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(results):
    """The results as markdown: one table per data set (one row per model, reference rows last)."""
    datasets = results.get("datasets") or {"": {"num_images": results["num_images"], "models": results["models"]}}
    parts = []
    for name, table in datasets.items():
        if len(datasets) > 1 or name:
            parts.append(f"**{name}**, split `{results['split']}`, {table['num_images']} images\n\n")
        parts.append(_table(table["models"]))
        for note in table.get("notes", []):
            parts.append(f"\n({note})\n")
        parts.append("\n")
    return "".join(parts).rstrip("\n") + "\n"


def write_results(results, out_dir, name="metrics"):
    """Write `<name>.json` and `<name>.md` into out_dir atomically; returns the two paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{name}.json")
    md_path = os.path.join(out_dir, f"{name}.md")
    with atomic_write(json_path, "w") as f:
        json.dump(results, f, indent=2)
    note = (f"Split `{results['split']}`, {results['num_images']} images, scored at the original resolution "
            f"(MIT-benchmark metric definitions; stored teacher maps resized bilinearly).\n\n")
    with atomic_write(md_path, "w") as f:
        f.write(note + to_markdown(results))
    return json_path, md_path
