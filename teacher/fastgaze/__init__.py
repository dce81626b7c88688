"""FastGaze, a built-in pretrained saliency model (Twitter's image-cropping gaze predictor; Theis et al. 2018).

The weights ship with this package as Twitter's original `fastgaze.vxm` (Apache-2.0; `LICENSE` and `NOTICE`
beside it), converted into a Keras model at load time (`teacher.fastgaze.model`, `teacher.fastgaze.vxm`).

    from teacher.fastgaze import load_fastgaze
    model = load_fastgaze("fastgaze-centre")     # keras.Model: "image" (B, H, W, 3) RGB 0..255 -> (B, H, W, 1)
    density = model(images)                      # non-negative, unnormalised; divide by its sum for a distribution

Names: "fastgaze" (the network alone) and "fastgaze-centre" (times a centred Gaussian prior, sigma 0.25 of each
side; better on data with a strong centre bias such as MIT1003). They match the reference SavedModels of
`../shared/models/fastgaze` and also load through `teacher.loading.load_teacher(name)`.
"""

import hashlib
import os

from teacher.fastgaze.model import (AspectFitResize, GridToImage, LogCentrePrior, build_fastgaze,
                                    resample_matrix)
from teacher.fastgaze.vxm import VxmLayer, VxmModel, read_vxm

BUILTIN_MODELS = ("fastgaze", "fastgaze-centre")
WEIGHTS_FILE = "fastgaze.vxm"
# sha256 of Twitter's bin/fastgaze.vxm (twitter-research/image-crop-analysis @ d66ad3bb), 489,616 bytes.
WEIGHTS_SHA256 = "b76cefc218ec8969cc62b26ad0f41111800421287e7f2725d808da1d90afbdf7"

__all__ = ["BUILTIN_MODELS", "WEIGHTS_SHA256", "AspectFitResize", "GridToImage", "LogCentrePrior", "VxmLayer",
           "VxmModel", "build_fastgaze", "builtin_sha256", "is_builtin", "load_fastgaze", "read_vxm",
           "resample_matrix", "weights_path"]


def weights_path():
    """The path of the `fastgaze.vxm` shipped in this package (package data)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS_FILE)


def is_builtin(name):
    """True when `name` (a str or path-like) is one of `BUILTIN_MODELS`."""
    try:
        return os.fspath(name) in BUILTIN_MODELS
    except TypeError:
        return False


def _check_name(name):
    if not is_builtin(name):
        raise ValueError(f"unknown built-in model {name!r}; choose one of {list(BUILTIN_MODELS)}")
    return os.fspath(name)


def load_fastgaze(name):
    """The built-in model `name` ("fastgaze" or "fastgaze-centre") as a Keras model (see `build_fastgaze`).

    Raises:
        ValueError: `name` is not in `BUILTIN_MODELS` (the message lists them).
    """
    return build_fastgaze(centre_prior=_check_name(name) == "fastgaze-centre", vxm_path=weights_path())


def builtin_sha256(name):
    """A digest for manifests: sha256 of the shipped `.vxm` bytes, a NUL and the variant name."""
    digest = hashlib.sha256()
    with open(weights_path(), "rb") as f:
        digest.update(f.read())
    digest.update(b"\0" + _check_name(name).encode())
    return digest.hexdigest()
