"""MIT-saliency-benchmark metrics on numpy maps, per image, in float64.

Each metric is a port of the matching file in cvzoya/saliency `code_forMetrics/` (`KLdiv.m`, `CC.m`,
`similarity.m`, `NSS.m`, `AUC_Judd.m`, `AUC_Borji.m`, `AUC_shuffled.m`, `InfoGain.m`), with two deliberate
differences:

- no resizing: the MATLAB code calls `imresize` on the prediction, here a prediction whose shape differs from
  the reference raises ValueError (resize it yourself, and say how, so that the protocol is explicit);
- degenerate inputs, where MATLAB returns NaN, return the documented value of each function or raise a clear
  ValueError (no fixations at all).

The first argument is always the prediction; the second is the reference (continuous ground-truth map
`ground_truth`, or binary `fixation_map` where nonzero pixels are fixated, each counted once however many
fixations landed on it). Inputs are never modified. Averaging over images is the caller's job.
"""

import numpy as np

# MATLAB's `eps` (float64 machine epsilon), the regulariser of KLdiv.m and InfoGain.m.
MATLAB_EPS = 2.220446049250313e-16
# AUC_Judd.m adds uniform noise / 1e7 to break ties among the (often many) equal values of a map.
JUDD_JITTER_SCALE = 1e-7
# The number of other images whose fixations make the sAUC negatives (Borji et al., 2013; UNISAL).
SAUC_NUM_OTHER = 10

_RESIZE_HINT = "resize the prediction to the ground-truth size first"


def _as_map(metric, name, array):
    """A float64 copy of a 2-D finite array, or ValueError naming the metric and the argument."""
    out = np.array(array, dtype=np.float64, copy=True)
    if out.ndim != 2:
        raise ValueError(f"{metric}: {name} must be a 2-D (H, W) map, got shape {out.shape}; "
                         f"squeeze the channel axis first")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{metric}: {name} contains NaN or inf values; fix the model output")
    return out


def _maps(metric, **named):
    """Checked float64 copies of the named maps, all of the first map's shape."""
    items = list(named.items())
    maps = [_as_map(metric, name, value) for name, value in items]
    first_name, first = items[0][0], maps[0]
    for (name, _), m in zip(items[1:], maps[1:]):
        if m.shape != first.shape:
            raise ValueError(f"{metric}: {first_name} {first.shape} != {name} {m.shape}; {_RESIZE_HINT}")
    return maps


def _fixated(metric, fixation_map):
    """Boolean mask of the fixated pixels; ValueError if there is none."""
    mask = fixation_map > 0
    if not mask.any():
        raise ValueError(f"{metric}: fixation_map has no fixations (no value > 0); the metric is undefined "
                         f"for an image without fixations, leave the image out of the average")
    return mask


def _is_constant(saliency_map):
    # Not `std == 0`: the mean of equal float values is not always exactly that value, so std can be ~1e-17.
    return saliency_map.max() == saliency_map.min()


def _minmax(saliency_map):
    """Rescale to [0, 1]; a constant map becomes all zeros (MATLAB would give NaN)."""
    if _is_constant(saliency_map):
        return np.zeros_like(saliency_map)
    lo, hi = saliency_map.min(), saliency_map.max()
    return (saliency_map - lo) / (hi - lo)


def _minmax_distribution(saliency_map):
    """Min-max then divide by the sum (similarity.m, InfoGain.m); a constant map becomes uniform."""
    if _is_constant(saliency_map):
        return np.full_like(saliency_map, 1.0 / saliency_map.size)
    m = _minmax(saliency_map)
    return m / m.sum()


def _zscore(saliency_map, ddof):
    """(x - mean) / std, or None for a constant map."""
    if _is_constant(saliency_map):
        return None
    return (saliency_map - saliency_map.mean()) / saliency_map.std(ddof=ddof)


def kld(saliency_map, ground_truth):
    """KL divergence KL(G || P) of MIT `KLdiv.m`, with G the ground truth and P the prediction.

    Both maps are divided by their sums (a map that is all zero is left as it is), then
    `sum(G * log(eps + G / (P + eps)))` with eps = `MATLAB_EPS`. Lower is better.

    Args:
        saliency_map: predicted map P (H, W), non-negative.
        ground_truth: continuous ground-truth map G (H, W), non-negative.

    Returns:
        The divergence in nats, a float. An all-zero ground truth gives 0.0; an all-zero prediction gives the
        large finite value `sum(G * log(eps + G / eps))` (as MATLAB does).

    Raises:
        ValueError: shapes differ, a map is not 2-D or not finite, or a map has negative values.
    """
    p, g = _maps("kld", saliency_map=saliency_map, ground_truth=ground_truth)
    for name, m in (("saliency_map", p), ("ground_truth", g)):
        if m.min() < 0:
            raise ValueError(f"kld: {name} has negative values (min {m.min():.4g}); KL needs non-negative "
                             f"maps, shift or clip the map first")
    if p.any():
        p /= p.sum()
    if g.any():
        g /= g.sum()
    return float(np.sum(g * np.log(MATLAB_EPS + g / (p + MATLAB_EPS))))


