"""The one interface every data set's sample follows, however the data set stores its ground truth.

A sample has `stem`, `image_path` and `map_path` (None without a map file), and gives its image, human map and
fixations the same way: `load()` for arrays, `human_map_png()` and `fixation_points()` for the record writer.
SALICON and MIT1003 samples, and plain image folders, read maps and fixations from files (`FileSample`); NUS-VIP
samples hold every observer's points in memory and build the map from them when the data set has none
(`datasets.nusvip.EyeSample`). Readers of samples never branch on the data set.
"""

import dataclasses

import numpy as np

from datasets.fixations import load_fixations
from datasets.io import encode_png, read_image, read_map

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def no_points():
    """Empty (fixations (0, 2) int32, observers (0,) int32, durations (0,) float32)."""
    return np.zeros((0, 2), np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)


def sized_map(path, image_path, image_shape):
    """The map file at `path` as uint8 (H, W); ValueError naming both files when its size is not the image's."""
    saliency = read_map(path)
    if saliency.shape != tuple(image_shape[:2]):
        raise ValueError(
            f"{path}: map is {saliency.shape[0]}x{saliency.shape[1]} but its image {image_path} is "
            f"{image_shape[0]}x{image_shape[1]}; maps must have the image's size"
        )
    return saliency


class Sample:
    """Mixin for a data set's sample (a dataclass with `stem`, `image_path`, `map_path`).

    Subclasses override `human_map` and `fixation_points` where their ground truth is not a map file, and
    `check_image` where the listing knows the image's size.
    """

    points_in_memory = False  # True when the fixations come with the listing (no file to read)
    human_map_origin = "the data set's map files"

    def check_image(self, image):
        """Raise ValueError naming the image when the decoded pixels contradict the listing; no-op by default."""

    def human_map(self, image_shape):
        """The human map as uint8 (H, W) at `image_shape`, or None when the sample has none; ValueError naming
        the map file when its size is not the image's."""
        return sized_map(self.map_path, self.image_path, image_shape) if self.map_path else None

    def human_map_png(self, image_shape):
        """The human map as 8-bit grayscale PNG bytes (the file itself when it already is one); b"" without.

        Raises:
            ValueError: naming the map file when it is all black or not of the image's size.
        """
        saliency = self.human_map(image_shape)
        if saliency is None:
            return b""
        if self.map_path:
            if not saliency.any():
                raise ValueError(
                    f"{self.map_path}: the human map is all black (no saliency at all); it would train towards "
                    "nothing and score nothing. Fix the map, or remove the image with its map and fixation file"
                )
            with open(self.map_path, "rb") as f:
                data = f.read()
            # PNG IHDR: bit depth at byte 24, colour type at byte 25 (0 = grayscale).
            if data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[24] == 8 and data[25] == 0:
                return data
        return encode_png(saliency)

    def fixation_points(self, image_shape):
        """(fixations int32 (N, 2) 0-based (row, col), observers int32 (N,), durations float32 (N,)), observers
        and durations empty when unknown; None when the sample has no fixations."""
        return None

    def load(self):
        """dict: `stem`, `image` (uint8 RGB), `saliency` (uint8 (H, W) or None), `fixations` (or None without
        points), `observers`, `durations`."""
        image = read_image(self.image_path)
        self.check_image(image)
        points = self.fixation_points(image.shape)
        fixations, observers, durations = no_points() if points is None else points
        return {"stem": self.stem, "image": image, "saliency": self.human_map(image.shape),
                "fixations": None if points is None else fixations, "observers": observers, "durations": durations}


@dataclasses.dataclass(frozen=True)
class FileSample(Sample):
    """One image and its ground-truth files (SALICON, MIT1003, a folder of images); `map_path` and
    `fixations_path` are None when absent. Fixations come from a SALICON `.mat` or a fixation-point image."""

    stem: str
    image_path: str
    map_path: str | None = None
    fixations_path: str | None = None

    def fixation_points(self, image_shape):
        """The fixation file's points (no observers or durations); None without a fixation file."""
        if self.fixations_path is None:
            return None
        fixations = np.asarray(load_fixations(self.fixations_path, image_shape), np.int32).reshape(-1, 2)
        return fixations, np.zeros(0, np.int32), np.zeros(0, np.float32)
