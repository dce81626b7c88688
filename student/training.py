"""One training run of a student (variant A or B) from distillation records: the library behind train.py.

A run folder holds everything a run produces:

    config.json                 the run's settings (and `completed` once it finished)
    checkpoints/best.weights.h5 student weights of the epoch with the lowest val KLD
    checkpoints/last.weights.h5 student weights after the last finished epoch (its epoch in last.json)
    history.csv                 per-epoch train/val metrics
    logs/                       TensorBoard
    kld.png                     train and val KLD per epoch (the seed project's figure)
    saved_model/                the exported SavedModel (uint8 image in, saliency map out)
    backup/                     BackupAndRestore state while the run is unfinished (replaced whole each epoch)

Interrupted and started again with the same settings, a run continues from its last finished epoch and ends
with the same weights as an uninterrupted one: the optimizer state is in the backup, and the data order and
flips of each epoch are a function of (seed, epoch) only.
"""

import csv
import dataclasses
import functools
import json
import math
import os
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf

from datasets import records
from datasets.io import atomic_write, check_writable_dir
from datasets.io import save_weights_atomic as _save_weights_atomic  # the one atomic save (a full disk too)
from datasets.shards import file_sha256
# Defined there without TensorFlow (train.py --help); re-exported here.
from student.config import TrainConfig, xla_pays_off  # noqa: F401

BACKUP_DIR = "backup"
# Settings that may change when a run is resumed without changing its result.
# Settings a run may be continued with changed: where it is written, what it prints, and how fast (XLA or not
# computes the same steps up to float rounding).
_RESUMABLE_OVERRIDES = ("run_dir", "verbose", "export", "resume", "allow_mixed_records", "jit_compile")


def cpu_info():
    """The first CPU's fields of /proc/cpuinfo ("flags", "vendor_id", "cpu MHz", ...); {} where there is none."""
    info = {}
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    return info


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    history: list
    best_val_kld: float
    saved_model_dir: str


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the best checkpoint of the run is left as it was."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `TrainingDivergedError` at the first non-finite training loss.

    Raising (rather than `stop_training`) leaves the epoch unfinished, so no later callback writes the
    diverged weights into the checkpoints or the backup.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir
        self._epoch = 0

    def _best_note(self):
        best = os.path.join(self.run_dir, "checkpoints", "best.weights.h5")
        if os.path.exists(best):
            return f"The best checkpoint {best} is intact."
        return "No checkpoint was saved yet (no epoch finished), so there is nothing to keep."

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1}; stopped. "
                f"{self._best_note()} Lower --lr, check the records for empty maps, or drop --mixed-precision."
            )


