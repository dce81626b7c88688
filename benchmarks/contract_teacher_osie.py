"""Score a contract teacher (e.g. FastGaze) on random OSIE images with the project's predictor and metrics.

    python benchmarks/contract_teacher_osie.py --osie ../shared/data/eyetracking/osie \
        --models ../shared/models/fastgaze/fastgaze_savedmodel ../shared/models/fastgaze/fastgaze_centre_savedmodel

A stand-in until the NUS-VIP reader lands: it reads OSIE's `eye/fixations.mat` itself (1-based fractional x, y
per observer, rounded and clamped like the lab's computeFixationMaps.m), builds the reference map by blurring
the fixation points with sigma 24 px (the lab's recipe), and scores each model's prediction at the image size
with `metrics.evaluation.score_map`, the per-image scoring evaluate.py uses (sAUC negatives: 10 other images'
fixations). Prints mean ± standard error per metric over the sampled images, with a centred Gaussian
(sigma 0.25 of each side) as the baseline the FastGaze README reports too.
"""

import argparse
import os
import sys
import time

import numpy as np
import scipy.io
import scipy.ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.io import read_image  # noqa: E402
from metrics import evaluation  # noqa: E402
from student.inference import load_predictor  # noqa: E402

BLUR_SIGMA = 24.0  # px, OSIE's params.eye.radius
METRICS = ("auc_judd", "nss", "cc", "kld", "sim", "sauc")


def read_osie_fixations(path):
    """{image file name: int (N, 2) 0-based (row, col)} from the NUS-VIP `fixations.mat`."""
    entries = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["fixations"]
    points = {}
    for entry in np.atleast_1d(entries):
        rows_cols = []
        for subject in np.atleast_1d(entry.subjects):
            x, y = np.atleast_1d(subject.fix_x).astype(float), np.atleast_1d(subject.fix_y).astype(float)
            rows_cols.append(np.stack([np.round(y), np.round(x)], axis=1).reshape(-1, 2))
        points[str(entry.img)] = np.concatenate(rows_cols).astype(np.int64) - 1
    return points


def example_for(image, fixations):
    height, width = image.shape[:2]
    fixations = np.clip(fixations, 0, [height - 1, width - 1])
    binary = np.zeros((height, width))
    binary[fixations[:, 0], fixations[:, 1]] = 1.0
    blurred = scipy.ndimage.gaussian_filter(binary, BLUR_SIGMA, mode="constant", truncate=3.5)
    return {"image": image, "saliency": blurred / blurred.max(), "has_saliency": True, "fixations": fixations}


def centred_gaussian(shape, sigma=0.25):
    rows = (np.arange(shape[0]) + 0.5) / shape[0] - 0.5
    cols = (np.arange(shape[1]) + 0.5) / shape[1] - 0.5
    return np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma ** 2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--osie", required=True, help="OSIE folder (stimuli/, eye/fixations.mat)")
    parser.add_argument("--models", nargs="+", required=True, help="contract models (or any load_predictor path)")
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="which random images")
    args = parser.parse_args(argv)

    fixations = read_osie_fixations(os.path.join(args.osie, "eye", "fixations.mat"))
    names = sorted(fixations)
    chosen = sorted(np.random.default_rng(args.seed).choice(len(names), args.num_images, replace=False))
    examples = [example_for(read_image(os.path.join(args.osie, "stimuli", names[i])), fixations[names[i]])
                for i in chosen]
    others = evaluation._other_maps(examples, 10, args.seed)
    predictors = {"centred Gaussian (sigma 0.25)": None}
    predictors.update({os.path.basename(os.path.normpath(m)): load_predictor(m) for m in args.models})
    print(f"OSIE, {len(examples)} random images (seed {args.seed}); mean ± standard error")
    print("| model | " + " | ".join(METRICS) + " | s/image |")
    print("|---" * (len(METRICS) + 2) + "|")
    for name, predictor in predictors.items():
        scores, start = [], time.perf_counter()
        for ex, other in zip(examples, others):
            prediction = (centred_gaussian(ex["saliency"].shape) if predictor is None
                          else predictor.predict(ex["image"]))
            scores.append(evaluation.score_map(np.asarray(prediction, np.float64), ex, other, seed=args.seed))
        seconds = (time.perf_counter() - start) / len(examples)
        cells = []
        for metric in METRICS:
            values = np.array([s[metric] for s in scores])
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) / np.sqrt(len(values)):.3f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {seconds:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
