"""Conventions every command line keeps (issue 18): exit status 2 for a usage error and 1 for any other handled
error, printed as one line `<prog>: error: <message>` on stderr."""

import pytest


def _one_error_line(err, prog):
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    return err


def _work_must_not_start(*args, **kwargs):
    raise AssertionError("the command started its work before checking --out")


def test_study_exit_status(tmp_path, capsys, monkeypatch):
    from experiments import demo, study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "_ensure_data", _work_must_not_start)
    with pytest.raises(SystemExit) as info:
        study.main(["--seeds", "x"])
    assert info.value.code == 2
    capsys.readouterr()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert study.main(["--out", str(blocker / "out")]) == 1
    assert "--out" in _one_error_line(capsys.readouterr().err, "study")
    for bad in (["--epochs", "0"], ["--epochs", "-2"]):  # 0 was taken as "not given"
        with pytest.raises(SystemExit) as info:
            study.main(bad)
        assert info.value.code == 2 and "--epochs" in capsys.readouterr().err
    assert study.main(["--seeds", "0", "1", "0", "--out", str(tmp_path / "twice")]) == 1  # before any work
    assert "--seeds: 0 is given twice" in _one_error_line(capsys.readouterr().err, "study")


def test_run_benchmarks_exit_status(tmp_path, capsys, monkeypatch):
    import benchmarks.run_benchmarks as run_benchmarks
    import datasets.synthetic

    monkeypatch.setattr(datasets.synthetic, "generate_synthetic_salicon", _work_must_not_start)
    with pytest.raises(SystemExit) as info:
        run_benchmarks.main(["--threads", "0"])
    assert info.value.code == 2 and "--threads: expected a positive integer" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_benchmarks.main(["--out", str(blocker / "bench" / "results"), "--work-dir", str(tmp_path / "w")]) == 1
    assert "--out" in _one_error_line(capsys.readouterr().err, "run_benchmarks.py")


def test_int8_accuracy_exit_status(tmp_path, capsys):
    import benchmarks.int8_accuracy as int8_accuracy

    with pytest.raises(SystemExit) as info:
        int8_accuracy.main([])  # no --exports
    assert info.value.code == 2
    capsys.readouterr()
    code = int8_accuracy.main(["--exports", str(tmp_path / "none"), "--osie", str(tmp_path / "no-osie")])
    assert code == 1
    _one_error_line(capsys.readouterr().err, "int8_accuracy.py")


# --- issue 18, item 13: stdout carries results only; --help imports no TensorFlow ----------------------------------

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIS = [pytest.param(["predict.py"], id="predict"), pytest.param(["evaluate.py"], id="evaluate"),
        pytest.param(["export_student.py"], id="export_student"),
        pytest.param(["benchmarks/run_benchmarks.py"], id="run_benchmarks"),
        pytest.param(["benchmarks/int8_accuracy.py"], id="int8_accuracy"),
        pytest.param(["-m", "experiments.study"], id="study"),
        pytest.param(["-m", "experiments.real_study"], id="real_study"),
        pytest.param(["-m", "experiments.own_model"], id="own_model"),
        pytest.param(["train.py"], id="train"),
        pytest.param(["export_teacher.py"], id="export_teacher")]

# Runs a command line's --help as `python <file>` or `python -m <module>` would, then reports the heavy
# packages it imported on a file (stdout and stderr stay the command's own).
_HELP = """
import json, runpy, sys
args, report = sys.argv[1:-1], sys.argv[-1]
sys.argv = [args[-1], "--help"]
try:
    if args[0] == "-m":
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, ".")
        runpy.run_path(args[0], run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
with open(report, "w") as f:
    json.dump({"code": code, "heavy": sorted(m for m in ("tensorflow", "keras", "onnxruntime", "openvino", "tf2onnx")
                                             if m in sys.modules)}, f)
"""


@pytest.mark.parametrize("cli", CLIS)
def test_help_imports_no_tensorflow_and_prints_nothing_on_stderr(cli, tmp_path):
    """... and shows no "(default: None)" and no option with two defaults (its own words and argparse's)."""
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", _HELP, *cli, str(report)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and json.loads(report.read_text()) == {"code": 0, "heavy": []}, result.stderr
    assert result.stderr == "" and "usage:" in result.stdout
    options = re.split(r"\n  -", result.stdout)
    assert [o for o in options if "(default: None)" in o or o.count("default") > 1] == []