class StudentCheckpoints(keras.callbacks.Callback):
    """Save the student's weights after every epoch (`last`) and when val KLD improves (`best`).

    The best value is kept in `checkpoints/best.json`, so a resumed run does not forget it.
    """

    def __init__(self, directory, monitor="val_kld"):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.best_path = os.path.join(directory, "best.weights.h5")
        self.last_path = os.path.join(directory, "last.weights.h5")
        self._state_path = os.path.join(directory, "best.json")
        os.makedirs(directory, exist_ok=True)
        self.best = math.inf
        if os.path.exists(self._state_path):
            with open(self._state_path) as f:
                self.best = json.load(f)[monitor]

    def _save(self, path):
        _save_weights_atomic(self.model.student, path)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._save(self.last_path)
        with atomic_write(os.path.join(self.directory, "last.json"), "w") as f:  # a damaged backup's fallback
            json.dump({"epoch": epoch + 1}, f)
        value = logs.get(self.monitor, logs.get("kld"))
        if value is not None and float(value) < self.best:
            self.best = float(value)
            self._save(self.best_path)
            with atomic_write(self._state_path, "w") as f:
                json.dump({self.monitor: self.best, "epoch": epoch + 1}, f)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` whose backup is replaced whole at each epoch's end.

    Keras writes `latest.weights.h5` in place, so a `kill -9` during the write leaves a truncated (or empty) file
    that no rerun can load. Here the weights and then the epoch go to temporary files that are renamed over the
    old ones: a kill leaves the previous epoch's backup.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        _save_weights_atomic(self.model, self._weights_path)
        with atomic_write(self._training_metadata_path, "w") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)


def _unreadable_h5(path):
    """Why the HDF5 file `path` cannot be read (e.g. truncated or empty), or None if it opens."""
    import h5py

    try:
        with h5py.File(path, "r"):
            return None
    except Exception as e:  # noqa: BLE001 - h5py raises OSError and others for a damaged file
        return " ".join(str(e).split())[:200] or type(e).__name__


def _check_backup(run_dir, initial_epoch):
    """(initial epoch, student weights to start from or None) once the backup is known to be readable.

    A damaged backup (left by a run killed while Keras wrote it, before `AtomicBackupAndRestore`) is removed; the
    run continues from `checkpoints/last.weights.h5`, the last finished epoch's student weights, with a fresh
    optimizer state (so not exactly as an uninterrupted run would), and says so.

    Raises:
        ValueError: the backup is damaged and there is no last checkpoint with its epoch to continue from.
    """
    backup_dir = os.path.join(run_dir, BACKUP_DIR)
    backup = os.path.join(backup_dir, "latest.weights.h5")
    reason = _unreadable_h5(backup) if os.path.exists(backup) else None
    if reason is None:
        return initial_epoch, None
    last = os.path.join(run_dir, "checkpoints", "last.weights.h5")
    last_epoch = os.path.join(run_dir, "checkpoints", "last.json")
    if not (os.path.exists(last_epoch) and os.path.exists(last) and _unreadable_h5(last) is None):
        raise ValueError(
            f"{backup} is damaged ({reason}), and {last} with its epoch ({last_epoch}) is not there to continue "
            f"from: delete {backup_dir} to start the run again from epoch 1, or choose another --run-dir")
    with open(last_epoch) as f:
        epoch = int(json.load(f)["epoch"])
    print(f"[train] warning: {backup} is damaged ({reason}; a run killed while writing it?); continuing from {last} "
          f"after epoch {epoch} with a fresh optimizer state", file=sys.stderr)
    shutil.rmtree(backup_dir)
    return epoch, last


def count_records(files, label_fraction=1.0):
    """(with a human map, without one) over record shards; reads only the map and stem of each record."""
    spec = {"saliency/encoded": records.FEATURES["saliency/encoded"], "stem": records.FEATURES["stem"]}

    def labelled(batch):
        ex = tf.io.parse_example(batch, spec)
        has = tf.strings.length(ex["saliency/encoded"]) > 0
        return has if label_fraction >= 1.0 else has & records.keeps_human_map(ex["stem"], label_fraction)

    ds = tf.data.TFRecordDataset(list(files)).batch(256).map(labelled)
    labelled = total = 0
    for flags in ds.as_numpy_iterator():
        labelled += int(flags.sum())
        total += len(flags)
    return labelled, total - labelled


def record_files(records_dirs, split, required=True):
    """The shards of `split` in every folder; a folder without them is an error if `required`, else left out."""
    files = []
    for directory in records_dirs:
        try:
            files += records.list_shards(directory, split)
        except FileNotFoundError:
            if required:
                raise
    if not files:
        raise FileNotFoundError(
            f"no '{split}' records in {', '.join(map(str, records_dirs))}: run `python export_teacher.py "
            f"--split {split} --out DIR` first"
        )
    return files


class LogRecordCounts(keras.callbacks.Callback):
    """After each epoch, print how many examples with and without a human map the epoch trained on."""

    def __init__(self, examples_per_epoch):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        fraction = float((logs or {}).get("labelled", 1.0))
        labelled = round(fraction * self.examples_per_epoch)
        print(f"[train] epoch {epoch + 1}: trained on {labelled} examples with a human map and "
              f"{self.examples_per_epoch - labelled} teacher-only")


