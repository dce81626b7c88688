"""Tests of metrics/losses.py against float64 numpy references written here."""

import numpy as np
import pytest
import tensorflow as tf

from metrics import losses

B, H, W = 3, 6, 8


def _np_log_softmax(z):
    """float64 log-softmax over (H, W) of a (B, H, W, 1) array."""
    z = z.astype(np.float64)
    m = z.max(axis=(1, 2), keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=(1, 2), keepdims=True))


def _np_kl(t, log_q):
    """sum t log t - t log q per example, with 0 log 0 = 0."""
    t = t.astype(np.float64)
    tlogt = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
    return (tlogt - t * log_q).sum(axis=(1, 2, 3))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    target = rng.random((B, H, W, 1)) ** 3
    target[0, :2] = 0.0  # exact zeros in the target
    teacher = rng.random((B, H, W, 1))
    teacher[1, 3, :] = 0.0
    logits = 3.0 * rng.standard_normal((B, H, W, 1))
    return target.astype(np.float32), teacher.astype(np.float32), logits.astype(np.float32)


def test_sum_normalize(batch):
    target, _, _ = batch
    out = losses.sum_normalize(target).numpy()
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), np.ones(B), rtol=1e-6)
    np.testing.assert_allclose(out, target / target.sum(axis=(1, 2), keepdims=True), rtol=1e-6)
    # An all-zero map stays all zero instead of becoming NaN.
    assert np.all(losses.sum_normalize(np.zeros((1, 2, 2, 1), np.float32)).numpy() == 0.0)


def test_sum_normalize_is_per_channel():
    maps = np.stack([np.ones((4, 4)), 3.0 * np.arange(16).reshape(4, 4)], axis=-1)[None].astype(np.float32)
    out = losses.sum_normalize(maps).numpy()
    np.testing.assert_allclose(out.sum(axis=(1, 2)), [[1.0, 1.0]], rtol=1e-6)


def test_spatial_log_softmax_matches_numpy_and_is_stable(batch):
    _, _, logits = batch
    for t in (1.0, 2.5):
        np.testing.assert_allclose(losses.spatial_log_softmax(logits, t).numpy(), _np_log_softmax(logits / t),
                                   rtol=1e-5, atol=1e-5)
    huge = logits + 1e4  # exp would overflow without the logsumexp shift
    out = losses.spatial_log_softmax(huge).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, _np_log_softmax(logits), atol=2e-3)  # float32 resolution at 1e4 is ~1e-3


def test_kld_maps_matches_the_seed_formula(batch):
    target, teacher, _ = batch
    eps = losses.MAP_KLD_EPSILON
    t = target.astype(np.float64) / (eps + target.sum(axis=(1, 2, 3), keepdims=True))
    p = teacher.astype(np.float64) / (eps + teacher.sum(axis=(1, 2, 3), keepdims=True))
    expected = (t * np.log(eps + t / (eps + p))).sum(axis=(1, 2, 3))
    got = losses.kld_maps(target, teacher)
    assert got.shape == (B,) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.kld_maps(target, target).numpy(), np.zeros(B), atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kld_logits_matches_numpy(batch, temperature):
    target, _, logits = batch
    t = target.astype(np.float64) / target.sum(axis=(1, 2), keepdims=True)
    expected = _np_kl(t, _np_log_softmax(logits / temperature))
    got = losses.kld_logits(target, logits, temperature)
    assert got.shape == (B,) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got.numpy()))


def test_kld_logits_is_zero_when_prediction_equals_target(batch):
    target, _, _ = batch
    safe = target + 0.01  # log needs positive values
    logits = np.log(safe)
    np.testing.assert_allclose(losses.kld_logits(safe, logits).numpy(), np.zeros(B), atol=1e-6)
    # An all-zero target contributes nothing, without NaN.
    assert losses.kld_logits(np.zeros((1, H, W, 1)), np.zeros((1, H, W, 1))).numpy()[0] == 0.0


