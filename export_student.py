"""Export a trained student to SavedModel, ONNX, OpenVINO and LiteRT (optionally int8) for deployment.

    python export_student.py runs/B --out exports/B
    python export_student.py runs/B --out exports/B --int8 --records-dir data/distill
    python export_student.py student.weights.h5 --variant B --input-size 240 320 --formats onnx litert
    python export_student.py fastgaze-centre --out exports/fastgaze --input-size 240 320

A built-in model (fastgaze, fastgaze-centre) exports like a student at --input-size (inference/builtin_export.py).

The SavedModel takes uint8 RGB of any size; the .onnx, .xml (+ .bin) and .tflite files take uint8 RGB at
exactly --input-size (any batch) and return "density" and "saliency_map" at that size; each carries its input
size and resize mode inside it. predict.py and evaluate.py load every one of them and resize other image sizes
in and out (see inference/export.py).
--int8 adds `<name>_int8.onnx`, `<name>_int8.xml` (+ .bin; needs NNCF: pip install nncf) and `<name>_int8.tflite`
for those of the formats asked for. Nothing is left half-written: the files are moved into --out at the end.
Exit status 2 for a usage error, 1 for any other error (a missing or unusable model, records, runtime package,
an unwritable --out, a full disk).
"""

import argparse
import sys

from inference import export as deploy
from argtypes import HelpFormatter, fail, positive_int, run_main

PROG = "export_student.py"


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("model", help="run folder from train.py, a student .weights.h5 file or a built-in model "
                        "(fastgaze, fastgaze-centre)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--formats", nargs="+", default=list(deploy.FORMATS), choices=deploy.FORMATS,
                        help="the runtimes' files to write")
    parser.add_argument("--input-size", type=positive_int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
                        help="size the student runs at (default: the run's training size; required for a .weights.h5)")
    parser.add_argument("--variant", choices=("A", "B"), default=None, help="variant of a bare .weights.h5 (default: read from the file)")
    parser.add_argument("--backbone", default=None,
                        help="encoder of a bare .weights.h5 (default: the run's config, or resnet18)")
    parser.add_argument("--int8", action="store_true",
                        help="also write calibrated int8 .onnx, .xml and .tflite files (without it, the <name>_int8 "
                        "files an earlier export left in --out are removed: they belong to other weights)")
    parser.add_argument("--records-dir", default=None, help="distillation records whose images calibrate int8")
    parser.add_argument("--calibration-split", default="train",
                        help="records split used for calibration (export_teacher.py writes train, val and test)")
    parser.add_argument("--calibration-count", type=positive_int, default=32, help="calibration images")
    parser.add_argument("--name", default=None,
                        help="base name of the files (default: student; a built-in model's name, e.g. fastgaze_centre)")
    return parser


def _default_name(model):
    from teacher import builtin  # no TensorFlow import

    entry = builtin.lookup(model)
    return entry.name.replace("-", "_") if entry is not None else "student"


def _error(message):
    return fail(PROG, message)


def _export(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.int8 and args.records_dir is None:
        parser.error("--int8 needs --records-dir: distillation records whose images calibrate int8 (e.g. data/distill)")
    from datasets.io import check_writable_dir, import_tensorflow_quietly

    try:
        check_writable_dir(args.out, keep=False)  # the export creates it: a failed one leaves no empty folder
    except ValueError as e:
        return _error(e)
    import_tensorflow_quietly()  # after argparse: --help and usage errors stay instant; no CUDA/oneDNN lines
    try:
        paths = deploy.export_student(args.model, args.out, formats=args.formats, input_size=args.input_size,
                                      variant=args.variant, backbone=args.backbone, int8=args.int8, records_dir=args.records_dir,
                                      calibration_split=args.calibration_split,
                                      calibration_count=args.calibration_count, name=args.name or _default_name(args.model))
    except (FileNotFoundError, ValueError, ImportError) as e:
        return _error(e)
    except OSError as e:  # a full disk, a permission: nothing of this export was moved into --out
        if e.strerror is None:  # raised with a message of ours (a folder it will not replace)
            return _error(e)
        where = f"{e.filename}: " if e.filename else ""
        return _error(f"{where}{e.strerror or e}. Nothing of this export was written to {args.out}: free space or "
                      "fix the permissions (or choose another --out), then run the same command again")
    for fmt, path in paths.items():
        print(f"[export_student] {fmt}: {path}")
    return 0


def main(argv=None):
    """Export (see the module's docstring); returns the exit code (argtypes: 0, 1, 2 or 130)."""
    return run_main(_export, argv, prog=PROG, handled=(ImportError,),
                    kept="nothing of this export was written to --out", again="run the same command again")


if __name__ == "__main__":
    sys.exit(main())
