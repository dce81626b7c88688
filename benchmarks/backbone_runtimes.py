"""Backbone rows: each student backbone and the built-in FastGaze in every runtime, float and int8, in one run.

    python benchmarks/run_benchmarks.py --backbones resnet18 efficientnet-lite0 efficientnet-lite1 \\
        efficientnet-lite2 mobilenetv2 --rows runtimes

For each backbone, a student (variant A, random-init weights: speed does not depend on their values) is exported
by `inference.export.export_student` at 240x320 to the TF SavedModel, ONNX, OpenVINO and LiteRT, float and int8
(calibrated on 16 synthetic images); the built-in FastGaze (`--builtin`, default fastgaze-centre, the
reference) is exported the same way (`inference.builtin_export`) and also timed as its Keras model. Each row is one
model in one runtime at batch 1 or 8: images/s of the runtime call alone on a fixed uint8 batch already at
240x320 (as row 7 of run_benchmarks.py), the GMAC of one image (`student.model.forward_gmac` on the exported
graph: BN folded, saliency head only), its parameters and its size on disk.

Each row is timed in two rounds of at least `MIN_SECONDS` of calls (the median call counts; the faster round is
kept) with `--threads` threads, and written to `<out>_backbones.json` (atomically) as soon as it is measured, with
the load average at that moment; a rerun skips the rows already there (`--redo PATTERN` measures the rows whose
key, `model|runtime|weights|batch`, contains PATTERN again; the JSON keeps the earlier figures under "earlier").
`<out>_backbones.md` is rewritten with each row.
"""

import datetime
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

SIZE = (240, 320)
BATCHES = (1, 8)
MIN_SECONDS = 1.0
ROUNDS = 2
CALIBRATION_COUNT = 16
# (export key, runtime) of the portable files; each comes as float32 and int8.
RUNTIMES = (("onnx", "onnxruntime"), ("openvino", "openvino"), ("litert", "litert"))


def _status(message):
    print(message, file=sys.stderr, flush=True)


def cpu_model():
    """`lscpu`'s model name (else /proc/cpuinfo's)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    from student.training import cpu_info

    return cpu_info().get("model name", "unknown")


def _size_on_disk(path):
    """Bytes of a file, of a folder's files, or of an OpenVINO .xml with its .bin."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
    if path.endswith(".xml"):
        return os.path.getsize(path) + os.path.getsize(path[: -len(".xml")] + ".bin")
    return os.path.getsize(path)


def time_rate(fn, batch, min_seconds=MIN_SECONDS, rounds=ROUNDS, min_calls=3):
    """Images/s of `fn(batch)`: per round, calls for at least `min_seconds` (and `min_calls`), the median call;
    the fastest of `rounds` rounds. Also returns each round's median seconds."""
    fn(batch)  # warm-up (first-call allocation, graph building)
    medians = []
    for _ in range(rounds):
        times, start = [], time.perf_counter()
        while len(times) < min_calls or time.perf_counter() - start < min_seconds:
            t = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - t)
        medians.append(float(np.median(times)))
    return len(batch) / min(medians), medians


def calibration_records(work):
    """Synthetic 480x640 SALICON-layout images and their oracle records in `work` (made once)."""
    from datasets.synthetic import generate_synthetic_salicon
    from teacher.export import export_split

    data, records_dir = os.path.join(work, "backbone_data"), os.path.join(work, "backbone_records")
    if not os.path.exists(os.path.join(records_dir, "train.json")):
        generate_synthetic_salicon(data, n_train=CALIBRATION_COUNT, n_val=2, image_size=(480, 640), seed=0,
                                   verbose=False)
        export_split(data, "train", "oracle", records_dir, progress=False)
    return records_dir


def _keras_model(model):
    from inference.builtin_export import exportable_name, fastgaze_student
    from student.model import build_student

    if exportable_name(model):
        return fastgaze_student(model, SIZE)
    import keras

    keras.utils.set_random_seed(0)
    return build_student("A", backbone=model, seed=0)


