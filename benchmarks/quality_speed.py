"""Quality against speed in one run: FastGaze + centre at three input sizes, attention-center and the student.

    python benchmarks/quality_speed.py quality --records-dir data/fg_mit1003 data/fg_osie \\
        --study runs/own_model/final --out runs/quality_speed/quality.json
    python benchmarks/quality_speed.py speed --out runs/quality_speed/results --quality runs/quality_speed/quality.json

`speed` times every model in each of its float runtimes (TF SavedModel, ONNX Runtime, OpenVINO, LiteRT; int8
too with `--int8`) at batch 1 and 8, in one run on one machine, as benchmarks/backbone_runtimes.py does: the
runtime call alone on a fixed uint8 batch already at the model's input size, two rounds of at least
`MIN_SECONDS` of calls (the median call counts, the faster round is kept). The models (`--models`):

- `fastgaze-centre@HxW` for each of `SIZES`: the built-in FastGaze + centre with its network run at HxW
  (`inference.builtin_export.fastgaze_student(..., max_side=W)`). The shipped model resizes every image to a
  longest side of 320 before its network, so its export at 144x192 would upsample to 240x320 and cost the same as
  at 240x320; at 240x320 the two are the same model;
- `attention-center@480x640`: its LiteRT interpreter at the fixed size it takes
  (`teacher.attention_center.AttentionCenter.run_frame` per image; batch 8 is 8 calls); it is not exportable;
- `student@HxW` for each of `SIZES` (and `--student-size`): EfficientNet-Lite0 with the light decoder, variant A,
  random-init weights (speed does not depend on their values), or `--student PATH` (a run folder or weights file);
- `student-card@HxW`, only when `--models` names it: the same encoder with the design card's decoder
  (random-init), for the runtime of each decoder in the same run.

Each row is written to `<out>.json` (atomically) as soon as it is measured, with the load average at that moment;
a rerun measures only the rows missing (`--redo PATTERN` measures again those whose key, `model@HxW|runtime|
weights|batch`, contains PATTERN). Exports are made once in `--work`. With the rows, `<out>.json` and `<out>.md`
hold target (e) of issue 23 (`verdict`: the student at `--student-size` in its best float runtime against
fastgaze-centre@240x320 in its best, batch 1 and batch 8, met at 2x or more) and `<out>.png` the figure: NSS on
OSIE and MIT1003 test (from `--quality`) against images/s in each model's best float runtime at batch 1.

`quality` writes the scores file `--quality` reads (`QUALITY_SCHEMA`): fastgaze-centre at each size and
attention-center scored on the test split of `--records-dir` (MIT1003 and OSIE records from export_teacher.py)
with the project's evaluation (`evaluation.scoring.evaluate`, at each image's original size), and the student's
mean over seeds read from the study when it is there (`python -m experiments.own_model final --out DIR` writes
`DIR/final/study.json`: pass `--study DIR/final`). The same seeds are scored at the other `SIZES` too, their input
letterboxed to that size (the weights trained at one size, used at another: one model, several speeds).
FastGaze at HxW is scored as its network sees images of that size: each image resized (aspect kept) to a longest
side of W, which is HxW for the 4:3 photos; at 240x320 it is the shipped model.

Status lines go to stderr; stdout carries the markdown table only.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import shlex
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from argtypes import HelpFormatter  # noqa: E402
from benchmarks import backbone_runtimes as bench  # noqa: E402

SIZES = ((144, 192), (192, 256), (240, 320))
BATCHES = (1, 8)
REFERENCE_SIZE = (240, 320)  # FastGaze + centre's size in target (e)
TARGET_RATIO = 2.0
MIN_SECONDS = 1.0
FASTGAZE, ATTENTION, STUDENT = "fastgaze-centre", "attention-center", "student"
MODELS = (FASTGAZE, ATTENTION, STUDENT)
# The same encoder with the design card's decoder (random-init), on request (`--models`): the runtime per decoder.
# It is never scored, so the figure leaves it out.
STUDENT_CARD = "student-card"
ATTENTION_SIZE = (480, 640)
STUDENT_BACKBONE, STUDENT_DECODER = "efficientnet-lite0", "light"
# export_student's format -> the runtime's name in the rows.
RUNTIMES = {"saved_model": "tf saved_model", "onnx": "onnxruntime", "openvino": "openvino", "litert": "litert"}
DATASETS = {"osie": "OSIE", "mit1003": "MIT1003"}  # the figure's panels, in order
NO_SCORE = "no score yet"
QUALITY_SCHEMA = """{"<model>@<H>x<W>": {"mit1003": {"nss": float, ...}, "osie": {"nss": float, ...},
                     "source": "how it was scored", "seeds": [the study's seeds, for its student]},
 "_about": "..."}
Keys starting with "_" are notes; a data set or a model left out has no score yet. "nss" is required in a data
set's entry; other metrics (cc, ...) are kept but not plotted."""


def _status(message):
    print(message, file=sys.stderr, flush=True)


def size_text(size):
    return f"{size[0]}x{size[1]}"


def entry_key(model, size):
    return f"{model}@{size_text(size)}"


def row_key(entry, runtime, weights, batch):
    return f"{entry}|{runtime}|{weights}|{batch}"


def plan(models=MODELS, sizes=SIZES, student_size=SIZES[0]):
    """[(entry key, model, size)] to measure, in table order."""
    out = []
    for model in models:
        if model == ATTENTION:
            out.append((entry_key(model, ATTENTION_SIZE), model, ATTENTION_SIZE))
            continue
        chosen = list(sizes) + ([tuple(student_size)] if model == STUDENT and tuple(student_size) not in sizes else [])
        out += [(entry_key(model, s), model, tuple(s)) for s in chosen]
    return out


def configs(model, formats, int8):
    """[(runtime, weights)] of one model's rows."""
    if model == ATTENTION:
        return [("litert", "shipped")]
    found = [(RUNTIMES[f], "float32") for f in formats]
    if int8:
        found += [(RUNTIMES[f], "int8") for f in formats if f != "saved_model"]
    return found


# ---------------------------------------------------------------------------------------------------------
# Models, exports, runners


def student_source_label(student):
    return "random-init" if student is None else os.path.abspath(os.fspath(student))


def keras_model(model, size, student=None):
    """The Keras model that is exported: FastGaze's student-like model with its network at `size`, or the student."""
    if model == FASTGAZE:
        from inference.builtin_export import fastgaze_student

        return fastgaze_student(FASTGAZE, size, max_side=max(size))
    if model == STUDENT_CARD:
        import keras

        from student.model import build_student

        keras.utils.set_random_seed(0)
        return build_student("A", backbone=STUDENT_BACKBONE, decoder="card", seed=0)
    if student is not None:
        from inference.export import load_student

        return load_student(os.fspath(student))[0]
    import keras

    from student.model import build_student

    keras.utils.set_random_seed(0)
    return build_student("A", backbone=STUDENT_BACKBONE, decoder=STUDENT_DECODER, seed=0)


def export_entry(key, model, size, work, formats, int8=False, student=None, records_dir=None):
    """`inference.export.export_student`'s files of one entry, made once in `work` (a student's folder is named
    after its source, so another --student is exported anew)."""
    from inference.export import EXTENSIONS, export_student

    folder = key
    if model == STUDENT:
        folder += "-" + hashlib.sha1(student_source_label(student).encode()).hexdigest()[:8]
    out = os.path.join(work, "exports", folder)
    name = model.replace("-", "_")
    paths = {f: os.path.join(out, f"{name}_saved_model" if f == "saved_model" else name + EXTENSIONS[f])
             for f in formats}
    if int8:
        paths.update({f"{f}_int8": os.path.join(out, f"{name}_int8{EXTENSIONS[f]}") for f in formats
                      if f != "saved_model"})
    if not all(os.path.exists(p) for p in paths.values()):
        _status(f"[quality-speed] exporting {key} ({', '.join(formats)}{', int8' if int8 else ''})")
        source = os.fspath(student) if model == STUDENT and student is not None else keras_model(model, size, student)
        paths = export_student(source, out, formats=tuple(formats), input_size=size, int8=int8,
                               records_dir=records_dir, calibration_count=bench.CALIBRATION_COUNT, name=name)
    return paths


def model_info(model, size, student=None):
    """GMAC of one image and parameters: of the exported graph (BN folded, saliency head only); attention-center's
    are not known (a LiteRT file), its bytes on disk are."""
    if model == ATTENTION:
        from teacher.attention_center import model_path

        return {"gmac": None, "params": None, "bytes": os.path.getsize(model_path())}
    from student.model import forward_gmac
    from student.serving import inference_student

    graph = inference_student(keras_model(model, size, student))
    return {"gmac": forward_gmac(graph, size), "params": int(graph.count_params())}


def runners(model, paths, threads, int8=False):
    """{(runtime, weights): (fn(uint8 batch at the input size), bytes on disk, object to keep alive)}."""
    if model == ATTENTION:
        from teacher.attention_center import AttentionCenter, model_path

        centre = AttentionCenter(num_threads=threads)

        def run_frames(batch):
            return [centre.run_frame(image.astype(np.float32) / 255.0) for image in batch]

        return {("litert", "shipped"): (run_frames, os.path.getsize(model_path()), centre)}
    from inference.predictors import RuntimeStudentPredictor

    out = {}
    if "saved_model" in paths:
        import tensorflow as tf

        served = tf.saved_model.load(paths["saved_model"])
        signature = served.signatures["serving_default"]

        def run_saved_model(x):
            return signature(images=tf.constant(x))["density"].numpy()

        out[(RUNTIMES["saved_model"], "float32")] = (run_saved_model, bench._size_on_disk(paths["saved_model"]),
                                                      served)
    for fmt in ("onnx", "openvino", "litert"):
        for suffix, weights in (("", "float32"), ("_int8", "int8")):
            if fmt + suffix in paths and (int8 or not suffix):
                predictor = RuntimeStudentPredictor(paths[fmt + suffix], threads=threads)
                out[(RUNTIMES[fmt], weights)] = (predictor.run_at_input_size,
                                                 bench._size_on_disk(paths[fmt + suffix]), predictor)
    return out


# ---------------------------------------------------------------------------------------------------------
# The speed run


def _read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); {what}") from e


def load_quality(path):
    """The scores of a quality file (`QUALITY_SCHEMA`): {entry: {dataset: {metric: value}}}, notes left out.

    Raises:
        ValueError: the file breaks the schema, naming the file, the entry and the fix.
    """
    data = _read_json(path, "write it again with `python benchmarks/quality_speed.py quality`")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of models, e.g. {{\"{FASTGAZE}@240x320\": {{\"osie\": "
                         f"{{\"nss\": 2.25}}}}}}; the schema:\n{QUALITY_SCHEMA}")
    scores = {}
    for entry, value in data.items():
        if entry.startswith("_"):
            continue
        if "@" not in entry or not isinstance(value, dict):
            raise ValueError(f"{path}: entry {entry!r} must be \"<model>@<H>x<W>\": {{\"osie\": {{\"nss\": ...}}}}; "
                             f"the schema:\n{QUALITY_SCHEMA}")
        scores[entry] = {}
        for dataset, metrics in value.items():
            if dataset in ("source", "seeds"):
                continue
            if not isinstance(metrics, dict) or not isinstance(metrics.get("nss"), (int, float)) \
                    or not math.isfinite(metrics["nss"]):
                raise ValueError(f"{path}: {entry} / {dataset} needs a finite number \"nss\" (got {metrics!r}); "
                                 f"the schema:\n{QUALITY_SCHEMA}")
            scores[entry][dataset] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return scores


def measure(args, out):
    """Measure every pending row into `<out>.json` / `.md`, then the verdict and `<out>.png`; returns 0."""
    from datasets.io import write_report

    student_size = tuple(args.student_size)
    entries = plan(args.models, SIZES, student_size)
    student_label = student_source_label(args.student)
    results = {"rows": {}, "models": {}}
    redo = args.redo or []
    if os.path.exists(out + ".json"):
        results = _read_json(out + ".json", "remove it or choose another --out")
    old = results.get("student_source")
    stale = [k for k, r in results["rows"].items() if r["model"] == STUDENT]
    if old not in (None, student_label) and stale:  # another --student: its rows go, if --redo names them all
        if not all(any(p in k for p in redo) for k in stale):
            raise ValueError(f"{out}.json: its student rows are of {old}, not {student_label}; choose another "
                             "--out, or measure the student again with --redo student@")
        results["rows"] = {k: r for k, r in results["rows"].items() if r["model"] != STUDENT}
        results["models"] = {k: v for k, v in results["models"].items() if not k.startswith(STUDENT + "@")}
    quality = load_quality(args.quality) if args.quality else {}
    results.update({"machine": bench.cpu_model(), "cpu_count": os.cpu_count(), "threads": args.threads,
                    "student_source": student_label, "student_size": list(student_size),
                    "reference": entry_key(FASTGAZE, REFERENCE_SIZE), "order": [e[0] for e in entries],
                    "quality_file": os.path.abspath(args.quality) if args.quality else None, "quality": quality})
    results.setdefault("runs", []).append({"command": shlex.join(["python", *sys.argv]),
                                           "date": datetime.datetime.now().isoformat(timespec="minutes"),
                                           "load_average": os.getloadavg()[0]})

    def pending(key):
        return key not in results["rows"] or any(pattern in key for pattern in redo)

    def save():
        results["verdict"] = verdict(results)
        results["figure"] = figure_points(results)
        write_report(out, results, to_markdown(results))

    records_dir = None
    for key, model, size in entries:
        todo = [row_key(key, r, w, b) for r, w in configs(model, args.runtimes, args.int8) for b in BATCHES]
        todo = [k for k in todo if pending(k)]
        if not todo and key in results["models"]:
            continue
        paths = {}
        if model != ATTENTION:
            if args.int8:
                records_dir = records_dir or bench.calibration_records(args.work)
            paths = export_entry(key, model, size, args.work, args.runtimes, args.int8, args.student, records_dir)
        if key not in results["models"]:
            results["models"][key] = {"model": model, "size": list(size), **model_info(model, size, args.student)}
            save()
        if args.prepare_only:
            continue
        rng = np.random.default_rng(0)
        batches = {b: rng.integers(0, 256, (b, *size, 3), dtype=np.uint8) for b in BATCHES}
        for (runtime, weights), (fn, nbytes, _keep) in runners(model, paths, args.threads, args.int8).items():
            for batch in BATCHES:
                rkey = row_key(key, runtime, weights, batch)
                if rkey not in todo:
                    continue
                rate, medians = bench.time_rate(fn, batches[batch], min_seconds=MIN_SECONDS)
                old = results["rows"].get(rkey)
                earlier = [] if old is None else [*old.get("earlier", []),
                                                  {k: old[k] for k in ("images_per_s", "load_average")}]
                load = os.getloadavg()[0]
                results["rows"][rkey] = {"entry": key, "model": model, "size": list(size), "runtime": runtime,
                                         "weights": weights, "batch": batch, "images_per_s": rate,
                                         "round_medians_s": medians, "bytes": nbytes, "load_average": load,
                                         "earlier": earlier}
                _status(f"[quality-speed] {rkey}: {rate:.2f} images/s (load average {load:.1f})")
                save()
    save()
    plot(results, out + ".png")
    print(to_markdown(results))
    return 0


# ---------------------------------------------------------------------------------------------------------
# Verdict, figure, markdown


def best_row(rows, entry, batch, weights=("float32", "shipped")):
    """The fastest row of `entry` at `batch` among `weights`, or None."""
    found = [r for r in rows.values() if r["entry"] == entry and r["batch"] == batch and r["weights"] in weights]
    return max(found, key=lambda r: r["images_per_s"], default=None)


def verdict(results):
    """Target (e): per batch, the student at its size in its best float runtime over fastgaze-centre@240x320 in its
    best; met when both batches reach `TARGET_RATIO`, None while a row is missing."""
    student = entry_key(STUDENT, results["student_size"])
    reference = results.get("reference", entry_key(FASTGAZE, REFERENCE_SIZE))
    out = {"target": f"(e) {student} in its best float runtime >= {TARGET_RATIO:g}x {reference} in its best, "
                     f"batch {' and '.join(map(str, BATCHES))}",
           "student": student, "reference": reference, "batches": {}}
    for batch in BATCHES:
        s, f = best_row(results["rows"], student, batch), best_row(results["rows"], reference, batch)
        if s is None or f is None:
            out["batches"][str(batch)] = {"met": None, "why": "not measured yet: " + ", ".join(
                k for k, r in ((student, s), (reference, f)) if r is None)}
            continue
        ratio = s["images_per_s"] / f["images_per_s"]
        out["batches"][str(batch)] = {"student_runtime": s["runtime"], "student_images_per_s": s["images_per_s"],
                                      "reference_runtime": f["runtime"], "reference_images_per_s": f["images_per_s"],
                                      "ratio": ratio, "met": ratio >= TARGET_RATIO}
    mets = [b["met"] for b in out["batches"].values()]
    out["met"] = None if None in mets else all(mets)
    return out


def figure_points(results):
    """{"points": [{entry, runtime, images_per_s (best float, batch 1), scores}], "no_score": {entry: NO_SCORE}};
    an entry with no score on any data set is listed, never plotted."""
    points, missing = [], {}
    quality = results.get("quality") or {}
    for entry in results.get("order", []):
        best = best_row(results["rows"], entry, BATCHES[0])
        if entry.startswith(STUDENT_CARD + "@"):
            continue
        if best is None:
            continue
        scores = {d: quality[entry][d]["nss"] for d in DATASETS if d in quality.get(entry, {})}
        if not scores:
            missing[entry] = NO_SCORE
        points.append({"entry": entry, "runtime": best["runtime"], "images_per_s": best["images_per_s"],
                       "nss": scores})
    return {"x": f"images/s, best float runtime, batch {BATCHES[0]}", "points": points, "no_score": missing}


def plot(results, path):
    """Two panels (OSIE, MIT1003): test NSS against images/s (log), one line per model through its scored sizes.

    Returns {dataset: [entries plotted]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from datasets.io import atomic_write

    points = results["figure"]["points"]
    colours = {FASTGAZE: "tab:blue", ATTENTION: "tab:orange", STUDENT: "tab:green"}
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(5.2 * len(DATASETS), 4.0))
    plotted = {}
    for ax, (dataset, label) in zip(np.atleast_1d(axes), DATASETS.items()):
        shown = [p for p in points if dataset in p["nss"]]
        plotted[dataset] = [p["entry"] for p in shown]
        for model in dict.fromkeys(p["entry"].split("@")[0] for p in shown):
            # One line per model through its sizes (its speed against quality), each point labelled by its size,
            # the labels alternately above and below so that neighbours do not overlap.
            series = sorted((p for p in shown if p["entry"].split("@")[0] == model), key=lambda p: p["images_per_s"])
            xs, ys = [p["images_per_s"] for p in series], [p["nss"][dataset] for p in series]
            colour = colours.get(model, "tab:gray")
            ax.plot(xs, ys, "-o", color=colour, zorder=3, label=model, linewidth=1)
            for i, p in enumerate(series):
                ax.annotate(p["entry"].split("@")[1], (p["images_per_s"], p["nss"][dataset]), fontsize=7,
                            xytext=(4, 3 if i % 2 == 0 else -9), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if points:  # every measured model's speed, scored or not: the panels keep one range as scores arrive
            rates = [p["images_per_s"] for p in points]
            ax.set_xlim(min(rates) / 1.5, max(rates) * 2.0)
        ax.set_xlabel(results["figure"]["x"])
        ax.set_ylabel("NSS (test)")
        ax.set_title(f"{label} test")
        ax.grid(True, which="both", alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="upper left")
        if not shown:
            ax.text(0.5, 0.5, NO_SCORE, transform=ax.transAxes, ha="center", va="center", color="gray")
    fig.suptitle(f"Quality against speed ({results['machine']}, {results['threads']} threads)", fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return plotted


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def to_markdown(results):
    rows = results["rows"]
    lines = [f"# Quality against speed: {FASTGAZE}, {ATTENTION} and the student, one run", "",
             (f"Machine: {results['machine']} (`lscpu`), {results['cpu_count']} cores; {results['threads']} threads "
              "per runtime (TF: its default). Runs (a rerun measures only the rows it lacks, or --redo's): "
              + "; ".join(f"{r['date']} `{r['command']}` (load average {r['load_average']:.1f})"
                          for r in results.get("runs", [])) + "."), "",
             (f"Each row times the runtime call alone on a fixed uint8 batch already at the input size. {FASTGAZE}@HxW "
              "runs its network at HxW (the shipped model resizes to a longest side of 320 first, so it is the "
              f"240x320 row); {ATTENTION} is its shipped LiteRT file at 480x640, one call per image; the student "
              f"({STUDENT_BACKBONE}, {STUDENT_DECODER} decoder) is `{results.get('student_source')}`; "
              f"{STUDENT_CARD}, where measured, is the same encoder with the design card's decoder (random-init). GMAC and "
              "parameters: the exported graph (BN folded, saliency head only). Load: the 1-minute load average when "
              "the row was measured."), "",
             *bench._load_note(results),
             "| model | input | runtime | weights | GMAC | params (M) | images/s, batch 1 | images/s, batch 8 | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in results.get("order", []):
        info = results["models"].get(entry, {})
        combos = []
        for r in rows.values():
            if r["entry"] == entry and (r["runtime"], r["weights"]) not in combos:
                combos.append((r["runtime"], r["weights"]))
        best = {b: best_row(rows, entry, b) for b in BATCHES}
        for runtime, weights in combos:
            cells = []
            for b in BATCHES:
                r = rows.get(row_key(entry, runtime, weights, b))
                text = "" if r is None else f"{r['images_per_s']:.1f}"
                if r is not None and best[b] is r:
                    text = f"**{text}**"
                if r is not None and r.get("earlier"):
                    text += " (" + ", ".join(f"{e['images_per_s']:.1f}" for e in r["earlier"]) + ")"
                cells.append(text)
            last = rows.get(row_key(entry, runtime, weights, BATCHES[-1])) or rows[row_key(entry, runtime, weights,
                                                                                           BATCHES[0])]
            model, size = entry.split("@")
            params = None if info.get("params") is None else info["params"] / 1e6
            lines.append(f"| {model} | {size} | {runtime} | {weights} | {_fmt(info.get('gmac'), '.2f')} | "
                         f"{_fmt(params, '.2f')} | {cells[0]} | {cells[1]} | {last['load_average']:.1f} |")
    lines += ["", "Bold: the model's fastest float runtime at that batch size. In brackets: earlier measurements "
              "of the row (`--redo`), which the last one replaced.", ""]
    v = results.get("verdict") or verdict(results)
    state = {True: "**met**", False: "**missed**", None: "not decided (rows missing)"}[v["met"]]
    lines += [f"## Target {v['target']}: {state}", "",
              f"| batch | {v['student']} (runtime) | images/s | {v['reference']} (runtime) | images/s | ratio | met |",
              "|---|---|---|---|---|---|---|"]
    for batch, b in v["batches"].items():
        if b["met"] is None:
            lines.append(f"| {batch} | {b['why']} | | | | | |")
            continue
        lines.append(f"| {batch} | {b['student_runtime']} | {b['student_images_per_s']:.1f} | {b['reference_runtime']} "
                     f"| {b['reference_images_per_s']:.1f} | {b['ratio']:.2f}x | {'yes' if b['met'] else 'no'} |")
    fig = results.get("figure") or figure_points(results)
    lines += ["", f"## The figure: test NSS against {fig['x']}", "",
              "| model | input | best runtime | images/s | " + " | ".join(f"{n} NSS" for n in DATASETS.values()) + " |",
              "|---|---|---|---|" + "---|" * len(DATASETS)]
    for p in fig["points"]:
        model, size = p["entry"].split("@")
        scores = " | ".join(_fmt(p["nss"].get(d), ".3f") or NO_SCORE for d in DATASETS)
        lines.append(f"| {model} | {size} | {p['runtime']} | {p['images_per_s']:.1f} | {scores} |")
    if fig["no_score"]:
        lines += ["", "Not plotted (" + NO_SCORE + "): " + ", ".join(fig["no_score"]) + "."]
    if results.get("quality_file"):
        lines += ["", f"Scores: `{results['quality_file']}`."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# The quality file


def _fastgaze_predictor(max_side):
    """FastGaze + centre with its network at a longest side of `max_side`, as a `Predictor` (each image at its own
    size, the map over its maximum, as the built-in's `ContractPredictor`)."""
    import tensorflow as tf

    from inference.predictors import Predictor
    from teacher.fastgaze import build_fastgaze

    class FastGazeAtSide(Predictor):
        kind = "teacher"

        def __init__(self):
            self._model = build_fastgaze(centre_prior=True, max_side=max_side)
            self._run = tf.function(lambda x: self._model(x, training=False),
                                    input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
            super().__init__(f"{FASTGAZE}:max_side={max_side}", None, int(self._model.count_params()), 1)

        def _predict_group(self, images):
            density = self._run(tf.cast(images, tf.float32)).numpy()[..., 0]
            return np.stack([d / d.max() for d in density]).astype(np.float32)

    return FastGazeAtSide()


def study_scores(study_dir):
    """{"student@HxW": {dataset: {"nss", "cc", "nss_sd", ...}, "source"}} from the own-model study's study.json
    (variant "S", mean over its seeds), or {} when the study has not written one."""
    path = os.path.join(os.fspath(study_dir), "study.json")
    if not os.path.isfile(path):
        return {}
    summary = _read_json(path, "rerun `python -m experiments.own_model final ... --report-only` to write it again")
    variant = summary.get("variants", {}).get("S")
    if not variant:
        return {}
    size = summary.get("settings", {}).get("image_size")
    if not size:
        raise ValueError(f"{path}: its settings have no image_size; rerun the study's report to write it again")
    entry = {"source": f"{path}: variant S, mean over seeds {variant.get('seeds')}"}
    for dataset, metrics in variant["test"].items():
        entry[dataset] = {m: s["mean"] for m, s in metrics.items()}
        entry[dataset].update({f"{m}_sd": s["sd"] for m, s in metrics.items()})
    return {entry_key(STUDENT, size): entry}


def score_student_sizes(study_dir, records_dirs, data, save, sizes=SIZES, redo=(), max_images=None, progress=True):
    """Score the study's finished S seeds at each of `sizes` other than the size they were trained at (the same
    weights, their input letterboxed to HxW) into `data` as "student@HxW" (mean and sd over the seeds), calling
    `save` after each size. A size is scored again when the study has other seeds than its entry, or `redo` names
    it."""
    from evaluation.scoring import evaluate
    from experiments.own_model import finished_seed_runs
    from experiments.real_study import _mean_sd
    from inference.export import load_student
    from inference.predictors import KerasStudentPredictor

    runs = finished_seed_runs(study_dir, "S")
    if not runs:
        return data
    for size in sizes:
        key = entry_key(STUDENT, size)
        seeds = list(runs)
        configs = {seed: _read_json(os.path.join(run_dir, "config.json"), "the run is damaged: train it again")
                   for seed, run_dir in runs.items()}
        trained = {tuple(c["image_size"]) for c in configs.values()}
        if trained == {tuple(size)}:
            continue  # the study's own test scores (study_scores)
        if key in data and data[key].get("seeds") == seeds and not any(p in key for p in redo):
            continue
        per_seed = {}
        for seed, run_dir in runs.items():
            _status(f"[quality-speed] scoring {key}: seed {seed} ({run_dir}) run at {size_text(size)}")
            student, _ = load_student(run_dir)
            predictor = KerasStudentPredictor(student, run_dir, size, resize=configs[seed].get("resize", "letterbox"))
            results = evaluate(list(records_dirs), "test", {key: predictor}, include_teacher=False, references=False,
                               max_images=max_images, progress=progress)
            for dataset, table in results["datasets"].items():
                for metric, value in table["models"][key]["metrics"].items():
                    per_seed.setdefault(dataset, {}).setdefault(metric, []).append(value)
        entry = {"source": f"{study_dir}: the S seeds {seeds}, trained at "
                           f"{', '.join(size_text(t) for t in sorted(trained))} (best-KLD checkpoints), run at "
                           f"{size_text(size)} on the test split of {', '.join(map(str, records_dirs))}, mean over "
                           "seeds" + (f" (first {max_images} images)" if max_images else ""),
                 "seeds": seeds}
        for dataset, metrics in per_seed.items():
            entry[dataset] = {}
            for metric, values in metrics.items():
                entry[dataset][metric], entry[dataset][f"{metric}_sd"] = _mean_sd(values)
        data[key] = entry
        save()
    return data


def score_quality(records_dirs, out_path, study_dir=None, sizes=SIZES, models=(FASTGAZE, ATTENTION), redo=(),
                  max_images=None, progress=True):
    """Score `models` on the test split of `records_dirs` into `out_path` (`QUALITY_SCHEMA`), one entry at a time
    (written atomically after each; a rerun skips those there unless named in `redo`), plus the study's student.

    Returns the file's content."""
    from datasets.io import atomic_write
    from evaluation.scoring import evaluate

    data = _read_json(out_path, "remove it to score again") if os.path.exists(out_path) else {}
    data["_about"] = ("Test-split scores for benchmarks/quality_speed.py (evaluation.scoring.evaluate at each "
                      f"image's original size); {FASTGAZE}@HxW: the network at a longest side of W. Schema: "
                      + QUALITY_SCHEMA)

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with atomic_write(out_path, "w") as f:
            json.dump(data, f, indent=2)

    todo = []
    if FASTGAZE in models:
        todo += [(entry_key(FASTGAZE, s), lambda s=s: _fastgaze_predictor(max(s))) for s in sizes]
    if ATTENTION in models:
        todo.append((entry_key(ATTENTION, ATTENTION_SIZE), lambda: ATTENTION))  # the built-in, post-processed
    for key, make in todo:
        if key in data and not any(p in key for p in redo):
            continue
        _status(f"[quality-speed] scoring {key} on the test split of {', '.join(map(str, records_dirs))}")
        results = evaluate(list(records_dirs), "test", {key: make()}, include_teacher=False, references=False,
                           max_images=max_images, progress=progress)
        entry = {"source": f"evaluation.scoring.evaluate on the test split of {', '.join(map(str, records_dirs))}"
                           + (f" (first {max_images} images)" if max_images else "")}
        for dataset, table in results["datasets"].items():
            entry[dataset] = dict(table["models"][key]["metrics"], num_images=table["num_images"])
        data[key] = entry
        save()
    if study_dir is not None:
        data.update(study_scores(study_dir))
        score_student_sizes(study_dir, records_dirs, data, save, sizes, redo, max_images, progress)
    save()
    return data


# ---------------------------------------------------------------------------------------------------------
# Command line


def _size(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an int: {text!r}") from None


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/quality_speed.py", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed", help="time every model and runtime; the verdict of target (e); the figure",
                       formatter_class=HelpFormatter)
    s.add_argument("--out", default="runs/quality_speed/results", help="writes <out>.json, <out>.md and <out>.png")
    s.add_argument("--work", default=None, help="folder for the exports (default: <out>_work)")
    s.add_argument("--models", nargs="+", default=list(MODELS), choices=(*MODELS, STUDENT_CARD),
                   help=f"{STUDENT_CARD}: the student's encoder with the design card's decoder, for its runtime")
    s.add_argument("--student", default=None,
                   help="a trained run folder or weights file (default: random-init weights, the same speed)")
    s.add_argument("--student-size", nargs=2, type=_size, default=list(SIZES[0]), metavar=("HEIGHT", "WIDTH"),
                   help="the size the student is used at, which target (e) compares")
    s.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES),
                   help="export formats to time (attention-center: its LiteRT file always)")
    s.add_argument("--int8", action="store_true", help="also time int8 files (calibrated on 16 synthetic images)")
    s.add_argument("--threads", type=_size, default=os.cpu_count(), help="threads per runtime")
    s.add_argument("--quality", default=None, help="test scores to plot (`quality` writes them)")
    s.add_argument("--redo", nargs="*", default=None, metavar="PATTERN",
                   help="measure again the rows whose key (model@HxW|runtime|weights|batch) contains PATTERN")
    s.add_argument("--prepare-only", action="store_true",
                   help="make the exports, GMAC and parameters, time nothing (run it while the machine is busy)")
    q = sub.add_parser("quality", help="score fastgaze-centre at each size and attention-center on the test splits",
                       formatter_class=HelpFormatter)
    q.add_argument("--records-dir", nargs="+", required=True,
                   help="MIT1003 and OSIE records with a test split (export_teacher.py --split all)")
    q.add_argument("--out", default="runs/quality_speed/quality.json", help="the scores file `speed --quality` reads")
    q.add_argument("--study", default=None,
                   help="the own-model study's final folder (<own_model --out>/final): its student's test scores")
    q.add_argument("--redo", nargs="*", default=(), metavar="PATTERN", help="score again the entries containing it")
    q.add_argument("--max-images", type=_size, default=None, help="only the first N test images of each folder")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "quality":
        data = score_quality(args.records_dir, args.out, args.study, redo=args.redo or (),
                             max_images=args.max_images)
        scores = load_quality(args.out)
        lines = ["| model | " + " | ".join(f"{n} NSS" for n in DATASETS.values()) + " |",
                 "|---|" + "---|" * len(DATASETS)]
        for entry, by_set in scores.items():
            lines.append(f"| {entry} | " + " | ".join(_fmt(by_set.get(d, {}).get("nss"), ".3f") for d in DATASETS)
                         + " |")
        print("\n".join(lines))
        return 0 if data else 1
    args.work = args.work or args.out + "_work"
    return measure(args, args.out)


if __name__ == "__main__":
    sys.exit(main())