def epoch_seeded_dataset(files, config, initial_epoch, steps_per_epoch, with_teacher, n_examples=None):
    """Training batches for epochs `initial_epoch .. epochs-1`, each epoch shuffled and flipped by (seed, epoch).

    A resumed run therefore sees exactly the batches an uninterrupted run would have seen. One pipeline per
    epoch (tf.data's shuffle takes only a Python seed), concatenated; each is lazy until its epoch comes. With
    `config.cache` they share one in-memory cache of the decoded examples (`n_examples` of them), filled by the
    first epoch.
    """
    examples, buffer = None, {}
    if config.cache:
        examples = records.decoded_examples(files, config.image_size, with_teacher, config.resize,
                                            label_fraction=config.label_fraction).cache()
        buffer = {"shuffle_buffer": max(n_examples or 0, 2048)}  # all of them: they are in memory anyway
    epochs = []
    for epoch in range(initial_epoch, config.epochs):
        ds = records.training_dataset(
            files,
            config.batch_size,
            config.image_size,
            training=True,
            flips=config.flips,
            seed=config.seed * 100003 + epoch,
            with_teacher=with_teacher,
            resize=config.resize,
            label_fraction=config.label_fraction,
            examples=examples,
            **buffer,
        )
        epochs.append(ds.take(steps_per_epoch))
    return functools.reduce(lambda a, b: a.concatenate(b), epochs)


def _initial_epoch(backup_dir):
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def _changed_settings(previous, config):
    """{setting: (old, new)} for the settings of `config` that differ from a run's stored config.json (a
    setting that an older run's file lacks counts as its default)."""
    defaults = TrainConfig().to_json()
    return {
        k: (previous.get(k, defaults.get(k)), v)
        for k, v in config.to_json().items()
        if k not in _RESUMABLE_OVERRIDES and previous.get(k, defaults.get(k)) != v
    }


def finished_run(config):
    """The `TrainResult` of a finished run in `config.run_dir` made with the same settings, else None."""
    path = os.path.join(config.run_dir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        previous = json.load(f)
    if not previous.get("completed") or _changed_settings(previous, config):
        return None
    saved_model_dir = os.path.join(config.run_dir, "saved_model")
    return TrainResult(config.run_dir, read_history(os.path.join(config.run_dir, "history.csv")),
                       float(previous.get("best_val_kld", float("nan"))),
                       saved_model_dir if os.path.isdir(saved_model_dir) else None)


def _prepare_run_dir(config):
    """Create the run folder or check that an existing one can be continued with this config."""
    run_dir = config.run_dir
    config_path = os.path.join(run_dir, "config.json")
    backup_dir = os.path.join(run_dir, BACKUP_DIR)
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        if previous.get("completed"):
            raise FileExistsError(
                f"{run_dir} holds a finished run; choose another --run-dir or delete the folder to train again"
            )
        changed = _changed_settings(previous, config)
        if changed and os.path.isdir(backup_dir):
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            both = ""
            if "initial_weights" in changed and previous.get("initial_weights"):
                parent = os.path.dirname(os.path.abspath(run_dir))
                both = f" (it was started by --variant both: rerun that command with --run-dir {parent})"
            raise ValueError(
                f"{run_dir} holds an unfinished run with other settings ({detail}){both}; resume it with the same "
                f"settings or choose another --run-dir"
            )
    elif config.resume:
        raise FileNotFoundError(f"--resume: no unfinished run in {run_dir} (no config.json)")
    if config.resume and not os.path.isdir(backup_dir):
        raise FileNotFoundError(f"--resume: {run_dir} has no {BACKUP_DIR}/ to continue from")
    check_writable_dir(run_dir, "--run-dir")  # creates it; a clear error before any work if it cannot be written
    with atomic_write(config_path, "w") as f:
        json.dump(config.to_json(), f, indent=2)
    return _initial_epoch(backup_dir)


def _trim_history(path, initial_epoch):
    """Drop rows of epochs that will be run again (a kill between the CSV write and the backup)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < initial_epoch]
    with atomic_write(path, "w") as f:
        csv.writer(f).writerows(kept)


def read_history(path):
    """history.csv as a list of dicts of floats (epoch as int, 0-based)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(f)
        ]


