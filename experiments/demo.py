"""The embedded demo: the whole pipeline on synthetic SALICON-like data, on a CPU, in a few minutes.

`python train.py --variant both --demo` runs, reusing whatever a previous run already made:

1. the synthetic SALICON-layout data set (`data/synthetic`), made by `datasets.synthetic` if absent;
2. distillation records with the `oracle` teacher (`data/synthetic_distill`), through export_teacher's code;
3. variants A and B trained from the same initial weights and seed, each with its own optimizer;
4. both SavedModels exported, and A, B and the teacher scored with evaluate.py's code (also against the true
   densities, which only synthetic data has);
5. in the run folder: `kld_curves.png` (the seed project's per-epoch KLD figures, A and B side by side),
   `grid.png` (image, human map, teacher map, A, B), `metrics.md` / `metrics.json`.

Every number it prints comes from synthetic data; SALICON numbers need the real data and a GPU.
"""

import contextlib
import dataclasses
import os
import sys

from datasets.io import atomic_write


def _status(message):
    """A status line on stderr: stdout carries the results (the metrics table) only."""
    print(f"[demo] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class DemoSettings:
    """Sizes chosen so that the demo finishes in under 10 minutes on 2 CPU cores."""

    data_dir: str = "data/synthetic"
    records_dir: str = "data/synthetic_distill"
    n_train: int = 320
    n_val: int = 80
    data_size: tuple = (192, 256)   # synthetic images (SALICON's 3:4 aspect ratio)
    teacher_size: tuple = (96, 128)  # the oracle teacher's resolution
    train_size: tuple = (96, 128)    # the students' training resolution
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 1e-3
    grid_images: int = 4
    jit_compile: bool = None  # None: XLA where it is faster (`student.training.xla_pays_off`)
    cache: bool = True  # decode the 320 + 80 images once per run (0.1 GB at 96x128), not once per epoch

    def train_config(self, variant, run_dir, initial_weights, seed, **overrides):
        """The `TrainConfig` of one demo or study run: these settings, one device, from `initial_weights`."""
        from student.training import TrainConfig

        return TrainConfig(
            variant=variant, records_dir=self.records_dir, run_dir=run_dir, epochs=self.epochs,
            batch_size=self.batch_size, learning_rate=self.learning_rate, image_size=self.train_size,
            initial_weights=initial_weights, seed=seed, strategy="one_device", jit_compile=self.jit_compile,
            cache=self.cache, **overrides,
        )


def _ensure_data(settings, seed):
    from datasets.synthetic import generate_synthetic_salicon

    _status(f"synthetic data: {settings.data_dir}")
    with contextlib.redirect_stdout(sys.stderr):  # its progress bar (Keras) writes to stdout
        generate_synthetic_salicon(settings.data_dir, n_train=settings.n_train, n_val=settings.n_val,
                                   image_size=settings.data_size, seed=seed)


def _ensure_records(settings):
    from teacher.export import export_split
    from teacher.oracle import OracleTeacher

    for split in ("train", "val"):
        if os.path.exists(os.path.join(settings.records_dir, f"{split}.json")):
            _status(f"records for {split}: reusing {settings.records_dir}")
            continue
        _status(f"exporting {split} records with the oracle teacher")
        teacher = OracleTeacher(settings.data_dir, input_size=settings.teacher_size)
        export_split(settings.data_dir, split, teacher, settings.records_dir)


def _train(settings, run_dir, variants, seed, verbose=1):
    from student.training import finished_run, save_initial_weights, train

    if verbose == 1 and not sys.stderr.isatty():
        verbose = 2  # Keras's bar writes carriage returns and colour codes even to a file: one plain line per epoch

    initial = save_initial_weights(os.path.join(run_dir, "initial.weights.h5"), seed)
    results = {}
    for variant in variants:
        variant_dir = os.path.join(run_dir, variant)
        config = settings.train_config(variant, variant_dir, initial, seed, verbose=verbose)
        done = finished_run(config)
        if done is not None and done.saved_model_dir:
            _status(f"variant {variant}: reusing the finished run in {variant_dir}")
            results[variant] = variant_dir
            continue
        _status(f"training variant {variant}")
        with contextlib.redirect_stdout(sys.stderr):  # Keras's progress bars and epoch lines
            train(config)
        results[variant] = variant_dir
    return results


def plot_curves(run_dirs, path):
    """The seed's per-epoch train/val KLD figures, one panel per variant, on a shared y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from student.training import plot_history, read_history

    fig, axes = plt.subplots(1, len(run_dirs), figsize=(5 * len(run_dirs), 3.6), sharey=True, squeeze=False)
    for ax, (variant, run_dir) in zip(axes[0], run_dirs.items()):
        title = f"variant {variant}" + (" (with distillation)" if variant == "B" else " (no teacher)")
        plot_history(ax, read_history(os.path.join(run_dir, "history.csv")), title)
    axes[0][0].set_ylabel("KLD, saliency head vs human map")
    fig.suptitle("Synthetic data (not SALICON)", fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def plot_grid(records_dir, run_dirs, path, n_images=4):
    """A qualitative grid: image, human map, teacher map and each variant's prediction for a few val images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datasets import records
    from evaluation.scoring import resize_map
    from inference.predictors import load_predictor

    predictors = {v: load_predictor(d) for v, d in run_dirs.items()}
    examples = list(records.read_records(records.list_shards(records_dir, "val")).take(n_images).as_numpy_iterator())
    columns = ["image", "human map", "teacher map"] + [f"student {v}" for v in run_dirs]
    fig, axes = plt.subplots(len(examples), len(columns), figsize=(2.2 * len(columns), 1.8 * len(examples)),
                             squeeze=False)
    for row, ex in zip(axes, examples):
        shape = ex["image"].shape[:2]
        panels = [ex["image"], ex["saliency"][:, :, 0], resize_map(ex["teacher"][:, :, 0], shape)]
        panels += [predictors[v].predict(ex["image"]) for v in run_dirs]
        for ax, panel, title in zip(row, panels, columns):
            ax.imshow(panel, cmap=None if panel.ndim == 3 else "inferno")
            ax.set_xticks([])
            ax.set_yticks([])
            if ax in axes[0]:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def run_demo(run_dir="runs/demo", variants=("A", "B"), seed=0, settings=None, verbose=1):
    """Run (or finish) the demo in `run_dir`; returns the evaluation results.

    `seed` seeds the students' initial weights, data order and flips; the synthetic data set is always made
    with seed 0 (the study's), so demos with different seeds share `data_dir` and `records_dir`.
    """
    from evaluation.scoring import evaluate, to_markdown, write_results

    settings = settings or DemoSettings()
    os.makedirs(run_dir, exist_ok=True)
    _ensure_data(settings, seed=0)
    _ensure_records(settings)
    run_dirs = _train(settings, run_dir, variants, seed, verbose)
    _status("evaluating the teacher and the students on the val split")
    results = evaluate(settings.records_dir, "val", {f"student {v}": os.path.join(d, "saved_model")
                                                   for v, d in run_dirs.items()},
                       densities_dir=os.path.join(settings.data_dir, "densities", "val"))
    write_results(results, run_dir)
    plot_curves(run_dirs, os.path.join(run_dir, "kld_curves.png"))
    plot_grid(settings.records_dir, run_dirs, os.path.join(run_dir, "grid.png"), settings.grid_images)
    print(to_markdown(results))  # the results: the only thing on stdout
    _status(f"done. Results in {run_dir}: metrics.md, kld_curves.png, grid.png, A/ and B/ "
            f"(SavedModels in */saved_model). All numbers are from synthetic data.")
    return results
