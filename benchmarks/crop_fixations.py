"""How much of what people look at a crop keeps: the fraction of human fixations inside saliency-guided crops.

    python benchmarks/crop_fixations.py \
        --model fastgaze=../shared/models/fastgaze/fastgaze_savedmodel \
        --model fastgaze_centre=../shared/models/fastgaze/fastgaze_centre_savedmodel \
        --results benchmarks/results_crop.json --figure docs/figures/crops.png > benchmarks/results_crop.md

On the fixed test splits of OSIE and MIT1003 (`datasets/splits/`, 100 images each, read with the project's
NUS-VIP reader `datasets.nusvip`: every observer's fixations, 0-based (row, col), rounded and clamped as the lab's
MATLAB code does), for each aspect ratio (1:1, 16:9, 4:5, 2:1) at each scale (1.0: the largest box of that ratio;
0.5: half its width and height), every crop of `inference.crop` is scored by the fraction of the image's
fixations inside it (`fixations_in_box`):

- `centre`: the centred box (no model);
- `point` and `mass` on each `--model NAME=PATH` (anything `student.inference.load_predictor` loads);
- `point` and `mass` on the human map itself (`datasets.nusvip.load_human_map`: MIT1003's official maps, OSIE's
  built from the points with sigma 24 px): the ceiling. It is made from the very fixations being counted, so it
  is an in-sample upper bound, not a model.

The table (Markdown, stdout) gives the mean over images and its standard error, and the paired difference from
the centre crop averaged over the ratios. Per-image counts go to `--results` (JSON, written atomically after
each image): a rerun skips what it holds and computes only what is missing (new images, models or ratios).
"""

import argparse
import json
import os
import re
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from inference.crop import aspect_label, check_scale, crop_box, fixations_in_box  # noqa: E402

DATASETS = ("osie", "mit1003")
ASPECTS = ("1:1", "16:9", "4:5", "2:1")
SCALES = (1.0, 0.5)
METHODS = ("point", "mass")
HUMAN = "human"
CENTRE = "centre"
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "eyetracking"))
FIGURE_MAX_BYTES = 300_000


def config_key(aspect, scale):
    """The results' key of one crop setting: "16:9@0.5"."""
    return f"{aspect}@{scale:g}"


def model_spec(text):
    """--model NAME=PATH as (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path or name in (HUMAN, CENTRE):
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH with NAME of letters, digits, '_', '.', '-' (not {HUMAN!r} or {CENTRE!r}), e.g. "
            f"fastgaze=../shared/models/fastgaze/fastgaze_savedmodel. Received: {text!r}")
    return name, path


def machine():
    """The CPU this ran on, in words."""
    model = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} CPU core(s) available, no GPU"


def list_test_samples(dataset, data_dir, split="test"):
    from datasets import nusvip, sources

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", nusvip.OutsideImageWarning)
        samples = sources.list_samples(dataset, os.path.join(data_dir, dataset), split)
    for warning in caught:
        print(f"crop_fixations.py: note: {warning.message}", file=sys.stderr)
    return samples


def crop_counts(saliency_map, fixations, configs, methods):
    """{method: {config key: fixations inside}} for one map over (aspect, scale) `configs`.

    Counts, not fractions: exact integers (the fraction k / N times N, rounded), and the JSON stays small.
    """
    return {method: {config_key(a, s): round(fixations_in_box(fixations, crop_box(saliency_map, a, method, s))
                                             * len(fixations)) for a, s in configs} for method in methods}


def _missing(entry, source, methods, keys):
    counts = entry.get("inside", {}).get(source, {})
    return any(key not in counts.get(method, {}) for method in methods for key in keys)


def _save(path, results):
    from datasets.io import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(results, f, separators=(",", ":"))


def measure(data_dir, models, results_path, datasets=DATASETS, aspects=ASPECTS, scales=SCALES, split="test",
            count=None, progress=True):
    """Fill `results_path` (JSON) with per-image fixation counts inside every crop; returns the results dict.

    The JSON holds `models` ({name: path}), `machines` (where it ran) and, under `datasets[name][split][stem]`,
    each image's `size` (H, W), `fixations` (N) and `inside[source][method][aspect@scale]`: the fixations inside
    that crop (source "centre", "human" or a model name; method "centre", "point" or "mass").

    Returns:
        (results, {data set: the stems measured in this call}).
    """
    from tqdm import tqdm

    from datasets import nusvip
    from datasets.io import read_image

    results = {"models": {}, "datasets": {}}
    if results_path and os.path.isfile(results_path):
        with open(results_path) as f:
            results = json.load(f)
    for name, path in models.items():
        stored = results["models"].get(name)
        if stored is not None and stored != path:
            raise ValueError(f"{results_path}: model {name!r} was measured from {stored}, not {path}; give it another "
                             "NAME or use another --results file")
        results["models"][name] = path
    results.setdefault("machines", [])
    if machine() not in results["machines"]:
        results["machines"].append(machine())
    configs = [(a, s) for s in scales for a in aspects]
    keys = [config_key(a, s) for a, s in configs]
    predictors, measured = {}, {}
    for dataset in datasets:
        samples = list_test_samples(dataset, data_dir, split)[:count]
        measured[dataset] = [sample.stem for sample in samples]
        stored = results["datasets"].setdefault(dataset, {}).setdefault(split, {})
        for sample in tqdm(samples, desc=dataset, unit="image", disable=not progress):
            entry = stored.setdefault(sample.stem, {})
            entry.update(size=[sample.height, sample.width], fixations=int(len(sample.fixations)))
            todo = [s for s in (CENTRE, HUMAN, *models) if _missing(entry, s, (CENTRE,) if s == CENTRE else METHODS,
                                                                   keys)]
            if not todo:
                continue
            inside = entry.setdefault("inside", {})
            for source in todo:
                if source == CENTRE:
                    saliency_map, methods = np.zeros((sample.height, sample.width), np.float32), (CENTRE,)
                elif source == HUMAN:
                    saliency_map, methods = nusvip.load_human_map(sample), METHODS
                else:
                    if source not in predictors:
                        from student.inference import load_predictor

                        predictors[source] = load_predictor(models[source])
                    saliency_map, methods = predictors[source].predict(read_image(sample.image_path)), METHODS
                for method, counts in crop_counts(saliency_map, sample.fixations, configs, methods).items():
                    inside.setdefault(source, {}).setdefault(method, {}).update(counts)
            if results_path:
                _save(results_path, results)
    return results, measured


def _mean_se(values):
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def rows_of(models):
    """The table's rows: (label, source, method)."""
    rows = [("centre", CENTRE, CENTRE)]
    rows += [(f"{method}: {name}", name, method) for name in models for method in METHODS]
    rows += [(f"{method}: human map (ceiling)", HUMAN, method) for method in METHODS]
    return rows