def plot_history(ax, history, title):
    """Train and val KLD per epoch on `ax`, as the seed project plotted them."""
    epochs = [h["epoch"] + 1 for h in history]
    for key, label in (("kld", "train KLD"), ("val_kld", "val KLD")):
        if history and key in history[0]:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_kld(history, path, title):
    """One run's train and val KLD per epoch, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_history(ax, history, title)
    ax.set_ylabel("KLD (saliency head vs human map)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def _build_student_with_backbone(config):
    """The student of `config`; a backbone weights file that cannot be read is a ValueError naming it."""
    from student.backbones import get_backbone
    from student.backbones.pretrained import WeightsCacheError
    from student.model import build_student

    try:
        return build_student(config.variant, backbone_weights=config.backbone_weights, backbone=config.backbone,
                             decoder=config.decoder)
    except (FileNotFoundError, ImportError, WeightsCacheError):
        raise
    except Exception as e:  # safetensors, h5py and torch raise their own types for a garbage file
        if not config.backbone_weights:
            raise
        raise ValueError(
            f"{config.backbone_weights}: not usable as --backbone-weights ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]}). Pass {get_backbone(config.backbone).weights_hint}"
        ) from e


def freeze_encoder_batchnorm(student, backbone):
    """Put every BatchNormalization of the student's encoder in inference mode (Keras 3: `trainable = False`)."""
    from student.backbones import get_backbone

    encoder = student.get_layer(get_backbone(backbone).layer_name)
    frozen = 0
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def _too_few_records(config, train_files, labelled, teacher_only, with_teacher):
    """Why the training records do not fill one batch, and what helps: the batch size, or for variant A (human maps
    only) records without human maps or a --label-fraction that keeps none of them."""
    where = ", ".join(config.records_dirs)
    n_train = labelled + teacher_only if with_teacher else labelled
    if with_teacher:
        return (f"{where}: {n_train} training records are fewer than one batch of {config.batch_size}; "
                "lower --batch-size")
    fraction = float(config.label_fraction)
    with_map = count_records(train_files)[0] if fraction < 1.0 else labelled
    if with_map == 0:
        return (f"{where}: the '{config.train_split}' records have no human maps ({teacher_only} teacher-only "
                "records, e.g. from export_teacher.py --images), and variant A trains on human maps only: use "
                "--variant B (which also learns from the teacher maps), or add records with human maps")
    if labelled == 0:
        return (f"--label-fraction {fraction:g} keeps the human maps of none of the {with_map} training records "
                f"that have one (in {where}; about {fraction * with_map:.2g} expected), and variant A trains on human "
                "maps only: raise --label-fraction")
    kept = f" (--label-fraction {fraction:g} keeps {labelled} of {with_map})" if fraction < 1.0 else ""
    more = " or raise --label-fraction" if fraction < 1.0 else ""
    return (f"{where}: {labelled} training records with a human map{kept} are fewer than one batch of "
            f"{config.batch_size}; lower --batch-size{more}")


def build_distiller(config, strategy):
    """The student (seeded) wrapped in a compiled Distiller, built under `strategy`."""
    from student.distillation import Distiller
    from student.model import build_student

    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        student = _build_student_with_backbone(config)
        if config.initial_weights:
            from student.model import copy_common_weights, load_all_weights

            # The initial weights are variant B's (a superset of A's layers).
            source = load_all_weights(build_student("B", backbone=config.backbone, decoder=config.decoder),
                                      config.initial_weights)
            copy_common_weights(source, student)
        if config.freeze_encoder_bn:
            freeze_encoder_batchnorm(student, config.backbone)
        distiller = Distiller(
            student,
            variant=config.variant,
            temperature=config.temperature,
            kd_weight=config.kd_weight,
            kd_into_saliency=config.kd_into_saliency,
        )
        distiller.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            jit_compile=config.jit_compile,
        )
    return distiller


def _check_records(config):
    """The train and val shards of `config`, after checking that their manifests name the same teacher."""
    train_files = record_files(config.records_dirs, config.train_split)
    val_files = record_files(config.records_dirs, config.val_split, required=False)
    sources = [(d, s) for d in config.records_dirs for s in (config.train_split, config.val_split)
               if os.path.exists(os.path.join(d, f"{s}.json"))]
    mixed = records.check_same_teacher(sources, allow_mixed=config.allow_mixed_records)
    for difference in mixed:
        print(f"[train] warning: mixed records (--allow-mixed-records): {difference}", file=sys.stderr)
    return train_files, val_files


