"""Saliency for videos (inference.video.predict_video and predict.py on video files), on tiny synthetic clips.

Inputs are written with OpenCV: FFV1 in .avi (lossless, so the frames the predictor sees are known exactly) or
mp4v in .mp4. A fake predictor whose map is each frame's brightness stands in for a model, except in the
predict.py tests, which load a contract SavedModel built here."""

import errno
import os
import weakref

import cv2
import numpy as np
import pytest
import tensorflow as tf

import predict
from inference import video
from inference.video import DEFAULT_FPS, VIDEO_EXTENSIONS, list_videos, predict_video
from inference.files import OUTPUT_MARKER, map_to_uint8, overlay_heatmap
from inference.predictors import Predictor

SIZE = (48, 64)  # (height, width)


def synthetic_frames(n, size=SIZE, seed=0):
    """`n` RGB frames: dim noise with a bright 10x10 square moving right and down, a different place per frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        frame = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
        top, left = (3 * i) % (size[0] - 10), (5 * i) % (size[1] - 10)
        frame[top:top + 10, left:left + 10] = (255, 230, 200)
        frames.append(frame)
    return frames


def write_video(path, frames, fps=12.0, fourcc="FFV1"):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def read_video(path):
    """(RGB frames, fps, frame count from the header) as OpenCV reads them."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps, count = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    capture.release()
    return frames, fps, count


def brightness(frame):
    return (frame.astype(np.float32).mean(axis=2) / 255.0).astype(np.float32)


class BrightnessPredictor(Predictor):
    """Map = the frame's brightness. Records each `predict_batch` call's size and checks that no frame from an
    earlier call is still alive when a new call comes (so at most one batch of frames is ever held)."""

    kind = "student"

    def __init__(self, fail_on_call=None, exception=KeyboardInterrupt):
        super().__init__("fake", batch_size=64)
        self.calls, self.max_alive_from_earlier_calls = [], 0
        self._seen = []
        self.fail_on_call, self.exception = fail_on_call, exception

    def predict_batch(self, images):
        alive = sum(ref() is not None for ref in self._seen)
        self.max_alive_from_earlier_calls = max(self.max_alive_from_earlier_calls, alive)
        self._seen.extend(weakref.ref(im) for im in images)
        self.calls.append(len(images))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise self.exception("stop")
        return super().predict_batch(images)

    def _predict_group(self, images):
        return np.stack([brightness(im) for im in images])


@pytest.fixture
def clip(tmp_path):
    """10 frames of 48x64 at 12 fps, lossless; returns (path, the RGB frames)."""
    frames = synthetic_frames(10)
    return write_video(tmp_path / "clip.avi", frames), frames


def test_output_has_the_frames_size_and_fps_in_order_across_batches(clip, tmp_path):
    path, frames = clip
    predictor = BrightnessPredictor()
    report = predict_video(predictor, path, tmp_path / "out", batch_size=4, progress=False)
    assert predictor.calls == [4, 4, 2]
    assert report.output == str(tmp_path / "out" / "clip_saliency.mp4") and report.maps_dir is None
    assert (report.frames, report.fps, report.size, report.declared_frames, report.notes) == (10, 12.0, SIZE, 10, [])
    written, fps, count = read_video(report.output)
    assert len(written) == count == 10 and fps == 12.0 and written[0].shape == (*SIZE, 3)
    expected = [overlay_heatmap(f, brightness(f)) for f in frames]
    for j, frame in enumerate(written):  # mp4v is lossy: each output frame must be closest to its own overlay
        errors = [np.abs(frame.astype(float) - e).mean() for e in expected]
        assert int(np.argmin(errors)) == j and errors[j] < 12, (j, errors)
    assert sorted(os.listdir(tmp_path / "out")) == [OUTPUT_MARKER, "clip_saliency.mp4"]  # no temporary files left


