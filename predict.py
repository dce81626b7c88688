"""Predict saliency maps for image files with a trained student or the MSI-Net teacher.

    python predict.py --model runs/b-seed0 photos/ extra.jpg --out predictions --overlay

writes predictions/<stem>.png (grayscale map in [0, 255] at each image's size) and, with --overlay,
predictions/<stem>_overlay.jpg. Exit status 1 if any image failed (the others are still written) or on any
other error (a missing or unreadable model, an unwritable --out), 2 for a usage error.
"""

import argparse
import sys

from datasets.io import check_writable_dir, import_tensorflow_quietly


def build_parser():
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Write a saliency map PNG (and optionally a heat-map overlay) for each image.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="run folder from train.py (with saved_model/), a student SavedModel folder, a student export from "
        "export_student.py (.onnx, OpenVINO .xml, .tflite: the runtime is picked from the extension), an "
        "MSI-Net teacher (.pb frozen graph, SavedModel folder or Keras file), or any saliency model following the "
        "contract (SavedModel folder or .keras/.h5, e.g. FastGaze)",
    )
    parser.add_argument(
        "images", nargs="+", help="image files and folders (searched recursively for .jpg/.jpeg/.png/.bmp)"
    )
    parser.add_argument("--out", default="predictions", help="output folder (default: %(default)s)")
    parser.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.jpg, the map over the image")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap of the overlay (default: %(default)s)")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="heat-map weight in the overlay, 0..1 (default: %(default)s)"
    )
    parser.add_argument(
        "--teacher-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("HEIGHT", "WIDTH"),
        help="input size in pixels a teacher runs at (default: the size its weights were trained at, from the "
        "file name model_<dataset>_..., e.g. 240 320 for SALICON)",
    )
    parser.add_argument("--teacher-format", default="auto", choices=("auto", "msinet", "contract"),
                        help="force how a teacher file loads: MSI-Net or the saliency-model contract (float32 RGB "
                        "0..255 (B, H, W, 3) in, non-negative (B, H, W, 1) out); auto decides from the file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _warn(message):
    print(f"predict.py: warning: {message}", file=sys.stderr)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # After argparse (--help stays instant), before any module imports TensorFlow: no CUDA/oneDNN lines.
    import_tensorflow_quietly()
    from inference.files import predict_files
    from inference.predictors import load_predictor

    if not args.overlay:
        unused = [f"--{name}" for name in ("colormap", "alpha") if getattr(args, name) != parser.get_default(name)]
        if unused:
            _warn(f"{' and '.join(unused)} only appl{'y' if len(unused) > 1 else 'ies'} with --overlay; ignored")
    try:
        check_writable_dir(args.out)
        predictor = load_predictor(args.model, teacher_input_size=args.teacher_size, teacher_format=args.teacher_format)
        if args.teacher_size is not None and predictor.kind != "teacher":
            _warn(f"--teacher-size only applies to an MSI-Net teacher; {args.model} is a {predictor.kind}, ignored")
        report = predict_files(
            predictor,
            args.images,
            out_dir=args.out,
            overlay=args.overlay,
            colormap=args.colormap,
            alpha=args.alpha,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 1
    if report.skipped:
        shown = ", ".join(report.skipped[:5]) + (f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else "")
        print(f"predict.py: skipped {len(report.skipped)} file(s) that are not .jpg/.jpeg/.png/.bmp: {shown}",
              file=sys.stderr)
    for _, message in report.failures:
        print(f"predict.py: failed: {message}", file=sys.stderr)
    n_images = len(report.written) // (2 if args.overlay else 1)
    print(f"[predict] {n_images} image(s) written to {args.out}; {len(report.failures)} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
