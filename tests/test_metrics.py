"""Tests of metrics/saliency.py: hand-computed cases, edge cases, invariances and a pysaliency cross-check."""

import importlib.util
import math
import os

import numpy as np
import pytest

from metrics import saliency

# pysaliency's package __init__ imports torch (through pysaliency.models), but pysaliency/metrics.py itself only
# needs numpy. So the cross-check loads that one file by path: `pip install --no-deps pysaliency==0.2.22` (a small
# sdist whose Cython extension builds with any C compiler) is all it needs; torch, numba etc. are not required.
PYSALIENCY_HINT = "pysaliency not installed; run `pip install --no-deps pysaliency==0.2.22` to enable the cross-check"


def _load_pysaliency_metrics():
    spec = importlib.util.find_spec("pysaliency")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "metrics.py")
    module_spec = importlib.util.spec_from_file_location("_pysaliency_metrics", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pysal():
    module = _load_pysaliency_metrics()
    if module is None:
        pytest.skip(PYSALIENCY_HINT)
    return module


@pytest.fixture(scope="module")
def random_case():
    """A random smooth-ish prediction, ground truth and fixations on a 32x48 image."""
    rng = np.random.default_rng(123)
    pred = rng.random((32, 48)) ** 2
    gt = rng.random((32, 48)) ** 3
    points = np.stack([rng.integers(0, 32, 40), rng.integers(0, 48, 40)], axis=1)
    points = np.concatenate([points, points[:5]])  # 5 duplicated fixations
    return pred, gt, points


# --------------------------------------------------------------------------------------------------------------
# Hand-computed values


def test_kld_hand_computed():
    # G = [1, 3] -> [0.25, 0.75]; P = [1, 1] -> [0.5, 0.5]; KL = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5).
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert saliency.kld(np.array([[1.0, 1.0]]), np.array([[1.0, 3.0]])) == pytest.approx(expected, rel=1e-12)
    # A single-pixel ground truth against a uniform 2x2 prediction: ln(1 / 0.25) = ln 4.
    gt = np.array([[0.0, 0.0], [0.0, 5.0]])
    assert saliency.kld(np.ones((2, 2)), gt) == pytest.approx(math.log(4.0), rel=1e-12)


def test_kld_identical_maps_is_zero():
    m = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    assert saliency.kld(m, m) == pytest.approx(0.0, abs=1e-12)


def test_cc_hand_computed():
    # p - mean = [-1.5, -0.5, 0.5, 1.5], g - mean = [-1.75, -0.75, 0.25, 2.25]:
    # sum(pg) = 6.5, sum(p^2) = 5, sum(g^2) = 8.75 -> 6.5 / sqrt(43.75).
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = np.array([[1.0, 2.0], [3.0, 5.0]])
    assert saliency.cc(p, g) == pytest.approx(6.5 / math.sqrt(43.75), rel=1e-12)
    assert saliency.cc(p, -p) == pytest.approx(-1.0, rel=1e-12)
    assert saliency.cc(p, p) == pytest.approx(1.0, rel=1e-12)


def test_sim_hand_computed():
    # P min-max -> [0, 1/3, 2/3, 1] / 2 = [0, 1/6, 1/3, 1/2]; G -> [1/2, 1/3, 1/6, 0]; sum of minima = 1/3.
    p = np.array([[0.0, 1.0], [2.0, 3.0]])
    g = np.array([[3.0, 2.0], [1.0, 0.0]])
    assert saliency.sim(p, g) == pytest.approx(1.0 / 3.0, rel=1e-12)
    assert saliency.sim(p, p) == pytest.approx(1.0, rel=1e-12)


def test_sim_min_max_removes_a_floor():
    # MIT's min-max: [1, 2, 2, 1] -> [0, 1, 1, 0] / 2 and [1, 1, 1, 2] -> [0, 0, 0, 1]: no overlap at all.
    # (Without min-max, as in pysaliency, the overlap would be 5/7.)
    assert saliency.sim(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([[1.0, 1.0], [1.0, 2.0]])) == 0.0


def test_nss_hand_computed_with_matlab_std():
    # mean 1.5, MATLAB std = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5/3).
    p = np.array([[0.0, 1.0], [2.0, 3.0]])
    std = math.sqrt(5.0 / 3.0)
    assert saliency.nss(p, np.array([[0.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.5 / std, rel=1e-12)
    assert saliency.nss(p, np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.0, abs=1e-12)


def test_nss_duplicate_fixations_count_once():
    p = np.array([[0.0, 1.0], [2.0, 3.0]])
    fixations = saliency.fixation_map_from_points([[1, 1], [1, 1], [1, 1], [0, 1]], (2, 2))
    # Pixels 3 and 1: z = 1.5 / std and -0.5 / std, averaged once each.
    assert saliency.nss(p, fixations) == pytest.approx(0.5 / math.sqrt(5.0 / 3.0), rel=1e-12)


def test_auc_judd_hand_computed():
    # Min-max [0.1, 0.4, 0.3, 0.9] -> [0, 0.375, 0.25, 1]; fixated: indices 1 and 2 (values 0.375, 0.25).
    # thr 0.375: 2 pixels above, tp 1/2, fp (2-1)/2; thr 0.25: 3 above, tp 1, fp (3-2)/2.
    # ROC (0,0) (.5,.5) (.5,1) (1,1): area 0.125 + 0 + 0.5 = 0.625.
    p = np.array([[0.1, 0.4, 0.3, 0.9]])
    f = np.array([[0.0, 1.0, 1.0, 0.0]])
    assert saliency.auc_judd(p, f, jitter=False) == pytest.approx(0.625, rel=1e-12)
    # A single fixation on 0.375: 2 pixels above, tp 1, fp 1/3: (0,0) (1/3,1) (1,1) -> 1/6 + 2/3.
    single = np.array([[0.0, 1.0, 0.0, 0.0]])
    assert saliency.auc_judd(p, single, jitter=False) == pytest.approx(5.0 / 6.0, rel=1e-12)
    # The jitter (< 1e-7) cannot reorder values 0.1 apart.
    assert saliency.auc_judd(p, f, jitter=True, seed=3) == pytest.approx(0.625, abs=1e-6)


def test_auc_judd_perfect_prediction():
    p = np.array([[0.0, 0.2, 0.9], [1.0, 0.1, 0.3]])
    f = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert saliency.auc_judd(p, f, jitter=False) == pytest.approx(1.0, rel=1e-12)


def _auc_judd_matlab_loop(s, f):
    """Line-by-line port of AUC_Judd.m (jitter off) with an explicit loop, as an independent reference."""
    s = (s - s.min()) / (s.max() - s.min())
    s, f = s.ravel(), f.ravel()
    sth = s[f > 0]
    n_fix, n_pix = len(sth), len(s)
    thresholds = sorted(sth, reverse=True)
    tp, fp = [0.0], [0.0]
    for i, t in enumerate(thresholds, start=1):
        above = int(np.sum(s >= t))
        tp.append(i / n_fix)
        fp.append((above - i) / (n_pix - n_fix))
    tp.append(1.0)
    fp.append(1.0)
    return sum((fp[k + 1] - fp[k]) * (tp[k + 1] + tp[k]) / 2 for k in range(len(tp) - 1))


def test_auc_judd_matches_a_loop_port_of_matlab(random_case):
    pred, _, points = random_case
    f = saliency.fixation_map_from_points(points, pred.shape)
    quantised = np.round(pred * 8) / 8  # many ties
    for p in (pred, quantised):
        assert saliency.auc_judd(p, f, jitter=False) == pytest.approx(_auc_judd_matlab_loop(p, f), rel=1e-12)


def test_sauc_hand_computed():
    # Already in [0, 1]. Positives (fixated) {1, 0.55}; other images' fixations {0.25, 0.85}, exactly N_fix of
    # them, so every split uses both. Thresholds 1, 0.9, ..., 0: ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1),
    # area 0.5 * 0.5 + 0.5 * 1 = 0.75 (no value sits on a threshold).
    p = np.array([[0.0, 0.25, 0.55, 0.85, 1.0]])
    f = np.array([[0.0, 0.0, 1.0, 0.0, 1.0]])
    other = np.array([[0.0, 1.0, 0.0, 1.0, 0.0]])
    assert saliency.sauc(p, f, other, n_splits=7, seed=1) == pytest.approx(0.75, rel=1e-12)
    # A finer step changes nothing here (no value lies between two thresholds of both sets).
    assert saliency.sauc(p, f, other, step_size=0.05) == pytest.approx(0.75, rel=1e-12)
    # Step 0.5, thresholds 1, 0.5, 0: (0,0) (0,.5) (.5,1) (1,1) (1,1): area 0.375 + 0.5 = 0.875.
    assert saliency.sauc(p, f, other, step_size=0.5) == pytest.approx(0.875, rel=1e-12)


def test_auc_borji_statistical_hand_case():
    # Map [0, 0, 0, 1] with the fixation on the 1. A negative drawn on a 0 gives a perfect ROC (area 1), one drawn
    # on the fixated pixel (probability 1/4) gives the diagonal (0.5): expected score 1 - 0.5 / 4 = 0.875.
    p = np.array([[0.0, 0.0, 0.0, 1.0]])
    f = np.array([[0.0, 0.0, 0.0, 1.0]])
    score = saliency.auc_borji(p, f, n_splits=4000, seed=0)
    assert score == pytest.approx(0.875, abs=0.015)  # ~4.5 standard deviations


def _auc_split_matlab_loop(positives, negatives, step):
    """Per-split loop port of the threshold loop of AUC_Borji.m / AUC_shuffled.m."""
    aucs = []
    for s in range(negatives.shape[1]):
        cur = negatives[:, s]
        top = max(positives.max(), cur.max())
        thresholds = [k * step for k in range(int(np.floor(top / step + 1e-9)) + 1)][::-1]
        tp = [0.0] + [np.mean(positives >= t) for t in thresholds] + [1.0]
        fp = [0.0] + [np.mean(cur >= t) for t in thresholds] + [1.0]
        aucs.append(sum((fp[k + 1] - fp[k]) * (tp[k + 1] + tp[k]) / 2 for k in range(len(tp) - 1)))
    return np.mean(aucs)


def test_auc_borji_matches_a_loop_port_of_matlab(random_case):
    pred, _, points = random_case
    f = saliency.fixation_map_from_points(points, pred.shape)
    s = ((pred - pred.min()) / (pred.max() - pred.min())).ravel()
    positives = s[f.ravel() > 0]
    # The documented draw: N_fix x n_splits pixel indices, uniform with replacement, from default_rng(seed).
    draws = np.random.default_rng(5).integers(0, s.size, size=(positives.size, 20))
    expected = _auc_split_matlab_loop(positives, s[draws], 0.1)
    assert saliency.auc_borji(pred, f, n_splits=20, seed=5) == pytest.approx(expected, rel=1e-12)


def test_info_gain_hand_computed():
    # P min-max and sum: [[0, .25], [.25, .5]]; constant baseline -> uniform 0.25.
    # Fixation at (1, 1): log2(.5 / .25) = 1 bit; at (0, 1): 0 bits.
    p = np.array([[0.0, 1.0], [1.0, 2.0]])
    baseline = np.full((2, 2), 7.0)
    assert saliency.info_gain(p, np.array([[0.0, 0.0], [0.0, 1.0]]), baseline) == pytest.approx(1.0, abs=1e-12)
    assert saliency.info_gain(p, np.array([[0.0, 1.0], [0.0, 1.0]]), baseline) == pytest.approx(0.5, abs=1e-12)
    assert saliency.info_gain(p, np.array([[0.0, 1.0], [0.0, 1.0]]), p) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Degenerate inputs


def test_constant_prediction_gives_documented_values():
    const = np.full((3, 4), 0.7)
    gt = np.arange(12, dtype=float).reshape(3, 4)
    f = np.zeros((3, 4))
    f[1, 2] = f[2, 3] = 1.0
    other = np.zeros((3, 4))
    other[0, 0] = other[0, 1] = 1.0
    assert saliency.cc(const, gt) == 0.0
    assert saliency.cc(gt, const) == 0.0
    assert saliency.nss(const, f) == 0.0
    assert saliency.auc_judd(const, f, jitter=False) == 0.5
    assert saliency.auc_borji(const, f) == 0.5
    assert saliency.sauc(const, f, other) == 0.5
    # KL(G || uniform) = sum g ln(g / (1/12)), g = gt / 66.
    g = gt.ravel() / 66.0
    expected = sum(v * math.log(v * 12.0) for v in g if v > 0)
    assert saliency.kld(const, gt) == pytest.approx(expected, rel=1e-12)
    # A constant non-zero map is taken as uniform: SIM = sum(min(1/12, g_minmax_normalised)).
    g_mm = gt.ravel() / 66.0  # gt already starts at 0, so min-max then sum-normalise = gt / 66
    assert saliency.sim(const, gt) == pytest.approx(np.minimum(1.0 / 12.0, g_mm).sum(), rel=1e-12)
    # Information gain of a uniform map over a uniform baseline is 0.
    assert saliency.info_gain(const, f, np.ones((3, 4))) == pytest.approx(0.0, abs=1e-12)


def test_constant_prediction_with_jitter_is_finite_and_seeded():
    const = np.zeros((8, 8))
    f = np.zeros((8, 8))
    f[2, 3] = f[5, 5] = 1.0
    a = saliency.auc_judd(const, f, seed=1)
    assert 0.0 <= a <= 1.0
    assert a == saliency.auc_judd(const, f, seed=1)


def test_all_zero_maps():
    gt = np.array([[1.0, 3.0]])
    zero = np.zeros((1, 2))
    # All-zero prediction: MATLAB leaves it unnormalised, KL = sum g ln(eps + g / eps): large but finite.
    expected = 0.25 * math.log(saliency.MATLAB_EPS + 0.25 / saliency.MATLAB_EPS) + 0.75 * math.log(
        saliency.MATLAB_EPS + 0.75 / saliency.MATLAB_EPS)
    assert saliency.kld(zero, gt) == pytest.approx(expected, rel=1e-12)
    assert saliency.kld(zero, gt) > 30.0
    assert saliency.kld(gt, zero) == 0.0
    assert saliency.sim(zero, gt) == 0.0
    assert saliency.sim(gt, zero) == 0.0
    assert saliency.cc(zero, gt) == 0.0


@pytest.mark.parametrize("metric", ["nss", "auc_judd", "auc_borji", "info_gain", "sauc"])
def test_no_fixations_raises(metric):
    p = np.random.default_rng(0).random((4, 5))
    empty = np.zeros((4, 5))
    extra = {"info_gain": (np.ones((4, 5)),), "sauc": (np.eye(4, 5),)}.get(metric, ())
    with pytest.raises(ValueError, match=f"{metric}: fixation_map has no fixations"):
        getattr(saliency, metric)(p, empty, *extra)


def test_sauc_empty_other_map_raises():
    p = np.random.default_rng(0).random((4, 5))
    with pytest.raises(ValueError, match="sauc: other_map has no fixations"):
        saliency.sauc(p, np.eye(4, 5), np.zeros((4, 5)))


def test_auc_judd_all_pixels_fixated_raises():
    with pytest.raises(ValueError, match="every pixel"):
        saliency.auc_judd(np.random.default_rng(0).random((2, 2)), np.ones((2, 2)))


def test_kld_negative_values_raise():
    with pytest.raises(ValueError, match=r"kld: saliency_map has negative values \(min -1"):
        saliency.kld(np.array([[-1.0, 2.0]]), np.array([[1.0, 1.0]]))


def test_nan_input_raises():
    with pytest.raises(ValueError, match="cc: saliency_map contains NaN"):
        saliency.cc(np.array([[np.nan, 1.0]]), np.array([[1.0, 2.0]]))


def test_bad_split_arguments_raise():
    p, f = np.random.default_rng(0).random((3, 3)), np.eye(3)
    with pytest.raises(ValueError, match="auc_borji: step_size must be > 0, got 0"):
        saliency.auc_borji(p, f, step_size=0)
    with pytest.raises(ValueError, match="sauc: n_splits must be a positive integer, got 0"):
        saliency.sauc(p, f, f, n_splits=0)


# --------------------------------------------------------------------------------------------------------------
# Shapes and inputs


def test_shape_mismatch_message_names_metric_and_both_shapes():
    expected = ("kld: saliency_map (240, 320) != ground_truth (480, 640); "
                "resize the prediction to the ground-truth size first")
    with pytest.raises(ValueError) as info:
        saliency.kld(np.ones((240, 320)), np.ones((480, 640)))
    assert str(info.value) == expected


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a, b: saliency.cc(a, b), r"cc: saliency_map \(4, 6\) != ground_truth \(6, 4\)"),
        (lambda a, b: saliency.sim(a, b), r"sim: saliency_map \(4, 6\) != ground_truth \(6, 4\)"),
        (lambda a, b: saliency.nss(a, b), r"nss: saliency_map \(4, 6\) != fixation_map \(6, 4\)"),
        (lambda a, b: saliency.auc_judd(a, b), r"auc_judd: saliency_map \(4, 6\) != fixation_map \(6, 4\)"),
        (lambda a, b: saliency.auc_borji(a, b), r"auc_borji: saliency_map \(4, 6\) != fixation_map \(6, 4\)"),
        (lambda a, b: saliency.sauc(a, a, b), r"sauc: saliency_map \(4, 6\) != other_map \(6, 4\)"),
        (lambda a, b: saliency.info_gain(a, a, b), r"info_gain: saliency_map \(4, 6\) != baseline_map \(6, 4\)"),
    ],
)
def test_shape_mismatch_every_metric(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.ones((4, 6)), np.ones((6, 4)))


def test_non_2d_input_raises():
    with pytest.raises(ValueError, match=r"nss: saliency_map must be a 2-D \(H, W\) map, got shape \(4, 4, 1\)"):
        saliency.nss(np.ones((4, 4, 1)), np.eye(4))


def test_inputs_are_not_modified(random_case):
    pred, gt, points = random_case
    f = saliency.fixation_map_from_points(points, pred.shape)
    other = saliency.fixation_map_from_points(points[::-1] + 1, pred.shape)
    arrays = [pred, gt, f, other]
    before = [a.copy() for a in arrays]
    saliency.kld(pred, gt)
    saliency.cc(pred, gt)
    saliency.sim(pred, gt)
    saliency.nss(pred, f)
    saliency.auc_judd(pred, f)
    saliency.auc_borji(pred, f, n_splits=3)
    saliency.sauc(pred, f, other, n_splits=3)
    saliency.info_gain(pred, f, gt)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_integer_maps_are_accepted():
    p = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    assert saliency.cc(p, p) == pytest.approx(1.0)
    assert saliency.kld(p, p) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Invariances and seeds


def test_distribution_metrics_invariant_to_scaling_the_prediction(random_case):
    pred, gt, _ = random_case
    for metric in (saliency.kld, saliency.cc, saliency.sim):
        assert metric(pred * 37.5, gt) == pytest.approx(metric(pred, gt), rel=1e-10)
    # CC and SIM (min-max) are also invariant to a shift; KLD is not.
    for metric in (saliency.cc, saliency.sim):
        assert metric(pred + 3.0, gt) == pytest.approx(metric(pred, gt), rel=1e-10)


def test_auc_judd_invariant_to_monotonic_transforms(random_case):
    pred, _, points = random_case
    f = saliency.fixation_map_from_points(points, pred.shape)
    base = saliency.auc_judd(pred, f, jitter=False)
    for transformed in (np.exp(5 * pred), np.sqrt(pred), 2.0 * pred - 1.0, np.log1p(pred) ** 3):
        assert saliency.auc_judd(transformed, f, jitter=False) == pytest.approx(base, rel=1e-12)


def test_auc_borji_and_sauc_invariant_to_affine_transforms(random_case):
    # Their thresholds sit on a fixed 0.1 grid of the min-max normalised map, so only increasing AFFINE maps
    # (which min-max undoes) leave them unchanged; a non-linear monotonic map moves values across the grid.
    pred, _, points = random_case
    f = saliency.fixation_map_from_points(points, pred.shape)
    other = saliency.fixation_map_from_points(np.roll(points, 7, axis=1), pred.shape)
    transformed = 4.0 * pred + 2.0
    assert saliency.auc_borji(transformed, f, n_splits=10) == pytest.approx(
        saliency.auc_borji(pred, f, n_splits=10), rel=1e-9)
    assert saliency.sauc(transformed, f, other, n_splits=10) == pytest.approx(
        saliency.sauc(pred, f, other, n_splits=10), rel=1e-9)


def test_auc_seeds_are_reproducible(random_case):
    pred, _, points = random_case
    f = saliency.fixation_map_from_points(points, pred.shape)
    other = (np.random.default_rng(2).random(pred.shape) < 0.3).astype(float)  # more negatives than N_fix
    for call in (
        lambda seed: saliency.auc_judd(np.round(pred, 1), f, seed=seed),
        lambda seed: saliency.auc_borji(pred, f, n_splits=5, seed=seed),
        lambda seed: saliency.sauc(pred, f, other, n_splits=5, seed=seed),
    ):
        assert call(11) == call(11)
        assert call(11) != call(12)


def test_auc_chance_and_good_predictions():
    rng = np.random.default_rng(7)
    f = np.zeros((40, 40))
    f[15:25, 15:25] = rng.random((10, 10)) < 0.3
    centre = np.exp(-((np.arange(40)[:, None] - 20) ** 2 + (np.arange(40)[None, :] - 20) ** 2) / 50.0)
    assert saliency.auc_judd(centre, f) > 0.9
    assert saliency.auc_borji(centre, f, n_splits=20) > 0.85
    noise = rng.random((40, 40))
    assert abs(saliency.auc_judd(noise, f) - 0.5) < 0.15


# --------------------------------------------------------------------------------------------------------------
# Helpers


def test_fixation_map_from_points():
    points = np.array([[0, 0], [2, 3], [2, 3], [-1, 0], [0, 4], [3, 0], [1, -2]])
    out = saliency.fixation_map_from_points(points, (3, 4))
    expected = np.zeros((3, 4))
    expected[0, 0] = expected[2, 3] = 1.0  # duplicates once; the four out-of-range points are ignored
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(saliency.fixation_map_from_points(np.zeros((0, 2), int), (2, 2)), np.zeros((2, 2)))
    np.testing.assert_array_equal(saliency.fixation_map_from_points(np.array([[1.0, 1.0]]), (2, 2)),
                                  [[0.0, 0.0], [0.0, 1.0]])


def test_fixation_map_from_points_rejects_bad_input():
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\).*got shape \(3,\)"):
        saliency.fixation_map_from_points(np.array([1, 2, 3]), (4, 4))
    with pytest.raises(ValueError, match="integer pixel indices"):
        saliency.fixation_map_from_points(np.array([[1.5, 2.0]]), (4, 4))


