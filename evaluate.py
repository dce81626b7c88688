"""Score the teacher maps stored in the records and student models on one split, at the original resolution.

    python evaluate.py --models runs/A runs/B                  # plus the teacher maps in data/distill
    python evaluate.py --split val --models runs/B weights/model_salicon_cpu.pb --out runs/eval
    python evaluate.py --records-dir data/distill/mit1003 data/distill/osie --split test --models runs/B

One table per data set, each with a centre-bias row (a Gaussian fitted to the training split's fixations) and
an inter-observer row (each observer predicted by the others), the floor and the ceiling of every fixation score.
Exit codes: 0 done, 1 a handled error (one line `evaluate.py: error: ...` on stderr), 2 a usage error (argparse),
130 interrupted.
"""

import argparse
import os
import sys

from datasets.io import check_writable_dir, import_tensorflow_quietly
from argtypes import HelpFormatter, positive_int, run_main

PROG = "evaluate.py"


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--records-dir", nargs="+", default=["data/distill"],
                   help="distillation records from export_teacher.py (several folders: one table per data set)")
    p.add_argument("--split", default="val", help="split of the records to score")
    p.add_argument("--models", nargs="*", default=[],
                   help="run folders, exported SavedModels, student exports (.onnx, .xml, .tflite), teacher files "
                        "(.pb / MSI-Net SavedModel), contract models (SavedModel / .keras) or built-in models and specs "
                        "(fastgaze-centre, attention-center, fastgaze-centre+attention-center) to score")
    p.add_argument("--teacher-format", default="auto", choices=("auto", "msinet", "contract"),
                   help="force how teacher files in --models load: MSI-Net or the saliency-model contract")
    p.add_argument("--no-teacher", action="store_true", help="do not score the teacher maps stored in the records")
    p.add_argument("--densities-dir", default=None,
                   help="true densities <stem>.npy (synthetic data) to add KLD/CC against the truth")
    p.add_argument("--max-images", type=positive_int, default=None,
                   help="score only the first N records of each folder (N >= 1; default: all)")
    p.add_argument("--no-references", action="store_true",
                   help="leave out the centre-bias and inter-observer reference rows")
    p.add_argument("--centre-bias-split", default="train",
                   help="split of the same records folders whose fixations the centre-bias Gaussian is fitted on")
    p.add_argument("--observer-sigma", type=float, default=None,
                   help="blur in pixels of the inter-observer maps (default: 24, the lab's recipe, which also "
                        "reproduces MIT1003's official maps)")
    p.add_argument("--seed", type=int, default=0, help="AUC-Judd jitter and sAUC negatives")
    p.add_argument("--out", default="runs/eval", help="folder for metrics.json and metrics.md")
    p.add_argument("--quiet", action="store_true", help="no progress and status on stderr (the table still goes to "
                   "stdout)")
    return p


def model_names(paths):
    """A unique row name per model path: its shortest trailing part that no other path shares.

    `runs/A runs/B` give `A`, `B`; `runs/s0/B runs/s1/B` give `s0/B`, `s1/B`. Returns {name: path} in order.

    Raises:
        ValueError: the same model is given twice.
    """
    parts = [os.path.normpath(os.path.abspath(p)).strip(os.sep).split(os.sep) for p in paths]
    seen = {}
    for path, part in zip(paths, parts):
        key = tuple(part)
        if key in seen:
            raise ValueError(f"{seen[key]} and {path} are the same model; give it once")
        seen[key] = path
    depth = [1] * len(paths)
    while True:
        names = [os.sep.join(part[-d:]) for part, d in zip(parts, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            break
        depth = [d + 1 if n in clashes else d for n, d in zip(names, depth)]
    return dict(zip(names, paths))


def _evaluate(argv):
    args = build_parser().parse_args(argv)
    # After argparse (--help stays instant), before any module imports TensorFlow: no CUDA/oneDNN lines.
    import_tensorflow_quietly()
    from evaluation.scoring import evaluate, to_markdown, write_results

    models = model_names(args.models)
    check_writable_dir(args.out, keep=False)  # the first write creates it: a failed run leaves no empty folder
    results = evaluate(args.records_dir, args.split, models, include_teacher=not args.no_teacher,
                       densities_dir=args.densities_dir, max_images=args.max_images, seed=args.seed,
                       progress=not args.quiet, references=not args.no_references,
                       centre_bias_split=args.centre_bias_split, observer_sigma=args.observer_sigma,
                       teacher_format=args.teacher_format)
    json_path, md_path = write_results(results, args.out)
    print(to_markdown(results))  # stdout carries the table only: `evaluate.py ... > table.md`
    if not args.quiet:
        print(f"[evaluate] wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


def main(argv=None):
    """Score (see the module's docstring); returns the exit code (argtypes: 0, 1, 2 or 130)."""
    return run_main(_evaluate, argv, prog=PROG, kept="nothing was written")


if __name__ == "__main__":
    sys.exit(main())
