"""Subprocess entry points for the distribution tests, which need TensorFlow configured before it starts.

    python tests/multiworker_worker.py worker --workers H:P,H:P --index I --out DIR
        one MultiWorkerMirroredStrategy worker: builds the seeded student B, trains two steps on an 8-example
        data set (auto-shard DATA, global batch 4) and writes DIR/worker{I}.initial.weights.h5,
        DIR/worker{I}.weights.h5 and DIR/worker{I}.json (the last step's logs).
    python tests/multiworker_worker.py mirrored-parity --out DIR
        splits the CPU into 2 logical devices, then trains the same seeded models on the same batches with SGD on
        one device and under MirroredStrategy over both: one step of student B on a batch of 4, and two steps of
        a tiny student (batches of 4 and 3, the last split unevenly); also the same steps in float64 and, on one
        device, with each batch's examples reordered; writes DIR/parity.npz.

Used by tests/test_multiworker.py and tests/test_distillation.py; run from the repository root.
"""

import argparse
import json
import os
import sys

# Fallback for a manual run from the repository root; a PYTHONPATH set by the caller takes precedence.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_SIZE = (32, 32)
SEED = 7


def tiny_data(n, seed=SEED, size=IMAGE_SIZE):
    """Deterministic images (n, H, W, 3) in 0..255 and strictly positive maps {"saliency", "teacher"}."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, (n, *size, 3)).astype("float32")
    maps = {key: rng.uniform(0.05, 1.0, (n, *size, 1)).astype("float32") for key in ("saliency", "teacher")}
    return images, maps


def _distiller(strategy, optimizer_fn):
    from student.distillation import Distiller
    from student.model import build_student

    with strategy.scope():
        distiller = Distiller(build_student("B", seed=SEED), variant="B")
        distiller.compile(optimizer_fn())
    return distiller


def run_worker(workers, index, out):
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    )
    from student.distillation import make_strategy

    strategy = make_strategy("multiworker", collective_timeout_s=120)  # before any other TF call
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    distiller = _distiller(strategy, lambda: keras.optimizers.Adam(1e-3))
    distiller.student.save_weights(os.path.join(out, f"worker{index}.initial.weights.h5"))

    images, maps = tiny_data(8)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((images, maps)).batch(4).with_options(options)
    history = distiller.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0).history
    distiller.student.save_weights(os.path.join(out, f"worker{index}.weights.h5"))
    with open(os.path.join(out, f"worker{index}.json"), "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync, "history": history}, f)


def tiny_student():
    """A small stand-in with the student's interface (dict of logits) and the student's synchronized BN layer;
    its initial weights follow `keras.utils.set_random_seed`."""
    import keras

    from student.backbones.resnet18 import SyncBatchNormalization

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = SyncBatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    logits = keras.layers.Conv2D(1, 3, padding="same", name="saliency")(x)
    return keras.Model(inputs, {"saliency": logits}, name="tiny_student")


def _fit_recording_steps(distiller, dataset):
    """Fit one epoch; return [(logs, student weights)] after every batch."""
    import keras

    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(({k: float(v) for k, v in (logs or {}).items()}, distiller.student.get_weights()))

    distiller.fit(dataset, epochs=1, verbose=0, callbacks=[Record()])
    return steps


# Orders of the examples within each batch for the one-device reorderings: the identity (run eagerly, so other
# kernels and fusions than the graph step), the two halves swapped (the split the mirrored run makes, regrouped)
# and reversed. The update is the same in exact arithmetic; in float32 they differ by the reduction-order noise.
REORDERINGS = ("identity", "halves_swapped", "reversed")


def _reorder(n, batch_size, how):
    """Indices that reorder the examples within each batch of `batch_size` (batches keep their members)."""
    import numpy as np

    index = []
    for start in range(0, n, batch_size):
        chunk = list(range(start, min(start + batch_size, n)))
        if how == "halves_swapped":
            half = (len(chunk) + 1) // 2
            chunk = chunk[half:] + chunk[:half]
        elif how == "reversed":
            chunk = chunk[::-1]
        index += chunk
    return np.asarray(index)


def _float64_steps(student, initial, batches, variant, lr, temperature, kd_weight):
    """The SGD steps of the Distiller's loss, written here from its definition and computed in float64.

    `student` is cloned with every layer in float64 and given `initial`; the loss is the mean over the batch of
    KL(human || softmax(head 1)) [+ kd_weight * T^2 * KL(softmax(log(p_T + 1e-8) / T) || softmax(head 2 / T))].
    Returns [(logs, weights)] after every step, the logs being running means over the examples seen, as
    Keras reports them.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    def to_float64(layer):
        config = layer.get_config()
        config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(student, clone_function=to_float64, recursive=True)
    if any(w.dtype != "float64" for w in model.weights) or len(model.weights) != len(initial):
        raise AssertionError("float64 clone of the student has float32 or missing weights")
    model.set_weights([np.asarray(w, np.float64) for w in initial])

    def log_softmax(z):
        return z - tf.reduce_logsumexp(z, axis=[1, 2], keepdims=True)

    def density(m):
        m = tf.constant(m, tf.float64)
        return m / tf.reduce_sum(m, axis=[1, 2], keepdims=True)

    sums, count, steps = {}, 0, []
    for images, targets in batches:
        with tf.GradientTape() as tape:
            out = model(tf.constant(images, tf.float64), training=True)  # also updates the moving statistics
            human = density(targets["saliency"])
            terms = {"kld": tf.reduce_sum(tf.math.xlogy(human, human) - human * log_softmax(out["saliency"]), [1, 2, 3])}
            terms["loss"] = terms["kld"]
            if variant == "B":
                q = tf.exp(log_softmax(tf.math.log(density(targets["teacher"]) + 1e-8) / temperature))
                terms["teacher_kld"] = tf.reduce_sum(
                    tf.math.xlogy(q, q) - q * log_softmax(out["teacher"] / temperature), [1, 2, 3]
                )
                terms["loss"] = terms["kld"] + kd_weight * temperature**2 * terms["teacher_kld"]
            loss = tf.reduce_mean(terms["loss"])
        gradients = tape.gradient(loss, model.trainable_variables)
        for variable, gradient in zip(model.trainable_variables, gradients):
            variable.assign(variable - lr * gradient)
        prediction = tf.exp(log_softmax(out["saliency"]))
        a = prediction - tf.reduce_mean(prediction, [1, 2, 3], keepdims=True)
        b = human - tf.reduce_mean(human, [1, 2, 3], keepdims=True)
        terms["cc"] = tf.reduce_sum(a * b, [1, 2, 3]) / tf.sqrt(
            tf.reduce_sum(a * a, [1, 2, 3]) * tf.reduce_sum(b * b, [1, 2, 3])
        )
        count += len(images)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(tf.reduce_sum(value))
        steps.append(({name: total / count for name, total in sums.items()}, model.get_weights()))
    return steps


