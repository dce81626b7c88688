"""The distillation model: the student wrapped with the variant A / B losses and distribution-aware steps.

`Distiller` owns the student and overrides `train_step` / `test_step`. Teacher maps are precomputed (they come
in the batch as ``targets["teacher"]``), so no teacher runs here. Per batch ``(images, targets)``:

* variant A: ``loss = KL(human || softmax(head1))``, the human map sum-normalised;
* variant B: ``loss = KL(human || softmax(head1)) + kd_weight * T^2 * KL(softmax(log(p_T + eps) / T) ||
  softmax(head2 / T))`` with ``p_T`` the sum-normalised teacher map, optionally plus
  ``kd_into_saliency * T^2 * KL(... || softmax(head1 / T))``. The ``T^2`` keeps the soft-target gradients
  comparable across temperatures (Hinton et al., 2015).

Distribution: per-example losses are summed and divided by the GLOBAL batch size
(``tf.nn.compute_average_loss``). Keras 3's TF optimizer all-reduces gradients with SUM across replicas
(``TFOptimizer._all_reduce_sum_gradients``), so the summed per-replica gradients equal one device's gradient
of the global-batch mean; no further scaling by the replica count is applied (Keras' own ``compute_loss`` path
does that instead, via ``scale_loss_for_distribution``, which this model does not use). The global batch size
is all-reduced from the actual per-replica batch sizes, so uneven last batches are averaged correctly too.
"""

import json
import math
import numbers
import os

import keras
import tensorflow as tf

from metrics import losses
from student.model import HEADS, spatial_softmax

VARIANTS = ("A", "B")
STRATEGY_KINDS = ("auto", "mirrored", "one_device", "multiworker")
DEFAULT_LEARNING_RATE = 1e-3


def build_optimizer(learning_rate=DEFAULT_LEARNING_RATE):
    """A fresh Adam optimizer for one training run (the seed project's Adam, lr 1e-3).

    Build one per run: an optimizer holds per-variable moment slots and must not be shared between runs.

    Args:
        learning_rate: float > 0, or a `keras.optimizers.schedules.LearningRateSchedule`. Defaults to 1e-3.

    Returns:
        A `keras.optimizers.Adam`.

    Raises:
        ValueError: if a numeric `learning_rate` is not a finite positive number.
    """
    if isinstance(learning_rate, numbers.Number) and not (
        not isinstance(learning_rate, bool) and math.isfinite(learning_rate) and learning_rate > 0
    ):
        raise ValueError(f"`learning_rate` must be a finite number > 0. Received: learning_rate={learning_rate!r}")
    return keras.optimizers.Adam(learning_rate)


def make_strategy(kind="auto", devices=None, collective_timeout_s=None):
    """The `tf.distribute` strategy for a training run.

    Args:
        kind: str, one of ``"auto"`` (MirroredStrategy on more than one GPU, else one device),
            ``"mirrored"``, ``"one_device"`` or ``"multiworker"`` (`tf.distribute.MultiWorkerMirroredStrategy`
            configured by the standard ``TF_CONFIG`` environment variable; call this first in the program, before
            any other TensorFlow call). Defaults to ``"auto"``.
        devices: list of device names for ``"mirrored"`` (e.g. ``["/cpu:0", "/cpu:1"]``; None = all GPUs, or
            the CPU) or one name for ``"one_device"`` (None = the first GPU, or the CPU). Not allowed for the
            other kinds.
        collective_timeout_s: float or None. ``"multiworker"`` only: fail a collective (all-reduce) that has
            not completed after this many seconds instead of waiting forever for a dead peer. None = no limit.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: for an unknown `kind`, `devices` given for a kind that does not take them, or a missing /
            malformed ``TF_CONFIG`` with ``"multiworker"``.
    """
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"`kind` must be one of {STRATEGY_KINDS}. Received: kind={kind!r}")
    if devices is not None and kind not in ("mirrored", "one_device"):
        raise ValueError(
            f"`devices` is only used with kind='mirrored' or 'one_device'. Received: kind={kind!r}, "
            f"devices={devices!r}"
        )
    if collective_timeout_s is not None and kind != "multiworker":
        raise ValueError(
            f"`collective_timeout_s` is only used with kind='multiworker'. Received: kind={kind!r}, "
            f"collective_timeout_s={collective_timeout_s!r}"
        )
    if kind == "multiworker":
        # Before anything that initialises the TF runtime (even listing devices): collectives are configured
        # at startup, and creating the strategy afterwards fails.
        _check_tf_config(os.environ.get("TF_CONFIG"))
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout_s)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if kind == "auto":
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices is not None else None)
    device = devices if isinstance(devices, str) else (devices[0] if devices else None)
    return tf.distribute.OneDeviceStrategy(device or (gpus[0] if gpus else "/cpu:0"))