def to_markdown(results, measured, models, split="test", aspects=ASPECTS, scales=SCALES):
    """The tables for the images `measured` ({data set: stems}) from `results`."""
    described = ", ".join(f"{name} = {results['models'][name]}" for name in models) or "none"
    lines = [
        "Fraction of human fixations inside the crop (mean ± standard error over images); real fixations of 15 "
        "observers per image from the data sets' `eye/fixations.mat`, every fixation counted (duplicates kept). "
        f"Machine: {'; '.join(results.get('machines', [])) or 'unknown'}. "
        f"Models: {described}.",
        "",
        "\"vs centre\": the paired difference from the centre crop, averaged over the ratios (percentage points, mean "
        "± standard error over images). The human map is built from the same fixations: an in-sample ceiling.",
    ]
    for dataset, stems in measured.items():
        images = results["datasets"][dataset][split]
        fixations = [images[s]["fixations"] for s in stems]
        sizes = sorted({tuple(images[s]["size"]) for s in stems})
        lines += ["", f"### {dataset}, split `{split}`: {len(stems)} images, "
                  f"{sum(fixations)} fixations ({np.mean(fixations):.0f} per image), {len(sizes)} image size(s)"]
        for scale in scales:
            keys = [config_key(a, scale) for a in aspects]
            extent = "the largest box of each ratio" if scale == 1 else f"{scale:g} of its width and height"
            lines += ["", f"scale {scale:g} ({extent})", "",
                      f"| crop | {' | '.join(aspects)} | mean of ratios | vs centre (pp) |",
                      "|---|" + "---|" * (len(aspects) + 2)]

            def fractions(source, method, key):
                return np.array([images[s]["inside"][source][method][key] / images[s]["fixations"] for s in stems])

            centre = np.mean([fractions(CENTRE, CENTRE, k) for k in keys], axis=0)
            for label, source, method in rows_of(models):
                per_ratio = [fractions(source, method, k) for k in keys]
                cells = ["{:.3f} ± {:.3f}".format(*_mean_se(v)) for v in per_ratio]
                average = np.mean(per_ratio, axis=0)
                cells.append("{:.3f} ± {:.3f}".format(*_mean_se(average)))
                cells.append("" if source == CENTRE else "{:+.1f} ± {:.1f}".format(
                    *(100 * v for v in _mean_se(average - centre))))
                lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def make_figure(results, measured, data_dir, models, path, split="test", dataset="osie", aspect="4:5", scale=1.0,
                source=None, count=4):
    """A row of example crops: the centre box (dashed) and the mass box on `source` (solid), fixations as dots.

    `source` is a model name of `models` (default: the first; the human map when there is none). The examples are
    the images where its mass crop beats the centre crop the most (two), the median one and the one where it loses
    the most, by the stored counts.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    from datasets import nusvip
    from datasets.io import read_image, write_bytes_atomic

    source = source or next(iter(models), HUMAN)
    key = config_key(aspect, scale)
    images = results["datasets"][dataset][split]

    def gain(stem):
        inside = images[stem]["inside"]
        return (inside[source]["mass"][key] - inside[CENTRE][CENTRE][key]) / images[stem]["fixations"]

    ranked = sorted(measured[dataset], key=lambda s: (-gain(s), s))
    picks = list(dict.fromkeys(ranked[:count - 2] + [ranked[len(ranked) // 2], ranked[-1]]))
    samples = {s.stem: s for s in list_test_samples(dataset, data_dir, split)}
    predictor = None
    if source != HUMAN:
        from student.inference import load_predictor

        predictor = load_predictor(models[source])
    fig, axes = plt.subplots(1, len(picks), figsize=(2.6 * len(picks), 2.35), dpi=90)
    for ax, stem in zip(np.atleast_1d(axes), picks):
        sample = samples[stem]
        image = read_image(sample.image_path)
        saliency_map = predictor.predict(image) if predictor else nusvip.load_human_map(sample)
        ax.imshow(image)
        ax.scatter(sample.fixations[:, 1], sample.fixations[:, 0], s=2, c="red", linewidths=0)
        for method, style, colour in ((CENTRE, "--", "white"), ("mass", "-", "yellow")):
            box = crop_box(saliency_map, aspect, method, scale)
            ax.add_patch(Rectangle((box.x - 0.5, box.y - 0.5), box.width, box.height, fill=False, ls=style, lw=1.6,
                                   ec=colour))
        fractions = [images[stem]["inside"][s][m][key] / images[stem]["fixations"] for s, m in
                     ((CENTRE, CENTRE), (source, "mass"))]
        ax.set_title(f"centre {fractions[0]:.2f}, mass {fractions[1]:.2f}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{dataset} test, {aspect} crops at scale {scale:g}: centre (dashed white) vs mass on {source} "
                 "(yellow); red: human fixations, titles: fraction inside", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    png = buffer.getvalue()
    if len(png) > FIGURE_MAX_BYTES:  # photos compress poorly: a 256-colour palette keeps the PNG small
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(buffer, "PNG",
                                                                                              optimize=True)
        png = buffer.getvalue()
    write_bytes_atomic(path, png)
    return picks


def build_parser():
    p = argparse.ArgumentParser(
        prog="crop_fixations.py",
        description="Fraction of human fixations inside centre, point and mass crops on the OSIE and MIT1003 test "
        "splits (Markdown table on stdout, per-image counts in --results, progress on stderr).")
    p.add_argument("--data-dir", default=DEFAULT_DATA,
                   help="folder holding osie/ and mit1003/ in the NUS-VIP layout (default: ../shared/data/eyetracking)")
    p.add_argument("--model", action="append", type=model_spec, default=[], metavar="NAME=PATH",
                   help="a saliency model to crop with (point and mass), as load_predictor takes it; repeat for "
                   "several. Without any, only centre and the human-map ceiling are measured")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                   help="data sets (default: %(default)s)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default: %(default)s)")
    p.add_argument("--aspects", nargs="+", default=list(ASPECTS), metavar="W:H",
                   help="aspect ratios (default: %(default)s)")
    p.add_argument("--scales", nargs="+", type=float, default=list(SCALES),
                   help="fractions of the largest box's sides, in (0, 1] (default: %(default)s)")
    p.add_argument("--count", type=int, default=None, help="only the first N images of each split (a quick run)")
    p.add_argument("--results", default=None,
                   help="per-image JSON, written atomically after each image; a rerun skips what it holds")
    p.add_argument("--figure", default=None, metavar="OUT.png",
                   help=f"also draw example crops (centre vs mass on the first model) into this PNG (under "
                   f"{FIGURE_MAX_BYTES // 1000} KB)")
    p.add_argument("--figure-aspect", default="4:5", metavar="W:H", help="the figure's ratio (default: %(default)s)")
    p.add_argument("--figure-scale", type=float, default=1.0, help="the figure's scale (default: %(default)s)")
    p.add_argument("--figure-model", default=None, metavar="NAME",
                   help="the --model NAME whose mass crops the figure shows (default: the first --model)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        aspects = [aspect_label(a)[0] for a in args.aspects]
        scales = [check_scale(s) for s in args.scales]
        figure_aspect, figure_scale = aspect_label(args.figure_aspect)[0], check_scale(args.figure_scale)
    except ValueError as e:
        parser.error(str(e))
    models = dict(args.model)
    if len(models) != len(args.model):
        parser.error("each --model NAME must be different")
    if args.figure_model is not None and args.figure_model not in models:
        parser.error(f"--figure-model {args.figure_model!r} is not a --model NAME ({', '.join(models) or 'none given'})")
    if models:
        from datasets.io import import_tensorflow_quietly

        import_tensorflow_quietly()
    start = time.perf_counter()
    try:
        results, measured = measure(args.data_dir, models, args.results, args.datasets, aspects, scales, args.split,
                                    args.count, progress=not args.no_progress)
        if args.figure:
            make_figure(results, measured, args.data_dir, models, args.figure, split=args.split,
                        dataset=args.datasets[0], aspect=figure_aspect, scale=figure_scale, source=args.figure_model)
    except (FileNotFoundError, ValueError) as e:
        print(f"crop_fixations.py: error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(results, measured, models, args.split, aspects, scales), end="")
    print(f"crop_fixations.py: done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