def export_model(model, work, records_dir):
    """`export_student`'s files of `model` (a backbone or a built-in name) at SIZE with int8, made once in `work`."""
    from inference import export as deploy

    out = os.path.join(work, "backbone_exports", model)
    name = model.replace("-", "_")
    paths = {"saved_model": os.path.join(out, f"{name}_saved_model")}
    for fmt, _ in RUNTIMES:
        paths[fmt] = os.path.join(out, name + deploy.EXTENSIONS[fmt])
        paths[f"{fmt}_int8"] = os.path.join(out, f"{name}_int8{deploy.EXTENSIONS[fmt]}")
    if not all(os.path.exists(p) for p in paths.values()):
        from inference.builtin_export import exportable_name

        source = model if exportable_name(model) else _keras_model(model)
        _status(f"[bench] exporting {model} at {SIZE[0]}x{SIZE[1]} (float and int8)")
        paths = deploy.export_student(source, out, input_size=SIZE, int8=True, records_dir=records_dir,
                                      calibration_count=CALIBRATION_COUNT, name=name)
    return paths


def model_info(model):
    """GMAC of one image and parameters of the exported graph (BN folded, saliency head only)."""
    from inference.builtin_export import exportable_name
    from student.model import forward_gmac
    from student.serving import inference_student

    graph = _keras_model(model)
    if not exportable_name(model):
        graph = inference_student(graph)
    info = {"gmac": forward_gmac(graph, SIZE), "params": int(graph.count_params())}
    if exportable_name(model):
        from teacher.fastgaze import load_fastgaze, weights_path

        keras_model = load_fastgaze(model)
        info["keras"] = {"gmac": forward_gmac(keras_model, SIZE), "params": int(keras_model.count_params()),
                         "bytes": os.path.getsize(weights_path())}
    return info


def runners(model, paths, threads):
    """{(runtime, weights): (fn(uint8 batch at SIZE), bytes on disk)} for every file of `model`."""
    import tensorflow as tf

    from inference.builtin_export import exportable_name
    from inference.predictors import RuntimeStudentPredictor

    served = tf.saved_model.load(paths["saved_model"])
    signature = served.signatures["serving_default"]

    def run_saved_model(x):
        return signature(images=tf.constant(x))["density"].numpy()

    out = {("tf saved_model", "float32"): (run_saved_model, _size_on_disk(paths["saved_model"]), served)}
    for fmt, runtime in RUNTIMES:
        for suffix, weights in (("", "float32"), ("_int8", "int8")):
            predictor = RuntimeStudentPredictor(paths[fmt + suffix], threads=threads)
            out[(runtime, weights)] = (predictor.run_at_input_size, _size_on_disk(paths[fmt + suffix]), predictor)
    if exportable_name(model):
        from teacher.fastgaze import load_fastgaze, weights_path

        keras_model = load_fastgaze(model)
        run = tf.function(lambda x: keras_model(x, training=False))
        out[("tf keras", "float32")] = ((lambda x: run(tf.cast(x, tf.float32)).numpy()),
                                        os.path.getsize(weights_path()), keras_model)
    return out


def row_key(model, runtime, weights, batch):
    return f"{model}|{runtime}|{weights}|{batch}"