def _check_tf_config(raw):
    """Raise a ValueError saying what is wrong with a TF_CONFIG value and what it must look like."""
    example = (
        '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
    )
    if not raw:
        raise ValueError(
            f"kind='multiworker' needs the TF_CONFIG environment variable on every worker, e.g. {example}"
        )
    try:
        config = json.loads(raw)
        if not isinstance(config["cluster"]["worker"], list):
            raise TypeError("cluster['worker'] must be a list of 'host:port' strings")
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"TF_CONFIG is not valid ({e!r}). Received: TF_CONFIG={raw!r}; expected e.g. {example}"
        ) from e
    members = config["cluster"].get(task_type, [])
    if task_type in ("worker", "chief") and not 0 <= index < len(members):
        raise ValueError(
            f"TF_CONFIG task index {index} is outside cluster[{task_type!r}] = {members!r}. Received: TF_CONFIG={raw!r}"
        )


def _check_number(name, value, minimum, inclusive):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= minimum if inclusive else value > minimum)
    if not ok:
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise ValueError(f"`{name}` must be a finite number {bound}. Received: {name}={value!r}")
    return float(value)


def _student_heads(student):
    """The student's output names as a sorted tuple, or None when they cannot be known before a call."""
    try:
        outputs = student.output
    except (AttributeError, ValueError):
        return None
    if not isinstance(outputs, dict):
        return ()
    return tuple(sorted(outputs))


