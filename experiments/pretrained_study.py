"""Can a pretrained student beat its teacher? ImageNet encoders, the teacher, and 2,500 unlabelled photos.

    python -m experiments.pretrained_study --records-dir data/distill_mit1003 data/distill_osie \
        --photos-dir data/distill_photos --backbone efficientnet-lite0 --seeds 0 1 2

For every seed, all variants start from the same initial weights (the ImageNet encoder and a seeded decoder),
each with its own optimizer:

| variant | human maps | teacher maps | training images |
|---|---|---|---|
| `P_A` | all | - | MIT1003 + OSIE train (the strong no-teacher baseline) |
| `P_B` | all | all, on both heads | MIT1003 + OSIE train |
| `P_B_photos` | all | all, on both heads | + the unlabelled photos (teacher maps only) |
| `P_KD` | none | all, on both heads | MIT1003 + OSIE train + photos: pure distillation, fidelity to the teacher |

Scoring, curves and resumption are the real-data study's (`experiments.real_study`): after every epoch the val
splits, at the end the best checkpoint on the test splits at the original resolution, beside the teacher, the
centre-bias floor and the inter-observer ceiling. `P_KD` picks its checkpoint by val KLD to the human maps like
the others (the only human data it sees). Output in `--out` (default `runs/pretrained_study`).
"""

import argparse
import dataclasses
import json
import os
import sys

# In the order they run for each seed: the main comparison first, so a study cut short has it.
VARIANTS = {
    "P_A": dict(variant="A"),
    "P_B": dict(variant="B", kd_into_saliency=1.0),
    "P_B_photos": dict(variant="B", kd_into_saliency=1.0, photos=True),
    "P_KD": dict(variant="B", kd_into_saliency=1.0, label_fraction=0.0, photos=True),
}


@dataclasses.dataclass
class PretrainedSettings:
    """The recipe (chosen on the val splits; see the README) and the data."""

    records_dirs: tuple = ("data/distill_mit1003", "data/distill_osie")
    photos_dirs: tuple = ("data/distill_photos",)
    backbone: str = "efficientnet-lite0"
    backbone_weights: str = "imagenet"
    freeze_encoder_bn: bool = True
    image_size: tuple = (96, 128)
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 1e-3
    jit_compile: bool = None
    cache: bool = True

    def train_config(self, name, run_dir, initial_weights, seed):
        from student.training import TrainConfig

        options = dict(VARIANTS[name])
        photos = options.pop("photos", False)
        dirs = list(self.records_dirs) + (list(self.photos_dirs) if photos else [])
        return TrainConfig(
            records_dir=dirs, run_dir=run_dir, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, image_size=tuple(self.image_size), initial_weights=initial_weights,
            backbone=self.backbone, backbone_weights=None, freeze_encoder_bn=self.freeze_encoder_bn, seed=seed,
            strategy="one_device", jit_compile=self.jit_compile, cache=self.cache, verbose=0, **options,
        )


MATCH_TOLERANCE = 0.02  # target (b): "matches" the teacher = within 2% of its score


def _pooled_sd(a, b):
    return ((a["sd"] ** 2 + b["sd"] ** 2) / 2) ** 0.5