@pytest.fixture(scope="module")
def val_records(synthetic_salicon_dir, tmp_path_factory):
    from teacher.export import export_split

    out = tmp_path_factory.mktemp("records")
    export_split(str(synthetic_salicon_dir), "val", "oracle", str(out), progress=False)
    return out


def _plain(text):
    assert "\r" not in text and "\x1b" not in text, repr(text[:300])
    return text


def test_evaluate_stdout_is_the_table_only(val_records, tmp_path, capsys):
    import evaluate as evaluate_cli
    from evaluation.scoring import to_markdown

    for quiet in ([], ["--quiet"]):
        capsys.readouterr()
        assert evaluate_cli.main(["--records-dir", str(val_records), "--out", str(tmp_path / "eval"), *quiet]) == 0
        captured = capsys.readouterr()
        results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert captured.out == to_markdown(results) + "\n"  # `evaluate.py ... > table.md` holds the table only
        _plain(captured.err)
        if quiet:
            assert captured.err == ""
        else:
            assert "teacher (records)" in captured.err and "[evaluate] wrote" in captured.err


def test_export_progress_goes_to_stderr_as_plain_lines(synthetic_salicon_dir, tmp_path, capsys):
    from teacher.export import export_split

    export_split(str(synthetic_salicon_dir), "val", "oracle", str(tmp_path / "records"), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""  # `export_teacher.py ... > log` gets the summary only
    assert "val: exporting 4 of 4 images" in _plain(captured.err) and "4/4 image(s) done" in captured.err


def test_predict_progress_is_plain_when_stderr_is_not_a_terminal(tmp_path, capsys):
    import cv2

    from inference.files import predict_files
    from inference.predictors import Predictor

    class Flat(Predictor):
        kind = "student"

        def _predict_group(self, images):
            return np.ones(images.shape[:3], np.float32)

    for i in range(3):
        assert cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    report = predict_files(Flat("flat"), [tmp_path], out_dir=tmp_path / "out", progress=True)
    captured = capsys.readouterr()
    assert len(report.written) == 3 and captured.out == ""
    assert "predict: 3/3 image(s) done" in _plain(captured.err)


# --- issue 18, item 14: the benchmark's temporary work folder does not outlive the run --------------------------


def _stub_benchmark(monkeypatch, tmp_path, fail=False):
    """run_benchmarks with its data, teacher and measurements replaced by stand-ins (the real ones take an hour);
    temporary folders are made in `tmp_path / "tmp"`. With `fail`, making the data raises ENOSPC."""
    import errno
    import tempfile
    import types

    import benchmarks.run_benchmarks as run_benchmarks
    import datasets.synthetic
    import teacher.convert
    import teacher.export
    import teacher.loading

    def generate(root, **kwargs):
        if fail:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root))
        os.makedirs(root, exist_ok=True)
        (Path(root) / "image.jpg").write_bytes(b"\0" * 1000)

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(datasets.synthetic, "generate_synthetic_salicon", generate)
    monkeypatch.setitem(sys.modules, "msinet_reference",
                        types.SimpleNamespace(build_reference_pb=lambda path, seed: Path(path).write_bytes(b"pb")))
    monkeypatch.setattr(teacher.export, "export_split", lambda *args, **kwargs: None)
    monkeypatch.setattr(teacher.convert, "convert", lambda path: "keras teacher")
    monkeypatch.setattr(teacher.loading, "load_teacher", lambda path: "graph teacher")
    monkeypatch.setattr(run_benchmarks, "machine_description", lambda: dict(MACHINE))
    monkeypatch.setattr(run_benchmarks, "bench_inference", lambda teacher, repeats: dict(INFERENCE_ROW))
    return run_benchmarks


INFERENCE_ROW = {"ratio": 10.0, "student_images_per_s": 20.0, "teacher_images_per_s": 2.0}
MACHINE = {"cpu": "test", "cpu_cores": 2, "gpus": ["none"], "tensorflow": "2.21", "keras": "3"}