def cc(saliency_map, ground_truth):
    """Pearson's linear correlation coefficient between the two maps (MIT `CC.m`). Higher is better.

    Returns:
        The correlation in [-1, 1], a float; 0.0 when either map is constant (MATLAB gives NaN; pysaliency
        gives 0 for a constant prediction).

    Raises:
        ValueError: shapes differ, or a map is not 2-D or not finite.
    """
    p, g = _maps("cc", saliency_map=saliency_map, ground_truth=ground_truth)
    if _is_constant(p) or _is_constant(g):
        return 0.0
    # MATLAB z-scores both with std (N - 1) and then calls corr2, which is scale-free: only centring matters.
    p -= p.mean()
    g -= g.mean()
    return float(np.sum(p * g) / np.sqrt(np.sum(p * p) * np.sum(g * g)))


def sim(saliency_map, ground_truth):
    """Similarity (histogram intersection) of MIT `similarity.m`. Higher is better, 1 for identical maps.

    Each map that is not all zero is min-max normalised to [0, 1] and then divided by its sum; the score is
    `sum(min(P, G))`. (pysaliency's SIM skips the min-max, so it differs for maps with a non-zero floor.)

    Returns:
        A float in [0, 1]. An all-zero map stays all zero (score 0.0, as MATLAB); a constant non-zero map,
        where MATLAB gives NaN, is taken as the uniform distribution.

    Raises:
        ValueError: shapes differ, or a map is not 2-D or not finite.
    """
    p, g = _maps("sim", saliency_map=saliency_map, ground_truth=ground_truth)
    p = _minmax_distribution(p) if p.any() else p
    g = _minmax_distribution(g) if g.any() else g
    return float(np.sum(np.minimum(p, g)))


def nss(saliency_map, fixation_map):
    """Normalized scanpath saliency of MIT `NSS.m`. Higher is better, 0 at chance.

    The prediction is z-scored with MATLAB's std (ddof = 1) and averaged over the fixated pixels; a pixel
    fixated several times counts once, because the fixation map is binary.

    Returns:
        A float; 0.0 for a constant prediction (MATLAB gives NaN; it carries no information).

    Raises:
        ValueError: shapes differ, a map is not 2-D or not finite, or fixation_map has no fixation.
    """
    p, f = _maps("nss", saliency_map=saliency_map, fixation_map=fixation_map)
    fixated = _fixated("nss", f)
    z = _zscore(p, ddof=1)
    if z is None:
        return 0.0
    return float(z[fixated].mean())


def _trapezoid(x, y):
    """Trapezoid rule along the last axis (MATLAB `trapz(x, y)`)."""
    return np.sum((x[..., 1:] - x[..., :-1]) * (y[..., 1:] + y[..., :-1]) / 2.0, axis=-1)


def auc_judd(saliency_map, fixation_map, jitter=True, seed=0):
    """AUC-Judd of MIT `AUC_Judd.m`. Higher is better, 0.5 at chance.

    Positives are the fixated pixels, negatives all the other pixels; the thresholds are the (min-max
    normalised) saliency values at the fixated pixels, and the ROC curve is closed at (0, 0) and (1, 1).

    Args:
        saliency_map: predicted map (H, W).
        fixation_map: binary fixation map (H, W); nonzero means fixated.
        jitter: add uniform noise in [0, `JUDD_JITTER_SCALE`) before normalising, to break ties among equal
            values, as MATLAB does by default.
        seed: seed of the jitter's numpy generator (the score is then reproducible).

    Returns:
        A float in [0, 1]. A constant prediction without jitter gives 0.5 (MATLAB gives NaN); with jitter it is
        ranked by the noise, as in MATLAB.

    Raises:
        ValueError: shapes differ, a map is not 2-D or not finite, fixation_map has no fixation, or every pixel
            is fixated (no negatives).
    """
    p, f = _maps("auc_judd", saliency_map=saliency_map, fixation_map=fixation_map)
    fixated = _fixated("auc_judd", f)
    n_fix, n_pix = int(fixated.sum()), p.size
    if n_fix == n_pix:
        raise ValueError(f"auc_judd: every pixel of fixation_map {f.shape} is fixated, so there are no "
                         f"negatives; the metric is undefined")
    if jitter:
        p += np.random.default_rng(seed).random(p.shape) * JUDD_JITTER_SCALE
    if _is_constant(p):
        return 0.5
    s = _minmax(p).ravel()
    thresholds = np.sort(s[fixated.ravel()])[::-1]
    # Number of pixels with a value >= each threshold.
    above = n_pix - np.searchsorted(np.sort(s), thresholds, side="left")
    i = np.arange(1, n_fix + 1)
    tp = np.concatenate([[0.0], i / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above - i) / (n_pix - n_fix), [1.0]])
    return float(_trapezoid(fp, tp))