def check_targets(summary):
    """The issue's three targets, decided from the study's test tables (means and sds over seeds).

    (a) P_B or P_B_photos beats P_A by more than 2 pooled sds in NSS and CC on every data set.
    (b) A student beats the teacher (its stored maps) in mean NSS and CC on OSIE, and on MIT1003 comes within
        `MATCH_TOLERANCE` of it (or above).
    (c) P_KD's mean NSS is at least 95% of the teacher's on every data set.

    Returns {"a"|"b"|"c": {"met": bool or None (a variant it needs has not run), "why": str}}.
    """
    from evaluation.scoring import TEACHER_RECORDS

    variants, refs = summary["variants"], summary["references"]
    datasets = list(refs)
    result = {}

    def gap(name, dataset, metric):
        x, base = variants[name]["test"][dataset][metric], variants["P_A"]["test"][dataset][metric]
        return x["mean"] - base["mean"], _pooled_sd(x, base)

    if "P_A" in variants and any(n in variants for n in ("P_B", "P_B_photos")):
        lines, met = [], False
        for name in ("P_B", "P_B_photos"):
            if name not in variants:
                continue
            gaps = {(d, m): gap(name, d, m) for d in datasets for m in ("nss", "cc")}
            ok = all(diff > 2 * sd for diff, sd in gaps.values())
            met = met or ok
            lines.append(f"{name} - P_A: " + ", ".join(f"{d} {m.upper()} {diff:+.3f} (2 pooled sd {2 * sd:.3f})"
                                                         for (d, m), (diff, sd) in gaps.items()))
        result["a"] = {"met": met, "why": "; ".join(lines)}
    else:
        result["a"] = {"met": None, "why": "P_A and P_B or P_B_photos have not all run"}

    teacher = {d: refs[d][TEACHER_RECORDS] for d in datasets}
    best, lines = False, []
    for name, entry in variants.items():
        osie = all(entry["test"]["osie"][m]["mean"] > teacher["osie"][m] for m in ("nss", "cc"))
        mit = all(entry["test"]["mit1003"][m]["mean"] >= (1 - MATCH_TOLERANCE) * teacher["mit1003"][m]
                  for m in ("nss", "cc"))
        best = best or (osie and mit)
        lines.append(f"{name}: " + ", ".join(
            f"{d} {m.upper()} {entry['test'][d][m]['mean']:.3f} vs {teacher[d][m]:.3f}"
            for d in ("osie", "mit1003") for m in ("nss", "cc")))
    result["b"] = {"met": best, "why": "; ".join(lines)}

    if "P_KD" in variants:
        ratios = {d: variants["P_KD"]["test"][d]["nss"]["mean"] / teacher[d]["nss"] for d in datasets}
        result["c"] = {"met": all(r >= 0.95 for r in ratios.values()),
                       "why": "P_KD NSS / teacher NSS: " + ", ".join(f"{d} {r:.1%}" for d, r in ratios.items())}
    else:
        result["c"] = {"met": None, "why": "P_KD has not run"}
    return result


def targets_markdown(targets):
    """The verdicts as a Markdown list."""
    words = {True: "**met**", False: "**not met**", None: "not measured"}
    labels = {"a": "(a) P_B or P_B_photos (the teacher) beats P_A by > 2 pooled sd (NSS, CC, both sets)",
              "b": "(b) a student beats the teacher on OSIE and matches it on MIT1003 (NSS, CC)",
              "c": "(c) P_KD reaches 95% of the teacher's NSS on both sets"}
    return "\n".join(f"- {labels[k]}: {words[v['met']]}. {v['why']}." for k, v in targets.items()) + "\n"


def model_cost(backbone, image_size):
    """Parameters and GMAC (multiply-adds) of the served student (variant A's graph) at `image_size`."""
    from student.model import build_student, count_params, forward_gmac

    student = build_student("A", backbone=backbone)
    return {"params": count_params(student)["total"], "gmac": forward_gmac(student, tuple(image_size))}


