"""Side-by-side throughput and memory measurements on the current machine, in one run.

    python benchmarks/run_benchmarks.py --out benchmarks/results

Each line of the table is a ratio of two measurements taken here, under the same conditions:

1. student vs teacher inference at 240x320, batch 8 (aim: >= 8x; the MAC ratio is ~10x);
2. variant B training reading records through tf.data vs the same train_step on tensors in memory
   (aim: the pipeline costs < 10%);
3. export_teacher throughput vs the bare teacher forward pass on the same images (aim: overhead < 15%);
4. variant B vs variant A step time (aim: B costs < 15% more), as TensorFlow graphs and compiled with XLA;
5. export_teacher peak memory for N and 4N images (aim: flat);
6. the teacher as the imported frozen graph vs the converted Keras MSI-Net;
7. deployment runtimes: the student exported by inference.export (TF SavedModel, ONNX Runtime, OpenVINO,
   LiteRT; float and int8) against the teacher in each runtime it exports to, images/s at 240x320, batch 1
   and 8, `--threads` threads, with achieved GFLOP/s against the machine's peak (a measured large float32
   matmul and the peak from the CPU's flags and clock). Aims: the best student >= 10x the best teacher, and
   the fastest student runtime >= 2x the student's TF SavedModel.

`--only runtimes` (or any of inference, training, export, memory, graph) runs those sections and merges
them into an existing `<out>.json`, so a long run can be resumed or one part refreshed.

`--backbones resnet18 efficientnet-lite0 ... --rows runtimes` runs instead the runtime rows of each backbone's
student and of the built-in FastGaze (float and int8, batch 1 and 8, GMAC, parameters, size on disk) into
`<out>_backbones.json` and `.md`, row by row and resumable (`benchmarks/backbone_runtimes.py`).

The synthetic data, records and exports (several hundred MB) are made in a temporary `saliency-kd-bench-*`
folder that is removed at the end, on an error and on Ctrl-C (`--keep-work` keeps it), or in `--work-dir`, which
is kept and reused by the next run. Status lines go to stderr; stdout carries the results table only.

The teacher is MSI-Net with random weights in the author's frozen-graph format (built by
tests/msinet_reference.py): speed does not depend on the weights' values. Data are synthetic SALICON-layout
images at 480x640. Results go to `<out>.json` and `<out>.md` with a description of the machine.
"""

import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from argtypes import positive_int  # noqa: E402

# TensorFlow and Keras: imported by `run` (quietly, after argparse), so --help and usage errors are instant and
# print no TensorFlow lines. Every function below that uses them runs after that.
keras = tf = None


def _import_tensorflow():
    global keras, tf
    from datasets.io import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import tensorflow as tf

SIZE = (240, 320)
BATCH = 8
SECTIONS = ("inference", "training", "export", "memory", "graph", "runtimes")


def machine_description():
    from student.training import cpu_info

    cpu = cpu_info().get("model name") or platform.processor() or platform.machine()
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "gpus": gpus or ["none"], "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "platform": platform.platform()}


