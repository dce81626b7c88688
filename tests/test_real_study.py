"""The real-data study end to end on two tiny NUS-VIP data sets: variants, tables, resumption."""

import json

import keras
import numpy as np
import pytest

from experiments import real_study
from teacher import export
from tests.nusvip_fixtures import make_nusvip


def _entries(rng, sizes, observers=3, per_observer=5):
    """Random fixations (1-based MATLAB x, y) of a few observers on each image."""
    entries = {}
    for stem, (h, w) in sizes.items():
        entries[f"{stem}.jpg"] = [
            (list(rng.uniform(1, w, per_observer)), list(rng.uniform(1, h, per_observer)), [200.0] * per_observer)
            for _ in range(observers)
        ]
    return entries


@pytest.fixture(scope="module")
def study_records(tmp_path_factory):
    """Two data sets (landscape and portrait images) with train/val/test splits, exported with a contract teacher."""
    root = tmp_path_factory.mktemp("study")
    inputs = keras.Input((None, None, 3))
    keras.utils.set_random_seed(0)
    teacher = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", activation="softplus")(inputs / 255.0))
    teacher.save(root / "teacher.keras")
    rng = np.random.default_rng(0)
    dirs = []
    for name, shape in (("land", (24, 32)), ("port", (32, 24))):
        stems = [f"{name}{i}" for i in range(8)]
        make_nusvip(root / name, _entries(rng, {s: shape for s in stems}), {s: shape for s in stems})
        split_file = root / f"{name}.json"
        split_file.write_text(json.dumps({"train": stems[:4], "val": stems[4:6], "test": stems[6:]}))
        out = root / f"distill_{name}"
        export.export_split(root / name, "all", str(root / "teacher.keras"), out, progress=False, dataset="nus",
                            split_file=split_file, sigma=3.0)
        dirs.append(str(out))
    return dirs


def test_study_trains_every_variant_and_reports_floor_teacher_and_ceiling(study_records, tmp_path, capsys):
    settings = real_study.StudySettings(records_dirs=tuple(study_records), image_size=(32, 32), epochs=1,
                                        batch_size=2, jit_compile=False)
    summary = real_study.run_study(seeds=(0,), out_dir=str(tmp_path), settings=settings, variants=("A", "B_kd_20"))
    assert set(summary["variants"]) == {"A", "B_kd_20"}
    for name in ("A", "B_kd_20"):
        test = summary["variants"][name]["test"]
        assert set(test) == {"land", "port"}
        assert len(test["land"]["nss"]["per_seed"]) == 1 and np.isfinite(test["port"]["kld"]["mean"])
        assert len(summary["variants"][name]["val_curves"]["kld"]) == 1
    markdown = (tmp_path / "study.md").read_text()
    for row in ("student A", "student B_kd_20", "teacher", "centre bias (floor)", "inter-observer (ceiling)"):
        assert f"| {row} |" in markdown
    assert "**land**" in markdown and "**port**" in markdown and (tmp_path / "curves.png").stat().st_size > 0
    # The label-scarce run trained on 20% of the human maps plus the teacher maps of all images.
    config = json.loads((tmp_path / "seed0" / "B_kd_20" / "config.json").read_text())
    assert config["label_fraction"] == 0.2 and config["kd_into_saliency"] == 1.0 and config["completed"]

    # Status lines go to stderr (issue 18, item 13): stdout carries the table only.
    first = capsys.readouterr()
    assert "[study] seed 0, A" in first.err and "[study] seed" not in first.out and "| student A |" in first.out
    # A rerun reuses every finished run and cached score: nothing is trained again.
    again = real_study.run_study(seeds=(0,), out_dir=str(tmp_path), settings=settings, variants=("A", "B_kd_20"))
    assert "[study] seed" not in capsys.readouterr().err
    assert again["variants"] == summary["variants"]
    # A report of a study cut short covers the finished runs only, and trains nothing.
    report = real_study.run_study(seeds=(0,), out_dir=str(tmp_path), settings=settings, variants=("A", "B"),
                                  report_only=True)
    assert set(report["variants"]) == {"A"} and not (tmp_path / "seed0" / "B").exists()
    rows = [line for line in (tmp_path / "study.md").read_text().splitlines() if line.startswith("| student A | 1 |")]
    assert rows and all("±" not in row for row in rows)  # one seed: no spread
    # An addendum (the pretrained study's targets) extends the summary, study.md, study.json and stdout alike.
    capsys.readouterr()

    def addendum(summary):
        summary["extra"] = sorted(summary["variants"])
        return "\nExtra: done.\n"

    real_study.run_study(seeds=(0,), out_dir=str(tmp_path), settings=settings, variants=("A",), report_only=True,
                         addendum=addendum)
    assert (tmp_path / "study.md").read_text().endswith("\nExtra: done.\n")
    assert json.loads((tmp_path / "study.json").read_text())["extra"] == ["A"]
    assert "Extra: done." in capsys.readouterr().out


