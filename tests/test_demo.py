"""The embedded demo and the A-vs-B study, end to end at tiny sizes (the real ones run for minutes)."""

import dataclasses
import json
import os

import pytest

from experiments import demo, study


@pytest.fixture(scope="module")
def tiny_settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_data")
    return demo.DemoSettings(
        data_dir=str(root / "synthetic"), records_dir=str(root / "distill"), n_train=8, n_val=4,
        data_size=(48, 64), teacher_size=(24, 32), train_size=(32, 48), epochs=1, batch_size=4, grid_images=2,
    )


def test_demo_runs_the_whole_pipeline_and_reuses_what_exists(tiny_settings, tmp_path, capsys):
    run_dir = tmp_path / "demo"
    results = demo.run_demo(str(run_dir), settings=tiny_settings)

    for name in ("metrics.md", "metrics.json", "kld_curves.png", "grid.png", "A/saved_model/saved_model.pb",
                 "B/saved_model/saved_model.pb", "A/history.csv", "B/history.csv"):
        assert (run_dir / name).exists(), name
    assert set(results["models"]) == {"teacher (records)", "student A", "student B"}
    for entry in results["models"].values():
        assert {"kld", "cc", "nss", "auc_judd", "kld_true"} <= set(entry["metrics"])
    # Status, progress and Keras's training lines on stderr (issue 18, item 13); stdout holds the table only.
    from evaluation.scoring import to_markdown

    captured = capsys.readouterr()
    assert "synthetic" in captured.err and str(run_dir) in captured.err
    assert captured.out == to_markdown(results) + "\n"
    assert "\r" not in captured.err and "\x1b" not in captured.err

    saved = (run_dir / "B" / "saved_model" / "saved_model.pb").stat().st_mtime_ns
    demo.run_demo(str(run_dir), settings=tiny_settings)
    assert (run_dir / "B" / "saved_model" / "saved_model.pb").stat().st_mtime_ns == saved
    assert "reusing the finished run" in capsys.readouterr().err


def test_study_summarises_seeds_with_mean_and_spread(tiny_settings, tmp_path):
    settings = dataclasses.replace(tiny_settings, jit_compile=False)  # the demo test covers XLA; this one is slow enough
    summary = study.run_study(seeds=(0, 1), out_dir=str(tmp_path / "study"), settings=settings)
    for name in ("study.json", "study.md", "study.png"):
        assert (tmp_path / "study" / name).exists()
    assert summary["seeds"] == [0, 1]
    for variant in ("A", "B"):
        stats = summary["variants"][variant]["kld_true"]
        assert len(stats["final_per_seed"]) == 2 and len(stats["mean"]) == settings.epochs
        assert stats["mean"][-1] == pytest.approx(sum(stats["final_per_seed"]) / 2)
    assert set(summary["teacher"]) == set(study.STUDY_METRICS)
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert saved["variants"]["B"]["kld"]["std"][-1] >= 0.0
    table = (tmp_path / "study" / "study.md").read_text()
    assert "student A" in table and "teacher (oracle)" in table and "2 seeds" in table
    assert os.path.exists(tmp_path / "study" / "seed1" / "B" / "val_metrics.json")


def test_demo_cli_with_another_seed_and_its_flags(tiny_settings, tmp_path, monkeypatch, capsys):
    """`--demo --seed 1` reuses the data made with seed 0 (it used to fail pointing to an --out flag)."""
    import train as train_cli
    from datasets.synthetic import generate_synthetic_salicon

    s = tiny_settings
    generate_synthetic_salicon(s.data_dir, n_train=s.n_train, n_val=s.n_val, image_size=s.data_size, seed=0)
    monkeypatch.setattr(demo, "DemoSettings", lambda: dataclasses.replace(tiny_settings))
    run_dir = tmp_path / "demo_seed1"
    code = train_cli.main(["--variant", "A", "--demo", "--seed", "1", "--epochs", "2", "--batch-size", "2",
                           "--image-size", "32", "32", "--run-dir", str(run_dir), "--quiet"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run_dir / "A" / "config.json").read_text())
    assert (config["seed"], config["epochs"], config["batch_size"], config["image_size"]) == (1, 2, 2, [32, 32])
    assert (run_dir / "metrics.md").exists()
    assert train_cli.main(["--demo", "--records-dir", "elsewhere"]) == 1
    assert "--demo does not use --records-dir" in capsys.readouterr().err