def measure_backbones(args, work, out):
    """Measure every pending row of `args.backbones` and `args.builtin` into `<out>.json` / `.md`; returns 0."""
    from datasets.io import write_report

    models = [*args.backbones, args.builtin]
    results = {"rows": {}, "models": {}}
    if os.path.exists(out + ".json"):
        with open(out + ".json") as f:
            results = json.load(f)
    results.update({"machine": cpu_model(), "cpu_count": os.cpu_count(), "threads": args.threads,
                    "size": list(SIZE), "builtin": args.builtin, "order": models})
    results.setdefault("runs", []).append({"command": shlex.join(["python", *sys.argv]),
                                           "date": datetime.datetime.now().isoformat(timespec="minutes"),
                                           "load_average": os.getloadavg()[0]})
    redo = args.redo or []

    def pending(key):
        return key not in results["rows"] or any(pattern in key for pattern in redo)

    def save():
        write_report(out, results, to_markdown(results))

    from inference.builtin_export import exportable_name

    keys = {}
    for model in models:
        configs = [("tf saved_model", "float32")] + [(r, w) for _, r in RUNTIMES for w in ("float32", "int8")]
        if exportable_name(model):
            configs.insert(0, ("tf keras", "float32"))
        keys[model] = [row_key(model, r, w, b) for r, w in configs for b in BATCHES]
    if not any(pending(k) for ks in keys.values() for k in ks):
        _status(f"[bench] every row is in {out}.json already (--redo PATTERN measures rows again)")
    records_dir = None
    for model in models:
        todo = [k for k in keys[model] if pending(k)]
        if not todo and model in results["models"]:
            continue
        records_dir = records_dir or calibration_records(work)
        paths = export_model(model, work, records_dir)
        if model not in results["models"]:
            results["models"][model] = model_info(model)
            save()
        rng = np.random.default_rng(0)
        batches = {b: rng.integers(0, 256, (b, *SIZE, 3), dtype=np.uint8) for b in BATCHES}
        for (runtime, weights), (fn, size, _keep) in runners(model, paths, args.threads).items():
            for batch in BATCHES:
                key = row_key(model, runtime, weights, batch)
                if key not in todo:
                    continue
                rate, medians = time_rate(fn, batches[batch])
                old = results["rows"].get(key)
                earlier = [] if old is None else [*old.get("earlier", []),
                                                  {k: old[k] for k in ("images_per_s", "load_average")}]
                results["rows"][key] = {"model": model, "runtime": runtime, "weights": weights, "batch": batch,
                                        "images_per_s": rate, "round_medians_s": medians, "bytes": size,
                                        "load_average": os.getloadavg()[0], "earlier": earlier}
                _status(f"[bench] {key}: {rate:.2f} images/s (load average {os.getloadavg()[0]:.1f})")
                save()
    save()
    print(to_markdown(results))
    return 0


def summary(results):
    """Per batch: the fastest student row, the fastest FastGaze row and their ratio; float-only as well."""
    rows = list(results["rows"].values())
    builtin = results.get("builtin")
    out = {}
    for batch in BATCHES:
        here = [r for r in rows if r["batch"] == batch]
        students = [r for r in here if r["model"] != builtin]
        teacher = [r for r in here if r["model"] == builtin]
        if not students or not teacher:
            continue
        entry = {}
        for label, keep in (("any", lambda r: True), ("float32", lambda r: r["weights"] == "float32")):
            s = max((r for r in students if keep(r)), key=lambda r: r["images_per_s"])
            t = max((r for r in teacher if keep(r)), key=lambda r: r["images_per_s"])
            entry[label] = {"student": s, "builtin": t, "ratio": s["images_per_s"] / t["images_per_s"]}
        out[batch] = entry
    return out


def _load_note(results):
    loads = [r["load_average"] for r in results["rows"].values()]
    if not loads or max(loads) <= results["cpu_count"]:
        return []
    return [(f"**The machine was shared**: the load average was {min(loads):.1f}-{max(loads):.1f} on "
             f"{results['cpu_count']} cores while the rows were measured, so every figure is below a quiet "
             "machine's and the same row varied by up to 2x between measurements (other processes' bursts); "
             "compare rows measured close together, and rerun (`--redo`) those that look off."), ""]


