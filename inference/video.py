"""Saliency for video files: a heat-map overlay video and, optionally, one map PNG per frame.

    report = predict_video(predictor, "clip.mp4", "predictions", save_maps=True)

writes `predictions/clip_saliency.mp4` (the map over each frame, same size and frame rate, MPEG-4 Part 2
"mp4v": the one MP4 encoder opencv-python-headless ships) and `predictions/clip_maps/frame_000000.png`, ...
(uint8 grayscale maps at the frame's size). Frames are read, predicted and written `batch_size` at a time, so
memory does not grow with the video's length. Both outputs appear under their final names only when complete:
they are written under temporary names in the same folder and renamed at the end; an error or Ctrl-C removes
the temporary files.

Formats: `VIDEO_EXTENSIONS` are the containers that OpenCV's bundled FFmpeg both wrote and read back here (MP4,
MOV, M4V, 3GP, AVI, MKV, WebM, WMV, FLV, MPEG-TS, MPEG-1/2 program streams). Which codecs inside them decode
depends on that FFmpeg build; a file it cannot decode is reported as one OpenCV cannot open.
"""

import contextlib
import dataclasses
import math
import os
import re
import shutil
import sys
import tempfile

import cv2
import numpy as np

from datasets.io import check_writable_dir, encode_png
from inference.files import map_to_uint8, overlay_colormap, overlay_heatmap, walk_input_folder

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".3gp", ".avi", ".mkv", ".webm", ".wmv", ".flv", ".ts", ".mpg", ".mpeg")
OUTPUT_SUFFIX = "_saliency.mp4"
MAPS_SUFFIX = "_maps"
OUTPUT_FOURCC = "mp4v"
DEFAULT_FPS = 25.0
MAX_FPS = 1000.0  # a larger value is a broken header (e.g. the stream's time base), not a frame rate
_MAP_NAME = re.compile(r"frame_\d{6,}\.png\Z")


def is_video(path):
    """Whether `path` has one of `VIDEO_EXTENSIONS` (case-insensitive)."""
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


def list_videos(inputs, exclude=None):
    """The videos among `inputs` (files and folders) as (path, output_stem) pairs.

    A file given directly is a video if it has one of `VIDEO_EXTENSIONS` and gets its own stem; folders are
    searched recursively, sorted, and `folder/sub/clip.mp4` gets the stem `sub/clip`. As in
    `inference.files.list_images`, the output folder `exclude` is skipped inside an input folder.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two videos would write the same outputs.
    """
    exclude = os.path.realpath(exclude) if exclude else None
    pairs = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            if exclude == os.path.realpath(item):
                raise ValueError(
                    f"the output folder {exclude} is the input folder {item}: the outputs would be mixed with the "
                    f"inputs (and read as inputs next time); choose another --out, e.g. "
                    f"{os.path.join(item, 'predictions')}"
                )
            for path, name in walk_input_folder(item, exclude):
                if is_video(name) and not name.startswith("."):
                    pairs.append((path, os.path.splitext(os.path.relpath(path, item))[0]))
        elif os.path.isfile(item):
            if is_video(item):
                pairs.append((item, os.path.splitext(os.path.basename(item))[0]))
        else:
            raise FileNotFoundError(f"{item}: no such image or video file or folder")
    seen = {}
    for path, stem in pairs:
        if stem in seen:
            raise ValueError(f"{seen[stem]} and {path} would both be written as {stem}{OUTPUT_SUFFIX}; rename one or "
                             "predict them separately")
        seen[stem] = path
    return pairs


@dataclasses.dataclass
class VideoReport:
    """What `predict_video` wrote.

    Attributes:
        path: the input video.
        output: the overlay video written.
        maps_dir: the folder of per-frame map PNGs, or None without `save_maps`.
        frames: frames read, predicted and written.
        fps: frame rate of the output (the input's, or `DEFAULT_FPS` when the input's is unknown: see `notes`).
        size: (height, width) of the input frames (the maps' size).
        declared_frames: the frame count in the input's header, or None when it has none.
        notes: things a user should know, each naming the file (unknown frame rate, fewer frames than the
            header declares, odd frame size padded for the encoder).
    """

    path: str
    output: str
    maps_dir: object
    frames: int
    fps: float
    size: tuple
    declared_frames: object = None
    notes: list = dataclasses.field(default_factory=list)


def check_overlay(colormap, alpha):
    """Raise ValueError for a `colormap` that matplotlib lacks or an `alpha` outside [0, 1]."""
    overlay_colormap(colormap, alpha)


