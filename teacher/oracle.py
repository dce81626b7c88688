"""The `oracle` teacher: the synthetic data set's true densities, degraded into a good but imperfect teacher.

`datasets.synthetic` writes the true fixation density of every image (`densities/<split>/<stem>.npy`). A
student distilled from the truth itself would make the teacher term a second copy of the best possible target,
so the oracle degrades it the way a real network's prediction falls short of the truth:

1. **Resolution**: the density goes through the same aspect-preserving resize and padding as a real
   teacher's input (`teacher.preprocessing.preprocess`, area resampling when shrinking), so the map lives at
   the teacher's input size (240x320 by default, like MSI-Net on SALICON) and its padding is where MSI-Net's is.
2. **Blur**: an extra Gaussian blur, sigma `blur` x the shorter side (default 3 %), which spreads the peaks.
3. **Gamma**: the density is raised to `gamma` (default 0.8 < 1), which flattens it: peaks lose contrast
   against the background, as in a network's over-smooth prediction.
4. **Centre bias**: a mixture `(1 - center_weight) * map + center_weight * prior` with a centred Gaussian
   prior (sigma 0.25 of each side, default weight 0.2): a network's learned preference for the centre.
5. **Perturbation**: a seeded multiplicative log-normal field `exp(noise * z)`, `z` smooth Gaussian noise
   (sigma 8 % of the shorter side, unit variance, default `noise` 0.3): image-specific mistakes that no
   global transform undoes. It is seeded by (`seed`, sha256 of the stem), so every run gives the same map.
6. **Output**: min-max normalised to [0, 1] inside the image, zero in the padding, as MSI-Net's output.

With the defaults, scored at the original size against the true density (synthetic 480x640 data, 240x320
teacher), the oracle reaches KLD ~0.23 and CC ~0.87 (MSI-Net on SALICON val: KLD 0.31, CC 0.90), against KLD
~1.3 and CC ~0.17 for a centre-bias map: far better than the baseline and clearly worse than the truth
(tests/test_oracle.py checks that ordering).
"""

import hashlib
import json
import os

import cv2
import numpy as np

from teacher import preprocessing

DEFAULT_INPUT_SIZE = preprocessing.INPUT_SIZES["salicon"]
CENTER_PRIOR_SIGMA = 0.25  # of each side, for the centre-bias mixture
NOISE_SCALE = 0.08  # smoothing sigma of the perturbation field, as a fraction of the shorter side


def center_prior(size, sigma=CENTER_PRIOR_SIGMA):
    """A centred Gaussian of `size` (H, W), sigma = `sigma` x each side, as float64 summing to 1."""
    height, width = size
    rows = (np.arange(height) + 0.5 - height / 2.0) / (sigma * height)
    cols = (np.arange(width) + 0.5 - width / 2.0) / (sigma * width)
    prior = np.exp(-0.5 * rows[:, None] ** 2) * np.exp(-0.5 * cols[None, :] ** 2)
    return prior / prior.sum()


def _stem_seed(stem):
    return int.from_bytes(hashlib.sha256(stem.encode()).digest()[:8], "little")


