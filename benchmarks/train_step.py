"""Training speed per backbone on this machine: XLA on and off, float32 and mixed_bfloat16, in one run.

    python benchmarks/train_step.py --backbones resnet18 efficientnet-lite0 mobilenetv2

Each row times the Distiller's real train step (variant B, both heads, `kd_into_saliency=1`, as the pretrained
study trains; the encoder's BatchNormalization frozen for the ImageNet backbones) on one fixed synthetic batch
(`--batch-size` images at `--image-size`, random pixels and maps: the step's cost does not depend on their
values), after `WARMUP` steps that compile it, as the median of `--steps` steps. A row is written to `--out`
(JSON, atomically) as soon as it is measured, with the load average at that moment; a rerun skips the rows already
there, so an interrupted run resumes. The table (ms/step, images/s and the ratio to float32 without XLA of the
same backbone) goes to stdout.

Each row also records the memory allocator the process runs with (`allocator`: the library in `LD_PRELOAD`, else
glibc's malloc), so that two runs into one `--out` compare them; the table then gives each row's speed-up over
glibc's of the same setting:

    python benchmarks/train_step.py --backbones efficientnet-lite0 --decoder light --train-encoder-bn \
        --image-size 192 256 --policies float32 --xla off --out /tmp/alloc.json
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/train_step.py ... (the same)
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from argtypes import HelpFormatter  # noqa: E402
from benchmarks.run_benchmarks import time_call  # noqa: E402
from datasets.io import atomic_write  # noqa: E402

WARMUP = 3
SETTINGS = (("float32", False), ("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True))
# Rows written before these keys existed were measured with these values.
ROW_DEFAULTS = {"decoder": "card", "train_encoder_bn": False, "allocator": "glibc"}  # BN: ResNet18's trains


def allocator():
    """The malloc this process runs with: the first library named in LD_PRELOAD (e.g. "tcmalloc_minimal"), or
    "glibc"."""
    for item in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
        return os.path.basename(item).split(".so")[0].removeprefix("lib")
    return "glibc"


def _value(row, key):
    if key == "train_encoder_bn" and key not in row:
        return row["backbone"] == "resnet18"  # the design card's encoder always trains its BatchNormalization
    return row.get(key, ROW_DEFAULTS.get(key))


def _same_setting(a, b, *ignored):
    keys = ("backbone", "policy", "jit_compile", "image_size", "batch_size", *ROW_DEFAULTS)
    return all(_value(a, k) == _value(b, k) for k in keys if k not in ignored)


def time_train_step(backbone, image_size, batch_size, policy, jit_compile, steps, decoder="card",
                    train_encoder_bn=False):
    """Median seconds of one Distiller train step (variant B) of `backbone`'s student under `policy`."""
    import keras
    import numpy as np
    import tensorflow as tf

    from student.distillation import Distiller
    from student.model import build_student
    from student.training import freeze_encoder_batchnorm

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        student = build_student("B", backbone=backbone, decoder=decoder)
        if backbone != "resnet18" and not train_encoder_bn:
            freeze_encoder_batchnorm(student, backbone)
        distiller = Distiller(student, variant="B", kd_into_saliency=1.0)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
        rng = np.random.default_rng(0)
        h, w = image_size
        maps = lambda: tf.constant(rng.random((batch_size, h, w, 1), dtype=np.float32))  # noqa: E731
        images = tf.constant(rng.random((batch_size, h, w, 3), dtype=np.float32) * 255)
        targets = {"saliency": maps(), "teacher": maps(), "valid": tf.ones((batch_size, h, w, 1)),
                   "has_saliency": tf.ones((batch_size,))}
        distiller.optimizer.build(distiller.trainable_variables)
        distiller.make_train_function()
        step = distiller.train_function
        # float() waits for the step to finish.
        return time_call(lambda: float(step(iter([(images, targets)]))["loss"]), steps, warmup=WARMUP)
    finally:
        keras.config.set_dtype_policy(previous)


def to_markdown(rows):
    lines = ["| backbone | decoder | encoder BN | policy | XLA | allocator | ms/step | images/s | "
             "vs float32 without XLA | vs glibc | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = next((r for r in rows if r["policy"] == "float32" and not r["jit_compile"]
                     and _same_setting(r, row, "policy", "jit_compile")), None)
        glibc = next((r for r in rows if _value(r, "allocator") == "glibc" and _same_setting(r, row, "allocator")),
                     None)
        ratio = lambda other: f"{other['seconds'] / row['seconds']:.2f}x" if other else ""  # noqa: E731
        lines.append(f"| {row['backbone']} | {_value(row, 'decoder')} | "
                     f"{'trained' if _value(row, 'train_encoder_bn') else 'frozen'} | {row['policy']} | "
                     f"{'on' if row['jit_compile'] else 'off'} | {_value(row, 'allocator')} | "
                     f"{row['seconds'] * 1000:.0f} | {row['batch_size'] / row['seconds']:.1f} | {ratio(base)} | "
                     f"{ratio(glibc)} | {row['load']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    from student.backbones import BACKBONES
    from student.config import DECODERS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=["resnet18", "efficientnet-lite0"])
    p.add_argument("--image-size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--decoder", choices=DECODERS, default="card", help="the student's decoder")
    p.add_argument("--train-encoder-bn", action="store_true",
                   help="train the ImageNet encoders' BatchNormalization, as the own model does (otherwise frozen, "
                   "as train.py's --freeze-encoder-bn; ResNet18's always trains, as the design card's)")
    p.add_argument("--policies", nargs="+", choices=["float32", "mixed_bfloat16"],
                   default=["float32", "mixed_bfloat16"], help="dtype policies to time (default: both)")
    p.add_argument("--xla", nargs="+", choices=["off", "on"], default=["off", "on"],
                   help="time without XLA, with it, or both (default: both)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per row (after %d warm-up steps)" % WARMUP)
    p.add_argument("--out", default="benchmarks/results_train_step.json", help="rows so far (rerun to resume)")
    args = p.parse_args(argv)

    from datasets.io import import_tensorflow_quietly

    import_tensorflow_quietly()
    from student.training import cpu_info

    rows = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            rows = json.load(f)["rows"]
    settings = [(policy, jit) for policy, jit in SETTINGS
                if policy in args.policies and ("on" if jit else "off") in args.xla]
    for backbone in args.backbones:
        for policy, jit in settings:
            key = dict(backbone=backbone, policy=policy, jit_compile=jit, image_size=list(args.image_size),
                       batch_size=args.batch_size, decoder=args.decoder,
                       train_encoder_bn=args.train_encoder_bn or backbone == "resnet18",
                       allocator=allocator())
            if any(_same_setting(r, key) for r in rows):
                continue
            print(f"[train_step] {backbone} {policy} XLA {'on' if jit else 'off'} ({key['allocator']}) ...",
                  file=sys.stderr, flush=True)
            seconds = time_train_step(backbone, tuple(args.image_size), args.batch_size, policy, jit, args.steps,
                                      decoder=args.decoder, train_encoder_bn=args.train_encoder_bn)
            rows.append(dict(key, seconds=seconds, load=os.getloadavg()[0]))
            with atomic_write(args.out, "w") as f:
                json.dump({"cpu": cpu_info().get("model name", "unknown"), "cores": os.cpu_count(), "rows": rows},
                          f, indent=2)
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