def test_save_maps_writes_one_png_per_frame_equal_to_the_predictors_maps(clip, tmp_path):
    path, frames = clip
    report = predict_video(BrightnessPredictor(), path, tmp_path, batch_size=3, save_maps=True, progress=False)
    assert report.maps_dir == str(tmp_path / "clip_maps")
    names = sorted(os.listdir(report.maps_dir))
    assert names == [f"frame_{i:06d}.png" for i in range(10)]
    for name, frame in zip(names, frames):
        written = cv2.imread(os.path.join(report.maps_dir, name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(written, map_to_uint8(brightness(frame)))
    # A rerun replaces the earlier maps as a whole: no frame of the longer run is left behind.
    report = predict_video(BrightnessPredictor(), path, tmp_path, save_maps=True, max_frames=4, progress=False)
    assert report.frames == 4 and len(os.listdir(report.maps_dir)) == 4 and report.notes == []
    assert len(read_video(report.output)[0]) == 4
    assert sorted(os.listdir(tmp_path)) == ["clip.avi", "clip_maps", "clip_saliency.mp4"]  # holds an input: no marker
    umask = os.umask(0)
    os.umask(umask)  # the outputs get a plain open()'s / mkdir()'s permissions, not the temporary files' 0600/0700
    assert (os.stat(report.output).st_mode & 0o777, os.stat(report.maps_dir).st_mode & 0o777) == (
        0o666 & ~umask, 0o777 & ~umask)


def test_memory_holds_one_batch_whatever_the_length(tmp_path, monkeypatch):
    """The reader never reads ahead of the predictor, and no frame of a batch outlives it (weak references; frames
    are freed by reference counting, no garbage collection needed)."""
    path = write_video(tmp_path / "long.avi", synthetic_frames(30))
    reads = []

    class CountingCapture:
        def __init__(self, *args):
            self._capture = real(*args)

        def read(self):
            ok, frame = self._capture.read()
            reads.extend([1] if ok else [])  # the read that finds the end holds no frame
            return ok, frame

        def __getattr__(self, name):
            return getattr(self._capture, name)

    real = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    predictor = BrightnessPredictor()
    seen_at_call = []
    original = predictor.predict_batch
    predictor.predict_batch = lambda images: (seen_at_call.append(len(reads)), original(images))[1]
    report = predict_video(predictor, path, tmp_path / "out", batch_size=4, save_maps=True, progress=False)
    assert report.frames == 30 and max(predictor.calls) == 4 and sum(predictor.calls) == 30
    # When batch k is predicted, exactly the frames of batches 1..k have been read: nothing read ahead.
    assert seen_at_call == list(np.cumsum(predictor.calls))
    assert predictor.max_alive_from_earlier_calls == 0


class WrappedCapture:
    """cv2.VideoCapture for the videos in `paths`, with a different frame rate or frames cut to an odd size."""

    real = cv2.VideoCapture

    def __init__(self, path, fps=None, crop=False, count=None):
        self._capture, self._fps, self._crop, self._count = self.real(path), fps, crop, count

    def get(self, prop):
        if prop == cv2.CAP_PROP_FRAME_COUNT and self._count is not None:
            return self._count
        return self._fps if prop == cv2.CAP_PROP_FPS and self._fps is not None else self._capture.get(prop)

    def read(self):
        ok, frame = self._capture.read()
        return ok, (frame[:-1, :-1] if ok and self._crop else frame)

    def __getattr__(self, name):
        return getattr(self._capture, name)

    @classmethod
    def install(cls, monkeypatch, path, **kwargs):
        monkeypatch.setattr(cv2, "VideoCapture", lambda p: cls(p, **kwargs) if str(p) == str(path) else cls.real(p))


def test_progress_without_a_frame_count_is_plain_lines(clip, tmp_path, monkeypatch, capsys):
    path, _ = clip
    WrappedCapture.install(monkeypatch, path, count=0.0)  # a header without a frame count
    report = predict_video(BrightnessPredictor(), path, tmp_path / "out", batch_size=4, progress=True)
    assert report.frames == 10 and report.declared_frames is None
    err = capsys.readouterr().err
    assert "\r" not in err and err.startswith("clip.avi: an unknown number of frame(s)\nclip.avi: 10 frame(s) done in ")


def test_an_odd_frame_size_is_padded_for_the_encoder(clip, tmp_path, monkeypatch):
    """The yuv420p encoders need even sizes (OpenCV itself cannot write an odd-sized test video): crop on read."""
    path, frames = clip
    WrappedCapture.install(monkeypatch, path, crop=True)
    report = predict_video(BrightnessPredictor(), path, tmp_path / "out", save_maps=True, progress=False)
    monkeypatch.undo()
    assert report.size == (47, 63) and report.fps == 12.0 and report.frames == 10
    assert len(report.notes) == 1 and f"{path}: 63x47 frames padded to 64x48" in report.notes[0]
    written, fps, _ = read_video(report.output)
    assert len(written) == 10 and written[0].shape == (48, 64, 3) and fps == 12.0
    saved = cv2.imread(os.path.join(report.maps_dir, "frame_000003.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(saved, map_to_uint8(brightness(frames[3][:-1, :-1])))


@pytest.mark.parametrize("fps", [0.0, float("nan")])
def test_an_mp4_input_keeps_its_fps_and_an_unknown_fps_becomes_the_default(tmp_path, monkeypatch, fps):
    mp4 = write_video(tmp_path / "in.mp4", synthetic_frames(10), fps=15.0, fourcc="mp4v")
    report = predict_video(BrightnessPredictor(), mp4, tmp_path / "out", progress=False)
    assert (report.fps, report.frames, report.size, report.notes) == (15.0, 10, SIZE, [])
    WrappedCapture.install(monkeypatch, mp4, fps=fps)
    report = predict_video(BrightnessPredictor(), mp4, tmp_path / "out", progress=False)
    monkeypatch.undo()
    assert report.fps == DEFAULT_FPS and report.frames == 10
    assert len(report.notes) == 1 and str(mp4) in report.notes[0] and "frame rate unknown" in report.notes[0]
    written, out_fps, count = read_video(report.output)
    assert len(written) == count == 10 and out_fps == DEFAULT_FPS


@pytest.mark.parametrize("exception", [KeyboardInterrupt, RuntimeError])
def test_an_interruption_leaves_nothing_under_the_final_names(clip, tmp_path, exception):
    path, _ = clip
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_saliency.mp4").write_bytes(b"earlier run")
    with pytest.raises(exception):
        predict_video(BrightnessPredictor(fail_on_call=2, exception=exception), path, out, batch_size=4,
                      save_maps=True, progress=False)
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "clip_saliency.mp4"]  # no temporary video or maps folder
    assert (out / "clip_saliency.mp4").read_bytes() == b"earlier run"


def test_errors_name_the_file(tmp_path, clip):
    predictor = BrightnessPredictor()
    out = tmp_path / "out"

    def error(path, kind=ValueError, **kwargs):
        with pytest.raises(kind) as info:
            predict_video(predictor, path, kwargs.pop("out_dir", out), progress=False, **kwargs)
        assert str(path) in str(info.value)
        return str(info.value)

    assert "no such video file" in error(tmp_path / "missing.mp4", FileNotFoundError)
    (tmp_path / "notes.mp4").write_text("not a video")
    assert "OpenCV cannot open this video" in error(tmp_path / "notes.mp4")
    data = write_video(tmp_path / "whole.mp4", synthetic_frames(10), fourcc="mp4v").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: lost
    assert "OpenCV cannot open this video" in error(tmp_path / "truncated.mp4")
    cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (64, 48)).release()
    assert "has no frames" in error(tmp_path / "empty.avi")
    (tmp_path / "clip.ogv").write_bytes(b"")
    message = error(tmp_path / "clip.ogv")
    assert "not a supported video file (.ogv)" in message and ", ".join(VIDEO_EXTENSIONS) in message
    with pytest.raises(ValueError, match="must be a positive int"):
        predict_video(predictor, clip[0], out, batch_size=0)
    assert predictor.calls == [] and os.listdir(out) == []  # nothing predicted, nothing (temporary) written
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write output there") as info:
        predict_video(predictor, clip[0], blocker / "o", progress=False)
    assert str(blocker / "o") in str(info.value)


def test_a_truncated_avi_keeps_the_frames_that_can_be_read_and_says_so(tmp_path):
    data = write_video(tmp_path / "whole.avi", synthetic_frames(10), fourcc="MJPG").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    report = predict_video(BrightnessPredictor(), tmp_path / "cut.avi", tmp_path / "out", progress=False)
    assert 0 < report.frames < 10 and report.declared_frames == 10
    assert any(str(tmp_path / "cut.avi") in n and f"read {report.frames} of the 10 frames" in n for n in report.notes)
    assert len(read_video(report.output)[0]) == report.frames


def test_an_existing_maps_folder_with_other_files_is_not_replaced(clip, tmp_path):
    path, _ = clip
    (tmp_path / "out" / "clip_maps").mkdir(parents=True)
    (tmp_path / "out" / "clip_maps" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"clip_maps: exists and holds files that are not frame maps \(e.g. notes"):
        predict_video(BrightnessPredictor(), path, tmp_path / "out", save_maps=True, progress=False)
    assert os.listdir(tmp_path / "out") == ["clip_maps"]


def test_list_videos_finds_videos_in_folders_and_refuses_clashes(tmp_path):
    for rel in ["a.mp4", "b.AVI", "c.jpg", "sub/d.mkv", "out/a_saliency.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    pairs = list_videos([tmp_path, tmp_path / "c.jpg"], exclude=tmp_path / "out")
    assert [stem for _, stem in pairs] == ["a", "b", os.path.join("sub", "d")]
    with pytest.raises(ValueError, match="would both be written as a_saliency.mp4"):
        list_videos([tmp_path / "a.mp4", tmp_path])
    with pytest.raises(ValueError, match="is the input folder"):
        list_videos([tmp_path], exclude=tmp_path)


def test_earlier_output_folders_inside_the_input_are_not_videos(clip, tmp_path):
    path, _ = clip
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    os.replace(path, inputs / "clip.avi")
    predict_video(BrightnessPredictor(), inputs / "clip.avi", inputs / "earlier", max_frames=2, progress=False)
    skipped = []
    assert list_videos([inputs], exclude=tmp_path / "now", skipped_outputs=skipped) == [
        (str(inputs / "clip.avi"), "clip")]
    assert skipped == [str(inputs / "earlier")]


def test_a_full_disk_names_the_output_not_the_input(clip, tmp_path, monkeypatch):
    path, _ = clip
    out = tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video, "encode_png", full)
    with pytest.raises(OSError) as info:
        predict_video(BrightnessPredictor(), path, out, save_maps=True, progress=False)
    assert str(info.value).startswith(f"{out / 'clip_maps' / 'frame_000000.png'}: cannot write (No space left")
    monkeypatch.setattr(video.tempfile, "mkstemp", full)
    with pytest.raises(OSError) as info:
        predict_video(BrightnessPredictor(), path, out, progress=False)
    assert str(info.value).startswith(f"{out / 'clip_saliency.mp4'}: cannot write (No space left")
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER]  # nothing half-written left


_KILLED_RUN = """
import sys, time
from inference.video import predict_video

class Stuck:
    calls = 0

    def predict_batch(self, images):
        self.calls += 1
        if self.calls == 2:  # the first batch is written: temporary files exist
            print("writing", flush=True)
            time.sleep(120)
        return [im.mean(axis=2) / 255.0 for im in images]

predict_video(Stuck(), sys.argv[1], sys.argv[2], batch_size=2, save_maps=True, progress=False)
"""


def test_a_later_run_removes_the_temporary_files_of_a_killed_run(clip, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path, _ = clip
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(path), str(out)], stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert child.stdout.readline() == "writing\n"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait(timeout=60)
        child.stdout.close()
    left = sorted(os.listdir(out))
    assert [n for n in left if not n.startswith(f".clip_saliency.mp4.tmp-{child.pid}-")
            and not n.startswith(f".clip_maps.tmp-{child.pid}-")] == [OUTPUT_MARKER] and len(left) == 3
    # A run still writing (this process) and hidden files of other names are not touched.
    live = out / f".other_saliency.mp4.tmp-{os.getpid()}-abcd1234.mp4"
    others = [live, out / ".clip_saliency.mp4.tmp-abcd1234.mp4", out / f".notes.tmp-{child.pid}-abcd1234"]
    for other in others:
        other.write_bytes(b"")
    report = predict_video(BrightnessPredictor(), path, out, max_frames=2, progress=False)
    assert sorted(os.listdir(out)) == sorted([OUTPUT_MARKER, "clip_saliency.mp4", *(o.name for o in others)])
    assert len(report.notes) == 1 and report.notes[0].startswith(f"{out}: removed 2 temporary file(s) that an "
                                                                 "interrupted run left")


# --- predict.py, with a contract SavedModel (float32 (B, H, W, 3) -> positive (B, H, W, 1)) -------------------


@pytest.fixture(scope="module")
def contract_model(tmp_path_factory):
    """A saliency-model contract SavedModel whose density is the red channel + 1: map = (R + 1) / (max R + 1)."""
    module = tf.Module()
    module.serve = tf.function(lambda images: {"density": images[..., :1] + 1.0},
                               input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    path = tmp_path_factory.mktemp("contract") / "red"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def test_cli_predicts_a_video_and_an_image_together(contract_model, clip, tmp_path, capsys):
    path, frames = clip
    image = synthetic_frames(1, size=(20, 30), seed=5)[0]
    assert cv2.imwrite(str(tmp_path / "photo.png"), image[:, :, ::-1])
    out = tmp_path / "pred"
    code = predict.main(["--model", contract_model, str(path), str(tmp_path / "photo.png"), "--out", str(out),
                         "--save-maps", "--batch-size", "4", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines() == [
        "[predict] 1 image(s) written to " + str(out) + "; 0 failed",
        f"[predict] {path} -> {out / 'clip_saliency.mp4'} (10 frames, 64x48, 12 fps; maps in {out / 'clip_maps'})",
        f"[predict] 1 video(s) written to {out}; 0 failed",
    ]
    assert captured.err == ""
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "clip_maps", "clip_saliency.mp4", "photo.png"]
    written, fps, _ = read_video(out / "clip_saliency.mp4")
    assert len(written) == 10 and fps == 12.0
    for i in (0, 9):
        red = frames[i][:, :, 0].astype(np.float32) + 1.0
        written_map = cv2.imread(str(out / "clip_maps" / f"frame_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.abs(written_map.astype(float) - red / red.max() * 255).max() <= 1.0


def test_cli_reports_a_broken_video_and_writes_the_rest(contract_model, clip, tmp_path, capsys):
    path, _ = clip
    folder = tmp_path / "inputs"
    folder.mkdir()
    os.replace(path, folder / "clip.avi")
    (folder / "broken.mp4").write_text("not a video")
    (folder / "notes.txt").write_text("x")
    out = tmp_path / "pred"
    code = predict.main(["--model", contract_model, str(folder), "--out", str(out), "--no-progress", "--overlay"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"failed: {folder / 'broken.mp4'}: OpenCV cannot open this video" in captured.err
    assert "skipped 1 file(s)" in captured.err and "notes.txt" in captured.err and "clip.avi" not in captured.err
    assert "[predict] 1 video(s) written" in captured.out and "1 failed" in captured.out
    assert "image(s)" not in captured.out  # the folder holds no images: no image summary, no "no images" error
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "clip_saliency.mp4"]


def test_cli_warns_about_video_flags_without_videos(contract_model, tmp_path, capsys):
    assert cv2.imwrite(str(tmp_path / "a.png"), synthetic_frames(1, size=(20, 30))[0])
    code = predict.main(["--model", contract_model, str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                         "--save-maps", "--no-progress"])
    assert code == 0
    assert "--save-maps only applies to videos; ignored" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(["--model", contract_model, str(tmp_path / "a.png"), "--batch-size", "0"])
    assert "expected a positive integer" in capsys.readouterr().err


def test_cli_with_images_only_behaves_as_before(contract_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    assert cv2.imwrite(str(photos / "a.png"), synthetic_frames(1, size=(20, 30))[0])
    (photos / "notes.txt").write_text("x")
    code = predict.main(["--model", contract_model, str(photos), "--out", str(tmp_path / "o"), "--colormap",
                         "inferno", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and captured.out == f"[predict] 1 image(s) written to {tmp_path / 'o'}; 0 failed\n"
    assert "--colormap only applies with --overlay" in captured.err
    assert "skipped 1 file(s)" in captured.err and "notes.txt" in captured.err
    assert predict.main(["--model", contract_model, str(photos), "--out", str(photos), "--no-progress"]) == 1
    assert "is the input folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict.main(["--model", contract_model, str(empty), "--out", str(tmp_path / "o")]) == 1
    assert f"no images to predict in {empty}" in capsys.readouterr().err
    assert predict.main(["--model", contract_model, str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "o")]) == 1
    assert f"{tmp_path / 'nothing.mp4'}: no such image or video file or folder" in capsys.readouterr().err


def test_cli_in_a_subprocess_keeps_results_on_stdout_and_status_on_stderr(contract_model, clip, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "predict.py"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    path, _ = clip
    (tmp_path / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(script), "--model", contract_model, str(path),
                             str(tmp_path / "broken.mp4"), "--out", str(out), "--batch-size", "3"],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"[predict] {path} -> {out / 'clip_saliency.mp4'} (10 frames, 64x48, 12 fps)",
        f"[predict] 1 video(s) written to {out}; 1 failed",
    ]
    # Progress on a redirected stderr: plain lines, no carriage returns (issue 24).
    assert "\r" not in result.stderr
    assert "clip.avi: 10 frame(s)\nclip.avi: 3/10 frame(s) (30%)\n" in result.stderr
    assert "clip.avi: 10/10 frame(s) done in " in result.stderr
    assert f"predict.py: failed: {tmp_path / 'broken.mp4'}: OpenCV cannot open this video" in result.stderr
    assert "moov atom" not in result.stderr  # FFmpeg's own log is quiet; our error says it
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "clip_saliency.mp4"]