def _auc_split_thresholds(positives, negatives, step_size):
    """Mean over splits of the ROC area with thresholds 0:step:max (AUC_Borji.m / AUC_shuffled.m).

    positives: (n_pos,) values at fixations; negatives: (n_neg, n_splits), one column per split.
    """
    # MATLAB `0:step:max(...)` per split. One grid up to the largest max of all splits is used for every split:
    # the extra thresholds above a split's max add points at (0, 0), which add no area.
    top = max(positives.max(), negatives.max())
    n_thresholds = int(np.floor(top / step_size + 1e-9)) + 1
    thresholds = (np.arange(n_thresholds) * step_size)[::-1]
    tp = np.array([np.mean(positives >= t) for t in thresholds])  # (K,)
    fp = np.stack([np.mean(negatives >= t, axis=0) for t in thresholds], axis=-1)  # (n_splits, K)
    n_splits = negatives.shape[1]
    zeros, ones = np.zeros((n_splits, 1)), np.ones((n_splits, 1))
    tp = np.concatenate([zeros, np.broadcast_to(tp, (n_splits, n_thresholds)), ones], axis=1)
    fp = np.concatenate([zeros, fp, ones], axis=1)
    return float(np.mean(_trapezoid(fp, tp)))


def _check_splits(metric, n_splits, step_size):
    if int(n_splits) != n_splits or n_splits < 1:
        raise ValueError(f"{metric}: n_splits must be a positive integer, got {n_splits!r}")
    if not step_size > 0:
        raise ValueError(f"{metric}: step_size must be > 0, got {step_size!r}")


def auc_borji(saliency_map, fixation_map, n_splits=100, step_size=0.1, seed=0):
    """AUC-Borji of MIT `AUC_Borji.m`. Higher is better, 0.5 at chance.

    Positives are the min-max normalised saliency values at the fixated pixels; each of `n_splits` splits draws
    as many negatives uniformly over all pixels, with replacement (fixated pixels may be drawn). Thresholds run
    from 0 to the split's maximum in steps of `step_size`; the score is the mean ROC area over the splits.

    Args:
        saliency_map: predicted map (H, W).
        fixation_map: binary fixation map (H, W); nonzero means fixated.
        n_splits: number of random sets of negatives.
        step_size: threshold step on the [0, 1] normalised map.
        seed: seed of the numpy generator drawing the negatives.

    Returns:
        A float in [0, 1]; 0.5 for a constant prediction (MATLAB gives NaN).

    Raises:
        ValueError: shapes differ, a map is not 2-D or not finite, fixation_map has no fixation, or bad
            n_splits / step_size.
    """
    _check_splits("auc_borji", n_splits, step_size)
    p, f = _maps("auc_borji", saliency_map=saliency_map, fixation_map=fixation_map)
    fixated = _fixated("auc_borji", f)
    if _is_constant(p):
        return 0.5
    s = _minmax(p).ravel()
    positives = s[fixated.ravel()]
    rng = np.random.default_rng(seed)
    negatives = s[rng.integers(0, s.size, size=(positives.size, int(n_splits)))]
    return _auc_split_thresholds(positives, negatives, step_size)


def sauc(saliency_map, fixation_map, other_map, n_splits=100, step_size=0.1, seed=0):
    """Shuffled AUC of MIT `AUC_shuffled.m`. Higher is better, 0.5 at chance; penalises a pure centre bias.

    As `auc_borji`, but the negatives of each split are min(N_fix, N_other) pixels drawn without replacement
    from the fixated pixels of `other_map` (the union of the fixations of other images, see
    `other_fixation_map`).

    Args:
        saliency_map: predicted map (H, W).
        fixation_map: binary fixation map (H, W) of this image; nonzero means fixated.
        other_map: binary fixation map (H, W) of other images' fixations; nonzero means fixated.
        n_splits: number of random sets of negatives.
        step_size: threshold step on the [0, 1] normalised map.
        seed: seed of the numpy generator drawing the negatives.

    Returns:
        A float in [0, 1]; 0.5 for a constant prediction (MATLAB gives NaN).

    Raises:
        ValueError: shapes differ, a map is not 2-D or not finite, fixation_map or other_map has no fixation, or
            bad n_splits / step_size.
    """
    _check_splits("sauc", n_splits, step_size)
    p, f, o = _maps("sauc", saliency_map=saliency_map, fixation_map=fixation_map, other_map=other_map)
    fixated = _fixated("sauc", f)
    if not (o > 0).any():
        raise ValueError("sauc: other_map has no fixations (no value > 0); build it from the fixations of other "
                         "images with other_fixation_map")
    if _is_constant(p):
        return 0.5
    s = _minmax(p).ravel()
    positives = s[fixated.ravel()]
    other = np.flatnonzero(o.ravel() > 0)
    n_neg = min(positives.size, other.size)
    rng = np.random.default_rng(seed)
    negatives = np.stack([s[rng.permutation(other)[:n_neg]] for _ in range(int(n_splits))], axis=1)
    return _auc_split_thresholds(positives, negatives, step_size)


