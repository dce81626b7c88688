"""Images and videos mixed in one list of inputs: what predict.py does, as two library calls.

    plan = plan_inputs(["photos/", "clip.mp4"], out_dir="predictions")   # checks the inputs; no model yet
    run = predict_inputs(load_predictor("fastgaze-centre"), plan, "predictions", overlay=True)

(Its own module: `inference.video` imports `inference.files`, so neither can hold this without an import cycle.)
"""

import dataclasses
import os

from datasets.folders import path_list
from inference.files import list_images, predict_files
from inference.video import check_overlay, is_video, list_videos, predict_video


@dataclasses.dataclass
class InputPlan:
    """What the inputs hold, found before any model loads.

    Attributes:
        image_inputs: the inputs to search for images (video files given directly left out).
        videos: (path, output stem) of every video.
        has_images: whether there is at least one image (with no video, True whenever there are image inputs:
            `predict_files` then says when they hold none).
        skipped: files in the input folders that are neither images nor videos.
        skipped_outputs: folders inside the inputs that hold an earlier output of this project (left out).
    """

    image_inputs: list
    videos: list
    has_images: bool
    skipped: list
    skipped_outputs: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PredictionRun:
    """What `predict_inputs` wrote: the images' `PredictionReport` (None without images), each video's
    `VideoReport`, (path, message) for each video that failed, and the skipped files."""

    images: object
    videos: list
    video_failures: list
    skipped: list

    @property
    def failed(self):
        return bool((self.images is not None and self.images.failures) or self.video_failures)


def plan_inputs(inputs, out_dir, colormap="jet", alpha=0.5):
    """The images and videos among `inputs` (files and folders); `out_dir`'s earlier outputs are not inputs.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two inputs would write the same outputs, the output folder is an input folder, or (with
            videos, which always draw the overlay) a bad `colormap` / `alpha`.
    """
    inputs, skipped_outputs = path_list(inputs), []
    videos = list_videos(inputs, exclude=out_dir, skipped_outputs=skipped_outputs)  # also: every input exists
    if videos:
        check_overlay(colormap, alpha)  # once, before any work
    # Folders may hold images besides videos; video files given directly are not images. Without videos,
    # predict_files sees every input (and says when there are no images).
    image_inputs = [item for item in inputs if not (os.path.isfile(item) and is_video(item))]
    skipped = []
    has_images = bool(image_inputs) and (
        not videos or bool(list_images(image_inputs, exclude=out_dir, skipped=skipped)))
    return InputPlan(image_inputs, videos, has_images, _not_videos(skipped, videos), skipped_outputs)


def _not_videos(paths, videos):
    found = {os.path.normpath(path) for path, _ in videos}
    return [path for path in paths if os.path.normpath(path) not in found]


def predict_inputs(predictor, plan, out_dir, overlay=False, colormap="jet", alpha=0.5, save_maps=False,
                   batch_size=8, max_frames=None, progress=True, on_images=None, on_video=None):
    """Predict the images (`predict_files`) and then each video (`predict_video`) of `plan` into `out_dir`.

    A video that fails is recorded and the others still run. `on_images(report)` and `on_video(path, report,
    error message or None)` are called as each part finishes (the command line prints there).

    Returns:
        A `PredictionRun`.
    """
    run = PredictionRun(images=None, videos=[], video_failures=[], skipped=plan.skipped)
    if plan.has_images:
        run.images = predict_files(predictor, plan.image_inputs, out_dir=out_dir, overlay=overlay,
                                   colormap=colormap, alpha=alpha, progress=progress)
        run.images.skipped = _not_videos(run.images.skipped, plan.videos)
        run.skipped = run.images.skipped
        if on_images:
            on_images(run)
    for path, stem in plan.videos:
        try:
            video = predict_video(predictor, path, out_dir, batch_size=batch_size, save_maps=save_maps,
                                  colormap=colormap, alpha=alpha, max_frames=max_frames, progress=progress,
                                  stem=stem)
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the others; each failure is reported
            message = str(e) if str(e).startswith(path) else f"{path}: {type(e).__name__}: {e}"
            run.video_failures.append((path, message))
            if on_video:
                on_video(path, None, message)
            continue
        run.videos.append(video)
        if on_video:
            on_video(path, video, None)
    return run