def test_study_says_which_export_is_missing(tmp_path):
    settings = real_study.StudySettings(records_dirs=(str(tmp_path / "nothing"),))
    with pytest.raises(FileNotFoundError, match=r"no finished 'train' export .* export_teacher\.py"):
        real_study.run_study(seeds=(0,), out_dir=str(tmp_path / "out"), settings=settings)


# --- issue 18, item 11: reruns with other settings, Ctrl-C and --report on an empty folder -------------------------


def _settings(study_records, **overrides):
    values = dict(records_dirs=tuple(study_records), image_size=(32, 32), epochs=1, batch_size=2, jit_compile=False)
    return real_study.StudySettings(**{**values, **overrides})


def _fake_finished_run(settings, out_dir, name="A", seed=0):
    """A run folder whose config.json says it finished with `settings` (no training needed to test the check)."""
    run_dir = out_dir / f"seed{seed}" / name
    run_dir.mkdir(parents=True)
    config = settings.train_config(name, str(run_dir), str(out_dir / f"seed{seed}" / "initial.weights.h5"), seed)
    (run_dir / "config.json").write_text(json.dumps({**config.to_json(), "completed": True}))
    return run_dir


def test_a_rerun_with_other_settings_names_the_flag_not_run_dir(study_records, tmp_path, capsys):
    run_dir = _fake_finished_run(_settings(study_records), tmp_path)
    with pytest.raises(ValueError, match=r"epochs: 1 -> 2.*--epochs") as info:
        real_study.run_study(seeds=(0,), out_dir=str(tmp_path), settings=_settings(study_records, epochs=2),
                             variants=("A",))
    assert str(run_dir) in str(info.value) and "--run-dir" not in str(info.value) and "--out" in str(info.value)
    assert not (tmp_path / "references.json").exists()  # refused before any work
    capsys.readouterr()
    code = real_study.main(["--records-dir", *study_records, "--seeds", "0", "--variants", "A", "--out",
                            str(tmp_path), "--epochs", "2", "--image-size", "32", "32", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("real_study: error: ") and err.count("\n") == 1 and "--epochs" in err


def test_report_of_an_empty_folder_scores_nothing(study_records, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no finished run to report"):
        real_study.run_study(seeds=(0,), out_dir=str(tmp_path / "empty"), settings=_settings(study_records),
                             report_only=True)
    assert not (tmp_path / "empty").exists()  # no references.json (the test evaluation), no initial weights
    code = real_study.main(["--records-dir", *study_records, "--out", str(tmp_path / "empty"), "--report"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("real_study: error: ") and "no finished run to report" in err


@pytest.mark.parametrize("flag, values", [("--seeds", ["0", "1", "0"]), ("--variants", ["A", "B", "A"])])
def test_a_seed_or_variant_given_twice_is_refused_before_any_work(study_records, tmp_path, capsys, flag, values):
    args = {"--seeds": ["0"], "--variants": ["A"], flag: values}
    code = real_study.main(["--records-dir", *study_records, "--out", str(tmp_path / "out"), "--report",
                            *[item for name, given in args.items() for item in (name, *given)]])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"real_study: error: {flag}: {values[0]} is given twice" in err
    assert not (tmp_path / "out").exists()


def _study_args(study_records, out):
    return ["--records-dir", *study_records, "--seeds", "0", "--variants", "A", "B", "--out", str(out),
            "--epochs", "1", "--image-size", "32", "32", "--batch-size", "2"]


def test_ctrl_c_stops_the_study_with_a_resume_hint(study_records, tmp_path, capsys, monkeypatch):
    from student import training

    calls = []

    def interrupted(config, **kwargs):
        calls.append(config.run_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    try:
        code = real_study.main(_study_args(study_records, tmp_path))
    except KeyboardInterrupt:  # would stop pytest itself
        pytest.fail("the KeyboardInterrupt escaped real_study.main (a traceback for the user)")
    assert code == 130
    err = capsys.readouterr().err
    assert len(calls) == 1 and "interrupted" in err and "run the same command again to resume" in err
    assert "Traceback" not in err


def test_a_swallowed_ctrl_c_still_stops_the_study(study_records, tmp_path, capsys, monkeypatch):
    """A library that catches the KeyboardInterrupt (seen once in the audit) must not let the study run on."""
    import signal

    from student import training

    calls = []

    def swallows(config, **kwargs):
        calls.append(config.run_dir)
        try:  # what Python does on Ctrl-C: call the installed SIGINT handler (not a real signal to the test process)
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass

    monkeypatch.setattr(training, "train", swallows)
    previous = signal.getsignal(signal.SIGINT)
    assert real_study.main(_study_args(study_records, tmp_path)) == 130
    assert signal.getsignal(signal.SIGINT) is previous  # put back
    assert len(calls) == 1 and "run the same command again to resume" in capsys.readouterr().err


def _finaliser_calling(handler):
    """An object whose finaliser runs `handler` as Python runs the SIGINT handler when a Ctrl-C lands while a
    finaliser (a tf.data iterator's or a generator's cleanup) runs; no real signal is sent to the test process."""
    import signal

    class Finalised:
        def __del__(self):
            handler(signal.SIGINT, None)

    return Finalised()


@pytest.fixture
def default_unraisablehook(monkeypatch):
    """Python's own hook, which prints "Exception ignored in ..." on stderr (pytest's would hide it)."""
    import sys

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


def test_a_ctrl_c_in_a_finaliser_stops_training_at_the_next_batch_silently(
        study_records, tmp_path, capsys, monkeypatch, default_unraisablehook):
    import signal

    from student import training

    def train(config, extra_callbacks=()):
        _finaliser_calling(signal.getsignal(signal.SIGINT))  # collected at once: the Ctrl-C lands in its __del__
        for callback in extra_callbacks:  # training goes on to the end of its next batch
            callback.on_train_batch_end(0)
        pytest.fail("training went on after the Ctrl-C")

    monkeypatch.setattr(training, "train", train)
    assert real_study.main(_study_args(study_records, tmp_path)) == 130
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "KeyboardInterrupt" not in err
    assert "run the same command again to resume" in err


def test_a_second_ctrl_c_during_the_cleanup_prints_nothing(
        study_records, tmp_path, capsys, monkeypatch, default_unraisablehook):
    import signal

    from student import training

    def train(config, extra_callbacks=()):
        handler = signal.getsignal(signal.SIGINT)
        cleanup = _finaliser_calling(handler)  # noqa: F841 - finalised while the first Ctrl-C unwinds this frame
        handler(signal.SIGINT, None)  # the first Ctrl-C

    monkeypatch.setattr(training, "train", train)
    previous = signal.getsignal(signal.SIGINT)
    assert real_study.main(_study_args(study_records, tmp_path)) == 130
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "KeyboardInterrupt" not in err
    assert "run the same command again to resume" in err and err.count("interrupted") == 1
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_ctrl_c_while_tensorflow_loads_is_the_one_line_message(tmp_path, capsys, monkeypatch):
    def loading():  # importing TensorFlow takes seconds to a minute: a Ctrl-C there is likely
        raise KeyboardInterrupt

    monkeypatch.setattr(real_study, "import_tensorflow_quietly", loading)
    try:
        code = real_study.main(["--out", str(tmp_path / "out")])
    except KeyboardInterrupt:  # would stop pytest itself
        pytest.fail("the KeyboardInterrupt escaped real_study.main (a traceback for the user)")
    assert code == 130
    assert "run the same command again to resume" in capsys.readouterr().err