def time_call(fn, repeats, warmup=1):
    """Median seconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_inference(teacher_model, repeats):
    from student.model import build_student

    student = build_student("B")
    x = tf.random.uniform((BATCH, *SIZE, 3), 0, 255, seed=0)
    student_fn = tf.function(lambda x: student(x, training=False))
    teacher_fn = tf.function(lambda x: teacher_model(x, training=False))
    t_student = time_call(lambda: student_fn(x)["saliency"].numpy(), repeats)
    t_teacher = time_call(lambda: teacher_fn(x).numpy(), repeats)
    return {"student_images_per_s": BATCH / t_student, "teacher_images_per_s": BATCH / t_teacher,
            "ratio": t_teacher / t_student, "aim": ">= 8"}


def _distiller(variant):
    from student.distillation import Distiller
    from student.model import build_student

    keras.utils.set_random_seed(0)
    distiller = Distiller(build_student(variant), variant=variant)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    return distiller


def _seconds_per_step(step, next_batch, steps, warmup=2):
    """Wall seconds per call of the compiled train step, fed by `next_batch()`, after `warmup` calls."""
    for _ in range(warmup):
        float(step(next_batch())["loss"])
    start = time.perf_counter()
    for _ in range(steps):
        logs = step(next_batch())
    float(logs["loss"])
    return (time.perf_counter() - start) / steps


def bench_training(records_dir, steps, rounds=2):
    """The same compiled train_step fed from the records pipeline and from tensors in memory; A vs B.

    Each configuration is timed `rounds` times, interleaved, and the fastest round counts, so that a
    background burst on a shared machine does not land on one side only. The pipeline's iterator is deleted
    before the in-memory timings, so its prefetch threads do not compete with them.
    """
    import gc

    from datasets import records

    files = records.list_shards(records_dir, "train")
    pipeline = records.training_dataset(files, BATCH, SIZE, training=True, seed=0).repeat()
    images, targets = next(iter(pipeline))
    batch_b = (images, targets)
    batch_a = (images, {"saliency": targets["saliency"]})
    models = {"A": _distiller("A"), "B": _distiller("B")}
    train_steps = {}
    for variant, model in models.items():
        data = batch_b if variant == "B" else batch_a
        model.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0)  # builds optimizer and metrics
        train_steps[variant] = tf.function(model.train_step)
        train_steps[f"{variant}_xla"] = tf.function(model.train_step, jit_compile=True)
    times = {"A_memory": [], "B_memory": [], "B_pipeline": [], "A_xla": [], "B_xla": []}
    for _ in range(rounds):
        times["A_memory"].append(_seconds_per_step(train_steps["A"], lambda: batch_a, steps))
        times["B_memory"].append(_seconds_per_step(train_steps["B"], lambda: batch_b, steps))
        times["A_xla"].append(_seconds_per_step(train_steps["A_xla"], lambda: batch_a, steps))
        times["B_xla"].append(_seconds_per_step(train_steps["B_xla"], lambda: batch_b, steps))
        iterator = iter(pipeline)
        times["B_pipeline"].append(_seconds_per_step(train_steps["B"], functools.partial(next, iterator), steps))
        del iterator
        gc.collect()
    best = {k: min(v) for k, v in times.items()}
    return (
        {"pipeline_s_per_step": best["B_pipeline"], "in_memory_s_per_step": best["B_memory"],
         "overhead": best["B_pipeline"] / best["B_memory"] - 1, "rounds": times, "aim": "< 0.10"},
        {"A_s_per_step": best["A_memory"], "B_s_per_step": best["B_memory"],
         "overhead": best["B_memory"] / best["A_memory"] - 1, "aim": "< 0.15",
         "xla": {"A_s_per_step": best["A_xla"], "B_s_per_step": best["B_xla"],
                 "overhead": best["B_xla"] / best["A_xla"] - 1}},
    )


def bench_export(data_dir, teacher, rounds=3):
    """export_teacher's throughput vs the bare teacher forward pass over the same images, same batch size.

    Interleaved rounds, the fastest of each counts (see bench_training).
    """
    from datasets.io import read_image
    from datasets.salicon import list_salicon
    from teacher.export import export_split
    from teacher.preprocessing import preprocess

    samples = list_salicon(data_dir, "train")
    n_images = len(samples)
    batches = [np.stack([preprocess(read_image(s.image_path), teacher.input_size)[0].numpy()
                         for s in samples[i:i + BATCH]]) for i in range(0, n_images, BATCH)]
    np.asarray(teacher(batches[0]))  # warm-up
    with tempfile.TemporaryDirectory() as out:
        export_split(data_dir, "train", teacher, out, batch_size=BATCH, progress=False)  # warm-up
    forward, export = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            np.asarray(teacher(batch))
        forward.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            export_split(data_dir, "train", teacher, out, batch_size=BATCH, progress=False)
            export.append(time.perf_counter() - start)
    forward_rate = n_images / min(forward)
    export_rate = n_images / min(export)
    return {"images": n_images, "export_images_per_s": export_rate, "bare_forward_images_per_s": forward_rate,
            "overhead": forward_rate / export_rate - 1, "rounds_s": {"forward": forward, "export": export},
            "aim": "< 0.15"}


# ru_maxrss survives execve on Linux (it would report the forking parent's peak), so read the peak resident
# set of this process's own address space, VmHWM, instead.
_MEMORY_CHILD = """
import sys
sys.path.insert(0, {root!r})
from teacher.export import export_split
export_split({data!r}, "train", "oracle", {out!r}, batch_size=8, progress=False)
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))
"""


def bench_export_memory(data_dirs):
    """Peak resident memory (MiB) of exports of N and 4N images, each in a fresh process (oracle teacher)."""
    peaks = {}
    for count, data_dir in data_dirs.items():
        with tempfile.TemporaryDirectory() as out:
            code = _MEMORY_CHILD.format(root=ROOT, data=data_dir, out=out)
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            peaks[count] = int(result.stdout.strip().splitlines()[-1]) / 1024
    counts = sorted(peaks)
    return {"images": counts, "peak_rss_mib": [peaks[c] for c in counts],
            "ratio": peaks[counts[-1]] / peaks[counts[0]], "aim": "~1.0 (flat)"}


def bench_graph_vs_keras(graph_teacher, keras_teacher, repeats):
    x = tf.random.uniform((BATCH, *SIZE, 3), 0, 255, seed=1)
    keras_fn = tf.function(lambda x: keras_teacher(x, training=False))
    t_graph = time_call(lambda: np.asarray(graph_teacher(x)), repeats)
    t_keras = time_call(lambda: keras_fn(x).numpy(), repeats)
    max_diff = float(np.max(np.abs(np.asarray(graph_teacher(x)) - keras_fn(x).numpy())))
    return {"graph_images_per_s": BATCH / t_graph, "keras_images_per_s": BATCH / t_keras,
            "ratio_keras_over_graph_speed": t_graph / t_keras, "max_abs_diff": max_diff}


def graph_gflop(keras_model, input_shape):
    """GFLOP of one forward pass (TensorFlow's profiler on the frozen graph; a multiply-add counts 2)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: keras_model(x)).get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    frozen = convert_variables_to_constants_v2(fn)
    return tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops / 1e9


def measure_matmul_gflops(size=2048, calls=5):
    """Best GFLOP/s of `calls` float32 (size x size) @ (size x size) matmuls in TensorFlow."""
    a = tf.random.uniform((size, size), seed=0)
    matmul = tf.function(lambda a: tf.linalg.matmul(a, a))
    matmul(a).numpy()
    return max(2 * size**3 / time_call(lambda: matmul(a).numpy(), 1, warmup=0) / 1e9 for _ in range(calls))


def machine_peak_gflops(threads, measured=None):
    """Float32 peak, two ways: a measured 2048^3 matmul (`measured`, else measured now) and the CPU flags' figure.

    The flags' figure assumes two 256-bit FMA pipes per core (AMD Zen 2-4, which run AVX-512 as two halves;
    Intel cores with two 512-bit FMA units get 2x that) at the clock /proc/cpuinfo reports, times `threads`.
    """
    from student.training import cpu_info

    measured = measured or measure_matmul_gflops()
    info = cpu_info()
    flags = set(info.get("flags", "").split())
    mhz = float(info.get("cpu MHz", 0.0))
    lanes = 8 if {"avx2", "fma"} <= flags else 4  # float32 lanes per 256-bit (or 128-bit) FMA
    wide = "avx512f" in flags and info.get("vendor_id") == "GenuineIntel"  # two full 512-bit FMA units
    per_cycle = 2 * 2 * lanes * (2 if wide else 1)  # 2 pipes x (mul + add)
    from_flags = per_cycle * mhz / 1e3 * threads
    return {"measured_matmul_gflops": measured, "flags_gflops": from_flags, "mhz": mhz, "flop_per_cycle": per_cycle}


def _export_runtimes(work, keras_msinet, records_dir):
    """Student (random-weight B) and teacher exports for the runtime rows; reused when present (resumable)."""
    from inference import export as deploy
    from student.model import build_student

    out = os.path.join(work, "runtime_exports")
    paths = {name: os.path.join(out, name) for name in (
        "student_saved_model", "student.onnx", "student.xml", "student.tflite", "student_int8.onnx",
        "student_int8.xml", "student_int8.tflite", "teacher.onnx", "teacher.xml")}
    if not all(os.path.exists(p) for p in paths.values()):
        keras.utils.set_random_seed(0)
        student = build_student("B", seed=0)
        deploy.export_student(student, out, input_size=SIZE, int8=True, records_dir=records_dir,
                              calibration_count=16)
        spec = [tf.TensorSpec((None, *SIZE, 3), tf.float32, name="images")]
        keras_msinet.export(paths["teacher.onnx"], format="onnx", input_signature=spec, verbose=False)
        keras_msinet.export(paths["teacher.xml"], format="openvino", input_signature=spec, verbose=False)
    return paths


def _teacher_runners(paths, threads):
    import onnxruntime as ort
    import openvino as ov

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(paths["teacher.onnx"], options, providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(paths["teacher.xml"], "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    name = session.get_inputs()[0].name
    return {"onnxruntime": lambda x: session.run(None, {name: x})[0],
            "openvino": lambda x: request.infer({0: x})[compiled.output(0)]}


def bench_runtimes(work, graph_teacher, keras_msinet, records_dir, threads, repeats, rounds=2):
    """Images/s of the student in each runtime (float and int8) and of the teacher, batch 1 and 8, interleaved.

    Every configuration runs the model on a fixed batch already at 240x320 (uint8 for the student files,
    float32 for the teacher), so the rows time the runtimes, not image decoding or resizing. Each round times
    every configuration once (median of `repeats` calls); the fastest round counts.
    """
    from inference.predictors import RuntimeStudentPredictor
    from student.model import build_student
    from student.serving import inference_student

    paths = _export_runtimes(work, keras_msinet, records_dir)
    rng = np.random.default_rng(0)
    student_keras = build_student("B", seed=0)
    keras_fn = tf.function(lambda x: student_keras(x, training=False)["saliency"])
    served = tf.saved_model.load(paths["student_saved_model"]).signatures["serving_default"]
    configs = {
        ("student", "tf keras (BN unfolded)", "float32"): lambda x: keras_fn(tf.cast(x, tf.float32)).numpy(),
        ("student", "tf saved_model", "float32"): lambda x: served(images=tf.constant(x))["density"].numpy(),
    }
    for file, runtime, dtype in [("student.onnx", "onnxruntime", "float32"), ("student.xml", "openvino", "float32"),
                                 ("student.tflite", "litert", "float32"), ("student_int8.onnx", "onnxruntime", "int8"),
                                 ("student_int8.xml", "openvino", "int8"), ("student_int8.tflite", "litert", "int8")]:
        predictor = RuntimeStudentPredictor(paths[file], threads=threads)
        configs[("student", runtime, dtype)] = predictor.run_at_input_size
    teacher_fn = tf.function(lambda x: keras_msinet(x, training=False))
    configs[("teacher", "tf frozen graph", "float32")] = lambda x: np.asarray(graph_teacher(x.astype(np.float32)))
    configs[("teacher", "tf keras", "float32")] = lambda x: teacher_fn(x.astype(np.float32)).numpy()
    for runtime, fn in _teacher_runners(paths, threads).items():
        configs[("teacher", runtime, "float32")] = (lambda f: lambda x: f(x.astype(np.float32)))(fn)
    batches = {b: rng.integers(0, 256, (b, *SIZE, 3), dtype=np.uint8) for b in (1, 8)}
    times = {f"{m}|{r}|{d}|{b}": [] for (m, r, d) in configs for b in batches}
    matmul = []
    for _ in range(rounds):
        matmul.append(measure_matmul_gflops())  # in every round too, so a quiet moment is not missed
        for (model, runtime, dtype), fn in configs.items():
            for b, x in batches.items():
                times[f"{model}|{runtime}|{dtype}|{b}"].append(time_call(lambda: fn(x), repeats))
    gflop = {"student": graph_gflop(inference_student(student_keras), (1, *SIZE, 3)),
             "teacher": graph_gflop(keras_msinet, (1, *SIZE, 3))}
    rows = []
    for key, seconds in times.items():
        model, runtime, dtype, b = key.split("|")
        rate = int(b) / min(seconds)
        rows.append({"model": model, "runtime": runtime, "dtype": dtype, "batch": int(b), "images_per_s": rate,
                     "gflops": rate * gflop[model], "rounds_s": seconds})
    peak = machine_peak_gflops(threads, max(matmul + [measure_matmul_gflops()]))

    def best(model, batch, **match):
        candidates = [r for r in rows if r["model"] == model and r["batch"] == batch
                      and all(r[k] == v for k, v in match.items())]
        return max(candidates, key=lambda r: r["images_per_s"])

    summary = {}
    for b in batches:
        s_best, t_best = best("student", b), best("teacher", b)
        s_float = best("student", b, dtype="float32")
        s_tf = best("student", b, runtime="tf saved_model")
        summary[b] = {"best_student": f"{s_best['runtime']} {s_best['dtype']}",
                      "best_teacher": t_best["runtime"],
                      "student_over_teacher": s_best["images_per_s"] / t_best["images_per_s"],
                      "float_student_over_teacher": s_float["images_per_s"] / t_best["images_per_s"],
                      "best_student_over_tf_saved_model": s_best["images_per_s"] / s_tf["images_per_s"]}
    return {"threads": threads, "size": list(SIZE), "gflop_per_image": gflop, "peak": peak, "rows": rows,
            "summary": summary, "aims": {"student_over_teacher": ">= 10", "best_student_over_tf_saved_model": ">= 2"}}


def runtimes_markdown(r):
    peak = r["peak"]
    lines = [f"7. Deployment runtimes at {r['size'][0]}x{r['size'][1]}, {r['threads']} threads. GFLOP per image: "
             f"student {r['gflop_per_image']['student']:.2f}, teacher {r['gflop_per_image']['teacher']:.2f}. "
             f"Peak float32: {peak['measured_matmul_gflops']:.0f} GFLOP/s measured (2048^3 matmul), "
             f"{peak['flags_gflops']:.0f} GFLOP/s from the CPU flags ({peak['flop_per_cycle']} FLOP/cycle/core at "
             f"{peak['mhz']:.0f} MHz; the clock /proc/cpuinfo reports, which a boosting core exceeds). The % column "
             "is of the measured figure; int8 rows count their integer operations against that float32 peak.", "",
             "| model | runtime | weights | batch | images/s | GFLOP/s | % of measured float32 peak |",
             "|---|---|---|---|---|---|---|"]
    for row in sorted(r["rows"], key=lambda x: (x["model"] != "student", x["batch"], -x["images_per_s"])):
        lines.append(f"| {row['model']} | {row['runtime']} | {row['dtype']} | {row['batch']} | "
                     f"{row['images_per_s']:.2f} | {row['gflops']:.1f} | "
                     f"{100 * row['gflops'] / peak['measured_matmul_gflops']:.0f}% |")
    lines += ["", "| batch | best student | best teacher | student / teacher (float student) | best student / TF "
              "SavedModel |", "|---|---|---|---|---|"]
    for b, s in r["summary"].items():
        lines.append(f"| {b} | {s['best_student']} | {s['best_teacher']} | {s['student_over_teacher']:.1f}x "
                     f"({s['float_student_over_teacher']:.1f}x) | {s['best_student_over_tf_saved_model']:.2f}x |")
    lines.append("")
    lines.append("Aims: student >= 10x the teacher's best runtime; fastest student runtime >= 2x its TF SavedModel.")
    return "\n".join(lines) + "\n"


def _section_rows(r):
    """The table's rows, (measurement, values, ratio, aim), for the sections that `r` holds."""
    rows = []
    if "inference" in r:
        rows.append(("1. inference, student vs teacher (240x320, batch 8)",
                     f"{r['inference']['student_images_per_s']:.1f} vs {r['inference']['teacher_images_per_s']:.1f} "
                     "images/s", f"{r['inference']['ratio']:.1f}x faster", ">= 8x"))
    if "pipeline" in r:
        rows.append(("2. training B, tf.data records vs in-memory tensors",
                     f"{r['pipeline']['pipeline_s_per_step']:.3f} vs {r['pipeline']['in_memory_s_per_step']:.3f} "
                     "s/step", f"{100 * r['pipeline']['overhead']:+.1f}%", "< +10%"))
    if "export" in r:
        rows.append(("3. export_teacher vs bare teacher forward",
                     f"{r['export']['export_images_per_s']:.2f} vs {r['export']['bare_forward_images_per_s']:.2f} "
                     "images/s", f"{100 * r['export']['overhead']:+.1f}%", "< +15%"))
    if "b_vs_a" in r:
        rows.append(("4. step time, B vs A",
                     f"{r['b_vs_a']['B_s_per_step']:.3f} vs {r['b_vs_a']['A_s_per_step']:.3f} s/step",
                     f"{100 * r['b_vs_a']['overhead']:+.1f}%", "< +15%"))
        rows.append(("4b. step time, B vs A, both compiled with XLA",
                     f"{r['b_vs_a']['xla']['B_s_per_step']:.3f} vs {r['b_vs_a']['xla']['A_s_per_step']:.3f} s/step",
                     f"{100 * r['b_vs_a']['xla']['overhead']:+.1f}%", "< +15%"))
    if "export_memory" in r:
        rows.append(("5. export_teacher peak memory, N vs 4N images",
                     " vs ".join(f"{m:.0f} MiB ({n})" for n, m in zip(r['export_memory']['images'],
                                                                      r['export_memory']['peak_rss_mib'])),
                     f"{r['export_memory']['ratio']:.2f}x", "flat"))
    if "graph_vs_keras" in r:
        rows.append(("6. teacher: frozen graph vs Keras MSI-Net (240x320, batch 8)",
                     f"{r['graph_vs_keras']['graph_images_per_s']:.2f} vs "
                     f"{r['graph_vs_keras']['keras_images_per_s']:.2f} images/s",
                     f"Keras {r['graph_vs_keras']['ratio_keras_over_graph_speed']:.2f}x; max diff "
                     f"{r['graph_vs_keras']['max_abs_diff']:.1e}", "parity"))
    return rows


def to_markdown(results):
    """The machine, a table of the measured sections 1-6 and the runtime rows (7), each only where measured (a
    `--only` run into a new `--out` has some of them)."""
    r = results
    rows = _section_rows(r)
    text = ""
    if rows:
        m = r["machine"]
        lines = [f"Machine: {m['cpu']}, {m['cpu_cores']} cores, GPU: {', '.join(m['gpus'])}; TensorFlow "
                 f"{m['tensorflow']}, Keras {m['keras']}.", "",
                 "| measurement | values | ratio | aim |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        text = "\n".join(lines) + "\n"
    if "runtimes" in r:
        text += ("\n" if text else "") + runtimes_markdown(r["runtimes"])
    return text


PROG = "run_benchmarks.py"


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results", help="writes <out>.json and <out>.md")
    p.add_argument("--work-dir", default=None,
                   help="where synthetic data, records and exports are made and kept (default: a temporary folder, "
                        "removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder (default: removed)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed repetitions per measurement")
    p.add_argument("--train-steps", type=positive_int, default=6, help="timed training steps per measurement")
    p.add_argument("--export-images", type=positive_int, default=16,
                   help="N: images for the export throughput (N) and memory (N and 4N) measurements")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads of every runtime (TensorFlow included)")
    p.add_argument("--only", nargs="+", default=None, choices=SECTIONS,
                   help="run only these sections and merge them into an existing <out>.json")
    from student.backbones import BACKBONES  # the registry alone: no TensorFlow import

    p.add_argument("--backbones", nargs="+", default=None, choices=list(BACKBONES),
                   help="instead of the sections: these backbones' students and --builtin in every runtime, float "
                        "and int8, into <out>_backbones.json and .md, resumable (benchmarks/backbone_runtimes.py)")
    p.add_argument("--rows", nargs="+", default=["runtimes"], choices=["runtimes"],
                   help="with --backbones: which rows (the runtime rows)")
    p.add_argument("--builtin", default="fastgaze-centre", choices=["fastgaze", "fastgaze-centre"],
                   help="with --backbones: the built-in model the students are compared with")
    p.add_argument("--redo", nargs="+", default=None, metavar="PATTERN",
                   help="with --backbones: measure again the rows whose key (model|runtime|weights|batch) has PATTERN")
    return p


def _status(message):
    """Progress of the run on stderr: stdout carries the results table only."""
    print(message, file=sys.stderr, flush=True)


def main(argv=None):
    """Parse arguments and run the benchmarks; exit status 2 for a usage error, 1 for any other error."""
    args = build_parser().parse_args(argv)
    from datasets.io import check_writable_dir

    try:
        check_writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out")  # before hours of measurements
        if args.work_dir:
            check_writable_dir(args.work_dir, "--work-dir")
        return run(args)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG}: error: {where}{e.strerror or e}; free space or fix the permissions, then rerun (--only "
              "reruns some sections and merges them into <out>.json)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; sections already measured are in <out>.json (--only reruns the others)",
              file=sys.stderr)
        return 130


def run(args):
    """The measurements of `main` (after its checks), in `--work-dir` or a temporary work folder.

    The temporary folder (`saliency-kd-bench-*`, several hundred MB) is removed at the end, on an error and on
    Ctrl-C, unless `--keep-work`; a `--work-dir` is the user's and is kept.
    """
    _import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as e:  # TensorFlow already started in this process (not from the command line)
        _status(f"[bench] warning: --threads does not apply to TensorFlow here ({e})")
    measure = _measure
    if args.backbones:
        from benchmarks.backbone_runtimes import measure_backbones

        measure = functools.partial(measure_backbones, out=args.out + "_backbones")
    if args.work_dir:
        return measure(args, args.work_dir)
    work = tempfile.mkdtemp(prefix="saliency-kd-bench-")
    try:
        return measure(args, work)
    finally:
        if args.keep_work:
            _status(f"[bench] kept the work folder {work} (--keep-work); pass it as --work-dir to reuse it")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _measure(args, work):
    from datasets.synthetic import generate_synthetic_salicon
    from msinet_reference import build_reference_pb
    from teacher.export import export_split
    from teacher.loading import load_teacher

    sections = args.only or SECTIONS
    n = args.export_images
    data_small = os.path.join(work, "salicon_n")
    data_large = os.path.join(work, "salicon_4n")
    records_dir = os.path.join(work, "distill")
    pb_path = os.path.join(work, "model_salicon_cpu.pb")
    _status(f"[bench] preparing synthetic 480x640 data, records and a random-weight MSI-Net graph in {work}")
    generate_synthetic_salicon(data_small, n_train=n, n_val=BATCH, image_size=(480, 640), seed=0, verbose=False)
    generate_synthetic_salicon(data_large, n_train=4 * n, n_val=BATCH, image_size=(480, 640), seed=0,
                               verbose=False)
    if not os.path.exists(pb_path):
        build_reference_pb(pb_path, seed=0)
    if not os.path.exists(os.path.join(records_dir, "train.json")):
        export_split(data_large, "train", "oracle", records_dir, progress=False)
    from teacher.convert import convert

    keras_msinet = convert(pb_path)
    graph_teacher = load_teacher(pb_path)

    results = {}
    if args.only and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            results = json.load(f)
    results["machine"] = machine_description()

    def save():
        from datasets.io import write_report

        write_report(args.out, results, to_markdown(results))

    if "inference" in sections:
        _status("[bench] 1. inference")
        results["inference"] = bench_inference(keras_msinet, args.repeats)
    if "training" in sections:
        _status("[bench] 2 and 4. training")
        results["pipeline"], results["b_vs_a"] = bench_training(records_dir, args.train_steps)
    if "export" in sections:
        _status("[bench] 3. export")
        results["export"] = bench_export(data_small, graph_teacher)
    if "memory" in sections:
        _status("[bench] 5. export memory")
        results["export_memory"] = bench_export_memory({n: data_small, 4 * n: data_large})
    if "graph" in sections:
        _status("[bench] 6. frozen graph vs Keras")
        results["graph_vs_keras"] = bench_graph_vs_keras(graph_teacher, keras_msinet, args.repeats)
    save()  # each section above is kept even if the runtime rows fail (their packages are an extra)
    if "runtimes" in sections:
        _status("[bench] 7. deployment runtimes")
        results["runtimes"] = bench_runtimes(work, graph_teacher, keras_msinet, records_dir, args.threads,
                                             args.repeats)
        save()
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
