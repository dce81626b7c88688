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
