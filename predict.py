"""Predict saliency maps for image and video files with a trained student or the MSI-Net teacher.

    python predict.py --model runs/b-seed0 photos/ extra.jpg --out predictions --overlay
    python predict.py --model runs/b-seed0 clip.mp4 --out predictions --save-maps

writes predictions/<stem>.png (grayscale map in [0, 255] at each image's size) and, with --overlay,
predictions/<stem>_overlay.jpg; for each video (.mp4, .avi, .mov, .mkv, .webm, ...: inference.video),
predictions/<stem>_saliency.mp4 (the heat map over every frame, same size and frame rate) and, with --save-maps,
predictions/<stem>_maps/frame_000000.png, ... Images and videos can be mixed; folders are searched for both.
Results go to stdout, warnings and progress to stderr. Exit status 1 if any input failed (the others are still
written) or on any other error (a missing or unreadable model, an unwritable --out), 2 for a usage error.
"""

import argparse
import os
import sys

# FFmpeg's own log lines ("moov atom not found", ...) would repeat what our errors say; OpenCV reads this when it
# loads FFmpeg, at import. A user who set it sees everything.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

from datasets.io import check_writable_dir, import_tensorflow_quietly  # noqa: E402

from inference.files import IMAGE_EXTENSIONS, list_images, predict_files  # noqa: E402
from inference.predictors import DEFAULT_MODEL, load_predictor  # noqa: E402
from inference.video import VIDEO_EXTENSIONS, check_overlay, is_video, list_videos, predict_video  # noqa: E402
from argtypes import positive_int  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Write a saliency map PNG (and optionally a heat-map overlay) for each image.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="the built-in fastgaze-centre (default; FastGaze with a centre prior, shipped with the package), "
        "fastgaze (without the prior), attention-center, or a spec of them (fastgaze-centre+attention-center, "
        "0.6*fastgaze-centre+0.4*attention-center, attention-center:flip); a run folder from train.py (with saved_model/), a student SavedModel folder, a student export from "
        "export_student.py (.onnx, OpenVINO .xml, .tflite: the runtime is picked from the extension), an "
        "MSI-Net teacher (.pb frozen graph, SavedModel folder or Keras file), or any saliency model following the "
        "contract (SavedModel folder or .keras/.h5, e.g. FastGaze)",
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


def _warn(message):
    print(f"predict.py: warning: {message}", file=sys.stderr)


def _unused_flags(parser, args, names):
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) != parser.get_default(name)]


def _warn_unused(unused, condition):
    if unused:
        _warn(f"{' and '.join(unused)} only appl{'y' if len(unused) > 1 else 'ies'} {condition}; ignored")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # After argparse (--help stays instant), before any module imports TensorFlow: no CUDA/oneDNN lines.
    import_tensorflow_quietly()
    report, video_reports, video_failures = None, [], []
    try:
        check_writable_dir(args.out)
        videos = list_videos(args.images, exclude=args.out)  # also: every input exists
        if not args.overlay and not videos:
            _warn_unused(_unused_flags(parser, args, ("colormap", "alpha")), "with --overlay or to videos")
        if videos:
            check_overlay(args.colormap, args.alpha)  # once, before any work
        else:
            _warn_unused(_unused_flags(parser, args, ("save_maps", "max_frames", "batch_size")), "to videos")
        # Folders may hold images besides videos; video files given directly are not images. Without videos,
        # predict_files sees every input as before (and says when there are no images).
        image_inputs = [item for item in args.images if not (os.path.isfile(item) and is_video(item))]
        found = {os.path.normpath(path) for path, _ in videos}
        skipped = []
        has_images = bool(image_inputs) and (
            not videos or bool(list_images(image_inputs, exclude=args.out, skipped=skipped)))
        skipped = [path for path in skipped if os.path.normpath(path) not in found]
        predictor = load_predictor(args.model, teacher_input_size=args.teacher_size, batch_size=args.batch_size,
                                   teacher_format=args.teacher_format)
        if args.teacher_size is not None and predictor.kind != "teacher":
            _warn(f"--teacher-size only applies to an MSI-Net teacher; {args.model} is a {predictor.kind}, ignored")
        if has_images:
            report = predict_files(
                predictor,
                image_inputs,
                out_dir=args.out,
                overlay=args.overlay,
                colormap=args.colormap,
                alpha=args.alpha,
                progress=not args.no_progress,
            )
            report.skipped = [path for path in report.skipped if os.path.normpath(path) not in found]
            skipped = report.skipped
    except (FileNotFoundError, ValueError) as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 1
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"predict.py: skipped {len(skipped)} file(s) that are not images ({'/'.join(IMAGE_EXTENSIONS)}) or "
              f"videos ({'/'.join(VIDEO_EXTENSIONS)}): {shown}", file=sys.stderr)
    if report is not None:
        for _, message in report.failures:
            print(f"predict.py: failed: {message}", file=sys.stderr)
        n_images = len(report.written) // (2 if args.overlay else 1)
        print(f"[predict] {n_images} image(s) written to {args.out}; {len(report.failures)} failed", flush=True)
    for path, stem in videos:
        try:
            video = predict_video(predictor, path, args.out, batch_size=args.batch_size, save_maps=args.save_maps,
                                  colormap=args.colormap, alpha=args.alpha, max_frames=args.max_frames,
                                  progress=not args.no_progress, stem=stem)
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the others; each failure is reported
            message = str(e) if str(e).startswith(path) else f"{path}: {type(e).__name__}: {e}"
            print(f"predict.py: failed: {message}", file=sys.stderr)
            video_failures.append((path, message))
            continue
        for note in video.notes:
            print(f"predict.py: note: {note}", file=sys.stderr)
        maps = f"; maps in {video.maps_dir}" if video.maps_dir else ""
        print(f"[predict] {path} -> {video.output} ({video.frames} frames, {video.size[1]}x{video.size[0]}, "
              f"{video.fps:g} fps{maps})", flush=True)
        video_reports.append(video)
    if videos:
        print(f"[predict] {len(video_reports)} video(s) written to {args.out}; {len(video_failures)} failed")
    failed = (report is not None and report.failures) or video_failures
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