def test_benchmark_work_folder_is_removed_after_a_run(tmp_path, monkeypatch, capsys):
    run_benchmarks = _stub_benchmark(monkeypatch, tmp_path)
    out = tmp_path / "results" / "bench"
    assert run_benchmarks.main(["--out", str(out), "--only", "inference"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["inference"] == INFERENCE_ROW
    assert list((tmp_path / "tmp").iterdir()) == []  # no saliency-kd-bench-* left
    assert "[bench]" not in capsys.readouterr().out  # status on stderr


@pytest.mark.parametrize("keep", [False, True])
def test_benchmark_work_folder_is_removed_on_an_error_unless_kept(tmp_path, monkeypatch, capsys, keep):
    """A full disk is simulated: making the synthetic data raises OSError(ENOSPC)."""
    run_benchmarks = _stub_benchmark(monkeypatch, tmp_path, fail=True)
    args = ["--out", str(tmp_path / "results" / "bench"), "--only", "inference"] + (["--keep-work"] if keep else [])
    assert run_benchmarks.main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err
    left = [p.name for p in (tmp_path / "tmp").iterdir()]
    if keep:
        assert len(left) == 1 and left[0].startswith("saliency-kd-bench-") and left[0] in err and "--keep-work" in err
    else:
        assert left == []


# --- issue 22 (one run_main) and issue 24 items 7 and 9: Ctrl-C and --aspect -1:2 ------------------------------


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _one_interrupted_line(err, prog, *expected):
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{prog}: interrupted; ") and all(e in err for e in expected), err


@pytest.fixture()
def one_image(tmp_path):
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a.png"), np.full((16, 24, 3), 128, np.uint8))
    return folder


@pytest.mark.parametrize("where", ["images", "video"])
def test_ctrl_c_in_predict_is_one_line_and_rc_130(one_image, tmp_path, monkeypatch, capsys, where):
    import predict
    from inference import files, inputs

    monkeypatch.setattr(predict, "load_predictor", lambda *args, **kwargs: "a model")
    if where == "images":
        monkeypatch.setattr(inputs, "predict_files", _interrupt)
    else:
        (one_image / "clip.mp4").write_bytes(b"not decoded: predict_video is interrupted")
        monkeypatch.setattr(inputs, "predict_files", lambda *a, **k: files.PredictionReport([], []))
        monkeypatch.setattr(inputs, "predict_video", _interrupt)
    assert predict.main([str(one_image), "--out", str(tmp_path / "out"), "--no-progress"]) == 130
    _one_interrupted_line(capsys.readouterr().err, "predict.py", "run the same command again")


def test_ctrl_c_in_crop_is_one_line_and_rc_130(one_image, tmp_path, monkeypatch, capsys):
    import crop

    monkeypatch.setattr(crop, "crop_files", _interrupt)
    assert crop.main([str(one_image), "--method", "centre", "--out", str(tmp_path / "out")]) == 130
    _one_interrupted_line(capsys.readouterr().err, "crop.py", "run the same command again")


def test_ctrl_c_in_a_real_process_is_one_line(one_image, tmp_path):
    """A real SIGINT to a crop.py process (a child: SIGINT sent to the test process itself once crashed it)."""
    import signal
    import time

    code = ("import sys, time, crop\n"
            "def slow(*a, **k):\n    print('started', flush=True)\n    time.sleep(60)\n"
            "crop.crop_files = slow\nsys.exit(crop.main(sys.argv[1:]))\n")
    # SIGINT's default action in the child, as in a terminal: a shell starts background jobs (nohup ... &) with
    # SIGINT ignored, which the child would inherit, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, "-c", code, str(one_image), "--method", "centre", "--out",
                             str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline() == "started\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    _one_interrupted_line(err, "crop.py", "the crops written so far are complete")


def test_run_main_maps_errors_to_the_documented_codes(capsys):
    import errno

    from argtypes import run_main

    def raising(error):
        def main(argv):
            raise error
        return main

    assert run_main(lambda argv: 0, [], prog="x") == 0
    assert run_main(raising(ValueError("bad\n  value")), [], prog="x") == 1
    assert capsys.readouterr().err == "x: error: bad value\n"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/file")
    assert run_main(raising(full), [], prog="x", kept="finished parts are kept", again="run it again") == 1
    assert capsys.readouterr().err == ("x: error: /out/file: No space left on device. Finished parts are kept: "
                                       "free space, then run it again\n")
    with pytest.raises(RuntimeError):  # not a handled error: a bug keeps its traceback
        run_main(raising(RuntimeError("bug")), [], prog="x")
    with pytest.raises(SystemExit):  # argparse's usage errors (2) and --help (0) pass through
        run_main(raising(SystemExit(2)), [], prog="x")


@pytest.mark.parametrize("args", [["--aspect", "-1:2"], ["--aspect=-1:2"], ["--aspect", "-.5:1"]])
def test_a_negative_aspect_says_what_is_wrong(args, capsys):
    import crop

    with pytest.raises(SystemExit) as info:
        crop.main(["photos", *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "expected one argument" not in err
    assert "argument --aspect: aspect ratio must be \"W:H\" with positive numbers" in err, err
