"""End-to-end speed of the built-in models, as `predict.py` and `saliency_kd.predict` run them.

    python benchmarks/builtin_speed.py --images ../shared/data/mit1003_sample --out runs/builtin_speed

The other benchmarks time one runtime call on a batch already at the network's input size. This one times what a
user of the default path waits for: `load_predictor(name)` (the load, once), then `Predictor.predict_batch` on
real photos decoded once at their own size, each map returned at its photo's size (letterbox or resize, the
network, the post-processing, the resize back), batch 1 and 8, in the models' own framework (Keras on the
TensorFlow backend; attention-center in its LiteRT interpreter). Models in turn, in one run on one machine:
images/s from `backbone_runtimes.time_rate` (two rounds of at least a second, the median call, the faster
round), with the load average at each row. Writes `<out>.json` (atomically) and `<out>.md`; the table also goes
to stdout, status lines to stderr.
"""

import argparse
import datetime
import os
import shlex
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from argtypes import HelpFormatter  # noqa: E402
from benchmarks.backbone_runtimes import cpu_model, time_rate  # noqa: E402

BATCHES = (1, 8)
REFERENCE = "fastgaze-centre"


def _status(message):
    print(message, file=sys.stderr, flush=True)


def measure(names, images, batches=BATCHES, min_seconds=1.0):
    """Rows {model, batch, images_per_s, load_s, load_average} for each built-in name, in turn."""
    from inference.predictors import load_predictor

    rows = []
    for name in names:
        start = time.perf_counter()
        predictor = load_predictor(name)
        load_s = time.perf_counter() - start
        for batch in batches:
            group = [images[i % len(images)] for i in range(batch)]
            rate, medians = time_rate(predictor.predict_batch, group, min_seconds=min_seconds)
            rows.append({"model": name, "batch": batch, "images_per_s": rate, "round_medians_s": medians,
                         "load_s": load_s, "load_average": os.getloadavg()[0]})
            _status(f"[builtin_speed] {name} batch {batch}: {rate:.2f} images/s (load {os.getloadavg()[0]:.1f})")
    return rows


def to_markdown(results):
    """The table: images/s at batch 1 and 8, and the ratio to `REFERENCE` at each batch."""
    rates = {(r["model"], r["batch"]): r["images_per_s"] for r in results["rows"]}
    batches = sorted({r["batch"] for r in results["rows"]})
    models = list(dict.fromkeys(r["model"] for r in results["rows"]))
    load = {r["model"]: r["load_s"] for r in results["rows"]}
    head = "| model | load (s) | " + " | ".join(f"batch {b}: images/s (vs {REFERENCE})" for b in batches) + " |"
    lines = [f"End to end (`load_predictor(name).predict_batch` on {results['images']} real photos at their own "
             f"sizes, map back at each photo's size), {results['cpu']}, {results['date']}, load average "
             f"{min(r['load_average'] for r in results['rows']):.1f}-"
             f"{max(r['load_average'] for r in results['rows']):.1f}.", "", head,
             "|---|---|" + "---|" * len(batches)]
    for model in models:
        cells = []
        for b in batches:
            rate, ref = rates.get((model, b)), rates.get((REFERENCE, b))
            cells.append("" if rate is None else f"{rate:.1f}" + (f" ({rate / ref:.2f}x)" if ref else ""))
        lines.append(f"| {model} | {load[model]:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from inference.predictors import builtin_menu

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--images", required=True,
                   help="a folder of photos, searched recursively (the first 8; with fewer, they repeat)")
    p.add_argument("--models", nargs="+", default=None,
                   help="built-in names (default: every built-in whose packages are installed, and their ensemble)")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="batch sizes")
    p.add_argument("--min-seconds", type=float, default=1.0, help="each round's least duration")
    p.add_argument("--out", default="runs/builtin_speed", help="writes <out>.json and <out>.md")
    args = p.parse_args(argv)

    from datasets.folders import IMAGE_EXTENSIONS
    from datasets.io import import_tensorflow_quietly, read_image, write_report
    from inference.files import list_images

    paths = [path for path, _ in list_images([args.images])] if os.path.isdir(args.images) else []
    if not paths:
        print(f"builtin_speed: error: {args.images}: no images ({', '.join(IMAGE_EXTENSIONS)}, searched "
              "recursively); give a folder of photos", file=sys.stderr)
        return 1
    import_tensorflow_quietly()
    images = [read_image(path) for path in paths[:max(args.batches)]]
    names = args.models or list(builtin_menu())
    results = {"command": shlex.join(["python", *sys.argv]), "cpu": cpu_model(), "date":
               datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "images": len(images), "sizes": [list(im.shape[:2]) for im in images],
               "rows": measure(names, images, tuple(args.batches), min_seconds=args.min_seconds)}
    table = to_markdown(results)
    write_report(args.out, results, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
