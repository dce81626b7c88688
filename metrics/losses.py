"""TensorFlow training losses, in one place for training and evaluation code.

Maps are float tensors of shape (B, H, W, 1). Every function returns PER-EXAMPLE values of shape [B], so that
the caller reduces them over the global batch (`tf.nn.compute_average_loss` under `tf.distribute`). Inputs are
cast to float32 first, so the losses stay float32 under mixed precision.
"""

import tensorflow as tf

# Normalising a map by its sum: guards an all-zero map (it then stays all-zero and contributes no loss); far
# below any real map's sum, so it changes nothing else in float32.
SUM_EPSILON = 1e-12
# log(p_T + eps) for teacher "logits": 1e-8 is far below the ~1e-5 mass of one pixel of a 240x320 map, so it
# only matters where the teacher map is exactly 0, where it caps the log at about -18.
TEACHER_LOG_EPSILON = 1e-8
# MSI-Net's and the seed project's eps for KLD between two maps (float32 training, map outputs only).
MAP_KLD_EPSILON = 1e-7
# Logit given to padded pixels: exp() of it is exactly 0 in float32, so they get no probability mass, and
# 0 * it is 0, so they add nothing to a KL sum either.
MASKED_LOGIT = -1e9


def _as_float32(x):
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def sum_normalize(maps, eps=SUM_EPSILON):
    """Divide each map (per image and channel) by (eps + its spatial sum); shape (B, H, W, C)."""
    maps = _as_float32(maps)
    return maps / (tf.reduce_sum(maps, axis=[1, 2], keepdims=True) + eps)


def spatial_log_softmax(logits, temperature=1.0):
    """Log-softmax of `logits / temperature` over H*W, per image and channel; shape (B, H, W, C)."""
    logits = _as_float32(logits) / temperature
    return logits - tf.reduce_logsumexp(logits, axis=[1, 2], keepdims=True)


def mask_logits(logits, valid=None):
    """Logits with every pixel where `valid` is 0 set to `MASKED_LOGIT`, so that a spatial softmax over the
    result is a distribution over the valid (unpadded) pixels only. `valid` None returns `logits` unchanged."""
    logits = _as_float32(logits)
    if valid is None:
        return logits
    return tf.where(_as_float32(valid) > 0.5, logits, tf.constant(MASKED_LOGIT, tf.float32))


def kld_maps(target_map, predicted_map, eps=MAP_KLD_EPSILON):
    """KL(target || prediction) between two maps, per example, exactly as MSI-Net's and the seed's `kld`.

    For models that output maps rather than logits: each map is divided by (eps + its spatial sum), then
    `sum(t * log(eps + t / (eps + p)))`. The eps floors the prediction, so this is not an exact KL.

    Args:
        target_map: reference maps (B, H, W, C), non-negative.
        predicted_map: predicted maps (B, H, W, C), non-negative.
        eps: the regulariser of the normalisation, the quotient and the log.

    Returns:
        float32 tensor [B].
    """
    t = sum_normalize(target_map, eps)
    p = sum_normalize(predicted_map, eps)
    return tf.reduce_sum(t * tf.math.log(eps + t / (eps + p)), axis=[1, 2, 3])


def kld_logits(target_map, logits, temperature=1.0, eps=SUM_EPSILON, valid=None):
    """KL(target || softmax(logits / T)) with the target sum-normalised inside, per example.

    The prediction side is an exact log-softmax (no eps); `0 * log 0` counts as 0. For T = 1 its gradient with
    respect to the logits is `softmax(logits) - target`. With `valid` (B, H, W, 1), both distributions live on
    the valid pixels only (padding of a letterboxed image).

    Args:
        target_map: non-negative target maps (B, H, W, C), e.g. the human saliency map.
        logits: student logits (B, H, W, C).
        temperature: softmax temperature T.
        eps: guards the sum normalisation of an all-zero target (which then gives a loss of 0).
        valid: optional mask (B, H, W, 1) of the pixels that belong to the image.

    Returns:
        float32 tensor [B].
    """
    target_map = _as_float32(target_map)
    if valid is not None:
        target_map = target_map * _as_float32(valid)
    t = sum_normalize(target_map, eps)
    log_q = spatial_log_softmax(mask_logits(logits, valid), temperature)
    return tf.reduce_sum(tf.math.xlogy(t, t) - t * log_q, axis=[1, 2, 3])


def teacher_distribution(teacher_map, temperature=1.0, eps=TEACHER_LOG_EPSILON, valid=None):
    """softmax(log(p_T + eps) / T) over H*W, i.e. p_T ** (1/T) renormalised, with p_T the sum-normalised map
    (over the `valid` pixels only when a mask is given)."""
    teacher_map = _as_float32(teacher_map)
    if valid is not None:
        teacher_map = teacher_map * _as_float32(valid)
    log_p = tf.math.log(sum_normalize(teacher_map) + eps)
    return tf.exp(spatial_log_softmax(mask_logits(log_p, valid), temperature))


def distillation_kld(teacher_map, student_logits, temperature=3.0, eps=TEACHER_LOG_EPSILON, valid=None):
    """KL(softmax(log(p_T + eps) / T) || softmax(student_logits / T)), per example.

    The caller multiplies by T**2 (Hinton et al., 2015) and the term's weight. At T = 1 this equals
    `kld_logits(p_T + eps, student_logits)` up to the eps. `valid` restricts both sides to the image's pixels.
    """
    target = teacher_distribution(teacher_map, temperature, eps, valid)
    log_q = spatial_log_softmax(mask_logits(student_logits, valid), temperature)
    return tf.reduce_sum(tf.math.xlogy(target, target) - target * log_q, axis=[1, 2, 3])


def cc_maps(map_a, map_b, valid=None):
    """Pearson correlation coefficient between two maps, per example (0 where either map is constant).

    With `valid` (B, H, W, 1), over the valid pixels only.
    """
    a = _as_float32(map_a)
    b = _as_float32(map_b)
    axes = [1, 2, 3]
    w = tf.ones_like(a) if valid is None else tf.cast(_as_float32(valid) > 0.5, tf.float32)
    inside = w > 0

    def is_constant(x):
        # Tested by max == min: after subtracting its float32 mean a constant map need not be exactly zero.
        high = tf.reduce_max(tf.where(inside, x, -float("inf")), axes)
        low = tf.reduce_min(tf.where(inside, x, float("inf")), axes)
        return high == low

    constant = tf.logical_or(is_constant(a), is_constant(b))
    count = tf.reduce_sum(w, axis=axes, keepdims=True)
    a = (a - tf.math.divide_no_nan(tf.reduce_sum(a * w, axis=axes, keepdims=True), count)) * w
    b = (b - tf.math.divide_no_nan(tf.reduce_sum(b * w, axis=axes, keepdims=True), count)) * w
    num = tf.reduce_sum(a * b, axis=axes)
    den = tf.sqrt(tf.reduce_sum(a * a, axis=axes) * tf.reduce_sum(b * b, axis=axes))
    return tf.where(constant, tf.zeros_like(num), tf.math.divide_no_nan(num, den))