def _photo_records_problem(directory):
    """Why `directory` is not a finished export of the unlabelled photos (export_teacher.py --images), or None."""
    from datasets.folders import IMAGE_EXTENSIONS

    make = f"python export_teacher.py --images <photos> --teacher fastgaze-centre --out {directory}"
    if not os.path.isdir(directory):
        return f"{directory}: no records of the unlabelled photos; run `{make}`"
    if os.path.exists(os.path.join(directory, "train.json")):
        return None
    if any(os.path.exists(os.path.join(directory, name)) for name in ("train.plan.json", "train.progress.json")):
        return (f"{directory}: the export of the unlabelled photos has not finished (no train.json yet); run the "
                f"same export_teacher.py --images command again to finish it (it resumes)")
    photos = [name for name in os.listdir(directory) if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
    if photos:
        out = os.path.join("data", f"distill_{os.path.basename(os.path.normpath(directory))}")
        return (f"{directory}: a folder of {len(photos)} photo(s), not their records; --photos-dir takes the records "
                f"that `python export_teacher.py --images {directory} --teacher fastgaze-centre --out {out}` "
                f"writes: run it, then pass --photos-dir {out}")
    return f"{directory}: no records of the unlabelled photos (no train.json); run `{make}`"


def check_inputs(settings, variants=tuple(VARIANTS), report_only=False):
    """Check every folder the chosen variants read before any model is built or trained: the eye-tracking records
    (train, val and test exports), and for the variants with photos, each photo records folder (a finished
    `export_teacher.py --images` export), each folder given once, all made by the same teacher.

    Raises:
        FileNotFoundError: naming every folder without its records and the command that makes them.
        ValueError: a folder given twice, or records made by different teachers.
    """
    from datasets import records
    from experiments import real_study

    photos = not report_only and any(VARIANTS[name].get("photos") for name in variants)
    problems = [real_study.records_dir_problem(d) for d in settings.records_dirs]
    problems += [_photo_records_problem(d) for d in settings.photos_dirs] if photos else []
    problems = [p for p in problems if p is not None]
    if problems:
        raise FileNotFoundError("; ".join(problems))
    if not photos:
        return
    dirs = list(settings.records_dirs) + list(settings.photos_dirs)
    records.check_distinct_folders(dirs, "--records-dir and --photos-dir")
    differences = records.check_same_teacher([(d, "train") for d in dirs], allow_mixed=True)
    if differences:
        raise ValueError(f"the records were made by different teachers or teacher settings ({'; '.join(differences)}): "
                         "export the photos with the teacher and settings of the eye-tracking records")


def run_study(seeds=(0, 1, 2), out_dir="runs/pretrained_study", settings=None, variants=tuple(VARIANTS),
              report_only=False, stop_requested=None):
    """Train every variant for every seed (resuming), score them, and write the summary (`study.json`,
    `study.md`, `curves.png`); `report_only` trains nothing and reports the finished runs. `stop_requested` as in
    `experiments.real_study.run_study`."""
    from experiments import real_study

    settings = settings or PretrainedSettings()
    check_inputs(settings, variants, report_only)
    os.makedirs(out_dir, exist_ok=True)
    cost = real_study._cached(os.path.join(out_dir, "cost.json"),
                              lambda: model_cost(settings.backbone, settings.image_size))

    def addendum(summary):
        summary["cost"] = cost
        if not {"osie", "mit1003"} <= set(summary["references"]):
            return ""
        summary["targets"] = check_targets(summary)
        return (f"\nServed student: {cost['params'] / 1e6:.2f}M parameters, {cost['gmac']:.2f} GMAC at "
                f"{settings.image_size[0]}x{settings.image_size[1]}.\n\nTargets:\n\n"
                + targets_markdown(summary["targets"]))

    return real_study.run_study(seeds, out_dir, settings, variants, report_only=report_only,
                                stop_requested=stop_requested, variant_table=VARIANTS,
                                title="Pretrained students (MIT1003 + OSIE val)", addendum=addendum)


def main(argv=None):
    from experiments import real_study
    from student.backbones import BACKBONES

    defaults = PretrainedSettings()
    p = argparse.ArgumentParser(prog="python -m experiments.pretrained_study",
                                description="Pretrained students with and without the teacher and the unlabelled "
                                            "photos, over seeds (resumable).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", nargs="+", default=list(defaults.records_dirs),
                   help="eye-tracking record folders with train, val and test splits (export_teacher.py --split all)")
    p.add_argument("--photos-dir", nargs="+", default=list(defaults.photos_dirs),
                   help="record folders of unlabelled photos (export_teacher.py --images)")
    p.add_argument("--backbone", choices=list(BACKBONES), default=defaults.backbone, help="the students' encoder")
    p.add_argument("--backbone-weights", default=defaults.backbone_weights,
                   help="'imagenet' (the pretrained extra's file) or a path")
    p.add_argument("--train-encoder-bn", action="store_true",
                   help="train the encoder's BatchNormalization instead of keeping its ImageNet statistics")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 3 for a spread")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="the variants to train, in this order")
    p.add_argument("--out", default="runs/pretrained_study", help="output folder (rerun to resume)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs of every run")
    p.add_argument("--lr", type=float, default=defaults.learning_rate, help="Adam learning rate, every weight")
    p.add_argument("--image-size", type=int, nargs=2, default=list(defaults.image_size), metavar=("H", "W"),
                   help="training resolution (letterboxed)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="training batch")
    p.add_argument("--report", action="store_true", help="train nothing; summarise the runs that have finished")
    args = p.parse_args(argv)
    settings = PretrainedSettings(records_dirs=tuple(args.records_dir), photos_dirs=tuple(args.photos_dir),
                                  backbone=args.backbone, backbone_weights=args.backbone_weights,
                                  freeze_encoder_bn=not args.train_encoder_bn, image_size=tuple(args.image_size),
                                  epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size)
    interrupted = (f"pretrained_study: interrupted; run the same command again to resume (finished runs in "
                   f"{args.out} are kept, an unfinished one continues from its last epoch)")
    with real_study.catch_interrupts() as stop_requested:
        try:
            summary = run_study(args.seeds, args.out, settings, tuple(args.variants), report_only=args.report,
                                stop_requested=stop_requested)
        except (FileNotFoundError, ValueError) as e:
            print(f"pretrained_study: error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            return 130
    if stop_requested():  # caught and swallowed somewhere after the last run began: still an interruption
        print(interrupted, file=sys.stderr)
        return 130
    print(json.dumps(summary["cost"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
