"""FastGaze, a built-in pretrained saliency model (Twitter's image-cropping gaze predictor; Theis et al. 2018).

The weights ship with this package as Twitter's original `fastgaze.vxm` (Apache-2.0; `LICENSE` and `NOTICE`
beside it), converted into a Keras model at load time (`teacher.fastgaze.model`, `teacher.fastgaze.vxm`).

    from teacher.fastgaze import load_fastgaze
    model = load_fastgaze("fastgaze-centre")     # keras.Model: "image" (B, H, W, 3) RGB 0..255 -> (B, H, W, 1)
    density = model(images)                      # non-negative, unnormalised; divide by its sum for a distribution

Names: "fastgaze" (the network alone) and "fastgaze-centre" (times a centred Gaussian prior, sigma 0.25 of each
side; better on data with a strong centre bias such as MIT1003). They match the reference SavedModels of
`../shared/models/fastgaze`. The registry of every built-in model, FastGaze's included, is `teacher.builtin`
(through which `teacher.loading.load_teacher(name)` loads them).
"""

from teacher.fastgaze.model import (WEIGHTS_FILE, AspectFitResize, GridToImage, LogCentrePrior, build_fastgaze,
                                    resample_matrix, weights_path)
from teacher.fastgaze.vxm import VxmLayer, VxmModel, read_vxm

# FastGaze's two variants (names in `teacher.builtin.BUILTINS`).
VARIANTS = ("fastgaze", "fastgaze-centre")
# sha256 of Twitter's bin/fastgaze.vxm (twitter-research/image-crop-analysis @ d66ad3bb), 489,616 bytes.
WEIGHTS_SHA256 = "b76cefc218ec8969cc62b26ad0f41111800421287e7f2725d808da1d90afbdf7"

__all__ = ["VARIANTS", "WEIGHTS_FILE", "WEIGHTS_SHA256", "AspectFitResize", "GridToImage", "LogCentrePrior",
           "VxmLayer", "VxmModel", "build_fastgaze", "load_fastgaze", "read_vxm", "resample_matrix", "weights_path"]


def load_fastgaze(name):
    """The FastGaze variant `name` ("fastgaze" or "fastgaze-centre") as a Keras model (see `build_fastgaze`).

    Raises:
        ValueError: `name` is not one of `VARIANTS` (the message lists them).
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown FastGaze variant {name!r}; choose one of {list(VARIANTS)}")
    return build_fastgaze(centre_prior=name == "fastgaze-centre", vxm_path=weights_path())
