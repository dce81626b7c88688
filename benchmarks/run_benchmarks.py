"""Side-by-side throughput and memory measurements on the current machine, in one run.

    python benchmarks/run_benchmarks.py --out benchmarks/results

Each line of the table is a ratio of two measurements taken here, under the same conditions:

1. student vs teacher inference at 240x320, batch 8 (aim: >= 8x; the MAC ratio is ~10x);
2. variant B training reading records through tf.data vs the same train_step on tensors in memory
   (aim: the pipeline costs < 10%);
3. export_teacher throughput vs the bare teacher forward pass on the same images (aim: overhead < 15%);
4. variant B vs variant A step time (aim: B costs < 15% more), as TensorFlow graphs and compiled with XLA;
5. export_teacher peak memory for N and 4N images (aim: flat);
6. the teacher as the imported frozen graph vs the converted Keras MSI-Net.

The teacher is MSI-Net with random weights in the author's frozen-graph format (built by
tests/msinet_reference.py): speed does not depend on the weights' values. Data are synthetic SALICON-layout
images at 480x640. Results go to `<out>.json` and `<out>.md` with a description of the machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

SIZE = (240, 320)
BATCH = 8


def machine_description():
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
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
        times["B_pipeline"].append(_seconds_per_step(train_steps["B"], lambda: next(iterator), steps))
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


def to_markdown(results):
    r = results
    rows = [
        ("1. inference, student vs teacher (240x320, batch 8)",
         f"{r['inference']['student_images_per_s']:.1f} vs {r['inference']['teacher_images_per_s']:.1f} images/s",
         f"{r['inference']['ratio']:.1f}x faster", ">= 8x"),
        ("2. training B, tf.data records vs in-memory tensors",
         f"{r['pipeline']['pipeline_s_per_step']:.3f} vs {r['pipeline']['in_memory_s_per_step']:.3f} s/step",
         f"{100 * r['pipeline']['overhead']:+.1f}%", "< +10%"),
        ("3. export_teacher vs bare teacher forward",
         f"{r['export']['export_images_per_s']:.2f} vs {r['export']['bare_forward_images_per_s']:.2f} images/s",
         f"{100 * r['export']['overhead']:+.1f}%", "< +15%"),
        ("4. step time, B vs A",
         f"{r['b_vs_a']['B_s_per_step']:.3f} vs {r['b_vs_a']['A_s_per_step']:.3f} s/step",
         f"{100 * r['b_vs_a']['overhead']:+.1f}%", "< +15%"),
        ("4b. step time, B vs A, both compiled with XLA",
         f"{r['b_vs_a']['xla']['B_s_per_step']:.3f} vs {r['b_vs_a']['xla']['A_s_per_step']:.3f} s/step",
         f"{100 * r['b_vs_a']['xla']['overhead']:+.1f}%", "< +15%"),
        ("5. export_teacher peak memory, N vs 4N images",
         " vs ".join(f"{m:.0f} MiB ({n})" for n, m in zip(r['export_memory']['images'],
                                                          r['export_memory']['peak_rss_mib'])),
         f"{r['export_memory']['ratio']:.2f}x", "flat"),
        ("6. teacher: frozen graph vs Keras MSI-Net (240x320, batch 8)",
         f"{r['graph_vs_keras']['graph_images_per_s']:.2f} vs {r['graph_vs_keras']['keras_images_per_s']:.2f} "
         f"images/s", f"Keras {r['graph_vs_keras']['ratio_keras_over_graph_speed']:.2f}x; max diff "
                      f"{r['graph_vs_keras']['max_abs_diff']:.1e}", "parity"),
    ]
    m = r["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cpu_cores']} cores, GPU: {', '.join(m['gpus'])}; TensorFlow "
             f"{m['tensorflow']}, Keras {m['keras']}.", "",
             "| measurement | values | ratio | aim |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results", help="writes <out>.json and <out>.md")
    p.add_argument("--work-dir", default=None, help="where synthetic data and records are made (default: temp)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement")
    p.add_argument("--train-steps", type=int, default=6, help="timed training steps per measurement")
    p.add_argument("--export-images", type=int, default=16,
                   help="N: images for the export throughput (N) and memory (N and 4N) measurements")
    args = p.parse_args(argv)

    from datasets.synthetic import generate_synthetic_salicon
    from msinet_reference import build_reference_pb
    from teacher.export import export_split
    from teacher.loading import load_teacher

    work = args.work_dir or tempfile.mkdtemp(prefix="saliency-kd-bench-")
    n = args.export_images
    data_small = os.path.join(work, "salicon_n")
    data_large = os.path.join(work, "salicon_4n")
    records_dir = os.path.join(work, "distill")
    pb_path = os.path.join(work, "model_salicon_cpu.pb")
    print(f"[bench] preparing synthetic 480x640 data, records and a random-weight MSI-Net graph in {work}")
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

    results = {"machine": machine_description()}
    print("[bench] 1. inference")
    results["inference"] = bench_inference(keras_msinet, args.repeats)
    print("[bench] 2 and 4. training")
    results["pipeline"], results["b_vs_a"] = bench_training(records_dir, args.train_steps)
    print("[bench] 3. export")
    results["export"] = bench_export(data_small, graph_teacher)
    print("[bench] 5. export memory")
    results["export_memory"] = bench_export_memory({n: data_small, 4 * n: data_large})
    print("[bench] 6. frozen graph vs Keras")
    results["graph_vs_keras"] = bench_graph_vs_keras(graph_teacher, keras_msinet, args.repeats)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
