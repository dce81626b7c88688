"""Predict saliency maps for image and video files with the built-in model (`DEFAULT_MODEL`), another built-in,
a trained student or a teacher.

    python predict.py photo.jpg
    python predict.py --model runs/b-seed0 photos/ extra.jpg --out predictions --overlay
    python predict.py --model runs/b-seed0 clip.mp4 --out predictions --save-maps

writes predictions/<stem>.png (grayscale map in [0, 255] at each image's size) and, with --overlay,
predictions/<stem>_overlay.jpg; for each video (.mp4, .avi, .mov, .mkv, .webm, ...: inference.video),
predictions/<stem>_saliency.mp4 (the heat map over every frame, same size and frame rate) and, with --save-maps,
predictions/<stem>_maps/frame_000000.png, ... Images and videos can be mixed; folders are searched for both.
Results go to stdout, warnings and progress to stderr. Exit status 1 if any input failed (the others are still
written) or on any other error (a missing or unreadable model, an unwritable --out), 2 for a usage error, 130 when
interrupted (Ctrl-C).
"""

import argparse
import os
import sys

# FFmpeg's own log lines ("moov atom not found", ...) would repeat what our errors say; OpenCV reads this when it
# loads FFmpeg, at import. A user who set it sees everything.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

from argtypes import positive_int, run_main, warn, warn_ignored  # noqa: E402
from datasets.io import check_writable_dir, import_tensorflow_quietly  # noqa: E402
from inference.files import IMAGE_EXTENSIONS, skipped_outputs_note  # noqa: E402
from inference.inputs import plan_inputs, predict_inputs  # noqa: E402
from inference.predictors import DEFAULT_MODEL, load_predictor, model_help  # noqa: E402
from inference.video import VIDEO_EXTENSIONS  # noqa: E402

PROG = "predict.py"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Write a saliency map PNG (and optionally a heat-map overlay) for each image, and a heat-map "
        "video for each video.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=model_help(),
    )
    parser.add_argument(
        "images", nargs="+", metavar="inputs",
        help=f"image and video files and folders (searched recursively for {'/'.join(IMAGE_EXTENSIONS)} images and "
        f"{'/'.join(VIDEO_EXTENSIONS)} videos)",
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
    parser.add_argument("--save-maps", action="store_true",
                        help="videos: also write <stem>_maps/frame_000000.png, ... (one grayscale map per frame)")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="frames per model call for videos, the most held in memory (default: %(default)s)")
    parser.add_argument("--max-frames", type=positive_int, default=None,
                        help="videos: predict only the first N frames (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _print_skipped(skipped):
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"{PROG}: skipped {len(skipped)} file(s) that are not images ({'/'.join(IMAGE_EXTENSIONS)}) or "
              f"videos ({'/'.join(VIDEO_EXTENSIONS)}): {shown}", file=sys.stderr)


def _print_images(run, args):
    _print_skipped(run.skipped)
    for _, message in run.images.failures:
        print(f"{PROG}: failed: {message}", file=sys.stderr)
    n_images = len(run.images.written) // (2 if args.overlay else 1)
    print(f"[predict] {n_images} image(s) written to {args.out}; {len(run.images.failures)} failed", flush=True)


def _print_video(path, video, error):
    if error is not None:
        print(f"{PROG}: failed: {error}", file=sys.stderr)
        return
    for note in video.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    maps = f"; maps in {video.maps_dir}" if video.maps_dir else ""
    print(f"[predict] {path} -> {video.output} ({video.frames} frames, {video.size[1]}x{video.size[0]}, "
          f"{video.fps:g} fps{maps})", flush=True)


def _predict(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    # After argparse (--help stays instant), before any module imports TensorFlow: no CUDA/oneDNN lines.
    import_tensorflow_quietly()
    check_writable_dir(args.out, keep=False)  # the first write creates it: a failed run leaves no empty folder
    plan = plan_inputs(args.images, args.out, args.colormap, args.alpha)
    if plan.skipped_outputs:
        print(f"{PROG}: note: {skipped_outputs_note(plan.skipped_outputs)}", file=sys.stderr)
    if not args.overlay and not plan.videos:
        warn_ignored(parser, args, ("colormap", "alpha"), "with --overlay or to videos")
    if not plan.videos:
        warn_ignored(parser, args, ("save_maps", "max_frames", "batch_size"), "to videos")
    predictor = load_predictor(args.model, teacher_input_size=args.teacher_size, batch_size=args.batch_size,
                               teacher_format=args.teacher_format)
    if args.teacher_size is not None and predictor.kind != "teacher":
        warn(PROG, f"--teacher-size only applies to an MSI-Net teacher; {args.model} is a {predictor.kind}, ignored")
    if not plan.has_images:
        _print_skipped(plan.skipped)
    run = predict_inputs(predictor, plan, args.out, overlay=args.overlay, colormap=args.colormap, alpha=args.alpha,
                         save_maps=args.save_maps, batch_size=args.batch_size, max_frames=args.max_frames,
                         progress=not args.no_progress, on_images=lambda run: _print_images(run, args),
                         on_video=_print_video)
    if plan.videos:
        print(f"[predict] {len(run.videos)} video(s) written to {args.out}; {len(run.video_failures)} failed")
    return 1 if run.failed else 0


def main(argv=None):
    """Predict (see the module's docstring); returns the exit code (argtypes: 0, 1, 2 or 130)."""
    return run_main(_predict, argv, prog=PROG, kept="the files written so far are complete",
                    again="run the same command again to write them all")


if __name__ == "__main__":
    sys.exit(main())
