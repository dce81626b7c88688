"""Score the teacher maps stored in the records and student models on one split, at the original resolution.

    python evaluate.py --models runs/A runs/B                  # plus the teacher maps in data/distill
    python evaluate.py --split val --models runs/B weights/model_salicon_cpu.pb --out runs/eval
"""

import argparse
import os
import sys

from metrics.evaluation import evaluate, to_markdown, write_results


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", default="data/distill", help="distillation records from export_teacher.py")
    p.add_argument("--split", default="val", help="split of the records to score")
    p.add_argument("--models", nargs="*", default=[],
                   help="run folders, exported SavedModels, student exports (.onnx, .xml, .tflite) or teacher files "
                        "(.pb / MSI-Net SavedModel) to score")
    p.add_argument("--no-teacher", action="store_true", help="do not score the teacher maps stored in the records")
    p.add_argument("--densities-dir", default=None,
                   help="true densities <stem>.npy (synthetic data) to add KLD/CC against the truth")
    p.add_argument("--max-images", type=int, default=None, help="score only the first N records")
    p.add_argument("--seed", type=int, default=0, help="AUC-Judd jitter and sAUC negatives")
    p.add_argument("--out", default="runs/eval", help="folder for metrics.json and metrics.md")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    models = {os.path.basename(os.path.normpath(m)) or m: m for m in args.models}
    try:
        results = evaluate(args.records_dir, args.split, models, include_teacher=not args.no_teacher,
                           densities_dir=args.densities_dir, max_images=args.max_images, seed=args.seed,
                           progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    json_path, md_path = write_results(results, args.out)
    print(to_markdown(results))
    print(f"[evaluate] wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
