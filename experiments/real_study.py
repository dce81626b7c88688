"""Does a real pretrained teacher help the student? The A-versus-B study on real photos and real fixations.

    python -m experiments.real_study --records-dir data/distill_mit1003 data/distill_osie --seeds 0 1 2

The records come from `export_teacher.py` with any teacher (the README uses FastGaze, a real pretrained gaze
model) for the train, val and test splits of each data set. For every seed, all variants start from the same
initial weights, each with its own optimizer, and train on the train splits of all data sets together:

| variant | human maps | teacher maps | loss |
|---|---|---|---|
| `A` | all | - | KLD to the human map (the seed's model A) |
| `B` | all | all | + the teacher on head 2 (the seed's two heads) |
| `B_kd` | all | all | + the teacher also on the saliency head (`kd_into_saliency`) |
| `A_20` | 20% | - | A on the labelled fifth only |
| `B_kd_20` | 20% | all | B_kd where 80% of the images have only the teacher's map |

After every epoch each run is scored on the val splits (KLD, CC against the human maps; NSS on the fixations);
at the end its best checkpoint is scored on the test splits at the original resolution with evaluate.py's code,
next to the teacher's own maps, the centre-bias floor and the inter-observer ceiling. Everything is resumable: a
finished run is kept, an unfinished one continues from its last epoch, scores are cached per run. Output in
`--out` (default `runs/real_study`): `study.json`, `study.md`, `curves.png`.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys

import numpy as np

from datasets.io import atomic_write, import_tensorflow_quietly

# TensorFlow and Keras are imported where they are used (main imports them quietly after argparse), so
# `--help` and usage errors are instant and print no TensorFlow lines.

# In the order they run for each seed: the main comparison first, so a study cut short has it.
VARIANTS = {
    "A": dict(variant="A"),
    "B_kd": dict(variant="B", kd_into_saliency=1.0),
    "A_20": dict(variant="A", label_fraction=0.2),
    "B_kd_20": dict(variant="B", kd_into_saliency=1.0, label_fraction=0.2),
    "B": dict(variant="B"),
}
CURVE_METRICS = ("kld", "cc", "nss")
TEST_METRICS = ("nss", "auc_judd", "sauc", "cc", "kld")


@dataclasses.dataclass
class StudySettings:
    """A budget that fits 2 CPU cores: small training images, a short schedule (see the README for timings)."""

    records_dirs: tuple = ("data/distill_mit1003", "data/distill_osie")
    image_size: tuple = (96, 128)
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 1e-3
    jit_compile: bool = None  # None: XLA where it is faster (`student.training.xla_pays_off`)
    cache: bool = True  # decode the 1,303 training images once per run (0.4 GB), not once per epoch
    backbone: str = "resnet18"
    backbone_weights: str = None  # random init, as the seed project

    def train_config(self, name, run_dir, initial_weights, seed):
        from student.training import TrainConfig

        return TrainConfig(
            records_dir=list(self.records_dirs), run_dir=run_dir, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, image_size=self.image_size, initial_weights=initial_weights,
            seed=seed, strategy="one_device", jit_compile=self.jit_compile, cache=self.cache, verbose=0,
            backbone=self.backbone, **VARIANTS[name],
        )


@functools.lru_cache(maxsize=None)
def _val_curves_class():
    """`ValCurves`, a Keras callback, made on first use (importing Keras loads TensorFlow)."""
    import keras

    class ValCurves(keras.callbacks.Callback):
        """After each epoch, score the saliency head on the val images at their original size (as served).

        The letterboxed inputs are made once; each epoch runs the student on them in batches, keeps the logits of
        each image's box, and scores their softmax resized to the original size (`student.serving`'s computation).
        """

        def __init__(self, examples, image_size, path, batch_size=16):
            super().__init__()
            import tensorflow as tf

            from student.serving import image_box, resize_images

            self.examples = examples
            self.path = path
            self.batch_size = batch_size
            self.inputs = np.concatenate([resize_images(ex["image"][None], image_size).numpy() for ex in examples])
            self.boxes = [[int(v) for v in image_box(tf.shape(ex["image"][None]), image_size)] for ex in examples]
            self.rows = {}
            if os.path.exists(path):
                with open(path) as f:
                    self.rows = {int(k): v for k, v in json.load(f).items()}

        def on_epoch_end(self, epoch, logs=None):
            from metrics import saliency
            from evaluation.scoring import resize_map

            logits = self.model.student.predict(self.inputs, batch_size=self.batch_size, verbose=0)["saliency"]
            scores = []
            for ex, (top, left, h, w), z in zip(self.examples, self.boxes, logits[..., 0]):
                z = z[top:top + h, left:left + w].astype(np.float64)
                density = np.exp(z - z.max())
                prediction = np.maximum(resize_map(density / density.sum(), ex["saliency"].shape), 0).astype(np.float64)
                fixated = saliency.fixation_map_from_points(ex["fixations"], prediction.shape)
                # Only the curve's metrics: the AUCs' 100 random splits per image would cost more than the epoch.
                scores.append({"kld": saliency.kld(prediction, ex["saliency"]), "cc": saliency.cc(prediction, ex["saliency"]),
                               "nss": saliency.nss(prediction, fixated)})
            self.rows[epoch] = {k: float(np.mean([s[k] for s in scores])) for k in CURVE_METRICS}
            with atomic_write(self.path, "w") as f:
                json.dump(self.rows, f, indent=2)

    return ValCurves


def ValCurves(examples, image_size, path, batch_size=16):  # noqa: N802 - a class made lazily
    """A `ValCurves` callback (see `_val_curves_class`): the val curves after each epoch, into `path`."""
    return _val_curves_class()(examples, image_size, path, batch_size)


def StopOnInterrupt(stop_requested):  # noqa: N802 - a Keras callback made lazily
    """A Keras callback that raises KeyboardInterrupt at the end of the first training batch after a Ctrl-C that
    did not stop the run itself (dropped in a finaliser or caught by a library; `catch_interrupts`)."""
    import keras

    def check(batch, logs=None):
        if stop_requested():
            raise KeyboardInterrupt

    return keras.callbacks.LambdaCallback(on_train_batch_end=check)


def _cached(path, compute):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = compute()
    with atomic_write(path, "w") as f:
        json.dump(value, f, indent=2)
    return value


def _test_tables(results):
    """{dataset: {row: {metric: value}}} of an `evaluation.evaluate` result."""
    return {name: {row: entry["metrics"] for row, entry in table["models"].items()}
            for name, table in results["datasets"].items()}


# The study's flags for the training settings a rerun must keep (the rest follow from --out and --seeds).
_SETTING_FLAGS = {"epochs": "--epochs", "image_size": "--image-size", "batch_size": "--batch-size",
                  "records_dir": "--records-dir"}


def _check_same_settings(config, out_dir):
    """Refuse a run folder of this study made with other settings, naming the study's flags (not train.py's)."""
    from student.training import _changed_settings

    path = os.path.join(config.run_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        changed = _changed_settings(json.load(f), config)
    if changed:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        flags = sorted({_SETTING_FLAGS.get(k, k) for k in changed})
        raise ValueError(
            f"{config.run_dir} holds a run of this study made with other settings ({detail}); rerun with the "
            f"settings it was made with ({', '.join(flags)} as in its config.json) to resume or report it, or "
            f"choose another --out than {out_dir} for the new settings"
        )


def records_dir_problem(directory):
    """Why `directory` is not an eye-tracking records folder with finished train, val and test exports, or None."""
    missing = [split for split in ("train", "val", "test")
               if not os.path.exists(os.path.join(directory, f"{split}.json"))]
    if not missing:
        return None
    return (f"{directory}: no finished '{missing[0]}' export ({missing[0]}.json); run `python export_teacher.py "
            f"--dataset <mit1003|osie> --data-dir <folder> --teacher <model> --split all --out {directory}`")


def check_records_dirs(records_dirs):
    """Refuse eye-tracking records folders without finished train, val and test exports (one FileNotFoundError
    naming every such folder, its first missing split and the export_teacher.py command that makes it)."""
    problems = [p for p in map(records_dir_problem, records_dirs) if p is not None]
    if problems:
        raise FileNotFoundError("; ".join(problems))


def run_study(seeds=(0, 1, 2), out_dir="runs/real_study", settings=None, variants=tuple(VARIANTS), report_only=False,
              stop_requested=None, variant_table=None, title="Real data (MIT1003 + OSIE val)", addendum=None):
    """Train every variant for every seed (resuming), score them, and write the summary.

    With `report_only`, nothing is trained: the summary covers the runs that have finished (a study cut short
    by its time budget reports what it has, with the number of seeds per variant). `settings` makes each run's
    `TrainConfig` (`train_config`); `variant_table` names the variants' options (default `VARIANTS`).

    Runs in `out_dir` made with other settings, and a seed or variant given twice (it would count as another run
    in the mean and sd), are refused before any work (ValueError naming the flags).
    `stop_requested`, a callable, is asked after each training batch and each run: True raises KeyboardInterrupt
    (the command line passes whether a Ctrl-C arrived, `catch_interrupts`, so one caught inside a library or
    dropped in a finaliser still stops the study).
    `addendum`, a callable, gets the summary before it is written: it may add keys to it and returns Markdown to
    append to `study.md` (and to what is printed).
    """
    from evaluation.scoring import evaluate, load_examples
    from student import training

    from experiments.study import check_given_once

    check_given_once("--seeds", seeds)
    check_given_once("--variants", variants)
    settings = settings or StudySettings()
    dirs = list(settings.records_dirs)
    check_records_dirs(dirs)
    plan = []  # (seed, variant name, config), in the order they run
    for seed in seeds:
        initial = os.path.join(out_dir, f"seed{seed}", "initial.weights.h5")
        for name in variants:
            config = settings.train_config(name, os.path.join(out_dir, f"seed{seed}", name), initial, seed)
            _check_same_settings(config, out_dir)
            plan.append((seed, name, config))
    finished = {(seed, name): training.finished_run(config) is not None for seed, name, config in plan}
    if report_only and not any(finished.values()):
        raise FileNotFoundError(f"{out_dir}: no finished run to report (with these settings); run the study "
                                "without --report first")
    os.makedirs(out_dir, exist_ok=True)
    references = _cached(os.path.join(out_dir, "references.json"), lambda: _test_tables(
        evaluate(dirs, "test", {}, include_teacher=True, references=True, progress=False)))
    val_examples = [ex for d in dirs for ex in load_examples(d, "val")]

    runs = {name: [] for name in variants}
    for seed, name, config in plan:
        run_dir = config.run_dir
        curves_path = os.path.join(run_dir, "val_curves.json")
        if not finished[seed, name]:
            if report_only:
                continue
            print(f"[study] seed {seed}, {name}", file=sys.stderr, flush=True)  # status: stdout has the table only
            training.save_initial_weights(config.initial_weights, seed, settings.backbone, settings.backbone_weights,
                                          decoder=config.decoder)
            os.makedirs(run_dir, exist_ok=True)
            callbacks = [ValCurves(val_examples, settings.image_size, curves_path)]
            if stop_requested is not None:
                callbacks.append(StopOnInterrupt(stop_requested))
            training.train(config, extra_callbacks=callbacks)
            if stop_requested is not None and stop_requested():
                raise KeyboardInterrupt
        test = _cached(os.path.join(run_dir, "test_metrics.json"), lambda run_dir=run_dir: _test_tables(
            evaluate(dirs, "test", {"student": os.path.join(run_dir, "saved_model")}, include_teacher=False,
                     references=False, progress=False)))
        with open(curves_path) as f:
            curves = {int(k): v for k, v in json.load(f).items()}
        # By epoch index: an epoch whose curve point was lost to an interruption is None, not a shift.
        runs[name].append({"seed": seed, "test": {d: t["student"] for d, t in test.items()},
                           "curves": [curves.get(e) for e in range(settings.epochs)]})
    runs = {name: results for name, results in runs.items() if results}
    if not runs:
        raise FileNotFoundError(f"{out_dir}: no finished run to report")
    summary = summarise(runs, references, seeds, settings, variant_table or VARIANTS)
    markdown = to_markdown(summary) + (addendum(summary) if addendum else "")
    with atomic_write(os.path.join(out_dir, "study.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with atomic_write(os.path.join(out_dir, "study.md"), "w") as f:
        f.write(markdown)
    plot_curves(summary, os.path.join(out_dir, "curves.png"), title)
    print(markdown)
    return summary


def _mean_sd(values):
    """(mean, sd with ddof 1) of a list; (nan, nan) for an empty one, 0 sd for a single value."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(runs, references, seeds, settings, variant_table=None):
    """Per variant and data set: mean and sd over seeds of the test scores, and of the val curves per epoch."""
    summary = {"seeds": list(seeds), "settings": dataclasses.asdict(settings), "references": references,
               "variants": {}}
    for name, results in runs.items():
        test = {}
        for dataset in results[0]["test"]:
            test[dataset] = {m: dict(zip(("mean", "sd"), _mean_sd([r["test"][dataset][m] for r in results])),
                                     per_seed=[r["test"][dataset][m] for r in results])
                             for m in TEST_METRICS if m in results[0]["test"][dataset]}
        n_epochs = min(len(r["curves"]) for r in results)
        curves = {m: [_mean_sd([r["curves"][e][m] for r in results if r["curves"][e] is not None])
                      for e in range(n_epochs)] for m in CURVE_METRICS}
        summary["variants"][name] = {"config": (variant_table or VARIANTS)[name], "seeds": [r["seed"] for r in results], "test": test,
                                     "val_curves": curves}
    return summary


