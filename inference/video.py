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
import tempfile

import cv2
import numpy as np

from datasets.io import check_writable_dir, encode_png, plain_permissions
from inference.files import (Progress, map_to_uint8, mark_output_folder, overlay_colormap, overlay_heatmap,
                             walk_input_folder)

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


def list_videos(inputs, exclude=None, skipped_outputs=None):
    """The videos among `inputs` (files and folders) as (path, output_stem) pairs.

    A file given directly is a video if it has one of `VIDEO_EXTENSIONS` and gets its own stem; folders are
    searched recursively, sorted, and `folder/sub/clip.mp4` gets the stem `sub/clip`. As in
    `inference.files.list_images`, the output folder `exclude` and earlier output folders are skipped inside an
    input folder (the latter appended to the list `skipped_outputs` if given).

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
            for path, name in walk_input_folder(item, exclude, skipped_outputs):
                if is_video(name):
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


# Temporary names carry the writing process's id, so that a later run can tell the files that a killed run left
# (its process is gone) from those of a run still writing into the same folder.
_TEMPORARY_NAME = re.compile(rf"\.(.+(?:{re.escape(OUTPUT_SUFFIX)}|{re.escape(MAPS_SUFFIX)}))\.(?:tmp|old)-(\d+)-"
                             r"[a-z0-9_]+(?:\.mp4)?\Z")


def _temporary_prefix(name, kind="tmp"):
    return f".{name}.{kind}-{os.getpid()}-"


def _temporary_path(directory, name, suffix=""):
    """A new, empty file `.<name>.tmp-<pid>-XXXX<suffix>` in `directory` (the suffix tells FFmpeg the container)."""
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(name), suffix=suffix, dir=directory)
    os.close(fd)
    plain_permissions(tmp)  # mkstemp makes 0600
    return tmp


def _process_is_gone(pid):
    if os.name != "posix" or pid == os.getpid():
        return False  # (os.kill(pid, 0) would end the process on Windows)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process, say: alive
        return False
    return False


def remove_stale_temporaries(directory):
    """Remove the temporary videos and maps folders that a killed run (`kill -9`, a crash) left in `directory`.

    Only names of this module's exact pattern (`.<stem>_saliency.mp4.tmp-<pid>-XXXX.mp4`, `.<stem>_maps.tmp-<pid>-
    XXXX`, `.<stem>_maps.old-<pid>-XXXX`) whose process `<pid>` no longer runs are removed; a run still writing into
    the same folder keeps its own. Returns the paths removed.
    """
    removed = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY_NAME.match(name)
        if not match or not _process_is_gone(int(match.group(2))):
            continue
        path = os.path.join(directory, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError:
            continue  # not ours to fight over: another run may have removed it first
        removed.append(path)
    return removed


def _replace_dir(tmp_dir, maps_dir):
    """Move the finished `tmp_dir` to `maps_dir`, replacing an earlier run's maps (checked by `_check_maps_dir`)."""
    old = None
    if os.path.lexists(maps_dir):
        old = tempfile.mkdtemp(prefix=_temporary_prefix(os.path.basename(maps_dir), "old"),
                               dir=os.path.dirname(maps_dir) or ".")
        os.rmdir(old)
        os.rename(maps_dir, old)
    os.rename(tmp_dir, maps_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_error(target, error):
    """An OSError naming the output file `target` (not the input) for a failed write."""
    return OSError(f"{target}: cannot write ({error.strerror or error}); free space there or choose another --out")


class _OverlayWriter:
    """The outputs of one video under temporary names: the overlay video and, with `maps_dir`, the map PNGs.

    Opened on the first batch (the frame size is known then); `finish` renames them to their final names once
    complete, `discard` removes whatever is left under temporary names.
    """

    def __init__(self, path, output, maps_dir, fps, colormap, alpha, notes):
        self.path, self.output, self.maps_dir, self.fps = path, output, maps_dir, fps
        self.colormap, self.alpha, self.notes = colormap, alpha, notes
        self.tmp_video = self.tmp_maps = self.writer = self.size = self.padded = None
        self.frames = 0

    def _open(self, size):
        """Start the temporary outputs for frames of `size` (height, width)."""
        self.size = size
        height, width = size[0] + size[0] % 2, size[1] + size[1] % 2
        self.padded = (height, width)
        if self.padded != size:
            self.notes.append(f"{self.path}: {size[1]}x{size[0]} frames padded to {width}x{height} (the encoder needs "
                              "an even width and height; the last column/row is repeated)")
        directory = os.path.dirname(self.output) or "."
        try:
            mark_output_folder(directory, [self.path])
            self.tmp_video = _temporary_path(directory, os.path.basename(self.output), ".mp4")
        except OSError as e:
            raise _write_error(self.output, e) from e
        self.writer = cv2.VideoWriter(self.tmp_video, cv2.VideoWriter_fourcc(*OUTPUT_FOURCC), self.fps,
                                      (width, height))
        if not self.writer.isOpened():
            raise ValueError(f"{self.output}: OpenCV cannot write an {OUTPUT_FOURCC} .mp4 video of {width}x{height} "
                             f"at {self.fps:g} fps here")
        if self.maps_dir is not None:
            try:
                self.tmp_maps = tempfile.mkdtemp(prefix=_temporary_prefix(os.path.basename(self.maps_dir)),
                                                 dir=os.path.dirname(self.maps_dir) or ".")
            except OSError as e:
                raise _write_error(self.maps_dir, e) from e
            plain_permissions(self.tmp_maps)  # mkdtemp makes 0700

    def write(self, frames, maps):
        """Blend and write one batch of RGB `frames` and their `maps` (and the map PNGs)."""
        if self.writer is None:
            self._open(frames[0].shape[:2])
        (height, width), size = self.padded, self.size
        for frame, saliency_map in zip(frames, maps):
            overlay = overlay_heatmap(frame, saliency_map, self.colormap, self.alpha)
            if overlay.shape[:2] != (height, width):
                overlay = np.pad(overlay, ((0, height - size[0]), (0, width - size[1]), (0, 0)), mode="edge")
            self.writer.write(np.ascontiguousarray(overlay[:, :, ::-1]))
            if self.tmp_maps is not None:
                name = f"frame_{self.frames:06d}.png"
                try:
                    with open(os.path.join(self.tmp_maps, name), "wb") as f:
                        f.write(encode_png(map_to_uint8(saliency_map)))
                except OSError as e:
                    raise _write_error(os.path.join(self.maps_dir, name), e) from e
            self.frames += 1

    def finish(self):
        """Close the video, check it and move both outputs to their final names."""
        self.writer.release()
        _check_written(self.tmp_video, self.output, self.frames)
        try:
            os.replace(self.tmp_video, self.output)
        except OSError as e:
            raise _write_error(self.output, e) from e
        self.tmp_video = None
        if self.tmp_maps is not None:
            try:
                _replace_dir(self.tmp_maps, self.maps_dir)
            except OSError as e:
                raise _write_error(self.maps_dir, e) from e
            self.tmp_maps = None

    def discard(self):
        """Remove what is still under a temporary name (after an error or Ctrl-C)."""
        if self.writer is not None:
            self.writer.release()
        if self.tmp_video is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.tmp_video)
        if self.tmp_maps is not None:
            shutil.rmtree(self.tmp_maps, ignore_errors=True)


def _check_arguments(batch_size, max_frames, colormap, alpha):
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or isinstance(max_frames, bool)
                                   or max_frames < 1):
        raise ValueError(f"`max_frames` must be a positive int or None. Received: max_frames={max_frames!r}")
    check_overlay(colormap, alpha)  # a bad colormap or alpha fails before any work


def _check_input(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such video file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a video file")
    if not is_video(path):
        ext = os.path.splitext(path)[1] or "no extension"
        raise ValueError(f"{path}: not a supported video file ({ext}); supported: {', '.join(VIDEO_EXTENSIONS)}")


def _declared_frames(capture):
    """The frame count in the file's header, or None when it has none."""
    declared = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(declared) if math.isfinite(declared) and declared > 0 else None


def _prepare_output_folder(output, maps_dir, notes):
    """Check that the outputs can be written and clear the temporaries of a killed run."""
    directory = os.path.dirname(output) or "."
    check_writable_dir(directory, option="output folder")
    if maps_dir is not None:
        _check_maps_dir(maps_dir)
    removed = remove_stale_temporaries(directory)
    if removed:
        notes.append(f"{directory}: removed {len(removed)} temporary file(s) that an interrupted run left (e.g. "
                     f"{os.path.basename(removed[0])})")


def _predict_frames(predictor, batches, path, outputs, bar):
    """Predict each batch of frames and hand it to `outputs` (an `_OverlayWriter`)."""
    for batch in batches:
        maps = predictor.predict_batch(batch)
        if len(maps) != len(batch):
            raise RuntimeError(f"{path}: the predictor returned {len(maps)} maps for {len(batch)} frames")
        outputs.write(batch, maps)
        bar.update(len(batch))
        del batch, maps  # before the next batch is read: one batch held at most


def predict_video(predictor, path, out_dir="predictions", batch_size=8, save_maps=False, colormap="jet", alpha=0.5,
                  max_frames=None, progress=True, stem=None):
    """Write `<out_dir>/<stem>_saliency.mp4`, the saliency heat map over every frame of the video `path`.

    Frames are read with OpenCV (`cv2.VideoCapture`, converted to RGB), given to `predictor.predict_batch`
    `batch_size` at a time and blended with `inference.files.overlay_heatmap`; no more than one batch of
    frames (and their maps) is held at once. The output has the input's frame size and frame rate (25 fps when
    the file has none: said in `notes`); an odd width or height is padded by one replicated row/column, since
    the encoder needs even sizes (also in `notes`). Outputs are written under temporary names and renamed
    when complete: on any error or KeyboardInterrupt they are removed and nothing appears under the final
    names (an earlier run's outputs are left as they were). Temporary files that a killed run left in the
    output folder are removed first (`remove_stale_temporaries`, said in `notes`), and the folder is marked as
    output (`inference.files.mark_output_folder`).

    Args:
        predictor: a `inference.predictors.Predictor` (see `load_predictor`).
        path: the video file, with one of `VIDEO_EXTENSIONS`.
        out_dir: output folder, created if needed. Defaults to "predictions".
        batch_size: frames per `predict_batch` call (the most frames held in memory). Defaults to 8.
        save_maps: also write `<out_dir>/<stem>_maps/frame_000000.png`, ... (uint8 maps at the frame size).
        colormap: matplotlib colormap of the overlay. Defaults to "jet".
        alpha: heat-map weight of the overlay, 0..1. Defaults to 0.5.
        max_frames: predict only the first `max_frames` frames. Defaults to None (all).
        progress: show the progress on stderr (`inference.files.Progress`: a bar on a terminal, else plain lines).
        stem: output name stem. Defaults to the video's file name without its extension.

    Returns:
        A `VideoReport`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming the file: an extension not in `VIDEO_EXTENSIONS`, a file OpenCV cannot open (not a
            video, truncated, an unknown codec), a video with no frames, an output folder that cannot be written,
            a bad argument.
        OSError: naming the output file, when it cannot be written (a full disk).
    """
    _check_arguments(batch_size, max_frames, colormap, alpha)
    path, out_dir = os.fspath(path), os.fspath(out_dir)
    _check_input(path)
    stem = stem if stem is not None else os.path.splitext(os.path.basename(path))[0]
    output = os.path.join(out_dir, stem + OUTPUT_SUFFIX)
    maps_dir = os.path.join(out_dir, stem + MAPS_SUFFIX) if save_maps else None
    notes = []
    _prepare_output_folder(output, maps_dir, notes)

    capture = cv2.VideoCapture(path)
    outputs = None
    try:
        if not capture.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video (not a video, truncated, or a codec its FFmpeg "
                             "lacks); check that it plays, or convert it, e.g. to H.264 or MPEG-4 in .mp4")
        fps = _frame_rate(capture, path, notes)
        declared = _declared_frames(capture)
        outputs = _OverlayWriter(path, output, maps_dir, fps, colormap, alpha, notes)
        total = declared if max_frames is None else min(declared or max_frames, max_frames)
        with contextlib.closing(Progress(total, os.path.basename(path), unit="frame", enabled=progress)) as bar:
            _predict_frames(predictor, _batches(capture, path, batch_size, max_frames), path, outputs, bar)
        if outputs.frames == 0:
            raise ValueError(f"{path}: the video has no frames that OpenCV can read (empty or broken)")
        outputs.finish()
        frames = outputs.frames
        if declared is not None and frames < declared and (max_frames is None or frames < max_frames):
            notes.append(f"{path}: read {frames} of the {declared} frames its header declares (truncated or "
                         "damaged?); the output has the frames that could be read")
        return VideoReport(path=path, output=output, maps_dir=maps_dir, frames=frames, fps=fps,
                           size=tuple(outputs.size), declared_frames=declared, notes=notes)
    finally:
        capture.release()
        if outputs is not None:
            outputs.discard()


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
