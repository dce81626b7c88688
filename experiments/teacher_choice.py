"""Which teacher: FastGaze + centre, attention-center, or their ensemble, each with or without flip averaging.

    python -m experiments.teacher_choice --data ../shared/data/eyetracking \\
        --cache runs/attention_center_cache --out runs/teacher_choice

Everything is chosen on the val splits of MIT1003 and OSIE only, by the mean over both of NSS + CC (the
project's metrics, `metrics.saliency`, at each image's original size; NSS on the fixation points as
`evaluation.scoring` scores them, CC against the human map), then reported on val and test:

1. the letterbox bars of attention-center (`teacher.attention_center.PAD_COLOURS`), on MIT1003 val's images
   that are not 4:3 (the only ones with bars; OSIE is all 800x600), the raw map with the best post-processing
   of the grid for each colour;
2. attention-center's post-processing: `raw ** power` times a centred Gaussian of sigma `sigma` x each side
   (`teacher.attention_center.postprocess`), on a grid, with and without flip averaging;
3. the ensemble of FastGaze + centre and the chosen attention-center (`teacher.builtin.combine`): weighted
   geometric or arithmetic mean of the two densities, weight on a grid.

Slow part first, resumable: the raw maps (attention-center's frame map, plain and mirrored; FastGaze + centre's
log density, plain and mirrored back) are computed once per image and kept as one `.npz` per image in `--cache`
(an existing file is skipped), about 3 s per image on one core. Results: `teacher_choice.json` and
`teacher_choice.md` in `--out`.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from datasets.io import atomic_write

DATASETS = ("mit1003", "osie")
SPLITS = ("val", "test")
POWERS = (0.25, 0.35, 0.5, 0.7, 1.0)
SIGMAS = (None, 0.15, 0.2, 0.25, 0.3, 0.4)
SEARCH_FACTOR = 4  # the grids score maps shrunk 4 times (see `_Small`); the reported scores are full size
WEIGHTS = tuple(round(w, 2) for w in np.arange(0.0, 1.01, 0.1))  # attention-center's weight in the ensemble
MODES = ("geometric", "arithmetic")


# ---------------------------------------------------------------------------------------------------------
# The cache of raw maps


def _is_letterboxed(sample, size=(480, 640)):
    return sample.height * size[1] != sample.width * size[0]


def _save_npz(path, arrays):
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)


class _Models:
    """attention-center and FastGaze + centre, loaded on first use (one thread each: a shared machine)."""

    def __init__(self, threads=1):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.threads = threads
        self._ac = self._fastgaze = None

    @property
    def attention_center(self):
        if self._ac is None:
            from teacher.attention_center import AttentionCenter

            self._ac = AttentionCenter(num_threads=self.threads)
        return self._ac

    def fastgaze_log(self, image):
        """FastGaze + centre's log density (float32 (H, W)) of an RGB uint8 image."""
        if self._fastgaze is None:
            import tensorflow as tf

            from teacher.fastgaze import load_fastgaze

            model = load_fastgaze("fastgaze-centre")
            self._fastgaze = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        density = np.asarray(self._fastgaze(image[None].astype(np.float32)))[0, :, :, 0].astype(np.float64)
        return np.log(np.maximum(density, 1e-30)).astype(np.float32)


def _cache_one(path, sample, models, pads):
    """Fill the cache file of one sample: whatever of its arrays is missing (resumable per key)."""
    from teacher import attention_center as ac

    arrays = dict(np.load(path)) if os.path.exists(path) else {}
    wanted = {f"ac_{pad}" for pad in pads} | {f"ac_flip_{pads[0]}", "fg", "fg_flip"}
    if not _is_letterboxed(sample):
        wanted = {"ac_any", "ac_flip_any", "fg", "fg_flip"}  # no bars: the colour does not matter
    missing = wanted - set(arrays)
    if not missing:
        return False
    image = sample.load()["image"]
    for key in sorted(missing):
        if key.startswith("ac_"):
            flip = key.startswith("ac_flip_")
            pad = key.split("_")[-1].replace("any", ac.DEFAULT_PAD)
            pad = {"image": "image-mean", "imagenet": "imagenet-mean"}.get(pad, pad)
            frame, box = ac.letterbox(image, pad)
            arrays[key] = models.attention_center.run_frame(frame[:, ::-1] if flip else frame)
            arrays["box"] = np.asarray(box, np.int32)
        elif key == "fg":
            arrays[key] = models.fastgaze_log(image)
        else:
            arrays[key] = models.fastgaze_log(np.ascontiguousarray(image[:, ::-1]))[:, ::-1]
    _save_npz(path, arrays)
    return True


def _pad_key(pad):
    return pad.split("-")[0]  # "image-mean" -> "image": no dash in the npz keys