_NAMES = {"nss": "NSS ↑", "auc_judd": "AUC-Judd ↑", "sauc": "sAUC ↑", "cc": "CC ↑", "kld": "KLD ↓"}


def to_markdown(summary):
    """One table per data set: the variants (mean ± sd over seeds), the teacher and the two reference rows."""
    from evaluation.scoring import CENTRE_BIAS, INTER_OBSERVER, TEACHER_RECORDS

    s = summary["settings"]
    lines = [f"Test splits, mean ± sd over the seeds each variant ran (n in the table); training at "
             f"{s['image_size'][0]}x{s['image_size'][1]}, {s['epochs']} epochs, batch {s['batch_size']}, scored at the "
             "original resolution.", ""]
    for dataset, refs in summary["references"].items():
        lines += [f"**{dataset}**", "", "| model | n | " + " | ".join(_NAMES[m] for m in TEST_METRICS) + " |",
                  "|---|---|" + "---|" * len(TEST_METRICS)]
        for name, entry in summary["variants"].items():
            stats = entry["test"].get(dataset, {})
            spread = len(entry["seeds"]) > 1  # one seed has no spread: print no "± 0"
            cells = [(f"{stats[m]['mean']:.3f} ± {stats[m]['sd']:.3f}" if spread else f"{stats[m]['mean']:.3f}")
                     if m in stats else "" for m in TEST_METRICS]
            lines.append(f"| student {name} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
        for row, label in ((TEACHER_RECORDS, "teacher"), (CENTRE_BIAS, "centre bias (floor)"),
                           (INTER_OBSERVER, "inter-observer (ceiling)")):
            if row in refs:
                lines.append(f"| {label} | | " + " | ".join(f"{refs[row][m]:.3f}" if m in refs[row] else ""
                                                         for m in TEST_METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(summary, path, title="Real data (MIT1003 + OSIE val)"):
    """Val KLD, CC and NSS per epoch, mean ± sd over seeds, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(4.2 * len(CURVE_METRICS), 3.4))
    for ax, metric in zip(axes, CURVE_METRICS):
        for name, entry in summary["variants"].items():
            values = np.array(entry["val_curves"][metric])
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values[:, 0], marker="o", ms=3, label=name)
            ax.fill_between(epochs, values[:, 0] - values[:, 1], values[:, 0] + values[:, 1], alpha=0.2)
        ax.set_title(f"val {metric}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}, mean ± sd over seeds", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


PROG = "real_study"


@contextlib.contextmanager
def catch_interrupts():
    """Ctrl-C while a study runs: one KeyboardInterrupt that stops it, whatever code it lands in. Yields
    `stop_requested()`, True once a Ctrl-C arrived.

    A KeyboardInterrupt raised while a finaliser runs (a tf.data iterator's or a generator's cleanup, a `__del__`)
    never reaches the study: Python drops it and prints "Exception ignored in ...". Here it is dropped silently
    and the next Ctrl-C raises again; the study also stops at the next training batch or run
    (`StopOnInterrupt`, `run_study`'s `stop_requested`), so a dropped or swallowed Ctrl-C still stops it. A Ctrl-C
    while the first is still unwinding (the cleanup runs finalisers) only counts: it would interrupt that cleanup.
    The SIGINT handler and `sys.unraisablehook` are put back on exit.
    """
    state = {"count": 0, "unwinding": False}

    def on_sigint(signum, frame):
        state["count"] += 1
        if not state["unwinding"]:
            state["unwinding"] = True
            raise KeyboardInterrupt

    def unraisable(info):
        if issubclass(info.exc_type, KeyboardInterrupt):
            state["unwinding"] = False  # dropped in a finaliser: the next Ctrl-C raises again
            return
        previous_hook(info)

    previous, previous_hook = signal.signal(signal.SIGINT, on_sigint), sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield lambda: state["count"] > 0
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def main(argv=None):
    defaults = StudySettings()
    p = argparse.ArgumentParser(prog=PROG, description="A-versus-B study on real eye-tracking data with a real teacher.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", nargs="+", default=list(defaults.records_dirs),
                   help="record folders with train, val and test splits (export_teacher.py --split all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 3 for a spread")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="the variants to train, in this order")
    p.add_argument("--out", default="runs/real_study", help="output folder (rerun to resume)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs of every run")
    p.add_argument("--image-size", type=int, nargs=2, default=list(defaults.image_size), metavar=("H", "W"),
                   help="training resolution (letterboxed)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="training batch")
    p.add_argument("--report", action="store_true", help="train nothing; summarise the runs that have finished")
    args = p.parse_args(argv)
    settings = StudySettings(records_dirs=tuple(args.records_dir), image_size=tuple(args.image_size),
                             epochs=args.epochs, batch_size=args.batch_size)
    with catch_interrupts() as stop_requested:
        try:
            import_tensorflow_quietly()  # after argparse: --help stays instant; no CUDA/oneDNN lines
            run_study(args.seeds, args.out, settings, tuple(args.variants), report_only=args.report,
                      stop_requested=stop_requested)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted; finished runs and epochs are kept in {args.out}: run the same command "
                  "again to resume", file=sys.stderr)
            return 130
        except (FileNotFoundError, ValueError) as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
        except OSError as e:  # a full disk, a permission
            where = f"{e.filename}: " if e.filename else ""
            print(f"{PROG}: error: {where}{e.strerror or e}; finished runs and epochs are kept: free space or fix "
                  "the permissions, then run the same command again to resume", file=sys.stderr)
            return 1
    if stop_requested():  # caught and swallowed somewhere after the last run began: still an interruption
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
