"""Crop photos to given aspect ratios around what people look at, with a saliency model.

    python crop.py photos/ --aspect 16:9 --aspect 1:1 --model runs/B --out crops

writes crops/<stem>_16x9.jpg and crops/<stem>_1x1.jpg for every image and crops/crops.json with each box (x, y,
width, height in the image's pixels), the method, scale and model. `--method centre` needs no model. Exit status
1 if any image failed (the others are still written) or on any other error (a missing input, a model that does
not load), 2 for a usage error, 130 when interrupted (Ctrl-C).
"""

import argparse
import sys

from argtypes import attach_negative_values, run_main, warn
from datasets.io import check_writable_dir, import_tensorflow_quietly
from inference.crop import CROP_METHODS, CROPS_JSON, DEFAULT_ASPECT, aspect_label, check_scale, crop_files
from inference.files import IMAGE_EXTENSIONS, skipped_outputs_note
from inference.predictors import DEFAULT_MODEL, model_help

PROG = "crop.py"


def _aspect(text):
    try:
        aspect_label(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _scale(text):
    try:
        value = float(text)
    except ValueError:
        value = text  # check_scale's message repeats it
    try:
        return check_scale(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Crop each image to one or more aspect ratios, keeping the most salient part (one saliency "
        "prediction per image), and write the crops as JPEGs plus crops.json with every box.",
    )
    parser.add_argument("images", nargs="+",
                        help=f"image files and folders (searched recursively for {'/'.join(IMAGE_EXTENSIONS)})")
    parser.add_argument("--aspect", action="append", type=_aspect, metavar="W:H",
                        help=f"aspect ratio width:height of a crop, e.g. 16:9, 1:1, 4:5, 2:1 or 1.91:1; repeat for "
                        f"several (default: {DEFAULT_ASPECT}). Each is written as <stem>_<W>x<H>.jpg")
    parser.add_argument("--method", default="mass", choices=CROP_METHODS,
                        help="where the box goes: mass = the position holding the most saliency (sum of the map "
                        "over the box), point = centred on the most salient pixel (Twitter's cropping), centre = "
                        "centred, no model needed (default: %(default)s)")
    parser.add_argument("--scale", type=_scale, default=1.0,
                        help="fraction of the width and height of the largest box of that aspect ratio that fits "
                        "the image, in (0, 1]; 0.5 gives a box half as wide and half as high (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="saliency model: " + model_help())
    parser.add_argument("--out", default="crops", help="output folder (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (stderr)")
    return parser


def _crop(argv):
    parser = build_parser()
    args = parser.parse_args(attach_negative_values(argv, ("--aspect",)))
    aspects = args.aspect or [DEFAULT_ASPECT]
    if args.method == "centre" and args.model != DEFAULT_MODEL:
        warn(PROG, f"--method centre uses no model; --model {args.model} ignored")
    check_writable_dir(args.out, keep=False)  # the first write creates it: a failed run leaves no empty folder
    predictor = None
    if args.method != "centre":
        import_tensorflow_quietly()  # TensorFlow only now: --help and centre crops start fast, without its lines
        from inference.predictors import load_predictor

        predictor = load_predictor(args.model)
    report = crop_files(predictor, args.images, args.out, aspects=aspects, method=args.method, scale=args.scale,
                        progress=not args.no_progress)
    if report.skipped:
        shown = ", ".join(report.skipped[:5]) + (f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else "")
        print(f"{PROG}: skipped {len(report.skipped)} file(s) that are not {'/'.join(IMAGE_EXTENSIONS)}: {shown}",
              file=sys.stderr)
    if report.skipped_outputs:
        print(f"{PROG}: note: {skipped_outputs_note(report.skipped_outputs)}", file=sys.stderr)
    for _, message in report.failures:
        print(f"{PROG}: failed: {message}", file=sys.stderr)
    print(f"[crop] {report.num_images} image(s), {len(report.written) - 1} crop(s) ({args.method}, scale "
          f"{args.scale:g}) written to {args.out} with {CROPS_JSON}; {len(report.failures)} failed")
    return 1 if report.failures else 0


def main(argv=None):
    """Crop (see the module's docstring); returns the exit code (argtypes: 0, 1, 2 or 130)."""
    return run_main(_crop, argv, prog=PROG, kept="the crops written so far are complete",
                    again="run the same command again to crop them all")


if __name__ == "__main__":
    sys.exit(main())