def _training_counts(config, train_files):
    """(steps per epoch, records with a human map, teacher-only records) that the run trains on.

    Raises:
        ValueError: the records do not fill one batch, or nothing would train the saliency head (variant B with
            no human map kept and no `kd_into_saliency`).
    """
    with_teacher = config.variant == "B"
    labelled, teacher_only = count_records(train_files, config.label_fraction)
    if with_teacher and labelled == 0 and teacher_only and config.kd_into_saliency == 0:
        raise ValueError(
            f"none of the {teacher_only} training records in {', '.join(config.records_dirs)} has a human map "
            f"(with --label-fraction {float(config.label_fraction):g}), and with --kd-into-saliency 0 nothing trains "
            "the saliency head that the SavedModel serves: pass --kd-into-saliency 1 (pure distillation), or add "
            "records with human maps")
    n_train = labelled + teacher_only if with_teacher else labelled
    steps = n_train // config.batch_size
    if steps == 0:
        raise ValueError(_too_few_records(config, train_files, labelled, teacher_only, with_teacher))
    return min(steps, config.steps_per_epoch or steps), labelled, teacher_only


def _validation_dataset(config, val_files):
    """(the validation batches, the number of validation records with a human map)."""
    with_teacher = config.variant == "B"
    examples = None
    if config.cache:
        examples = records.decoded_examples(val_files, config.image_size, with_teacher, config.resize,
                                            labelled_only=True).cache()
    val_ds = records.training_dataset(
        val_files, config.batch_size, config.image_size, training=False, with_teacher=with_teacher,
        resize=config.resize, labelled_only=True, examples=examples,
    )
    # A known length spares Keras from running into the end of the data (and warning about it).
    n_val = count_records(val_files)[0]
    if n_val == 0:
        raise ValueError(f"the '{config.val_split}' records of {', '.join(config.records_dirs)} have no human "
                         "maps to validate on")
    val_batches = math.ceil(n_val / config.batch_size)
    if config.validation_steps:
        val_batches = min(val_batches, config.validation_steps)
        val_ds = val_ds.take(val_batches)
    return val_ds.apply(tf.data.experimental.assert_cardinality(val_batches)), n_val


def _callbacks(config, steps, extra_callbacks):
    run_dir = config.run_dir
    callbacks = [
        StopOnNonFiniteLoss(run_dir),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        StudentCheckpoints(os.path.join(run_dir, "checkpoints")),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
        *extra_callbacks,
        # Last, so that an epoch counts as done only once everything above has written its output; kept after
        # the last epoch (`_finish` removes it) so that a run killed before it finished resumes there.
        AtomicBackupAndRestore(os.path.join(run_dir, BACKUP_DIR), delete_checkpoint=False),
    ]
    if config.verbose:
        callbacks.append(LogRecordCounts(steps * config.batch_size))
    return callbacks


def _report_start(config, distiller, steps, labelled, teacher_only, n_val, initial_epoch):
    if not config.verbose:
        return
    used = (f"{labelled} with a human map + {teacher_only} teacher-only" if config.variant == "B" else
            f"{labelled} with a human map" + (f" ({teacher_only} teacher-only left out: variant A)"
                                               if teacher_only else ""))
    print(f"[train] variant {config.variant}: {distiller.student.count_params():,} parameters, "
          f"{used} training records, {n_val} validation records, {steps} steps/epoch, run folder {config.run_dir}")
    if initial_epoch:
        print(f"[train] resuming after epoch {initial_epoch} of {config.epochs}")


