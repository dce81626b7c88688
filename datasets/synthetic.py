"""Deterministic synthetic SALICON: scenes with a known fixation density, written in the 2017 release layout.

The project's offline stand-in for SALICON. Each scene is a textured background with low-saturation
clutter and one to four salient objects that pop out either by colour (saturated, hue opposite the
background) or by size (large, muted). The true fixation density of a scene is a mixture of

* one Gaussian per salient object (aligned with the object's ellipse, two sigmas = its semi-axes),
  weighted by its pop-out strength (colour pop-outs attract more than size pop-outs),
* a centre-bias Gaussian (sigma = 0.22 of each side) with a random weight in [0.15, 0.30],
* a uniform floor of 5 %,

so an image-based model can beat a centre-bias map by far, but must find the objects among the clutter
and rank them. `n_observers` simulated observers each make about `fixations_per_observer` fixations
sampled from that density; the map is their fixations blurred with a Gaussian of sigma 19 px at 640 px
width (scaled with the width), normalised to a peak of 255, as SALICON's maps are.

Written files (stems `COCO_{split}2014_%012d`, numbered from 1):

    root/images/{train,val,test}/<stem>.jpg     RGB JPEG
    root/maps/{train,val}/<stem>.png            8-bit saliency map
    root/fixations/{train,val}/<stem>.mat       MATLAB v5: image, resolution [H W], gaze (N_obs x 1 struct:
                                                location (raw samples x,y), timestamp (ms), fixations (x,y)),
                                                coordinates 1-based as in SALICON
    root/densities/{train,val,test}/<stem>.npy  float32 true density, sums to 1
    root/synthetic.json                         the generation parameters

Every image draws from its own generator seeded by (seed, split, index), so a file depends only on the
parameters and its index, the same seed gives byte-identical files, and re-running into a complete
folder only checks that the files exist.
"""

import argparse
import io
import json
import os

import cv2
import numpy as np
import scipy.io

from datasets.io import encode_jpeg, encode_png, write_bytes_atomic

FORMAT_VERSION = 1
CONFIG_NAME = "synthetic.json"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SALICON_SIGMA_PX = 19.0  # SALICON's map blur at 640 px width
SALICON_WIDTH = 640
CENTER_SIGMA = 0.22  # centre-bias sigma as a fraction of each image side
FLOOR_WEIGHT = 0.05
DWELL_SAMPLES = 5  # raw mouse samples around each fixation
SACCADE_SAMPLES = 3  # raw mouse samples on the way to each fixation
# A fixed 116-byte MAT header text: scipy's default contains the creation time, which breaks byte equality.
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: saliency-kd datasets.synthetic".ljust(116, b" ")
PROGRESS_MIN_IMAGES = 100


def salicon_stem(split, index):
    """SALICON-style stem of the `index`-th (0-based) image of `split`, e.g. COCO_train2014_000000000001."""
    return f"COCO_{split}2014_{index + 1:012d}"


