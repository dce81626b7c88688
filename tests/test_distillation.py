"""Distiller: losses against a numpy reference, training and evaluation steps, options, errors, and parity of a
MirroredStrategy step over 2 logical CPUs with a one-device step (in a subprocess: the CPU must be split before
TensorFlow initialises)."""

import contextlib
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from student.distillation import Distiller, build_optimizer, make_strategy
from student.model import build_student

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiworker_worker.py")
PARITY_TIMEOUT_S = 240


# ---------------------------------------------------------------- numpy reference (float64, written from the spec)
def _log_softmax_hw(z):
    z = z.reshape(z.shape[0], -1).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _density(m):
    m = m.reshape(m.shape[0], -1).astype(np.float64)
    return m / m.sum(axis=1, keepdims=True)


def np_kld(target, logits):
    """KL(sum-normalised target || softmax(logits)) per example; targets here are strictly positive."""
    p = _density(target)
    return (p * (np.log(p) - _log_softmax_hw(logits))).sum(axis=1)


def np_distillation_kld(teacher, logits, t):
    """KL(softmax(log p_T / T) || softmax(logits / T)) per example (p_T > 0, so the eps is immaterial)."""
    log_q_t = _log_softmax_hw(np.log(_density(teacher)) / t)
    return (np.exp(log_q_t) * (log_q_t - _log_softmax_hw(logits / t))).sum(axis=1)


def np_cc(a, b):
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def batch():
    """Four 32x32 images (0..255) with strictly positive human and teacher maps."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 255.0, (4, 32, 32, 3)).astype("float32")
    maps = {key: rng.uniform(0.05, 1.0, (4, 32, 32, 1)).astype("float32") for key in ("saliency", "teacher")}
    return images, maps


@pytest.fixture(scope="module")
def student_a():
    return build_student("A", seed=0)


@pytest.fixture(scope="module")
def distiller_b():
    """Variant B with non-default T, kd_weight and kd_into_saliency, so each factor is checked by the reference.

    Eager steps: tracing ResNet18's training graph costs ~15 s on 2 cores; the graph path (tf.function, under
    one device and MirroredStrategy) is exercised by the parity test, and with XLA by the jit test.
    """
    distiller = Distiller(build_student("B", seed=0), variant="B", temperature=2.0, kd_weight=0.5,
                          kd_into_saliency=0.25)
    distiller.compile(build_optimizer(1e-3), run_eagerly=True)
    return distiller


def _weights(model):
    return {w.path: w.numpy().copy() for w in model.weights}


def _tiny_student():
    """A two-conv stand-in with the student's interface (dict of logits), for the slow-to-compile XLA test."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, {"saliency": keras.layers.Conv2D(1, 3, padding="same", name="saliency")(x)})