class OracleTeacher:
    """A teacher for the synthetic data set that reads the true densities by stem and degrades them.

    It has the interface of `teacher.loading.Teacher` (`input_size`, `name`, `sha256`, `manifest()`, and a
    call on (N, H, W, 3) batches returning (N, H, W, 1) maps in [0, 1]) plus the stems of the batch, which it
    needs to find the densities; `teacher.export` passes them because `needs_stems` is True. The image
    pixels are ignored.

    Args:
        data_dir: the synthetic SALICON folder (with `densities/<split>/<stem>.npy`).
        input_size: (H, W) the teacher's input size. Defaults to 240x320 (MSI-Net on SALICON).
        blur: extra Gaussian blur sigma as a fraction of the shorter side of the resized image. Defaults to 0.03.
        gamma: power applied to the blurred density (< 1 flattens it). Defaults to 0.8.
        center_weight: weight of the centre-bias prior in the mixture, in [0, 1). Defaults to 0.2.
        noise: standard deviation of the log-normal perturbation. Defaults to 0.3.
        seed: seeds the perturbation together with each stem. Defaults to 0.
        pipeline: `teacher.preprocessing` pipeline the export uses ("repo" or "hub"); sets where the padding
            is. Defaults to "repo".

    Raises:
        FileNotFoundError: if `data_dir/densities` has no `.npy` files (not a synthetic data set).
        ValueError: for settings out of range.
    """

    needs_stems = True

    def __init__(
        self,
        data_dir,
        input_size=DEFAULT_INPUT_SIZE,
        blur=0.03,
        gamma=0.8,
        center_weight=0.2,
        noise=0.3,
        seed=0,
        pipeline="repo",
    ):
        self.input_size = tuple(int(s) for s in input_size)
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"OracleTeacher: input_size must be (H, W) with sides >= 8. Received: {input_size}")
        if blur < 0 or not 0 < gamma <= 1 or not 0 <= center_weight < 1 or noise < 0:
            raise ValueError(
                "OracleTeacher: need blur >= 0, 0 < gamma <= 1, 0 <= center_weight < 1, noise >= 0. Received: "
                f"blur={blur}, gamma={gamma}, center_weight={center_weight}, noise={noise}"
            )
        self.settings = {
            "blur": float(blur),
            "gamma": float(gamma),
            "center_weight": float(center_weight),
            "noise": float(noise),
            "seed": int(seed),
            "pipeline": pipeline,
        }
        self.pipeline = pipeline
        self.data_dir = os.fspath(data_dir)
        self._paths = self._index_densities(os.path.join(self.data_dir, "densities"))
        self.name = "oracle"
        self.path = None
        self.sha256 = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()

    @staticmethod
    def _index_densities(folder):
        paths = {}
        if os.path.isdir(folder):
            for split in sorted(os.listdir(folder)):
                split_dir = os.path.join(folder, split)
                if not os.path.isdir(split_dir):
                    continue
                for name in os.listdir(split_dir):
                    if name.endswith(".npy"):
                        paths[name[: -len(".npy")]] = os.path.join(split_dir, name)
        if not paths:
            raise FileNotFoundError(
                f"{folder}: no true densities (<split>/<stem>.npy); the oracle teacher only works on the synthetic "
                "data set made by `python -m datasets.synthetic` (or use a real MSI-Net teacher file)"
            )
        return paths

    def manifest(self):
        """A JSON-ready description for export manifests."""
        return {"name": self.name, "sha256": self.sha256, "format": "oracle", "input_size": list(self.input_size),
                **self.settings}

    def __repr__(self):
        return f"OracleTeacher({self.data_dir!r}, input_size={self.input_size}, {self.settings})"

    def density(self, stem):
        """The true density (float64 (H, W), sums to 1) of `stem`; errors name the stem and the folder."""
        if stem not in self._paths:
            raise FileNotFoundError(
                f"OracleTeacher: no true density for stem {stem!r} under {self.data_dir}/densities; the oracle only "
                "knows the synthetic data set it was made for"
            )
        density = np.load(self._paths[stem]).astype(np.float64)
        if density.ndim != 2 or not np.isfinite(density).all() or density.min() < 0 or density.sum() <= 0:
            raise ValueError(f"{self._paths[stem]}: not a density (expected finite non-negative (H, W) with mass)")
        return density / density.sum()

    def degrade(self, density, stem):
        """Degrade a density already at the teacher's resolution (steps 2-6 of the module docstring).

        Args:
            density: non-negative float (h, w), the resized image region (no padding).
            stem: the image's stem, which seeds the perturbation.

        Returns:
            float32 (h, w) min-max normalised to [0, 1].
        """
        density = np.maximum(np.asarray(density, np.float64), 0.0)
        density = density / max(density.sum(), np.finfo(np.float64).tiny)
        size = density.shape
        unit = min(size)
        s = self.settings
        if s["blur"] > 0:
            density = cv2.GaussianBlur(density, (0, 0), s["blur"] * unit, borderType=cv2.BORDER_REFLECT)
        density = np.maximum(density, 0.0) ** s["gamma"]
        density /= density.sum()
        density = (1.0 - s["center_weight"]) * density + s["center_weight"] * center_prior(size)
        if s["noise"] > 0:
            rng = np.random.default_rng([s["seed"], _stem_seed(stem)])
            field = cv2.GaussianBlur(rng.standard_normal(size), (0, 0), NOISE_SCALE * unit,
                                     borderType=cv2.BORDER_REFLECT)
            field /= max(field.std(), 1e-12)
            density = density * np.exp(s["noise"] * field)
        low, high = density.min(), density.max()
        return ((density - low) / max(high - low, 1e-12)).astype(np.float32)

    def predict(self, stem):
        """The oracle's map for one stem at the teacher's input size, padded like a real teacher's output.

        Returns:
            (map, box): float32 (H, W) in [0, 1] with zeros in the padding, and `[top, left, height, width]` of
            the image region, as `teacher.preprocessing.preprocess` reports it for the image.
        """
        density = self.density(stem)
        # Resized exactly like the image (same geometry and resampling), scaled into the pipeline's 0..255
        # clipping range; the scale cancels in `degrade`.
        scaled = density * (200.0 / density.max())
        padded, box = preprocessing.preprocess(scaled[:, :, None], self.input_size, self.pipeline, pad_value=0.0)
        top, left, height, width = (int(v) for v in np.asarray(box))
        region = np.asarray(padded)[top : top + height, left : left + width, 0]
        output = np.zeros(self.input_size, np.float32)
        output[top : top + height, left : left + width] = self.degrade(region, stem)
        return output, box

    def __call__(self, images, stems=None):
        """Maps for a batch: float32 (N, H, W, 1) at `input_size`; `images` only fixes N and must match it.

        Raises:
            ValueError: without `stems`, or if the batch is not (N, *input_size, 3) with N stems.
        """
        if stems is None:
            raise ValueError("OracleTeacher needs the stems of the batch: call teacher(images, stems=[...])")
        shape = tuple(np.shape(images))
        stems = [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(stems).reshape(-1).tolist()]
        if len(shape) != 4 or shape[1:] != (*self.input_size, 3) or shape[0] != len(stems):
            raise ValueError(
                f"OracleTeacher: expected images of shape (N, {self.input_size[0]}, {self.input_size[1]}, 3) with "
                f"N = {len(stems)} stems, got {shape}; preprocess the images to the teacher's input size first"
            )
        return np.stack([self.predict(stem)[0] for stem in stems])[..., None] if stems else np.zeros(
            (0, *self.input_size, 1), np.float32
        )