def _finish(config):
    """After the last epoch: the KLD figure, the SavedModel of the best epoch, config.json marked completed, and
    no backup."""
    run_dir = config.run_dir
    history = read_history(os.path.join(run_dir, "history.csv"))
    plot_kld(history, os.path.join(run_dir, "kld.png"), f"variant {config.variant}")
    saved_model_dir = os.path.join(run_dir, "saved_model")
    if config.export:
        from student.model import build_student, load_all_weights
        from student.serving import export_saved_model

        student = load_all_weights(build_student(config.variant, backbone=config.backbone, decoder=config.decoder),
                                   os.path.join(run_dir, "checkpoints", "best.weights.h5"))
        export_saved_model(student, saved_model_dir, input_size=config.image_size, resize=config.resize)
    best = min((h["val_kld"] for h in history if "val_kld" in h), default=float("nan"))
    final = dict(config.to_json(), completed=True, best_val_kld=best)
    with atomic_write(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(final, f, indent=2)
    shutil.rmtree(os.path.join(run_dir, BACKUP_DIR), ignore_errors=True)
    return TrainResult(run_dir, history, best, saved_model_dir if config.export else None)


def train(config, strategy=None, extra_callbacks=()):
    """Run (or resume) one training run and return its result.

    Args:
        config: a `TrainConfig`.
        strategy: a `tf.distribute` strategy; default from `config.strategy`.
        extra_callbacks: more Keras callbacks (e.g. the study's per-epoch evaluation).

    Raises:
        FileNotFoundError: no records (the message says to run export_teacher.py first).
        TrainingDivergedError: the loss became NaN; the best checkpoint is left intact.
    """
    from student.distillation import make_strategy

    train_files, val_files = _check_records(config)
    initial_epoch = _prepare_run_dir(config)
    initial_epoch, restart_weights = _check_backup(config.run_dir, initial_epoch)
    _trim_history(os.path.join(config.run_dir, "history.csv"), initial_epoch)
    if initial_epoch >= config.epochs:  # killed after the last epoch's backup, before `_finish` was done
        if config.verbose:
            print(f"[train] all {config.epochs} epochs are done; finishing the run")
        return _finish(config)

    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        strategy = strategy or make_strategy(config.strategy)
        distiller = build_distiller(config, strategy)
        if restart_weights:
            distiller.student.load_weights(restart_weights)
        steps, labelled, teacher_only = _training_counts(config, train_files)
        train_ds = epoch_seeded_dataset(train_files, config, initial_epoch, steps, config.variant == "B",
                                        labelled + teacher_only if config.variant == "B" else labelled)
        val_ds, n_val = _validation_dataset(config, val_files)
        callbacks = _callbacks(config, steps, extra_callbacks)
        _report_start(config, distiller, steps, labelled, teacher_only, n_val, initial_epoch)
        distiller.fit(
            train_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,  # the backup's epoch too, when there is one (it restores it again)
            steps_per_epoch=steps,
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,  # the records pipeline shuffles, seeded per epoch
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return _finish(config)


def seed_record_path(weights_path):
    """Where the seed of initial weights is recorded: `initial.weights.h5` -> `initial.seed.json`."""
    weights_path = os.fspath(weights_path)
    base = weights_path[: -len(".weights.h5")] if weights_path.endswith(".weights.h5") else weights_path
    return base + ".seed.json"


def _seeded_initial_model(seed, backbone="resnet18", backbone_weights=None, decoder="card"):
    from student.model import build_student

    keras.utils.set_random_seed(seed)
    return build_student("B", backbone=backbone, backbone_weights=backbone_weights, decoder=decoder)


def _recorded_seed(path, seed, backbone="resnet18", backbone_weights=None, decoder="card"):
    """The seed of the initial weights in `path`: from its seed record when that matches the file, else `seed` if
    the file holds exactly `seed`'s weights (files written before the record existed), else None (unknown)."""
    record = seed_record_path(path)
    if os.path.exists(record):
        try:
            with open(record) as f:
                entry = json.load(f)
            if entry.get("sha256") == file_sha256(path):
                if ((entry.get("backbone", "resnet18"), entry.get("backbone_weights"), entry.get("decoder", "card"))
                        != (backbone, backbone_weights, decoder)):
                    return None
                return int(entry["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    from student.model import build_student

    expected = _seeded_initial_model(seed, backbone, backbone_weights, decoder)
    stored = build_student("B", backbone=backbone, decoder=decoder)
    try:
        stored.load_weights(path)
    except Exception:  # noqa: BLE001 - an unreadable or foreign file is simply not seed's weights
        return None
    if len(expected.weights) == len(stored.weights) and all(
            np.array_equal(a.numpy(), b.numpy()) for a, b in zip(expected.weights, stored.weights)):
        _write_seed_record(path, seed, backbone, backbone_weights, decoder)
        return seed
    return None


def _write_seed_record(path, seed, backbone="resnet18", backbone_weights=None, decoder="card"):
    with atomic_write(seed_record_path(path), "w") as f:
        json.dump({"seed": int(seed), "backbone": backbone, "backbone_weights": backbone_weights, "decoder": decoder,
                   "sha256": file_sha256(path)}, f, indent=2)


def save_initial_weights(path, seed, backbone="resnet18", backbone_weights=None, used_by=(), decoder="card"):
    """Write variant B's seeded initial weights, from which both variants start (A takes the common layers).

    The seed (and the encoder with its pretrained weights) is recorded beside them (`seed_record_path`: `initial.seed.json`, with the file's sha256). An
    existing file is reused only when it holds the weights of `seed`. One of another seed (or of a seed that
    cannot be told) is made again, with a note on stderr, unless a run in `used_by` (folders with a
    config.json) started from it: then the run would mix two seeds, so it is refused.

    Raises:
        ValueError: the existing initial weights are of another seed and a run in `used_by` started from them.
    """
    path = os.fspath(path)
    if os.path.exists(path):
        recorded = _recorded_seed(path, seed, backbone, backbone_weights, decoder)
        if recorded == seed:
            return path
        which = f"seed {recorded}" if recorded is not None else "an unknown seed"
        started = [os.fspath(d) for d in used_by if os.path.exists(os.path.join(d, "config.json"))]
        if started:
            again = f"rerun with --seed {recorded}" if recorded is not None else "rerun with the seed it was made with"
            raise ValueError(
                f"{path} holds the initial weights of {which}, not --seed {seed}, and {', '.join(started)} started "
                f"from them; {again} to continue, or choose another --run-dir for seed {seed}"
            )
        print(f"[train] {path}: initial weights of {which}, not --seed {seed}; made again for seed {seed}",
              file=sys.stderr)
    model = _seeded_initial_model(seed, backbone, backbone_weights, decoder)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _save_weights_atomic(model, path)
    _write_seed_record(path, seed, backbone, backbone_weights, decoder)
    return path


def train_both(make_config, parent_dir):
    """Train A then B from the same initial weights, each with its own optimizer, into parent_dir/A and /B.

    Args:
        make_config: `(variant, run_dir, initial_weights) -> TrainConfig`.
        parent_dir: folder that receives `initial.weights.h5` (with its seed in `initial.seed.json`), `A/` and
            `B/`. Initial weights of another seed are made again, or refused once A or B started from them.

    Rerun with the same settings after an interruption (with or without `resume`), a finished A is reused and
    B continues from its last finished epoch, ending as an uninterrupted run would.
    """
    first, _ = [make_config(v, os.path.join(parent_dir, v), None) for v in ("A", "B")]  # both checked before any write
    check_writable_dir(parent_dir, "--run-dir")  # a file there: a clear error, not save_initial_weights' errno
    initial = save_initial_weights(os.path.join(parent_dir, "initial.weights.h5"), first.seed, first.backbone,
                                   first.backbone_weights, used_by=[os.path.join(parent_dir, v) for v in ("A", "B")],
                                   decoder=first.decoder)
    configs = [make_config(v, os.path.join(parent_dir, v), initial) for v in ("A", "B")]
    done = [finished_run(c) for c in configs]
    if all(done) and any(c.resume for c in configs):
        raise FileNotFoundError(f"--resume: both runs in {parent_dir} (A/ and B/) have finished; nothing to resume")
    results = []
    for config, result in zip(configs, done):
        if result is not None:
            if config.verbose:
                print(f"[train] variant {config.variant}: reusing the finished run in {config.run_dir}")
            results.append(result)
            continue
        if config.resume and not os.path.exists(os.path.join(config.run_dir, "config.json")):
            config = dataclasses.replace(config, resume=False)  # --resume after A finished: B starts now
        results.append(train(config))
    return results
