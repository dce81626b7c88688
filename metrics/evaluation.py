"""Score saliency models on a split of distillation records: the library behind evaluate.py.

Every model is scored the same way, at the ORIGINAL image resolution against the human map and fixations of
each record. The one resize involved is documented per source:

- the teacher's maps stored in the records (teacher resolution, padding removed) are resized to the image size
  with bilinear interpolation (`cv2.INTER_LINEAR`);
- a student (run folder or SavedModel) and a teacher file predict at the image size themselves (their own
  resize back, bilinear, inside `student.inference`).

KLD, CC and SIM compare with the human map; NSS, AUC-Judd and sAUC use the fixations when a record has any
(sAUC negatives: the union of the fixations of `sauc_other` other images of the split, seeded). With
`densities_dir` (the synthetic generator's true densities), KLD and CC against the true density are added.
"""

import json
import os
import time

import cv2
import numpy as np

from datasets import records
from datasets.io import atomic_write
from metrics import saliency

DISTRIBUTION_METRICS = ("kld", "cc", "sim")
FIXATION_METRICS = ("nss", "auc_judd", "sauc")
TRUTH_METRICS = ("kld_true", "cc_true")
COLUMNS = ("kld", "cc", "sim", "nss", "auc_judd", "sauc", "kld_true", "cc_true")
TEACHER_RECORDS = "teacher (records)"


def resize_map(saliency_map, shape):
    """Bilinear resize of a 2-D map to `shape` (H, W): the one resize used for stored teacher maps."""
    saliency_map = np.asarray(saliency_map, np.float32)
    if saliency_map.shape == tuple(shape):
        return saliency_map
    return cv2.resize(saliency_map, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


def load_examples(records_dir, split, max_images=None):
    """Decoded records of a split as numpy dicts (stem, image, saliency, has_saliency, teacher, fixations)."""
    files = records.list_shards(records_dir, split)
    ds = records.read_records(files)
    if max_images:
        ds = ds.take(max_images)
    examples = []
    for ex in ds.as_numpy_iterator():
        examples.append(
            {
                "stem": ex["stem"].decode(),
                "image": ex["image"],
                "saliency": ex["saliency"][:, :, 0].astype(np.float64),
                "has_saliency": bool(ex["has_saliency"]),
                "teacher": ex["teacher"][:, :, 0] if ex["has_teacher"] else None,
                "fixations": ex["fixations"],
            }
        )
    if not examples:
        raise ValueError(f"{records_dir}: split '{split}' has no records")
    return examples


def _other_maps(examples, n_other, seed):
    """Per image, the union of the fixations of `n_other` other random images (sAUC negatives), or None."""
    rng = np.random.default_rng(seed)
    with_fix = [i for i, ex in enumerate(examples) if len(ex["fixations"])]
    others = []
    for i, ex in enumerate(examples):
        pool = [j for j in with_fix if j != i]
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


def score_map(prediction, example, other_map=None, true_density=None, seed=0):
    """All metrics of one prediction (2-D, at the image size) for one example; missing references are skipped."""
    out = {}
    if example["has_saliency"] and example["saliency"].sum() > 0:
        gt = example["saliency"]
        out["kld"] = saliency.kld(prediction, gt)
        out["cc"] = saliency.cc(prediction, gt)
        out["sim"] = saliency.sim(prediction, gt)
    if len(example["fixations"]):
        fixation_map = saliency.fixation_map_from_points(example["fixations"], prediction.shape)
        out["nss"] = saliency.nss(prediction, fixation_map)
        out["auc_judd"] = saliency.auc_judd(prediction, fixation_map, seed=seed)
        if other_map is not None:
            out["sauc"] = saliency.sauc(prediction, fixation_map, other_map, seed=seed)
    if true_density is not None:
        out["kld_true"] = saliency.kld(prediction, true_density)
        out["cc_true"] = saliency.cc(prediction, true_density)
    return out


def evaluate(records_dir, split, models=None, include_teacher=True, densities_dir=None, max_images=None,
             sauc_other=10, seed=0, progress=True, teacher_format="auto"):
    """Score the teacher maps in the records and each model on one split.

    Args:
        records_dir: folder of distillation records.
        split: the split to score (normally "val").
        models: {name: path or Predictor}; paths are loaded with `student.inference.load_predictor`.
        include_teacher: also score the teacher maps stored in the records.
        densities_dir: folder of true densities `<stem>.npy` (synthetic data) for `kld_true` / `cc_true`.
        max_images: score only the first N records.
        sauc_other: number of other images whose fixations are sAUC's negatives.
        seed: AUC-Judd jitter and sAUC sampling.
        progress: show a progress bar.
        teacher_format: how teacher paths in `models` load ("auto", "msinet" or "contract").

    Returns:
        {"split", "num_images", "models": {name: {"metrics": {metric: mean}, "num_params", "images_per_s"}}}.
    """
    import keras

    from student.inference import load_predictor

    examples = load_examples(records_dir, split, max_images)
    others = _other_maps(examples, sauc_other, seed)
    truths = [None] * len(examples)
    if densities_dir:
        truths = [np.load(os.path.join(densities_dir, ex["stem"] + ".npy")) for ex in examples]

    sources = {}
    if include_teacher and any(ex["teacher"] is not None for ex in examples):
        sources[TEACHER_RECORDS] = None
    for name, model in (models or {}).items():
        sources[name] = (load_predictor(model, teacher_format=teacher_format)
                         if isinstance(model, (str, os.PathLike)) else model)

    results = {"split": split, "num_images": len(examples), "records_dir": os.fspath(records_dir), "models": {}}
    for name, predictor in sources.items():
        per_image = []
        seconds = 0.0
        bar = keras.utils.Progbar(len(examples), unit_name="image") if progress else None
        for i, ex in enumerate(examples):
            if predictor is None:
                if ex["teacher"] is None:
                    continue
                prediction = resize_map(ex["teacher"], ex["saliency"].shape)
            else:
                start = time.perf_counter()
                prediction = predictor.predict(ex["image"])
                seconds += time.perf_counter() - start
            true_density = None if truths[i] is None else resize_map(truths[i], ex["saliency"].shape)
            per_image.append(score_map(np.asarray(prediction, np.float64), ex, others[i], true_density, seed))
            if bar:
                bar.update(i + 1)
        means = {k: float(np.mean([s[k] for s in per_image if k in s])) for k in COLUMNS
                 if any(k in s for s in per_image)}
        results["models"][name] = {
            "metrics": means,
            "num_params": getattr(predictor, "num_params", None) if predictor is not None else None,
            "images_per_s": (len(per_image) / seconds) if seconds > 0 else None,
        }
    return results


def to_markdown(results):
    """The results as a markdown table (one row per model)."""
    columns = [c for c in COLUMNS if any(c in m["metrics"] for m in results["models"].values())]
    names = {"kld": "KLD ↓", "cc": "CC ↑", "sim": "SIM ↑", "nss": "NSS ↑", "auc_judd": "AUC-Judd ↑",
             "sauc": "sAUC ↑", "kld_true": "KLD vs truth ↓", "cc_true": "CC vs truth ↑"}
    header = ["model"] + [names[c] for c in columns] + ["params", "images/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, entry in results["models"].items():
        cells = [model] + [f"{entry['metrics'][c]:.4f}" if c in entry["metrics"] else "" for c in columns]
        cells.append(f"{entry['num_params'] / 1e6:.2f}M" if entry["num_params"] else "")
        cells.append(f"{entry['images_per_s']:.1f}" if entry["images_per_s"] else "precomputed")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
