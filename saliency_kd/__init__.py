"""saliency-kd from Python: predict where people look in a photo, crop around it, score it against fixations.

A thin public face over the project's packages (`inference`, `metrics`, `evaluation`): everything here is the
library's own function, re-exported under one name, plus three conveniences (`predict`, `crop` and `load`,
which take a model by name or path, or an already loaded `Predictor`).

Quick start (the built-in models ship with the package: no model file, no download)::

    import numpy as np
    import saliency_kd

    saliency_map = saliency_kd.predict("photo.jpg")        # float32 (H, W) in [0, 1] at the photo's size
    model = saliency_kd.load("fastgaze")                    # load once, reuse: a name, a run folder, a file
    crop, box = saliency_kd.crop("photo.jpg", "1:1", model=model)
    scores = saliency_kd.fixation_scores(saliency_map, np.array([[120, 200], [140, 260]]))  # (row, col)

Models (`load`, the `model=` argument): the built-in names, `builtin_names()` (`DEFAULT_MODEL` when none is
given), a run folder from train.py, a SavedModel folder, a student export (`.onnx`, OpenVINO `.xml`,
`.tflite`), an MSI-Net file or any model that follows the saliency-model contract; see `load_predictor`.

Names:
    load, load_predictor, Predictor, builtin_names, DEFAULT_MODEL: models.
    predict, read_image, predict_files, overlay_heatmap: maps of arrays, files and folders.
    crop, crop_box, crop_image, centre_box, crop_files, Box, CROP_METHODS, fixations_in_box: cropping.
    predict_video, VIDEO_EXTENSIONS: videos.
    metrics (the MIT-benchmark metrics module), fixation_scores, evaluate: scoring maps against fixations.

`evaluate` and `fixation_scores` import TensorFlow on first use (their module reads TFRecords); the rest
imports it only when a model is loaded.
"""

import importlib.metadata
import os

from inference.crop import CROP_METHODS, Box, centre_box, crop_box, crop_files, crop_image, fixations_in_box
from inference.files import overlay_heatmap, predict_files
from inference.predictors import DEFAULT_MODEL, Predictor, builtin_names, check_image, load_predictor
from inference.video import VIDEO_EXTENSIONS, is_video, predict_video
from datasets.io import read_image
from metrics import saliency as metrics

__all__ = [
    "builtin_names", "DEFAULT_MODEL", "Predictor", "load", "load_predictor",
    "predict", "read_image", "predict_files", "overlay_heatmap",
    "crop", "crop_box", "crop_image", "centre_box", "crop_files", "Box", "CROP_METHODS", "fixations_in_box",
    "predict_video", "VIDEO_EXTENSIONS",
    "metrics", "fixation_scores", "evaluate",
]

try:
    __version__ = importlib.metadata.version("saliency-kd")
except importlib.metadata.PackageNotFoundError:  # run from a checkout that was not pip-installed
    __version__ = "unknown"


def __getattr__(name):
    """`evaluate` and `fixation_scores` on first use: their module imports TensorFlow, the others need not."""
    if name in ("evaluate", "fixation_scores"):
        from evaluation import scoring

        value = getattr(scoring, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saliency_kd' has no attribute {name!r}")


def __dir__():
    return sorted(__all__ + ["__version__"])


def load(model=DEFAULT_MODEL, **options):
    """A `Predictor` for `model`: a built-in name, a path (see `load_predictor`), or a `Predictor` as it is.

    Loading takes seconds (TensorFlow, the weights); load once and pass the result as `model=` to `predict` and
    `crop`, or call its `predict(image)` / `predict_batch(images)` directly.

    Args:
        model: a name of `builtin_names()` or a spec combining them (default `DEFAULT_MODEL`), a run folder from train.py, a SavedModel
            folder, a `.onnx` / `.xml` / `.tflite` student export or a teacher file; or a loaded `Predictor`.
        **options: passed to `load_predictor` (`batch_size`, `threads`, `teacher_input_size`, `teacher_format`);
            not allowed with a `Predictor`.

    Example:
        >>> model = saliency_kd.load("fastgaze")        # doctest: +SKIP
        >>> model.predict(image).shape == image.shape[:2]  # doctest: +SKIP
        True
    """
    if isinstance(model, Predictor):
        if options:
            raise ValueError(f"{model!r} is already loaded; options {sorted(options)} apply only when loading a "
                             "model by name or path")
        return model
    return load_predictor(model, **options)


def _image(image_or_path):
    """A uint8 RGB (H, W, 3) array from an array or an image file; folders and videos get an error naming the fix."""
    if isinstance(image_or_path, (str, os.PathLike)):
        path = os.fspath(image_or_path)
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder: predict one image at a time, or write maps for every image in it "
                             f"with saliency_kd.predict_files(model, [{path!r}], out_dir)")
        if is_video(path):
            raise ValueError(f"{path} is a video: use saliency_kd.predict_video(model, {path!r}, out_dir)")
        return read_image(path)
    return check_image(image_or_path)


def predict(image_or_path, model=DEFAULT_MODEL):
    """The saliency map of one image: float32 (H, W) in [0, 1] at the image's own size (1: most salient).

    Args:
        image_or_path: a uint8 RGB array (H, W, 3), or an image file (read upright by `read_image`: EXIF
            orientation applied, grayscale and RGBA converted to RGB).
        model: a name or path as `load` takes it, or a loaded `Predictor` (faster for many images). Defaults to
            `DEFAULT_MODEL`, the project's own student `saliency-kd`.

    Raises:
        ValueError: not a uint8 RGB array, an unreadable image, a folder (use `predict_files`) or a video (use
            `predict_video`); the message names it.
        FileNotFoundError: the model path does not exist.

    Example:
        >>> saliency_map = saliency_kd.predict("photo.jpg")   # doctest: +SKIP
        >>> peak_row, peak_col = np.unravel_index(saliency_map.argmax(), saliency_map.shape)  # doctest: +SKIP
    """
    image = _image(image_or_path)
    return load(model).predict(image)


def crop(image_or_path, aspect="16:9", model=DEFAULT_MODEL, method="mass", scale=1.0):
    """Crop one image to `aspect` around what people look at: (the crop as a uint8 array, its `Box`).

    The box is the largest of that ratio that fits the image, times `scale` per side, placed by `method`
    ("mass": the most saliency inside, "point": centred on the most salient pixel, "centre": centred, and no
    model is loaded). For many images and ratios, `crop_files` writes the crops and a `crops.json`.

    Args:
        image_or_path: a uint8 RGB array (H, W, 3) or an image file.
        aspect: "W:H" (e.g. "16:9", "1:1") or a positive number width / height. Defaults to "16:9".
        model: a name, path or loaded `Predictor` as `predict` takes it. Defaults to `DEFAULT_MODEL`.
        method: one of `CROP_METHODS`. Defaults to "mass".
        scale: fraction of each side of the largest box, in (0, 1]. Defaults to 1.0.

    Returns:
        (crop, box): the crop, a view into the image, and `box` (x, y, width, height in the image's pixels).

    Example:
        >>> square, box = saliency_kd.crop("photo.jpg", "1:1")   # doctest: +SKIP
        >>> box.as_dict()                                        # doctest: +SKIP
        {'x': 112, 'y': 0, 'width': 480, 'height': 480}
    """
    image = _image(image_or_path)
    box = centre_box(image.shape, aspect, scale)  # also: a bad aspect or scale fails before a model loads
    if method != "centre":
        box = crop_box(load(model).predict(image), aspect, method=method, scale=scale)
    return crop_image(image, box), box