def _hsv_to_rgb(h, s, v):
    """OpenCV HSV (hue 0..179, s and v 0..255) to an RGB uint8 triple."""
    hsv = np.array([[[h % 180, np.clip(s, 0, 255), np.clip(v, 0, 255)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.int64)


def _muted_color(rng, hue, value):
    return _hsv_to_rgb(hue + rng.uniform(-25, 25), rng.uniform(10, 80), value + rng.uniform(-60, 60))


def _draw(canvas, shape, center_yx, axes_yx, angle, color):
    """Draw a filled, anti-aliased ellipse or rectangle with sub-pixel geometry (4 fractional bits)."""
    scale = 16
    center = (int(round(center_yx[1] * scale)), int(round(center_yx[0] * scale)))
    axes = (max(int(round(axes_yx[1] * scale)), 1), max(int(round(axes_yx[0] * scale)), 1))
    color = tuple(int(c) for c in color)
    if shape == "ellipse":
        cv2.ellipse(canvas, center, axes, angle, 0, 360, color, -1, cv2.LINE_AA, 4)
    else:
        top_left = (center[0] - axes[0], center[1] - axes[1])
        bottom_right = (center[0] + axes[0], center[1] + axes[1])
        cv2.rectangle(canvas, top_left, bottom_right, color, -1, cv2.LINE_AA, 4)


def _gaussian(grid_y, grid_x, center_yx, sigma_yx, angle_deg):
    """A rotated 2-D Gaussian on the pixel grid, normalised to sum 1 (angle as in cv2.ellipse)."""
    theta = np.deg2rad(angle_deg)
    dy, dx = grid_y - center_yx[0], grid_x - center_yx[1]
    # Coordinates in the ellipse's frame: cv2 rotates the x axis by `angle` towards +y (clockwise on screen).
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    g = np.exp(-0.5 * ((u / sigma_yx[1]) ** 2 + (v / sigma_yx[0]) ** 2))
    return g / g.sum()


def render_scene(rng, image_size):
    """Draw one scene and its true fixation density.

    Args:
        rng: a `np.random.Generator`; the scene depends only on its state.
        image_size: (H, W) in pixels.

    Returns:
        (image, density): uint8 RGB (H, W, 3) and float64 (H, W) summing to 1.
    """
    height, width = image_size
    unit = min(height, width)
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.0

    # Background: a muted base colour with low-frequency colour blotches and fine grain.
    hue, value = rng.uniform(0, 180), rng.uniform(100, 180)
    base = _hsv_to_rgb(hue, rng.uniform(15, 60), value).astype(np.float32)
    coarse = rng.normal(0.0, 18.0, size=(4 + height // 24, 4 + width // 24, 3)).astype(np.float32)
    image = base + cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0.0, 5.0, size=(height, width, 3)).astype(np.float32)
    canvas = np.clip(image, 0, 255).astype(np.uint8)

    # Clutter: many small muted shapes; the same number at every resolution, so the scene is scale-free.
    for _ in range(int(rng.integers(20, 45))):
        radius = rng.uniform(0.015, 0.045) * unit
        center = (rng.uniform(0, height), rng.uniform(0, width))
        axes = (radius * rng.uniform(0.4, 1.6), radius * rng.uniform(0.4, 1.6))
        shape = "ellipse" if rng.random() < 0.6 else "rectangle"
        _draw(canvas, shape, center, axes, rng.uniform(0, 180), _muted_color(rng, hue, value))

    # Salient objects, placed apart from each other where possible.
    n_objects = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
    objects = []
    for _ in range(n_objects):
        by_color = rng.random() < 0.6
        radius = (rng.uniform(0.05, 0.09) if by_color else rng.uniform(0.13, 0.2)) * unit
        axes = (radius * rng.uniform(0.7, 1.3), radius * rng.uniform(0.7, 1.3))
        for _ in range(10):
            center = (rng.uniform(axes[0], height - axes[0]), rng.uniform(axes[1], width - axes[1]))
            if all(np.hypot(center[0] - c[0], center[1] - c[1]) > 0.8 * (radius + r) for c, _, _, r, _ in objects):
                break
        shape = "ellipse" if rng.random() < 0.6 else "rectangle"
        angle = rng.uniform(0, 180) if shape == "ellipse" else 0.0
        if by_color:
            color = _hsv_to_rgb(hue + 90 + rng.uniform(-30, 30), rng.uniform(190, 255), rng.uniform(180, 255))
            strength = rng.uniform(0.7, 1.0)
        else:
            color = _muted_color(rng, hue, value)
            strength = rng.uniform(0.3, 0.55)
        _draw(canvas, shape, center, axes, angle, color)
        objects.append((center, axes, angle, radius, strength))

    center_weight = rng.uniform(0.15, 0.30)
    object_weight = 1.0 - center_weight - FLOOR_WEIGHT
    strengths = np.array([o[4] for o in objects])
    density = np.full((height, width), FLOOR_WEIGHT / (height * width))
    density += center_weight * _gaussian(
        grid_y, grid_x, ((height - 1) / 2, (width - 1) / 2), (CENTER_SIGMA * height, CENTER_SIGMA * width), 0.0
    )
    for (center, axes, angle, _, _), share in zip(objects, strengths / strengths.sum()):
        sigma = (max(axes[0] / 2, 0.5), max(axes[1] / 2, 0.5))
        density += object_weight * share * _gaussian(grid_y, grid_x, center, sigma, angle)
    return canvas, density / density.sum()


def sample_fixations(rng, density, n_observers, fixations_per_observer):
    """Sample each observer's fixations from `density`.

    Returns:
        A list with one int64 array (k, 2) of 0-based (row, col) per observer, k = 1 + Poisson(mean - 1).
    """
    width = density.shape[1]
    cdf = np.cumsum(density.ravel())
    observers = []
    for _ in range(n_observers):
        k = 1 + int(rng.poisson(max(fixations_per_observer - 1, 0)))
        index = np.minimum(np.searchsorted(cdf, rng.random(k) * cdf[-1], side="right"), cdf.size - 1)
        observers.append(np.stack([index // width, index % width], axis=1))
    return observers


def _mouse_trajectory(rng, fixations_xy, image_size):
    """Raw mouse samples (x, y, 1-based) and timestamps (ms): a few samples on each saccade, a jittered dwell."""
    height, width = image_size
    start = np.array([[(width + 1) / 2, (height + 1) / 2]])
    previous = np.concatenate([start, fixations_xy[:-1]], axis=0)
    steps = (np.arange(1, SACCADE_SAMPLES + 1) / (SACCADE_SAMPLES + 1))[None, :, None]
    saccades = previous[:, None, :] + steps * (fixations_xy - previous)[:, None, :]
    jitter = rng.normal(0.0, 0.004 * min(image_size), size=(len(fixations_xy), DWELL_SAMPLES, 2))
    dwell = fixations_xy[:, None, :] + jitter
    location = np.rint(np.concatenate([saccades, dwell], axis=1).reshape(-1, 2))
    location = np.clip(location, 1, [width, height])
    timestamp = np.cumsum(rng.integers(8, 20, size=len(location))).astype(np.float64)[:, None]
    return location, timestamp


def encode_fixation_mat(rng, stem, image_size, observers):
    """Encode a SALICON 2017 fixation file (MATLAB v5) with a fixed header, for byte-identical output."""
    gaze = np.empty((len(observers), 1), dtype=[("location", object), ("timestamp", object), ("fixations", object)])
    for i, rows_cols in enumerate(observers):
        fixations_xy = rows_cols[:, ::-1].astype(np.float64) + 1.0
        location, timestamp = _mouse_trajectory(rng, fixations_xy, image_size)
        gaze[i, 0] = (location, timestamp, fixations_xy)
    buffer = io.BytesIO()
    contents = {"image": stem, "resolution": np.array([image_size], dtype=np.float64), "gaze": gaze}
    scipy.io.savemat(buffer, contents, do_compression=True, oned_as="column")
    data = buffer.getvalue()
    return MAT_HEADER + data[len(MAT_HEADER) :]


def fixations_to_map(observers, image_size):
    """SALICON-style map: fixation counts blurred with sigma 19 px per 640 px width, scaled to a 255 peak."""
    height, width = image_size
    counts = np.zeros(image_size, np.float32)
    rows_cols = np.concatenate(observers, axis=0)
    np.add.at(counts, (rows_cols[:, 0], rows_cols[:, 1]), 1.0)
    sigma = SALICON_SIGMA_PX * width / SALICON_WIDTH
    blurred = cv2.GaussianBlur(counts, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return np.rint(blurred / blurred.max() * 255.0).astype(np.uint8)


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _paths(root, split, stem):
    paths = {
        "image": os.path.join(root, "images", split, stem + ".jpg"),
        "density": os.path.join(root, "densities", split, stem + ".npy"),
    }
    if split != "test":
        paths["map"] = os.path.join(root, "maps", split, stem + ".png")
        paths["fixations"] = os.path.join(root, "fixations", split, stem + ".mat")
    return paths


def _write_sample(paths, split, index, config):
    """Generate and write one image's files; each file is written atomically."""
    image_size = tuple(config["image_size"])
    rng = np.random.default_rng([config["seed"], SPLIT_CODES[split], index])
    image, density = render_scene(rng, image_size)
    density32 = (density / density.sum()).astype(np.float32)
    write_bytes_atomic(paths["density"], _npy_bytes(density32))
    if split != "test":
        observers = sample_fixations(rng, density, config["n_observers"], config["fixations_per_observer"])
        stem = os.path.splitext(os.path.basename(paths["image"]))[0]
        write_bytes_atomic(paths["fixations"], encode_fixation_mat(rng, stem, image_size, observers))
        write_bytes_atomic(paths["map"], encode_png(fixations_to_map(observers, image_size)))
    # The image goes last: a sample whose image exists is complete (list_salicon keys on images).
    write_bytes_atomic(paths["image"], encode_jpeg(image, quality=config["jpeg_quality"]))


def _check_config(root, config):
    """Record the parameters in root/synthetic.json, or check that an existing folder used the same ones."""
    path = os.path.join(root, CONFIG_NAME)
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        if existing != config:
            differ = sorted(k for k in set(existing) | set(config) if existing.get(k) != config.get(k))
            details = ", ".join(f"{k}: {existing.get(k)!r} there, {config.get(k)!r} now" for k in differ)
            raise ValueError(
                f"{path}: this folder was generated with other parameters ({details}); "
                "use an empty --out folder or the original parameters"
            )
        return
    write_bytes_atomic(path, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())


def generate_synthetic_salicon(
    root,
    n_train,
    n_val,
    n_test=0,
    image_size=(480, 640),
    n_observers=16,
    seed=0,
    fixations_per_observer=25,
    jpeg_quality=95,
    verbose=None,
):
    """Write a synthetic SALICON folder (2017 release layout) plus the true densities.

    Args:
        root: output folder; created if needed. Re-running with the same parameters only fills in
            missing files, so a complete folder costs one `stat` per file.
        n_train, n_val, n_test: number of images per split (test gets images and densities only).
        image_size: (H, W) in pixels; SALICON's is (480, 640). Scenes are resolution-independent.
        n_observers: simulated observers per image (SALICON: 16).
        seed: the integer seed; equal parameters give byte-identical files.
        fixations_per_observer: mean number of fixations per observer (at least one each).
        jpeg_quality: JPEG quality of the stimuli (1..100).
        verbose: show a `keras.utils.Progbar`; None shows it when at least 100 images are generated.

    Returns:
        `root` as a string.

    Raises:
        ValueError: for a bad argument, or a `root` generated before with other parameters.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, value in [("n_train", n_train), ("n_val", n_val), ("n_test", n_test)]:
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if len(image_size) != 2 or min(image_size) < 8:
        raise ValueError(f"image_size must be (H, W) with both sides >= 8 pixels, got {image_size!r}")
    if n_observers < 1 or fixations_per_observer < 1:
        raise ValueError(
            f"n_observers and fixations_per_observer must be >= 1, got {n_observers} and {fixations_per_observer}"
        )
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    config = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "n_observers": int(n_observers),
        "fixations_per_observer": int(fixations_per_observer),
        "jpeg_quality": int(jpeg_quality),
        "counts": {k: int(v) for k, v in counts.items()},
    }
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    _check_config(root, config)

    todo = []
    for split, n in counts.items():
        for index in range(int(n)):
            paths = _paths(root, split, salicon_stem(split, index))
            if not all(os.path.exists(p) for p in paths.values()):
                todo.append((paths, split, index))
    if verbose is None:
        verbose = len(todo) >= PROGRESS_MIN_IMAGES
    progress = None
    if verbose and todo:
        import keras  # noqa: PLC0415 - imported lazily: it loads TensorFlow, which small runs never need

        progress = keras.utils.Progbar(len(todo), unit_name="image")
    for done, (paths, split, index) in enumerate(todo, start=1):
        _write_sample(paths, split, index, config)
        if progress is not None:
            progress.update(done)
    return root


def main(argv=None):
    """Command line: python -m datasets.synthetic --out DIR --n-train N --n-val N --size H W --seed S."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic",
        description="Write a deterministic synthetic SALICON folder (2017 layout: images/, maps/, fixations/ "
        "as .mat) with the true fixation densities in densities/.",
    )
    parser.add_argument("--out", required=True, help="output folder (created; re-running fills in missing files)")
    parser.add_argument("--n-train", type=int, default=200, help="training images (default: 200)")
    parser.add_argument("--n-val", type=int, default=50, help="validation images (default: 50)")
    parser.add_argument("--n-test", type=int, default=0, help="test images, no maps or fixations (default: 0)")
    parser.add_argument(
        "--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"), help="image size in pixels (480 640)"
    )
    parser.add_argument("--observers", type=int, default=16, help="simulated observers per image (default: 16)")
    parser.add_argument(
        "--fixations", type=int, default=25, help="mean fixations per observer (default: 25; SALICON: ~460 per image)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    root = generate_synthetic_salicon(
        args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        image_size=tuple(args.size),
        n_observers=args.observers,
        seed=args.seed,
        fixations_per_observer=args.fixations,
        verbose=False if args.quiet else None,
    )
    print(f"synthetic SALICON in {root}")


if __name__ == "__main__":
    main()