def run_mirrored_parity(out):
    """One SGD step of student B on a batch of 4 (2 + 2 per replica), and two of the tiny student on 7 examples
    in batches of 4 and 3 (the last split 2 + 1), on one device and mirrored over 2 logical CPUs; and, as the
    references the test measures both against, the same steps in float64 and eagerly on one device with the
    examples of each batch reordered (float32 summation-order noise)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import numpy as np

    from student.distillation import Distiller, make_strategy
    from student.model import build_student

    # SGD, not Adam: Adam's first step is about lr * sign(gradient), blind to a wrongly scaled loss.
    cases = {
        "student": (lambda: build_student("B", seed=SEED), "B", 4, 0.01),
        "tiny": (tiny_student, "A", 7, 0.1),
    }
    # One strategy object per kind for the whole process: a second MirroredStrategy could reuse the first one's
    # collective instance keys and mismatch its all-reduces.
    strategies = {
        "single": make_strategy("one_device", devices="/cpu:0"),
        "mirrored": make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"]),
    }
    batch_size = 4
    results = {}

    def record(prefix, steps):
        for step, (logs, weights) in enumerate(steps, start=1):
            results[f"{prefix}_step{step}"] = weights
            results.update({f"{prefix}_step{step}_{name}": value for name, value in logs.items()})

    for case, (build, variant, n, lr) in cases.items():
        images, maps = tiny_data(n)
        targets = maps if variant == "B" else {"saliency": maps["saliency"]}
        dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size)
        distillers = {}
        for tag, strategy in strategies.items():
            keras.utils.set_random_seed(SEED)
            with strategy.scope():
                distillers[tag] = distiller = Distiller(build(), variant=variant)
                distiller.compile(keras.optimizers.SGD(learning_rate=lr))
            results[f"{case}_{tag}_replicas"] = strategy.num_replicas_in_sync
            results[f"{case}_{tag}_initial"] = initial = distiller.student.get_weights()
            record(f"{case}_{tag}", _fit_recording_steps(distiller, dataset))
        # The one-device model again, eagerly (no second trace of the training graph); SGD has no slots, so
        # resetting the weights (moving statistics included) restarts the run.
        distiller = distillers["single"]
        with strategies["single"].scope():
            distiller.compile(keras.optimizers.SGD(learning_rate=lr), run_eagerly=True)
        for j, how in enumerate(REORDERINGS):
            index = _reorder(n, batch_size, how)
            distiller.student.set_weights(initial)
            reordered = tf.data.Dataset.from_tensor_slices(
                (images[index], {key: value[index] for key, value in targets.items()})
            ).batch(batch_size)
            record(f"{case}_reordered{j}", _fit_recording_steps(distiller, reordered))
        if distiller.kd_into_saliency:
            raise AssertionError("the float64 reference has no kd_into_saliency term")
        batches = [
            (images[i : i + batch_size], {key: value[i : i + batch_size] for key, value in targets.items()})
            for i in range(0, n, batch_size)
        ]
        record(
            f"{case}_float64",
            _float64_steps(distiller.student, initial, batches, variant, lr, distiller.temperature, distiller.kd_weight),
        )
        results[f"{case}_reorderings"] = len(REORDERINGS)
    flat = {}
    for key, value in results.items():
        if isinstance(value, list):
            flat.update({f"{key}_{i:03d}": np.asarray(v) for i, v in enumerate(value)})
        else:
            flat[key] = np.asarray(value)
    np.savez(os.path.join(out, "parity.npz"), **flat)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("--workers", required=True, help="comma-separated host:port of every worker")
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--out", required=True)
    parity = sub.add_parser("mirrored-parity")
    parity.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    if args.mode == "worker":
        run_worker(args.workers.split(","), args.index, args.out)
    else:
        run_mirrored_parity(args.out)


if __name__ == "__main__":
    main()