# ---------------------------------------------------------------- losses and metrics
def test_terms_by_hand_for_perfect_and_uniform_logits(distiller_b, batch):
    _, maps = batch
    human = tf.constant(maps["saliency"])
    teacher = tf.constant(maps["teacher"])
    # Logits equal to the log-densities: each head's own KL term is 0 and CC is 1, at any temperature.
    perfect = {"saliency": tf.math.log(human), "teacher": tf.math.log(teacher)}
    terms = distiller_b.per_example_terms({"saliency": human, "teacher": teacher}, perfect)
    for name in ("kld", "teacher_kld"):
        np.testing.assert_allclose(terms[name].numpy(), 0.0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(terms["cc"].numpy(), 1.0, atol=1e-5)
    # Only the kd_into_saliency term is left: 0.25 * T^2 * KL(teacher at T || human-map logits at T).
    into_head1 = np_distillation_kld(maps["teacher"], np.log(maps["saliency"]), 2.0)
    np.testing.assert_allclose(terms["loss"].numpy(), 0.25 * 4.0 * into_head1, rtol=1e-4)
    # Uniform (zero) logits: KL(p || uniform) = sum p log p + log(H * W).
    zeros = {"saliency": tf.zeros_like(human), "teacher": tf.zeros_like(teacher)}
    terms = distiller_b.per_example_terms({"saliency": human, "teacher": teacher}, zeros)
    p = maps["saliency"].reshape(4, -1).astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(terms["kld"].numpy(), (p * np.log(p)).sum(axis=1) + math.log(32 * 32), rtol=1e-4)


def test_padding_and_unlabelled_examples_are_left_out(distiller_b, batch):
    """With a mask, every term equals the unmasked reference computed on the cropped valid region; an example
    without a human map keeps its distillation terms and loses its human-map terms."""
    _, maps = batch
    rng = np.random.default_rng(7)
    logits = {k: rng.normal(size=(4, 32, 32, 1)).astype("float32") for k in ("saliency", "teacher")}
    valid = np.zeros((4, 32, 32, 1), "float32")
    valid[:, :, 6:26] = 1.0  # a portrait image letterboxed into a square frame
    # Garbage in the padding must not matter: the records pad maps with zeros, but the loss must not rely on it.
    padded = {k: np.where(valid > 0, maps[k], 0.3).astype("float32") for k in ("saliency", "teacher")}
    has = np.array([1, 0, 1, 1], "float32")
    terms = distiller_b.per_example_terms(
        {"saliency": tf.constant(padded["saliency"]), "teacher": tf.constant(padded["teacher"]),
         "valid": tf.constant(valid), "has_saliency": tf.constant(has)},
        {k: tf.constant(v) for k, v in logits.items()},
    )
    crop = {k: v[:, :, 6:26] for k, v in {**maps, **{"l_" + k: v for k, v in logits.items()}}.items()}
    t = 2.0
    kld = np_kld(crop["saliency"], crop["l_saliency"])
    teacher_kld = np_distillation_kld(crop["teacher"], crop["l_teacher"], t)
    into_head1 = np_distillation_kld(crop["teacher"], crop["l_saliency"], t)
    cc = np_cc(np.exp(_log_softmax_hw(crop["l_saliency"])).reshape(4, 32, 20, 1), crop["saliency"])
    np.testing.assert_allclose(terms["kld"].numpy(), has * kld, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(terms["teacher_kld"].numpy(), teacher_kld, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(terms["cc"].numpy(), has * cc, rtol=1e-4, atol=1e-6)
    expected = has * kld + 0.5 * t**2 * teacher_kld + 0.25 * t**2 * into_head1
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_evaluate_matches_numpy_reference_and_leaves_weights_unchanged(distiller_b, batch):
    images, maps = batch
    before = _weights(distiller_b)  # includes the BN moving statistics
    logits = {k: v.numpy() for k, v in distiller_b(images, training=False).items()}
    logs = distiller_b.evaluate(images, maps, batch_size=4, verbose=0, return_dict=True)

    t = 2.0
    kld = np_kld(maps["saliency"], logits["saliency"])
    teacher_kld = np_distillation_kld(maps["teacher"], logits["teacher"], t)
    into_head1 = np_distillation_kld(maps["teacher"], logits["saliency"], t)
    loss = kld + 0.5 * t**2 * teacher_kld + 0.25 * t**2 * into_head1
    density = np.exp(_log_softmax_hw(logits["saliency"]))
    cc = np_cc(density, maps["saliency"])
    assert set(logs) == {"loss", "kld", "cc", "labelled", "teacher_kld"}
    np.testing.assert_allclose(
        [logs["loss"], logs["kld"], logs["teacher_kld"], logs["cc"]],
        [loss.mean(), kld.mean(), teacher_kld.mean(), cc.mean()],
        rtol=1e-4, atol=1e-6,
    )
    after = _weights(distiller_b)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=f"evaluate changed {path}")


def test_fit_step_moves_student_and_both_heads(distiller_b, batch):
    images, maps = batch
    before = _weights(distiller_b.student)
    history = distiller_b.fit(images, maps, batch_size=4, epochs=1, verbose=0).history
    after = _weights(distiller_b.student)
    assert set(history) == {"loss", "kld", "cc", "labelled", "teacher_kld"}
    assert all(math.isfinite(v[0]) for v in history.values())
    # teacher_conv2 gets gradients from the KD term only; saliency_conv from the human-map term.
    for path in ("saliency_conv/kernel", "teacher_conv2/kernel", "teacher_conv1/kernel", "conv1_conv/kernel"):
        assert np.abs(after[path] - before[path]).max() > 1e-5, f"{path} did not move"
    assert len(distiller_b.trainable_weights) == len(distiller_b.student.trainable_weights) > 0


def test_variant_a_trains_without_teacher_maps(student_a, batch):
    images, maps = batch
    distiller = Distiller(student_a, variant="A")
    distiller.compile(run_eagerly=True)  # default optimizer: Adam, lr 1e-3
    assert isinstance(distiller.optimizer, keras.optimizers.Adam)
    assert math.isclose(float(distiller.optimizer.learning_rate), 1e-3, rel_tol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices((images, {"saliency": maps["saliency"]})).batch(4)
    before = _weights(student_a)
    history = distiller.fit(dataset, epochs=1, verbose=0).history
    assert set(history) == {"loss", "kld", "cc", "labelled"}
    assert history["loss"] == history["kld"]
    assert np.abs(_weights(student_a)["saliency_conv/kernel"] - before["saliency_conv/kernel"]).max() > 1e-5
    predicted = distiller.predict(images[:2], verbose=0)
    assert set(predicted) == {"saliency"} and predicted["saliency"].shape == (2, 32, 32, 1)


@contextlib.contextmanager
def mixed_precision_scope():
    """Build under the mixed_float16 policy, as student.training.train does, and restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def test_mixed_precision_step_is_finite_and_policy_is_restored(batch):
    images, maps = batch
    assert keras.config.dtype_policy().name == "float32"
    with mixed_precision_scope():
        assert keras.config.dtype_policy().name == "mixed_float16"
        distiller = Distiller(build_student("A", seed=0), variant="A")
    assert keras.config.dtype_policy().name == "float32"
    assert distiller.mixed_precision
    distiller.compile(build_optimizer(), run_eagerly=True)
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)

    history = distiller.fit(images, {"saliency": maps["saliency"]}, batch_size=4, epochs=1, verbose=0).history
    assert math.isfinite(history["loss"][0])
    outputs = distiller(images, training=False)
    assert outputs["saliency"].dtype == tf.float32
    terms = distiller.per_example_terms({"saliency": tf.constant(maps["saliency"])}, outputs)
    assert terms["loss"].dtype == tf.float32 and np.isfinite(terms["loss"].numpy()).all()
    # float16 compute changes the loss only slightly: a fresh mixed student vs the same seeded one in float32.
    human = {"saliency": tf.constant(maps["saliency"])}
    reference = Distiller(build_student("A", seed=0), variant="A")
    with mixed_precision_scope():
        fresh = Distiller(build_student("A", seed=0), variant="A")
    np.testing.assert_allclose(
        fresh.per_example_terms(human, fresh(images))["loss"].numpy(),
        reference.per_example_terms(human, reference(images))["loss"].numpy(),
        rtol=2e-2,
    )


def test_jit_compile_is_passed_to_compile_and_trains(batch):
    images, maps = batch
    student = _tiny_student()
    distiller = Distiller(student, variant="A")
    distiller.compile(build_optimizer(), jit_compile=True)
    assert distiller.jit_compile is True
    before = student.get_weights()
    history = distiller.fit(images, {"saliency": maps["saliency"]}, batch_size=4, epochs=1, verbose=0).history
    assert math.isfinite(history["loss"][0])
    assert any(np.abs(a - b).max() > 1e-5 for a, b in zip(student.get_weights(), before, strict=True))
    # The compiled test_step reports the reference definitions too.
    logits = distiller.predict(images, verbose=0)["saliency"]
    logs = distiller.evaluate(images, {"saliency": maps["saliency"]}, batch_size=4, verbose=0, return_dict=True)
    density = np.exp(_log_softmax_hw(logits))
    np.testing.assert_allclose(
        [logs["loss"], logs["kld"], logs["cc"]],
        [np_kld(maps["saliency"], logits).mean()] * 2 + [np_cc(density, maps["saliency"]).mean()],
        rtol=1e-4, atol=1e-6,
    )


def test_get_config_round_trip(distiller_b):
    config = distiller_b.get_config()
    clone = Distiller.from_config(config)
    assert (clone.variant, clone.temperature, clone.kd_weight, clone.kd_into_saliency) == ("B", 2.0, 0.5, 0.25)
    assert [w.shape for w in clone.student.weights] == [w.shape for w in distiller_b.student.weights]
    assert [m.name for m in clone.metrics] == ["loss", "kld", "cc", "labelled", "teacher_kld"]


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "C"}, r"`variant` must be one of \('A', 'B'\)\. Received: variant='C'"),
        ({"variant": "B"}, r"needs a student with the heads \('saliency', 'teacher'\)"),
        ({"variant": "A", "temperature": 0}, r"`temperature` must be a finite number > 0.0\. Received: temperature=0"),
        ({"variant": "A", "temperature": float("nan")}, "temperature"),
        ({"variant": "A", "kd_weight": -1.0}, r"`kd_weight` must be a finite number >= 0"),
        ({"variant": "A", "kd_into_saliency": 0.5}, "variant 'A' trains on human maps only"),
    ],
)
def test_constructor_rejects_bad_configuration(student_a, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Distiller(student_a, **kwargs)


def test_constructor_rejects_a_non_model():
    with pytest.raises(TypeError, match="`student` must be a keras.Model"):
        Distiller(lambda x: x, variant="A")


def test_compile_rejects_a_loss(student_a):
    with pytest.raises(ValueError, match=r"compile\(\) takes no `loss`"):
        Distiller(student_a, variant="A").compile(loss="mse")


def test_batch_errors_name_the_missing_teacher_and_the_size_mismatch(distiller_b, batch):
    images, maps = batch
    with pytest.raises(ValueError, match=r"variant 'B' needs targets .* missing \['teacher'\]"):
        distiller_b.test_step((images, {"saliency": maps["saliency"]}))
    with pytest.raises(ValueError, match="Sample weights are not supported"):
        distiller_b.test_step((images, maps, np.ones(4, "float32")))
    small = {k: tf.constant(v[:, :16, :16]) for k, v in maps.items()}
    outputs = {k: tf.zeros((4, 32, 32, 1)) for k in ("saliency", "teacher")}
    with pytest.raises(ValueError, match=r"targets\['saliency'\] has H, W \(16, 16\) .* \(32, 32\)"):
        distiller_b.per_example_terms(small, outputs)


# ---------------------------------------------------------------- strategies and optimizer
def test_make_strategy_on_one_device_and_errors(monkeypatch):
    assert make_strategy("auto").num_replicas_in_sync == 1
    assert isinstance(make_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    with pytest.raises(ValueError, match=r"`kind` must be one of .* Received: kind='tpu'"):
        make_strategy("tpu")
    with pytest.raises(ValueError, match="`devices` is only used with"):
        make_strategy("auto", devices=["/cpu:0"])
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG is not valid"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="task index 3 is outside"):
        make_strategy("multiworker")


def test_build_optimizer_is_a_fresh_adam_per_call():
    first, second = build_optimizer(), build_optimizer(5e-4)
    assert first is not second and isinstance(second, keras.optimizers.Adam)
    assert math.isclose(float(second.learning_rate), 5e-4, rel_tol=1e-6)
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number > 0\. Received: learning_rate=0"):
        build_optimizer(0)


# ---------------------------------------------------------------- MirroredStrategy parity (subprocess)
@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), CUDA_VISIBLE_DEVICES="")
    try:
        proc = subprocess.run(
            [sys.executable, WORKER, "mirrored-parity", "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=PARITY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"mirrored-parity subprocess exceeded {PARITY_TIMEOUT_S}s; stderr tail:\n{stderr[-3000:]}")
    assert proc.returncode == 0, f"mirrored-parity failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    with np.load(out / "parity.npz") as data:
        return dict(data)


def _weight_list(parity, key):
    names = sorted(k for k in parity if k.startswith(key + "_") and k[len(key) + 1:].isdigit())
    return [parity[name] for name in names]


# Float32 noise is amplified through the student's 20 BN layers (at 32x32 the last stage normalises over 4 values
# per channel): one step moves conv1's kernel by up to 5.8e-3, and float32 runs of it scatter about the float64
# step by up to ~2e-5 there, on one device (eagerly, or in another batch order) as much as mirrored. Only the
# one-device graph step (Grappler + oneDNN on an AVX-512 EPYC) came out 8x closer, which made a direct
# mirrored-vs-one-device comparison at 1e-5 fail on one machine and pass on another. So every run is compared
# with float64, and the mirrored error with the largest of the one-device float32 runs' errors.
# Measured mirrored / one-device error per tensor: <= 1.3 (1.8 for the zero-update biases, 2.6 with Keras' one-pass
# BN statistics); losing the BN statistics' cross-replica gradient gave 460, doubling one replica's loss 13600.
NOISE_FACTOR = 4.0
ULPS = 4  # float32 spacings of the reference value, for tensors and metrics that the one-device runs get exact
# Of the largest update, for tensors whose exact update is 0 (the heads' biases: a softmax ignores a constant
# shift), so that all their runs are noise of ~1e-10; far below the errors of any tensor that moves.
UPDATE_SLACK = 1e-6


def _float32_slack(reference, scale=0.0):
    return ULPS * float(np.spacing(np.float32(np.max(np.abs(reference))))) + UPDATE_SLACK * scale


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, step, metrics",
    [
        ("student", 1, ("loss", "kld", "cc", "teacher_kld")),  # student B, a batch of 4 split 2 + 2
        ("tiny", 2, ("loss", "kld", "cc")),  # after batches of 4 (2 + 2) and 3 (2 + 1)
    ],
)
def test_mirrored_on_two_cpus_matches_one_device(parity, case, step, metrics):
    """Same initial weights and batches, SGD: the update and the tracked metrics of MirroredStrategy over 2 logical
    CPUs are as close to the float64 result as one device's float32 updates are (within NOISE_FACTOR of the
    largest one-device error, per weight tensor and metric), and those agree with float64 to 1e-3 of the update.
    A loss scaled by 2 on one replica, unsynchronized BN or BN statistics without their cross-replica gradient
    fail this by orders of magnitude. The uneven last batch (2 + 1) checks that the loss is divided by the true
    global batch: dividing by per-replica batch x replicas would weight replica 1's example twice."""
    assert int(parity[f"{case}_single_replicas"]) == 1 and int(parity[f"{case}_mirrored_replicas"]) == 2
    initial = _weight_list(parity, f"{case}_single_initial")
    for a, b in zip(initial, _weight_list(parity, f"{case}_mirrored_initial"), strict=True):
        np.testing.assert_array_equal(a, b)
    one_device = ["single"] + [f"reordered{j}" for j in range(int(parity[f"{case}_reorderings"]))]
    runs = {tag: _weight_list(parity, f"{case}_{tag}_step{step}") for tag in one_device + ["mirrored"]}
    reference = [w.astype(np.float64) for w in _weight_list(parity, f"{case}_float64_step{step}")]
    assert all(len(w) == len(reference) == len(initial) > 0 for w in runs.values())
    update = np.sqrt(sum(np.sum((r - w0) ** 2) for r, w0 in zip(reference, initial)))
    largest = max(np.abs(r - w0).max() for r, w0 in zip(reference, initial))
    assert largest > 1e-3  # the step did move the weights
    for tag in one_device:  # the float64 steps are the one-device steps: float32 noise is small against the update
        error = np.sqrt(sum(np.sum((w - r) ** 2) for w, r in zip(runs[tag], reference)))
        assert error < 1e-3 * update, f"{case} {tag}: L2 distance to float64 {error:.3g}, update {update:.3g}"
    for i, r in enumerate(reference):
        errors = {tag: float(np.abs(w[i] - r).max()) for tag, w in runs.items()}
        noise = max(errors[tag] for tag in one_device)
        assert errors["mirrored"] <= NOISE_FACTOR * noise + _float32_slack(r, largest), (
            f"{case} weight {i} {r.shape}: mirrored max error vs float64 {errors['mirrored']:.3g} > "
            f"{NOISE_FACTOR} x one-device float32 noise {noise:.3g} (errors {errors}; max update "
            f"{np.abs(r - initial[i]).max():.3g})"
        )
    for name in metrics:
        r = float(parity[f"{case}_float64_step{step}_{name}"])
        errors = {tag: abs(float(parity[f"{case}_{tag}_step{step}_{name}"]) - r) for tag in runs}
        noise = max(errors[tag] for tag in one_device)
        assert errors["mirrored"] <= NOISE_FACTOR * noise + _float32_slack(r), (
            f"{case} {name}: mirrored error vs float64 {errors['mirrored']:.3g} > {NOISE_FACTOR} x one-device "
            f"noise {noise:.3g} (float64 value {r:.6g}, errors {errors})"
        )