def build_cache(data_root, cache_dir, pads=("black", "image-mean", "imagenet-mean"), threads=1, limit=None,
                splits=SPLITS):
    """Compute every missing raw map of the val and test splits (see the module docstring); `pads[0]` is the
    colour whose flipped and test maps are made."""
    from datasets import sources

    models = _Models(threads)
    keys = tuple(_pad_key(p) for p in pads)
    jobs = []
    for split in splits:  # val first: the choice needs only val
        for dataset in DATASETS:
            samples = sources.list_samples(dataset, os.path.join(data_root, dataset), split)
            jobs += [(dataset, split, s) for s in samples[:limit]]
    start, done = time.time(), 0
    for i, (dataset, split, sample) in enumerate(jobs):
        path = os.path.join(cache_dir, dataset, f"{sample.stem}.npz")
        # Every colour on MIT1003 val's letterboxed images (the colour's choice); else the default colour only.
        pad_keys = keys if (dataset, split) == ("mit1003", "val") else keys[:1]
        if _cache_one(path, sample, models, pad_keys):
            done += 1
            rate = (time.time() - start) / done
            print(f"cache {i + 1}/{len(jobs)} {dataset}/{split}/{sample.stem} ({rate:.1f} s per image)",
                  file=sys.stderr, flush=True)
    return len(jobs)


# ---------------------------------------------------------------------------------------------------------
# Scoring from the cache


class _Image:
    """One cached image: its human data and its raw maps at the original size (built on demand)."""

    def __init__(self, sample, path):
        self.stem = sample.stem
        self.shape = (sample.height, sample.width)
        self.points = np.asarray(sample.fixations)
        self.human = np.asarray(sample.human_map())  # uint8: small enough to keep for 400 images
        self.path = path
        with np.load(path) as arrays:
            self.keys = set(arrays.files)
            self.box = tuple(int(v) for v in arrays["box"])

    def _array(self, key):
        with np.load(self.path) as arrays:  # read on demand: all maps of 400 images would need GBs
            return arrays[key]

    @property
    def fixations(self):
        from metrics.saliency import fixation_map_from_points

        return fixation_map_from_points(self.points, self.shape)

    def ac_raw(self, pad, flip=False):
        """attention-center's raw map (and, with `flip`, that of the mirrored frame, mirrored back)."""
        from teacher import attention_center as ac

        key = "any" if "ac_any" in self.keys else _pad_key(pad)
        if not flip:
            return ac.unletterbox(self._array(f"ac_{key}"), self.box, self.shape)
        return ac.unletterbox(self._array(f"ac_flip_{key}"), ac._mirror_box(self.box), self.shape)[:, ::-1]

    def fastgaze(self, flip=False):
        log_map = self._array("fg_flip" if flip else "fg").astype(np.float64)
        return np.exp(log_map - log_map.max())