@keras.saving.register_keras_serializable(package="saliency_kd")
class Distiller(keras.Model):
    """The student with the distillation losses of variant A or B, trainable with `fit` under any strategy.

    Batches are ``(images, targets)``: images float32 (B, H, W, 3) RGB 0..255; targets a dict of float32 maps in
    [0, 1] at the images' size, ``{"saliency": human map (B, H, W, 1), "teacher": teacher map (B, H, W, 1)}``.
    Variant A reads only ``"saliency"`` (a dict without ``"teacher"``, or the bare human-map tensor, works).

    Tracked per epoch (`keras.metrics.Mean`, weighted by examples over the global batch): ``loss`` (the total),
    ``kld`` (head 1 vs the human map; the same definition for A and B), ``cc`` (Pearson CC of softmax(head 1)
    vs the human map) and, for B, ``teacher_kld`` (the KD term before its ``kd_weight * T^2`` factor).

    Arguments:
        student: keras.Model from `student.model.build_student(variant)`, outputting a dict of logits.
        variant: str, ``"A"`` or ``"B"``; must match the student's heads. Defaults to ``"B"``.
        temperature: float > 0. Distillation temperature T applied to the logits. Defaults to 3.0.
        kd_weight: float >= 0. Weight of the head-2 distillation term (variant B). Defaults to 2.5.
        kd_into_saliency: float >= 0. Weight of an extra distillation term into head 1 (variant B only).
            Defaults to 0.0.
        name: str. Defaults to ``"distiller"``.

    Mixed precision: build the student under the ``mixed_float16`` dtype policy (`keras.config.set_dtype_policy`,
    as `student.training.train` does); `compile` then adds loss scaling. The Distiller itself computes in float32
    (its inputs are not cast; the losses are float32).

    Example:

    ```python
    strategy = make_strategy("auto")
    with strategy.scope():
        distiller = Distiller(build_student("B"), variant="B")
        distiller.compile(build_optimizer(1e-3))
    distiller.fit(train_ds, validation_data=val_ds, epochs=10)
    ```
    """

    def __init__(
        self,
        student,
        variant="B",
        temperature=3.0,
        kd_weight=2.5,
        kd_into_saliency=0.0,
        name="distiller",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        if not isinstance(student, keras.Model):
            raise TypeError(
                f"`student` must be a keras.Model (student.model.build_student(variant)). Received: "
                f"{type(student).__name__}"
            )
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
        heads = _student_heads(student)
        expected = tuple(sorted(HEADS[variant]))
        if heads is not None and heads != expected:
            raise ValueError(
                f"variant={variant!r} needs a student with the heads {expected}; student {student.name!r} has "
                f"{heads}. Build it with build_student({variant!r}) or pass the matching variant."
            )
        self.temperature = _check_number("temperature", temperature, 0.0, inclusive=False)
        self.kd_weight = _check_number("kd_weight", kd_weight, 0.0, inclusive=True)
        self.kd_into_saliency = _check_number("kd_into_saliency", kd_into_saliency, 0.0, inclusive=True)
        if variant == "A" and self.kd_into_saliency > 0:
            raise ValueError(
                f"`kd_into_saliency` distils teacher maps into head 1, but variant 'A' trains on human maps only. "
                f"Received: kd_into_saliency={kd_into_saliency!r}; use variant 'B' or set it to 0."
            )
        self.student = student
        self.variant = variant
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.kld_tracker = keras.metrics.Mean(name="kld")
        self.cc_tracker = keras.metrics.Mean(name="cc")
        # The fraction of examples with a human map (the rest only teach variant B's distillation terms).
        self.labelled_tracker = keras.metrics.Mean(name="labelled")
        self.teacher_kld_tracker = keras.metrics.Mean(name="teacher_kld") if variant == "B" else None
        # All weights are the student's: a built student makes the Distiller built (see _maybe_symbolic_build).
        self.built = bool(student.built)

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.kld_tracker, self.cc_tracker, self.labelled_tracker]
        if self.teacher_kld_tracker is not None:
            trackers.append(self.teacher_kld_tracker)
        return trackers

    @property
    def mixed_precision(self):
        """True when the student computes in float16 (built under the ``mixed_float16`` dtype policy)."""
        return self.student.compute_dtype == "float16" or any(
            layer.compute_dtype == "float16" for layer in self.student.layers
        )

    def compile(self, optimizer=None, jit_compile=False, **kwargs):
        """Configure training: the optimizer (loss scaling added under mixed precision) and XLA.

        Args:
            optimizer: a `keras.optimizers.Optimizer` or its name; None = `build_optimizer()` (Adam, 1e-3).
            jit_compile: bool. Compile the train/test step with XLA. Defaults to False.
            **kwargs: other `keras.Model.compile` arguments (e.g. ``steps_per_execution``, ``run_eagerly``).

        Raises:
            ValueError: if ``loss``, ``loss_weights``, ``metrics`` or ``weighted_metrics`` is given; the
                Distiller defines its own (set them through the constructor's arguments instead).
        """
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"Distiller computes its own losses and metrics; compile() takes no `{key}`. Received: "
                    f"{key}={kwargs[key]!r}. Set temperature / kd_weight / kd_into_saliency in Distiller(...)."
                )
            kwargs.pop(key, None)
        optimizer = build_optimizer() if optimizer is None else keras.optimizers.get(optimizer)
        if self.mixed_precision and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        kwargs.setdefault("auto_scale_loss", False)  # loss scaling is decided above, from the student
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer builds a distributed model before fit/evaluate by all-reducing (MEAN) the first
        # input batch across replicas. That fails under MultiWorkerMirroredStrategy (keras-team/keras#20585) and
        # for a first batch split unevenly over replicas. Once built, the Distiller needs no data to finish
        # building: it has no compiled losses or metrics, so only the optimizer's slots are created, here.
        if self._distribute_strategy is None or not all(layer.built for layer in self._flatten_layers()):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        with self.distribute_strategy.scope():
            self._symbolic_build()

    def call(self, inputs, training=False):
        """The student's outputs: a dict of float32 logits (B, H, W, 1) keyed by head name."""
        outputs = self.student(inputs, training=training)
        return {head: keras.ops.cast(logits, "float32") for head, logits in outputs.items()}

    def _unpack(self, data):
        """Split a batch into images and a dict of float32 target maps, with errors that say what is wrong."""
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            received = f"a {len(data)}-tuple" if isinstance(data, (tuple, list)) else type(data).__name__
            raise ValueError(
                f"Distiller expects (images, targets) batches; received {received}. Sample weights are not "
                f"supported; targets is a dict {{'saliency': ..., 'teacher': ...}}."
            )
        images, targets = data
        if not isinstance(targets, dict):
            targets = {"saliency": targets}
        needed = HEADS[self.variant]
        missing = [key for key in needed if key not in targets]
        if missing:
            hint = " (teacher maps: build the dataset with the teacher field)" if "teacher" in missing else ""
            raise ValueError(
                f"variant {self.variant!r} needs targets {needed}; the batch has {tuple(targets)}, missing "
                f"{missing}{hint}."
            )
        # Optional: `valid` marks the image's pixels in a letterboxed frame, `has_saliency` (B,) the examples with
        # a human map (records without one only teach the distillation terms of variant B).
        optional = [key for key in ("valid", "has_saliency") if key in targets]
        return images, {key: tf.cast(targets[key], tf.float32) for key in (*needed, *optional)}

    @staticmethod
    def _check_shapes(targets, outputs):
        for key, target in targets.items():
            if key == "has_saliency":
                continue
            logits = outputs["saliency"]
            t_shape, l_shape = target.shape, logits.shape
            if t_shape.rank != 4 or t_shape[-1] not in (1, None):
                raise ValueError(f"targets[{key!r}] must be (B, H, W, 1). Received shape {t_shape}.")
            for axis in (1, 2):
                if t_shape[axis] is not None and l_shape[axis] is not None and t_shape[axis] != l_shape[axis]:
                    raise ValueError(
                        f"targets[{key!r}] has H, W {tuple(t_shape[1:3])} but the student outputs "
                        f"{tuple(l_shape[1:3])} (the images' size); resize the maps to the images first."
                    )

    def per_example_terms(self, targets, outputs):
        """Per-example loss and metric values, each a float32 tensor [B].

        Args:
            targets: dict of float32 maps (B, H, W, 1): ``"saliency"`` and, for B, ``"teacher"``; optionally
                ``"valid"`` (B, H, W, 1), the mask of real pixels (losses and CC ignore the rest), and
                ``"has_saliency"`` (B,), 0 for an example without a human map (its human-map terms are 0).
            outputs: dict of float32 logits (B, H, W, 1) from `call`.

        Returns:
            dict with ``"loss"``, ``"kld"``, ``"cc"``, ``"labelled"`` and, for B, ``"teacher_kld"``. ``kld`` and
            ``cc`` are 0 for unlabelled examples; the trackers average them over the labelled ones.
        """
        self._check_shapes(targets, outputs)
        head1 = outputs["saliency"]
        valid = targets.get("valid")
        labelled = targets.get("has_saliency")
        if labelled is None:
            labelled = tf.ones_like(head1[:, 0, 0, 0])
        kld = labelled * losses.kld_logits(targets["saliency"], head1, valid=valid)
        terms = {"loss": kld, "kld": kld, "labelled": labelled}
        if self.variant == "B":
            t, t2 = self.temperature, self.temperature**2
            teacher_kld = losses.distillation_kld(targets["teacher"], outputs["teacher"], t, valid=valid)
            terms["teacher_kld"] = teacher_kld
            terms["loss"] = kld + (self.kd_weight * t2) * teacher_kld
            if self.kd_into_saliency > 0:
                into_head1 = losses.distillation_kld(targets["teacher"], head1, t, valid=valid)
                terms["loss"] = terms["loss"] + (self.kd_into_saliency * t2) * into_head1
        density = spatial_softmax(losses.mask_logits(tf.stop_gradient(head1), valid))
        terms["cc"] = labelled * losses.cc_maps(density, targets["saliency"], valid)
        return terms

    def _global_totals(self, terms):
        """Global batch size (int32), number of labelled examples and the global sum of every tracked term.

        One all-reduce of a small vector per step. The values carry no gradient.
        """
        names = [tracker.name for tracker in self.metrics]
        local = tf.stack(
            [tf.cast(tf.shape(terms["loss"])[0], tf.float32)]
            + [tf.reduce_sum(tf.stop_gradient(terms[n])) for n in names]
        )
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            local = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        batch = tf.cast(tf.round(local[0]), tf.int32)
        return batch, dict(zip(names, tf.unstack(local[1:])))

    def _update_trackers(self, global_batch, totals):
        # Every replica adds the same global mean and weight, so reading the SUM-aggregated tracker
        # variables (per replica, or summed across replicas) gives the global per-example mean. The human-map
        # metrics are means over the labelled examples only.
        weight = tf.cast(global_batch, tf.float32)
        for tracker in self.metrics:
            w = totals["labelled"] if tracker.name in self._LABELLED_ONLY else weight
            tracker.update_state(tf.math.divide_no_nan(totals[tracker.name], w), sample_weight=w)
        logs = {tracker.name: tracker.result() for tracker in self.metrics}
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
        ):
            # With several workers Keras reduces the step's outputs with strategy.reduce(MEAN, axis=0), which
            # fails on scalars (keras-team/keras#20585). Every replica holds the same values, so give them a
            # leading axis of 1; the reduced log is the value itself.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    _LABELLED_ONLY = ("kld", "cc")

    def train_step(self, data):
        images, targets = self._unpack(data)
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            terms = self.per_example_terms(targets, outputs)
            global_batch, totals = self._global_totals(terms)
            loss = tf.nn.compute_average_loss(terms["loss"], global_batch_size=global_batch)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_trackers(global_batch, totals)

    def test_step(self, data):
        images, targets = self._unpack(data)
        outputs = self(images, training=False)
        terms = self.per_example_terms(targets, outputs)
        global_batch, totals = self._global_totals(terms)
        return self._update_trackers(global_batch, totals)

    def get_config(self):
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "variant": self.variant,
            "temperature": self.temperature,
            "kd_weight": self.kd_weight,
            "kd_into_saliency": self.kd_into_saliency,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"], custom_objects=custom_objects)
        return cls(**config)