def test_other_fixation_map():
    maps = [np.zeros((2, 6)) for _ in range(6)]
    for j, m in enumerate(maps):
        m[j % 2, j] = 1.0  # image j has its one fixation in column j
    out = saliency.other_fixation_map(maps, index=2, n_other=3, seed=4)
    assert out[:, 2].sum() == 0  # never its own fixations
    assert out.sum() == 3  # three distinct other images
    np.testing.assert_array_equal(out, saliency.other_fixation_map(maps, index=2, n_other=3, seed=4))
    everything = saliency.other_fixation_map(maps, index=0, n_other=10)  # fewer than 10 others: all of them
    np.testing.assert_array_equal(everything, sum(maps[1:]))


def test_other_fixation_map_errors():
    with pytest.raises(ValueError, match="at least 2 fixation maps"):
        saliency.other_fixation_map([np.eye(2)], 0)
    with pytest.raises(ValueError, match=r"fixation_maps\[1\] \(3, 3\) != fixation_maps\[0\] \(2, 2\)"):
        saliency.other_fixation_map([np.eye(2), np.eye(3)], 0)


# --------------------------------------------------------------------------------------------------------------
# Cross-check against pysaliency 0.2.22 (`pysaliency/metrics.py`)


def test_cc_matches_pysaliency(pysal, random_case):
    pred, gt, _ = random_case
    assert saliency.cc(pred, gt) == pytest.approx(pysal.CC(pred, gt), rel=1e-10)