class _Small:
    """An `_Image` shrunk by `factor` for the grid searches (area resize; fixations divided), held in memory.

    The grids score hundreds of settings per image: at the original size (up to 1024x768) that would take hours
    on two cores. The candidates' reported scores are computed at the original size (`_Image`).
    """

    def __init__(self, image, pads, factor=SEARCH_FACTOR):
        import cv2

        self.shape = tuple(max(1, n // factor) for n in image.shape)
        self.points = np.asarray(image.points) // factor
        self.human = self._shrink(image.human.astype(np.float32))
        self.keys = image.keys
        self._raw = {(pad, flip): self._shrink(image.ac_raw(pad, flip)) for pad in pads for flip in (False, True)
                     if flip is False or f"ac_flip_{_pad_key(pad)}" in image.keys or "ac_any" in image.keys}
        self._fg = {flip: self._shrink(image.fastgaze(flip).astype(np.float32)) for flip in (False, True)}
        self._cv2 = cv2

    def _shrink(self, array):
        import cv2

        return cv2.resize(np.asarray(array, np.float32), self.shape[::-1], interpolation=cv2.INTER_AREA)

    @property
    def fixations(self):
        from metrics.saliency import fixation_map_from_points

        return fixation_map_from_points(self.points, self.shape)

    def ac_raw(self, pad, flip=False):
        return self._raw[(pad, flip)]

    def fastgaze(self, flip=False):
        return self._fg[flip]


def _scores(prediction, image):
    from metrics import saliency

    return saliency.nss(prediction, image.fixations), saliency.cc(prediction, image.human.astype(np.float64))


def _ac_map(image, pad, power, sigma, flip):
    """The built-in's map for these settings, as `teacher.builtin` computes "attention-center[:flip]"."""
    from teacher.attention_center import postprocess
    from teacher.builtin import combine

    plain = postprocess(image.ac_raw(pad), power, sigma)
    if not flip:
        return plain
    return combine([plain, postprocess(image.ac_raw(pad, True), power, sigma)], [0.5, 0.5], "arithmetic")


def _fg_map(image, flip):
    from teacher.builtin import combine

    plain = image.fastgaze()
    return combine([plain, image.fastgaze(True)], [0.5, 0.5], "arithmetic") if flip else plain


def _evaluate(images_by_set, make_map):
    """{set: {"nss", "cc", "n"}} and the mean over sets of NSS + CC (the selection score)."""
    table = {}
    for name, images in images_by_set.items():
        pairs = [_scores(make_map(image), image) for image in images]
        table[name] = {"nss": float(np.mean([p[0] for p in pairs])), "cc": float(np.mean([p[1] for p in pairs])),
                       "n": len(pairs)}
    score = float(np.mean([row["nss"] + row["cc"] for row in table.values()]))
    return table, score


def load_images(data_root, cache_dir, split, datasets=DATASETS, limit=None):
    """{dataset: [_Image]} for one split, from the cache (an image missing from it is an error: fill it first)."""
    from datasets import sources

    out = {}
    for dataset in datasets:
        images = []
        for sample in sources.list_samples(dataset, os.path.join(data_root, dataset), split)[:limit]:
            path = os.path.join(cache_dir, dataset, f"{sample.stem}.npz")
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: not in the cache yet; run with --cache-only first (resumable)")
            images.append(_Image(sample, path))
        out[dataset] = images
    return out


def _progress(message):
    print(f"teacher_choice: {message}", file=sys.stderr, flush=True)


def choose(data_root, cache_dir, limit=None):
    """The whole selection on val, then every candidate on val and test; returns the JSON-ready result."""
    from teacher import attention_center as ac

    full_val = load_images(data_root, cache_dir, "val", limit=limit)
    result = {"criterion": "mean over MIT1003 and OSIE val of (NSS + CC)", "grid": {
        "power": list(POWERS), "sigma": list(SIGMAS), "weight": list(WEIGHTS), "mode": list(MODES)},
        "search_scale": f"grids scored on maps and fixations shrunk {SEARCH_FACTOR} times; reported scores at "
                        "the original size"}

    # 1. The bar colour, on the letterboxed images of MIT1003 val (best post-processing of a small grid each).
    small = {name: [_Small(im, ac.PAD_COLOURS) for im in images] for name, images in full_val.items()}
    _progress("val maps loaded")
    boxed = {"mit1003": [im for im in small["mit1003"] if "ac_any" not in im.keys]}
    pads = {}
    for pad in ac.PAD_COLOURS:
        pads[pad] = max(_evaluate(boxed, lambda im: _ac_map(im, pad, p, s, False))[1]
                        for p in (0.35, 0.5, 0.7) for s in (0.2, 0.25, 0.3))
        _progress(f"pad {pad}: {pads[pad]:.4f} on {len(boxed['mit1003'])} letterboxed MIT1003 val images")
    pad = max(pads, key=pads.get)
    result["pad"] = {"scores": pads, "chosen": pad, "images": len(boxed["mit1003"])}
    if pad != ac.DEFAULT_PAD:  # its flipped and test maps: fill them in (resumable)
        build_cache(data_root, cache_dir, pads=(pad,) + tuple(p for p in ac.PAD_COLOURS if p != pad), limit=limit,
                    splits=("val",))
        full_val = load_images(data_root, cache_dir, "val", limit=limit)
        small = {name: [_Small(im, (pad,)) for im in images] for name, images in full_val.items()}
    val = small

    # 2. attention-center's post-processing, without and with flip averaging.
    grid = {}
    for flip in (False, True):
        for power in POWERS:
            for sigma in SIGMAS:
                grid[(power, sigma, flip)] = _evaluate(val, lambda im: _ac_map(im, pad, power, sigma, flip))[1]
        _progress(f"post-processing grid (flip {flip}) done")
    best = {flip: max((k for k in grid if k[2] == flip), key=grid.get) for flip in (False, True)}
    result["postprocess"] = {"grid": [dict(power=k[0], sigma=k[1], flip=k[2], score=v) for k, v in grid.items()],
                             "chosen": {"power": best[False][0], "sigma": best[False][1]},
                             "chosen_flip": {"power": best[True][0], "sigma": best[True][1]}}
    power, sigma = best[False][:2]

    # 3. The ensemble: each member with or without flip, combined by a weighted mean (geometric or arithmetic).
    from teacher.builtin import combine

    ensembles = {}
    for flip in (False, True):
        for mode in MODES:
            for weight in WEIGHTS:
                ensembles[(weight, mode, flip)] = _evaluate(val, lambda im: combine(
                    [_fg_map(im, flip), _ac_map(im, pad, power, sigma, flip)], [1 - weight, weight], mode))[1]
        _progress(f"ensemble grid (flip {flip}) done")
    chosen = {flip: max((k for k in ensembles if k[2] == flip), key=ensembles.get) for flip in (False, True)}
    result["ensemble"] = {"grid": [dict(attention_center_weight=k[0], mode=k[1], flip=k[2], score=v)
                                   for k, v in ensembles.items()],
                          "chosen": {"attention_center_weight": chosen[False][0], "mode": chosen[False][1]},
                          "chosen_flip": {"attention_center_weight": chosen[True][0], "mode": chosen[True][1]}}
    val = full_val

    (w, mode, _), (wf, mode_f, _) = chosen[False], chosen[True]
    candidates = {
        "fastgaze-centre": lambda im: _fg_map(im, False),
        "fastgaze-centre:flip": lambda im: _fg_map(im, True),
        "attention-center raw": lambda im: im.ac_raw(pad),
        f"attention-center (power {power:g}, sigma {sigma})": lambda im: _ac_map(im, pad, power, sigma, False),
        "attention-center:flip": lambda im: _ac_map(im, pad, power, sigma, True),
        f"ensemble {1 - w:g}*fastgaze-centre+{w:g}*attention-center ({mode})": lambda im: combine(
            [_fg_map(im, False), _ac_map(im, pad, power, sigma, False)], [1 - w, w], mode),
        f"ensemble of :flip members {1 - wf:g}/{wf:g} ({mode_f})": lambda im: combine(
            [_fg_map(im, True), _ac_map(im, pad, power, sigma, True)], [1 - wf, wf], mode_f),
    }
    rows = {name: {} for name in candidates}
    for split, images in (("val", val), ("test", None)):
        try:
            images = images or load_images(data_root, cache_dir, split, limit=limit)
        except FileNotFoundError as e:  # the test maps come last: a choice on val can be made before them
            result["pending"] = f"test: {e}"
            _progress(f"test split not scored: {e}")
            break
        for name, make_map in candidates.items():
            rows[name][split], rows[name][f"{split}_score"] = _evaluate(images, make_map)
        _progress(f"{split} scored")
    result["candidates"] = rows
    return result


def to_markdown(result):
    """The candidates' table (NSS / CC per set and split) and the choices."""
    lines = ["| model | MIT1003 val NSS / CC | OSIE val NSS / CC | val score | MIT1003 test NSS / CC | "
             "OSIE test NSS / CC | test score |", "|---|---|---|---|---|---|---|"]
    for name, row in result["candidates"].items():
        cells = [name]
        for split in ("val", "test"):
            if split not in row:
                cells += ["pending"] * (len(DATASETS) + 1)
                continue
            cells += [f"{row[split][d]['nss']:.3f} / {row[split][d]['cc']:.3f}" for d in DATASETS]
            cells.append(f"{row[f'{split}_score']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    pp, ens = result["postprocess"]["chosen"], result["ensemble"]["chosen"]
    lines += ["", f"Chosen on val ({result['criterion']}): letterbox bars {result['pad']['chosen']} "
              f"({', '.join(f'{k} {v:.3f}' for k, v in result['pad']['scores'].items())} on "
              f"{result['pad']['images']} letterboxed MIT1003 val images); attention-center power {pp['power']:g}, "
              f"centre prior sigma {pp['sigma']}; ensemble weight of attention-center "
              f"{ens['attention_center_weight']:g}, {ens['mode']} mean."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.teacher_choice", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "eyetracking"),
                        help="folder holding mit1003/ and osie/ in the NUS-VIP layout")
    parser.add_argument("--cache", default=os.path.join("runs", "attention_center_cache"),
                        help="folder of the raw maps, one .npz per image (resumable)")
    parser.add_argument("--out", default=os.path.join("runs", "teacher_choice"),
                        help="folder for teacher_choice.json and teacher_choice.md")
    parser.add_argument("--cache-only", action="store_true", help="fill the cache and stop")
    parser.add_argument("--no-cache", action="store_true",
                        help="choose from the maps already cached (test scores only once the test maps are all there)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pad", default="black", choices=("black", "image-mean", "imagenet-mean"),
                        help="the bar colour whose flipped and test maps the cache holds (the choice on val fills in "
                             "the val maps of another colour it picks; rerun with it to fill the test maps)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of each split (a smoke test)")
    args = parser.parse_args(argv)
    if not args.no_cache:
        pads = (args.pad,) + tuple(p for p in ("black", "image-mean", "imagenet-mean") if p != args.pad)
        build_cache(args.data, args.cache, pads=pads, threads=args.threads)
    if args.cache_only:
        return 0
    result = choose(args.data, args.cache, limit=args.limit)
    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, "teacher_choice.json"), "w") as f:
        json.dump(result, f, indent=2)
    markdown = to_markdown(result)
    with atomic_write(os.path.join(args.out, "teacher_choice.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