def info_gain(saliency_map, fixation_map, baseline_map):
    """Information gain over a baseline, in bits per fixated pixel (MIT `InfoGain.m`). Higher is better.

    Both the prediction and the baseline (normally a centre-bias map) are min-max normalised and divided by
    their sums; the score is the mean over fixated pixels of `log2(eps + P) - log2(eps + B)`, eps =
    `MATLAB_EPS`. Each fixated pixel counts once.

    Returns:
        A float. A constant map (prediction or baseline), where MATLAB gives NaN, is taken as uniform.

    Raises:
        ValueError: shapes differ, a map is not 2-D or not finite, or fixation_map has no fixation.
    """
    p, f, b = _maps("info_gain", saliency_map=saliency_map, fixation_map=fixation_map, baseline_map=baseline_map)
    fixated = _fixated("info_gain", f)
    p = _minmax_distribution(p)
    b = _minmax_distribution(b)
    return float(np.mean(np.log2(MATLAB_EPS + p[fixated]) - np.log2(MATLAB_EPS + b[fixated])))


def fixation_map_from_points(points, shape):
    """Binary fixation map from fixation points.

    Args:
        points: (N, 2) integer array-like of 0-based (row, col); N may be 0. Points outside the image are
            IGNORED (not clipped: a clipped point would be a fixation on the border the viewer never made).
            Repeated points give one fixated pixel.
        shape: (H, W) of the map.

    Returns:
        float64 (H, W) map, 1.0 at fixated pixels and 0.0 elsewhere.

    Raises:
        ValueError: points is not (N, 2), or holds non-integer values.
    """
    points = np.asarray(points)
    if points.size == 0:
        points = points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"fixation_map_from_points: points must have shape (N, 2) of 0-based (row, col), "
                         f"got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.integer):
        if not np.all(np.isfinite(points)) or np.any(points != np.round(points)):
            raise ValueError("fixation_map_from_points: points must hold integer pixel indices (0-based row, col); "
                             "round the coordinates first")
        points = points.astype(np.int64)
    height, width = (int(n) for n in shape)
    rows, cols = points[:, 0], points[:, 1]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    out = np.zeros((height, width), np.float64)
    out[rows[inside], cols[inside]] = 1.0
    return out


def other_fixation_map(fixation_maps, index, n_other=SAUC_NUM_OTHER, seed=0):
    """The sAUC `other_map` of image `index`: the union of the fixation maps of `n_other` other images.

    The other images are drawn without replacement among all images but `index`, by a numpy generator seeded
    with `seed + index` so that each image gets its own reproducible draw. With fewer than `n_other` other
    images, all of them are used.

    Args:
        fixation_maps: sequence of binary fixation maps (H, W) of one shape (rescale the fixations of images of
            other sizes first); nonzero means fixated.
        index: position of the image being scored in `fixation_maps`.
        n_other: number of other images (Borji et al. use 10).
        seed: base seed.

    Returns:
        float64 (H, W) binary map.

    Raises:
        ValueError: fewer than two maps, index out of range, n_other < 1, or maps of different shapes.
    """
    n = len(fixation_maps)
    if n < 2:
        raise ValueError(f"other_fixation_map: needs at least 2 fixation maps (this image and another), got {n}")
    if not 0 <= index < n:
        raise ValueError(f"other_fixation_map: index must be in [0, {n}), got {index}")
    if n_other < 1:
        raise ValueError(f"other_fixation_map: n_other must be >= 1, got {n_other}")
    shape = np.shape(fixation_maps[index])
    candidates = [j for j in range(n) if j != index]
    rng = np.random.default_rng(seed + index)
    chosen = rng.choice(candidates, size=min(int(n_other), len(candidates)), replace=False)
    out = np.zeros(shape, np.float64)
    for j in chosen:
        m = np.asarray(fixation_maps[j])
        if m.shape != shape:
            raise ValueError(f"other_fixation_map: fixation_maps[{j}] {m.shape} != fixation_maps[{index}] {shape}; "
                             f"rescale the other images' fixations to this image's size first")
        out[m > 0] = 1.0
    return out