def test_kld_matches_pysaliency_mit_kldiv(pysal, random_case):
    pred, gt, _ = random_case
    sparse = gt * (gt > 0.3)  # zeros in the ground truth
    for g in (gt, sparse):
        # MIT_KLDiv(map_1, map_2) treats map_2 as the empirical map.
        with np.errstate(divide="ignore"):  # pysaliency takes log(0) of the zeros, then multiplies by 0
            expected = pysal.MIT_KLDiv(pred, g)
        assert saliency.kld(pred, g) == pytest.approx(expected, rel=1e-10)


def test_nss_matches_pysaliency_up_to_ddof_and_duplicates(pysal, random_case):
    pred, _, points = random_case
    unique = np.unique(points, axis=0)  # MIT counts each fixated pixel once
    per_fixation = pysal.NSS(pred, xs=unique[:, 1], ys=unique[:, 0])  # np.std, ddof = 0
    n = pred.size
    expected = per_fixation.mean() * math.sqrt((n - 1) / n)
    assert saliency.nss(pred, saliency.fixation_map_from_points(points, pred.shape)) == pytest.approx(
        expected, rel=1e-10)


def test_sim_matches_pysaliency_after_min_max(pysal, random_case):
    pred, gt, _ = random_case
    floor_pred = pred + 0.5  # a non-zero floor: the two definitions differ

    def minmax(m):
        return (m - m.min()) / (m.max() - m.min())

    assert saliency.sim(floor_pred, gt) == pytest.approx(pysal.SIM(minmax(floor_pred), minmax(gt)), rel=1e-10)
    assert abs(saliency.sim(floor_pred, gt) - pysal.SIM(floor_pred, gt)) > 1e-3
