"""The A-versus-B distillation study on synthetic data, over several seeds.

    python -m experiments.study --seeds 0 1 2

The seed project trained A (no teacher) and B (with the teacher) once each and concluded that without
distillation the student "fails to converge". This repeats the comparison honestly: for each seed, A and B start
from the same initial weights, with separate optimizers, on the same records; after every epoch both are scored
on the val split against the human maps (KLD, CC, NSS) and against the true densities the generator knows
(KLD). The teacher (the oracle maps in the records) is scored once. Output in `--out` (default `runs/study`):
`study.json`, `study.md` (mean and standard deviation over seeds, per epoch and final) and `study.png`.

All numbers come from synthetic data.
"""

import argparse
import functools
import json
import os
import sys

import numpy as np

from datasets.io import atomic_write
from student.config import positive_int

# TensorFlow and Keras are imported where they are used (main imports them quietly after argparse), so
# `--help` and usage errors are instant and print no TensorFlow lines.

STUDY_METRICS = ("kld", "kld_true", "cc", "nss")


@functools.lru_cache(maxsize=None)
def _val_metrics_class():
    """`ValMetricsPerEpoch`, a Keras callback, made on first use (importing Keras loads TensorFlow)."""
    import keras
    import tensorflow as tf

    class ValMetricsPerEpoch(keras.callbacks.Callback):
        """After each epoch, score the student's saliency head on val examples at their original resolution."""

        def __init__(self, examples, truths, image_size, path):
            super().__init__()
            self.examples = examples
            self.truths = truths
            self.image_size = tuple(image_size)
            self.path = path
            self.rows = {}
            if os.path.exists(path):
                with open(path) as f:
                    self.rows = {int(k): v for k, v in json.load(f).items()}

        def _densities(self):
            images = np.stack([tf.image.resize(ex["image"], self.image_size, antialias=True).numpy()
                               for ex in self.examples])
            from student.model import spatial_softmax

            logits = self.model.student.predict(images, verbose=0, batch_size=16)["saliency"]
            return np.asarray(spatial_softmax(logits))[..., 0]

        def on_epoch_end(self, epoch, logs=None):
            from evaluation.scoring import resize_map, score_map

            scores = []
            for ex, density, truth in zip(self.examples, self._densities(), self.truths):
                shape = ex["saliency"].shape
                prediction = resize_map(density, shape).astype(np.float64)
                scores.append(score_map(prediction, ex, None, resize_map(truth, shape)))
            self.rows[epoch] = {k: float(np.mean([s[k] for s in scores if k in s])) for k in STUDY_METRICS}
            with atomic_write(self.path, "w") as f:
                json.dump(self.rows, f, indent=2)

    return ValMetricsPerEpoch


def ValMetricsPerEpoch(examples, truths, image_size, path):  # noqa: N802 - a class made lazily
    """A callback scoring the student's saliency head on val examples at their original resolution after each
    epoch, into `path` (see `_val_metrics_class`)."""
    return _val_metrics_class()(examples, truths, image_size, path)


def _teacher_scores(examples, truths):
    from evaluation.scoring import resize_map, score_map

    scores = [score_map(resize_map(ex["teacher"], ex["saliency"].shape).astype(np.float64), ex, None,
                        resize_map(t, ex["saliency"].shape)) for ex, t in zip(examples, truths)]
    return {k: float(np.mean([s[k] for s in scores if k in s])) for k in STUDY_METRICS}


def check_given_once(flag, values):
    """Refuse a value given twice (e.g. `--seeds 0 1 0`): its run would count twice in the mean and sd over seeds."""
    values = list(values)
    twice = [value for i, value in enumerate(values) if value in values[:i]]
    if twice:
        raise ValueError(f"{flag}: {twice[0]} is given twice; its run would count twice in the mean and sd over "
                         "seeds. Give each once")


def run_study(seeds=(0, 1, 2), out_dir="runs/study", settings=None):
    """Train A and B for every seed and summarise; finished runs are reused. A seed given twice is refused."""
    from evaluation.scoring import load_examples
    from experiments.demo import DemoSettings, _ensure_data, _ensure_records
    from student.training import finished_run, save_initial_weights, train

    check_given_once("--seeds", seeds)
    settings = settings or DemoSettings()
    _ensure_data(settings, seed=0)
    _ensure_records(settings)
    examples = load_examples(settings.records_dir, "val")
    truths = [np.load(os.path.join(settings.data_dir, "densities", "val", ex["stem"] + ".npy")) for ex in examples]
    teacher = _teacher_scores(examples, truths)

    curves = {"A": [], "B": []}
    for seed in seeds:
        seed_dir = os.path.join(out_dir, f"seed{seed}")
        initial = save_initial_weights(os.path.join(seed_dir, "initial.weights.h5"), seed)
        for variant in ("A", "B"):
            run_dir = os.path.join(seed_dir, variant)
            per_epoch = os.path.join(run_dir, "val_metrics.json")
            config = settings.train_config(variant, run_dir, initial, seed, export=False, verbose=0)
            if finished_run(config) is None:
                print(f"[study] seed {seed}, variant {variant}", file=sys.stderr, flush=True)  # status: stderr
                os.makedirs(run_dir, exist_ok=True)
                train(config, extra_callbacks=[ValMetricsPerEpoch(examples, truths, settings.train_size, per_epoch)])
            with open(per_epoch) as f:
                rows = {int(k): v for k, v in json.load(f).items()}
            curves[variant].append([rows[e] for e in sorted(rows)])

    summary = summarise(curves, teacher, seeds)
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "study.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with atomic_write(os.path.join(out_dir, "study.md"), "w") as f:
        f.write(to_markdown(summary))
    plot_study(summary, os.path.join(out_dir, "study.png"))
    print(to_markdown(summary))  # stdout carries the results only
    print(f"[study] wrote {out_dir}/study.md, study.json, study.png (synthetic data)", file=sys.stderr)
    return summary