def test_kld_logits_gradient_is_softmax_minus_target(batch):
    target, _, logits = batch
    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.kld_logits(target, z))
    grad = tape.gradient(loss, z).numpy()
    softmax = np.exp(_np_log_softmax(logits))
    t = target.astype(np.float64) / target.sum(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(grad, softmax - t, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_distillation_kld_matches_numpy(batch, temperature):
    _, teacher, logits = batch
    eps = losses.TEACHER_LOG_EPSILON
    p = teacher.astype(np.float64) / teacher.sum(axis=(1, 2), keepdims=True)
    # softmax(log(p + eps) / T) = (p + eps) ** (1 / T), renormalised.
    powered = (p + eps) ** (1.0 / temperature)
    target = powered / powered.sum(axis=(1, 2), keepdims=True)
    expected = _np_kl(target, _np_log_softmax(logits / temperature))
    got = losses.distillation_kld(teacher, logits, temperature)
    assert got.shape == (B,) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_distillation_at_t1_equals_kld_logits_of_the_teacher_distribution(batch):
    _, teacher, logits = batch
    distribution = losses.teacher_distribution(teacher, 1.0)
    np.testing.assert_allclose(losses.distillation_kld(teacher, logits, 1.0).numpy(),
                               losses.kld_logits(distribution, logits).numpy(), rtol=1e-6, atol=1e-7)
    # ... and, the teacher's eps aside, KL from the teacher map itself.
    np.testing.assert_allclose(losses.distillation_kld(teacher, logits, 1.0).numpy(),
                               losses.kld_logits(teacher, logits).numpy(), rtol=1e-4, atol=1e-5)


def test_distillation_kld_zero_when_student_matches_teacher(batch):
    _, teacher, _ = batch
    # Logits log(p_T + eps), with p_T the sum-normalised teacher map, give the student the teacher's distribution.
    p = teacher / teacher.sum(axis=(1, 2), keepdims=True)
    student_logits = np.log(p + losses.TEACHER_LOG_EPSILON)
    for t in (1.0, 3.0):
        np.testing.assert_allclose(losses.distillation_kld(teacher, student_logits, t).numpy(), np.zeros(B),
                                   atol=1e-5)


def test_per_example_values_are_independent(batch):
    target, teacher, logits = batch
    for fn in (
        lambda a, b, z: losses.kld_logits(a, z),
        lambda a, b, z: losses.distillation_kld(b, z, 3.0),
        lambda a, b, z: losses.kld_maps(a, b),
        lambda a, b, z: losses.cc_maps(a, b),
    ):
        full = fn(target, teacher, logits).numpy()
        assert full.shape == (B,)
        singles = [fn(target[i:i + 1], teacher[i:i + 1], logits[i:i + 1]).numpy()[0] for i in range(B)]
        np.testing.assert_allclose(full, singles, rtol=1e-6)


def test_cc_maps_matches_numpy(batch):
    target, teacher, _ = batch
    expected = [np.corrcoef(target[i].ravel().astype(np.float64), teacher[i].ravel())[0, 1] for i in range(B)]
    np.testing.assert_allclose(losses.cc_maps(target, teacher).numpy(), expected, rtol=1e-5)
    # A constant map correlates 0, not NaN.
    for value in (1.0, 0.3):  # 0.3: on 6x8 its float32 mean is not exactly 0.3
        constant = np.full((1, H, W, 1), value, np.float32)
        assert losses.cc_maps(constant, teacher[:1]).numpy()[0] == 0.0
        assert losses.cc_maps(teacher[:1], constant).numpy()[0] == 0.0


def test_mixed_precision_inputs_give_float32(batch):
    target, teacher, logits = batch
    half = [tf.constant(x, tf.float16) for x in (target, teacher, logits)]
    for got, ref in (
        (losses.kld_logits(half[0], half[2]), losses.kld_logits(target, logits)),
        (losses.distillation_kld(half[1], half[2], 3.0), losses.distillation_kld(teacher, logits, 3.0)),
        (losses.kld_maps(half[0], half[1]), losses.kld_maps(target, teacher)),
        (losses.cc_maps(half[0], half[1]), losses.cc_maps(target, teacher)),
    ):
        assert got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=2e-2, atol=2e-3)  # float16 input rounding


def test_losses_work_inside_tf_function(batch):
    target, teacher, logits = batch

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)] * 3)
    def total(a, b, z):
        return losses.kld_logits(a, z) + losses.distillation_kld(b, z, 3.0)

    eager = losses.kld_logits(target, logits) + losses.distillation_kld(teacher, logits, 3.0)
    np.testing.assert_allclose(total(target, teacher, logits).numpy(), eager.numpy(), rtol=1e-6)