def to_markdown(results):
    order = results.get("order") or sorted({r["model"] for r in results["rows"].values()})
    rows = results["rows"]
    builtin = results.get("builtin")
    lines = [f"# Every student backbone and {builtin} in every runtime ({results['size'][0]}x{results['size'][1]})",
             "", (f"Machine: {results['machine']} (`lscpu`), {results['cpu_count']} cores; {results['threads']} "
                  "threads per runtime. Runs (a rerun measures only the rows it lacks, or --redo's): "
                  + "; ".join(f"{r['date']} `{r['command']}` (load average {r['load_average']:.1f})"
                              for r in results.get("runs", [])) + "."), "",
             ("Students have random-init weights (variant A; speed does not depend on the values); "
              f"{builtin} is the shipped model. Each row times the runtime call alone on a uint8 batch already at "
              "the input size (the TF SavedModel's includes its resize-to-fit, a no-op at that size); int8 files "
              "are calibrated on 16 synthetic images. GMAC and parameters are of the exported graph (BN folded, "
              "saliency head only); the Keras FastGaze's own graph resizes at run time. Size: on disk (OpenVINO "
              ".xml + .bin; the SavedModel folder; the Keras FastGaze's .vxm). Load: the 1-minute load average "
              "when the batch-8 row was measured."), "",
             *_load_note(results),
             ("| model | runtime | weights | GMAC | params (M) | size (MB) | images/s, batch 1 | images/s, batch 8 "
              "| load |"), "|---|---|---|---|---|---|---|---|---|"]
    for model in order:
        info = results["models"].get(model, {})
        combos = []
        for r in rows.values():
            if r["model"] == model and (r["runtime"], r["weights"]) not in combos:
                combos.append((r["runtime"], r["weights"]))
        best = {b: max((r["images_per_s"] for r in rows.values() if r["model"] == model and r["batch"] == b),
                       default=None) for b in BATCHES}
        for runtime, weights in combos:
            cells = []
            for b in BATCHES:
                r = rows.get(row_key(model, runtime, weights, b))
                text = "" if r is None else f"{r['images_per_s']:.1f}"
                text = f"**{text}**" if r is not None and r["images_per_s"] == best[b] else text
                if r is not None and r.get("earlier"):
                    text += " (" + ", ".join(f"{e['images_per_s']:.1f}" for e in r["earlier"]) + ")"
                cells.append(text)
            r8 = rows.get(row_key(model, runtime, weights, BATCHES[-1])) or rows.get(
                row_key(model, runtime, weights, BATCHES[0]))
            detail = info.get("keras", info) if runtime == "tf keras" else info
            gmac = f"{detail['gmac']:.2f}" if "gmac" in detail else ""
            params = f"{detail['params'] / 1e6:.2f}" if "params" in detail else ""
            lines.append(f"| {model} | {runtime} | {weights} | {gmac} | {params} | {r8['bytes'] / 1e6:.2f} | "
                         f"{cells[0]} | {cells[1]} | {r8['load_average']:.1f} |")
    lines += ["", ("Bold: the model's fastest runtime at that batch size. In brackets: earlier measurements of the row "
                   "(`--redo`), which the last one replaced."), ""]
    s = summary(results)
    if s:
        lines += [(f"| batch | fastest student (runtime, weights) | images/s | fastest {builtin} | images/s | ratio | "
                   f"float32 only: student / {builtin} |"),
                  "|---|---|---|---|---|---|---|"]
        for b, e in s.items():
            a, f = e["any"], e["float32"]
            lines.append(f"| {b} | {a['student']['model']} ({a['student']['runtime']}, {a['student']['weights']}) | "
                         f"{a['student']['images_per_s']:.1f} | {a['builtin']['runtime']}, {a['builtin']['weights']} "
                         f"| {a['builtin']['images_per_s']:.1f} | {a['ratio']:.2f}x | {f['student']['model']} "
                         f"({f['student']['runtime']}) {f['student']['images_per_s']:.1f} / "
                         f"{f['builtin']['runtime']} {f['builtin']['images_per_s']:.1f} = {f['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"