def summarise(curves, teacher, seeds):
    """Mean and standard deviation over seeds of every metric, per epoch."""
    summary = {"seeds": list(seeds), "teacher": teacher, "variants": {}}
    for variant, runs in curves.items():
        n_epochs = min(len(r) for r in runs)
        summary["variants"][variant] = {
            metric: {
                "mean": [float(np.mean([r[e][metric] for r in runs])) for e in range(n_epochs)],
                "std": [float(np.std([r[e][metric] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
                        for e in range(n_epochs)],
                "final_per_seed": [float(r[n_epochs - 1][metric]) for r in runs],
            }
            for metric in STUDY_METRICS
        }
    return summary


def to_markdown(summary):
    names = {"kld": "val KLD vs human ↓", "kld_true": "val KLD vs truth ↓", "cc": "val CC ↑", "nss": "val NSS ↑"}
    n = len(summary["seeds"])
    lines = [f"Final epoch, mean ± standard deviation over {n} seeds ({', '.join(map(str, summary['seeds']))}); "
             "synthetic data.", "", "| model | " + " | ".join(names[m] for m in STUDY_METRICS) + " |",
             "|---|" + "---|" * len(STUDY_METRICS)]
    for variant, stats in summary["variants"].items():
        cells = [f"{stats[m]['mean'][-1]:.4f} ± {stats[m]['std'][-1]:.4f}" for m in STUDY_METRICS]
        lines.append(f"| student {variant} | " + " | ".join(cells) + " |")
    lines.append("| teacher (oracle) | " + " | ".join(f"{summary['teacher'][m]:.4f}" for m in STUDY_METRICS) + " |")
    lines += ["", "Per epoch (mean ± sd):", "", "| epoch | " + " | ".join(
        f"{v} {m}" for v in summary["variants"] for m in ("kld", "kld_true")) + " |",
        "|---|" + "---|" * (2 * len(summary["variants"]))]
    n_epochs = min(len(s["kld"]["mean"]) for s in summary["variants"].values())
    for e in range(n_epochs):
        cells = [f"{s[m]['mean'][e]:.4f} ± {s[m]['std'][e]:.4f}" for s in summary["variants"].values()
                 for m in ("kld", "kld_true")]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_study(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STUDY_METRICS), figsize=(4 * len(STUDY_METRICS), 3.4))
    for ax, metric in zip(axes, STUDY_METRICS):
        for variant, stats in summary["variants"].items():
            mean, std = np.array(stats[metric]["mean"]), np.array(stats[metric]["std"])
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, marker="o", label=f"student {variant}")
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.25)
        ax.axhline(summary["teacher"][metric], color="k", ls="--", lw=1, label="teacher")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"A vs B over {len(summary['seeds'])} seeds (mean ± sd), synthetic data", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


PROG = "study"


def main(argv=None):
    """Parse arguments and run the study; exit status 2 for a usage error, 1 for any other error, 130 on Ctrl-C."""
    p = argparse.ArgumentParser(prog=PROG,
                                description="A-versus-B distillation study on synthetic data over several seeds.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 3 for a spread")
    p.add_argument("--out", default="runs/study", help="output folder")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the demo's number of epochs")
    args = p.parse_args(argv)
    from datasets.io import check_writable_dir, import_tensorflow_quietly
    from experiments.demo import DemoSettings

    settings = DemoSettings()
    if args.epochs is not None:
        settings.epochs = args.epochs
    try:
        check_writable_dir(args.out)
        import_tensorflow_quietly()  # after argparse: --help stays instant; no CUDA/oneDNN lines
        run_study(args.seeds, args.out, settings)
    except (FileNotFoundError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG}: error: {where}{e.strerror or e}; finished runs are kept: free space or fix the permissions, "
              "then run the same command again to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished runs and epochs are kept in {args.out}: run the same command again to "
              "resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