def _check_maps_dir(maps_dir):
    """Refuse an existing `maps_dir` that holds anything but frame maps: replacing it must not delete user files."""
    if not os.path.lexists(maps_dir):
        return
    if not os.path.isdir(maps_dir) or os.path.islink(maps_dir):
        raise ValueError(f"{maps_dir}: exists and is not a folder of frame maps; move it or choose another output "
                         "folder")
    others = sorted(name for name in os.listdir(maps_dir) if not _MAP_NAME.match(name))
    if others:
        raise ValueError(f"{maps_dir}: exists and holds files that are not frame maps (e.g. {others[0]}); it would be "
                         "replaced: move them or choose another output folder")


def _frame_rate(capture, path, notes):
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        notes.append(f"{path}: frame rate unknown in the file ({fps!r}); the output plays at {DEFAULT_FPS:g} fps")
        return DEFAULT_FPS
    return float(fps)


def _batches(capture, path, batch_size, max_frames):
    """Yield lists of at most `batch_size` uint8 RGB frames; reads a frame only when the current batch has room."""
    batch, count, shape = [], 0, None
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok or frame is None:
            break
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            raise ValueError(f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, the first was "
                             f"{shape[1]}x{shape[0]}; videos whose frame size changes are not supported")
        batch.append(np.ascontiguousarray(frame[:, :, 2::-1]))  # BGR -> RGB
        count += 1
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _temporary_path(directory, name, suffix=""):
    """A new, empty file `.<name>.tmp-XXXX<suffix>` in `directory` (the suffix tells FFmpeg the container)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the result a plain open()'s permissions
    return tmp


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _replace_dir(tmp_dir, maps_dir):
    """Move the finished `tmp_dir` to `maps_dir`, replacing an earlier run's maps (checked by `_check_maps_dir`)."""
    old = None
    if os.path.lexists(maps_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(maps_dir)}.old-", dir=os.path.dirname(maps_dir))
        os.rmdir(old)
        os.rename(maps_dir, old)
    os.rename(tmp_dir, maps_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def predict_video(predictor, path, out_dir="predictions", batch_size=8, save_maps=False, colormap="jet", alpha=0.5,
                  max_frames=None, progress=True, stem=None):
    """Write `<out_dir>/<stem>_saliency.mp4`, the saliency heat map over every frame of the video `path`.

    Frames are read with OpenCV (`cv2.VideoCapture`, converted to RGB), given to `predictor.predict_batch`
    `batch_size` at a time and blended with `inference.files.overlay_heatmap`; no more than one batch of
    frames (and their maps) is held at once. The output has the input's frame size and frame rate (25 fps when
    the file has none: said in `notes`); an odd width or height is padded by one replicated row/column, since
    the encoder needs even sizes (also in `notes`). Outputs are written under temporary names and renamed
    when complete: on any error or KeyboardInterrupt they are removed and nothing appears under the final
    names (an earlier run's outputs are left as they were).

    Args:
        predictor: a `inference.predictors.Predictor` (see `load_predictor`).
        path: the video file, with one of `VIDEO_EXTENSIONS`.
        out_dir: output folder, created if needed. Defaults to "predictions".
        batch_size: frames per `predict_batch` call (the most frames held in memory). Defaults to 8.
        save_maps: also write `<out_dir>/<stem>_maps/frame_000000.png`, ... (uint8 maps at the frame size).
        colormap: matplotlib colormap of the overlay. Defaults to "jet".
        alpha: heat-map weight of the overlay, 0..1. Defaults to 0.5.
        max_frames: predict only the first `max_frames` frames. Defaults to None (all).
        progress: show a progress bar on stderr.
        stem: output name stem. Defaults to the video's file name without its extension.

    Returns:
        A `VideoReport`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming the file: an extension not in `VIDEO_EXTENSIONS`, a file OpenCV cannot open (not a
            video, truncated, an unknown codec), a video with no frames, an output folder that cannot be written,
            a bad argument.
    """
    from tqdm import tqdm

    path = os.fspath(path)
    out_dir = os.fspath(out_dir)
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or isinstance(max_frames, bool)
                                   or max_frames < 1):
        raise ValueError(f"`max_frames` must be a positive int or None. Received: max_frames={max_frames!r}")
    check_overlay(colormap, alpha)  # a bad colormap or alpha fails before any work
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such video file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a video file")
    if not is_video(path):
        ext = os.path.splitext(path)[1] or "no extension"
        raise ValueError(f"{path}: not a supported video file ({ext}); supported: {', '.join(VIDEO_EXTENSIONS)}")
    stem = stem if stem is not None else os.path.splitext(os.path.basename(path))[0]
    output = os.path.join(out_dir, stem + OUTPUT_SUFFIX)
    maps_dir = os.path.join(out_dir, stem + MAPS_SUFFIX) if save_maps else None
    check_writable_dir(os.path.dirname(output) or ".", option="output folder")
    if maps_dir is not None:
        _check_maps_dir(maps_dir)

    capture = cv2.VideoCapture(path)
    tmp_video = tmp_maps = writer = None
    try:
        if not capture.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video (not a video, truncated, or a codec its FFmpeg "
                             "lacks); check that it plays, or convert it, e.g. to H.264 or MPEG-4 in .mp4")
        notes = []
        fps = _frame_rate(capture, path, notes)
        declared = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        declared = int(declared) if math.isfinite(declared) and declared > 0 else None
        total = declared if max_frames is None else min(declared or max_frames, max_frames)
        frames, size = 0, None
        bar = tqdm(total=total, desc=os.path.basename(path), unit="frame", disable=not progress, file=sys.stderr)
        with contextlib.closing(bar):
            for batch in _batches(capture, path, batch_size, max_frames):
                maps = predictor.predict_batch(batch)
                if len(maps) != len(batch):
                    raise RuntimeError(f"{path}: the predictor returned {len(maps)} maps for {len(batch)} frames")
                if writer is None:
                    size = batch[0].shape[:2]
                    height, width = size[0] + size[0] % 2, size[1] + size[1] % 2
                    if (height, width) != size:
                        notes.append(f"{path}: {size[1]}x{size[0]} frames padded to {width}x{height} (the encoder "
                                     "needs an even width and height; the last column/row is repeated)")
                    tmp_video = _temporary_path(os.path.dirname(output) or ".", os.path.basename(output), ".mp4")
                    writer = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*OUTPUT_FOURCC), fps, (width, height))
                    if not writer.isOpened():
                        raise ValueError(f"{output}: OpenCV cannot write an {OUTPUT_FOURCC} .mp4 video of {width}x"
                                         f"{height} at {fps:g} fps here")
                    if maps_dir is not None:
                        tmp_maps = tempfile.mkdtemp(prefix=f".{os.path.basename(maps_dir)}.tmp-",
                                                    dir=os.path.dirname(maps_dir) or ".")
                        os.chmod(tmp_maps, 0o777 & ~_umask())  # mkdtemp makes 0700
                for frame, saliency_map in zip(batch, maps):
                    overlay = overlay_heatmap(frame, saliency_map, colormap, alpha)
                    if overlay.shape[:2] != (height, width):
                        overlay = np.pad(overlay, ((0, height - size[0]), (0, width - size[1]), (0, 0)), mode="edge")
                    writer.write(np.ascontiguousarray(overlay[:, :, ::-1]))
                    if tmp_maps is not None:
                        with open(os.path.join(tmp_maps, f"frame_{frames:06d}.png"), "wb") as f:
                            f.write(encode_png(map_to_uint8(saliency_map)))
                    frames += 1
                bar.update(len(batch))
                del batch, maps, frame, saliency_map, overlay  # before the next batch is read: one batch held at most
        if frames == 0:
            raise ValueError(f"{path}: the video has no frames that OpenCV can read (empty or broken)")
        writer.release()
        _check_written(tmp_video, output, frames)
        if declared is not None and frames < declared and (max_frames is None or frames < max_frames):
            notes.append(f"{path}: read {frames} of the {declared} frames its header declares (truncated or "
                         "damaged?); the output has the frames that could be read")
        os.replace(tmp_video, output)
        tmp_video = None
        if tmp_maps is not None:
            _replace_dir(tmp_maps, maps_dir)
            tmp_maps = None
        return VideoReport(path=path, output=output, maps_dir=maps_dir, frames=frames, fps=fps, size=tuple(size),
                           declared_frames=declared, notes=notes)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if tmp_video is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_video)
        if tmp_maps is not None:
            shutil.rmtree(tmp_maps, ignore_errors=True)


def _check_written(tmp_video, output, frames):
    """Read the finished temporary video's header back: it must open and hold every frame written."""
    capture = cv2.VideoCapture(tmp_video)
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else None
    finally:
        capture.release()
    if count is None or int(count) != frames:
        found = "does not open" if count is None else f"holds {int(count)} frames"
        raise OSError(f"{output}: the encoded video {found} after writing {frames} (disk full?); nothing was written "
                      "under that name")
