"""benchmarks/quality_speed.py: target (e)'s verdict, the figure's points, the quality file, a resumable run.

The verdict and the figure are checked on hand-made rows; one run exports FastGaze for real at 32x48 to ONNX
only (a few seconds); the others replace exports and timings by stand-ins (the runtimes' maps are
tests/test_backbone_exports.py's and tests/test_fastgaze_export.py's).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import benchmarks.quality_speed as qs

ROOT = Path(__file__).resolve().parents[1]


def _row(entry, runtime, weights, batch, rate):
    model, size = entry.split("@")
    return {"entry": entry, "model": model, "size": [int(v) for v in size.split("x")], "runtime": runtime,
            "weights": weights, "batch": batch, "images_per_s": rate, "bytes": 1000, "load_average": 1.0}


def _results(rates, quality=None):
    """Results with rows {(entry, runtime, weights, batch): images/s}, student used at 144x192."""
    rows = {qs.row_key(e, r, w, b): _row(e, r, w, b, v) for (e, r, w, b), v in rates.items()}
    order = list(dict.fromkeys(e for e, *_ in rates))
    return {"rows": rows, "models": {}, "student_size": [144, 192], "reference": "fastgaze-centre@240x320",
            "order": order, "quality": quality or {}, "machine": "Test CPU", "cpu_count": 2, "threads": 2,
            "runs": []}


FG, ST = "fastgaze-centre@240x320", "student@144x192"


def test_verdict_met_on_both_batches_uses_each_best_float_runtime():
    rates = {(FG, "openvino", "float32", 1): 20.0, (FG, "litert", "float32", 1): 12.0,
             (FG, "openvino", "float32", 8): 25.0, (FG, "onnxruntime", "int8", 1): 90.0,  # int8: not counted
             (ST, "litert", "float32", 1): 40.0, (ST, "onnxruntime", "float32", 1): 45.0,
             (ST, "litert", "float32", 8): 50.0, (ST, "openvino", "int8", 8): 500.0,
             ("student@240x320", "litert", "float32", 1): 10.0, ("student@240x320", "litert", "float32", 8): 10.0}
    v = qs.verdict(_results(rates))
    assert v["met"] is True
    assert v["batches"]["1"]["ratio"] == pytest.approx(45.0 / 20.0) and v["batches"]["1"]["student_runtime"] == \
        "onnxruntime"
    assert v["batches"]["8"]["ratio"] == pytest.approx(2.0) and v["batches"]["8"]["met"] is True  # 2x exactly


def test_verdict_missed_when_one_batch_falls_short_and_undecided_while_a_row_is_missing():
    rates = {(FG, "openvino", "float32", 1): 20.0, (FG, "openvino", "float32", 8): 30.0,
             (ST, "litert", "float32", 1): 41.0, (ST, "litert", "float32", 8): 57.0}
    v = qs.verdict(_results(rates))
    assert (v["batches"]["1"]["met"], v["batches"]["8"]["met"], v["met"]) == (True, False, False)
    assert v["batches"]["8"]["ratio"] == pytest.approx(1.9)
    text = qs.to_markdown({**_results(rates), "verdict": v})
    assert "**missed**" in text and "| 8 | litert | 57.0 | openvino | 30.0 | 1.90x | no |" in text

    del rates[(ST, "litert", "float32", 8)]
    v = qs.verdict(_results(rates))
    assert v["met"] is None and v["batches"]["8"]["met"] is None and ST in v["batches"]["8"]["why"]
    assert v["batches"]["1"]["met"] is True


def test_models_without_a_score_are_listed_and_left_off_the_plot(tmp_path):
    rates = {(FG, "openvino", "float32", 1): 20.0, ("fastgaze-centre@144x192", "openvino", "float32", 1): 50.0,
             ("attention-center@480x640", "litert", "shipped", 1): 1.5, (ST, "litert", "float32", 1): 40.0}
    quality = {FG: {"osie": {"nss": 2.25}, "mit1003": {"nss": 1.78}},
               "attention-center@480x640": {"osie": {"nss": 2.39}}}
    results = _results(rates, quality)
    results["figure"] = qs.figure_points(results)
    assert results["figure"]["no_score"] == {"fastgaze-centre@144x192": "no score yet", ST: "no score yet"}
    plotted = qs.plot(results, str(tmp_path / "f.png"))
    assert plotted == {"osie": [FG, "attention-center@480x640"], "mit1003": [FG]}
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = qs.to_markdown(results)
    assert "| fastgaze-centre | 144x192 | openvino | 50.0 | no score yet | no score yet |" in text
    assert "| attention-center | 480x640 | litert | 1.5 | 2.390 | no score yet |" in text


def test_quality_file_schema(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"_about": "notes", FG: {"osie": {"nss": 2.25, "cc": 0.65}, "source": "x"}}))
    assert qs.load_quality(str(path)) == {FG: {"osie": {"nss": 2.25, "cc": 0.65}}}
    path.write_text(json.dumps({FG: {"osie": {"cc": 0.65}}}))
    with pytest.raises(ValueError, match=rf"{path}: fastgaze-centre@240x320 / osie needs a finite number \"nss\""):
        qs.load_quality(str(path))


def test_student_scores_come_from_the_study(tmp_path):
    assert qs.study_scores(tmp_path) == {}  # the study has not run: no score, none invented
    study = {"settings": {"image_size": [192, 256]}, "variants": {"S": {"seeds": [0, 1, 2], "test": {
        "osie": {"nss": {"mean": 2.3, "sd": 0.02}, "cc": {"mean": 0.66, "sd": 0.01}}}}}}
    (tmp_path / "study.json").write_text(json.dumps(study))
    entry = qs.study_scores(tmp_path)["student@192x256"]
    assert entry["osie"] == {"nss": 2.3, "cc": 0.66, "nss_sd": 0.02, "cc_sd": 0.01}


def test_scoring_is_resumable(tmp_path, monkeypatch):
    import evaluation.scoring

    scored = []

    def evaluate(records_dirs, split, models, **kwargs):
        (name, model), = models.items()
        scored.append(name)
        return {"datasets": {"osie": {"num_images": 3, "models": {name: {"metrics": {"nss": 1.0 + len(scored)}}}}}}

    monkeypatch.setattr(evaluation.scoring, "evaluate", evaluate)
    monkeypatch.setattr(qs, "_fastgaze_predictor", lambda side: f"fastgaze at {side}")
    out = tmp_path / "q.json"
    qs.score_quality(["r"], str(out), sizes=((32, 48), (64, 96)))
    assert scored == ["fastgaze-centre@32x48", "fastgaze-centre@64x96", "attention-center@480x640"]
    scores = qs.load_quality(str(out))
    assert scores["fastgaze-centre@64x96"]["osie"] == {"nss": 3.0, "num_images": 3}
    qs.score_quality(["r"], str(out), sizes=((32, 48), (64, 96)), redo=["@64x96"])
    assert scored[3:] == ["fastgaze-centre@64x96"]


def test_the_study_seeds_are_scored_at_the_other_sizes_with_mean_and_sd(tmp_path, monkeypatch):
    import evaluation.scoring
    import inference.export
    import inference.predictors

    final = tmp_path / "final"
    for seed in (0, 1, 2):
        run = final / f"seed{seed}" / "S"
        (run / "saved_model").mkdir(parents=True)
        (run / "saved_model" / "saved_model.pb").write_bytes(b"")
        (run / "config.json").write_text(json.dumps({"image_size": [32, 48], "resize": "letterbox"}))
    (final / "seed3" / "S").mkdir(parents=True)  # unfinished: not scored
    made, scored = [], []
    monkeypatch.setattr(inference.export, "load_student", lambda run_dir: (f"student of {run_dir}", (32, 48)))
    monkeypatch.setattr(inference.predictors, "KerasStudentPredictor",
                        lambda student, path, size, resize: made.append((path, tuple(size), resize)) or path)

    def evaluate(records_dirs, split, models, **kwargs):
        (name, run_dir), = models.items()
        scored.append(name)
        nss = {"seed0": 2.0, "seed1": 2.2, "seed2": 2.4, "seed3": 2.6}[Path(run_dir).parent.name]
        return {"datasets": {"osie": {"num_images": 3, "models": {name: {"metrics": {"nss": nss, "cc": 0.5}}}}}}

    monkeypatch.setattr(evaluation.scoring, "evaluate", evaluate)
    data, saves = {}, []
    qs.score_student_sizes(final, ["r"], data, lambda: saves.append(1), sizes=((32, 48), (64, 96)))
    assert scored == ["student@64x96"] * 3 and len(saves) == 1  # not at 32x48, where the study scored it
    assert [m[1:] for m in made] == [((64, 96), "letterbox")] * 3
    entry = data["student@64x96"]
    assert entry["seeds"] == [0, 1, 2] and entry["osie"]["nss"] == pytest.approx(2.2)
    assert entry["osie"]["nss_sd"] == pytest.approx(0.2) and "trained at 32x48" in entry["source"]
    qs.score_student_sizes(final, ["r"], data, lambda: None, sizes=((32, 48), (64, 96)))
    assert len(scored) == 3  # same seeds: kept
    (final / "seed3" / "S" / "saved_model").mkdir()
    (final / "seed3" / "S" / "saved_model" / "saved_model.pb").write_bytes(b"")
    (final / "seed3" / "S" / "config.json").write_text(json.dumps({"image_size": [32, 48]}))
    qs.score_student_sizes(final, ["r"], data, lambda: None, sizes=((32, 48), (64, 96)))
    assert len(scored) == 7 and data["student@64x96"]["seeds"] == [0, 1, 2, 3]  # a new seed: scored again
    path = tmp_path / "q.json"
    path.write_text(json.dumps(data))
    assert qs.load_quality(str(path))["student@64x96"]["osie"]["nss"] == pytest.approx(2.3)


def _args(tmp_path, **kwargs):
    return argparse.Namespace(**{"models": ["fastgaze-centre"], "student": None, "student_size": [32, 48],
                                 "runtimes": ["onnx"], "int8": False, "threads": 2, "quality": None, "redo": None,
                                 "prepare_only": False, "work": str(tmp_path / "work"), **kwargs})


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(qs, "SIZES", ((32, 48),))
    monkeypatch.setattr(qs, "REFERENCE_SIZE", (32, 48))
    monkeypatch.setattr(qs, "MIN_SECONDS", 0.01)
    timed = []
    real = qs.bench.time_rate

    def time_rate(fn, batch, **kwargs):
        timed.append(len(batch))
        return real(fn, batch, rounds=1, **kwargs)

    monkeypatch.setattr(qs.bench, "time_rate", time_rate)
    return timed


def test_a_real_run_writes_every_output_and_a_rerun_measures_only_what_is_missing(tiny, tmp_path, capsys):
    quality = tmp_path / "q.json"
    quality.write_text(json.dumps({"fastgaze-centre@32x48": {"osie": {"nss": 2.0}}}))
    out = str(tmp_path / "res")
    assert qs.measure(_args(tmp_path, quality=str(quality)), out) == 0
    results = json.loads(Path(out + ".json").read_text())
    assert sorted(results["rows"]) == ["fastgaze-centre@32x48|onnxruntime|float32|1",
                                       "fastgaze-centre@32x48|onnxruntime|float32|8"]
    assert all(r["images_per_s"] > 0 and r["load_average"] >= 0 for r in results["rows"].values())
    info = results["models"]["fastgaze-centre@32x48"]
    assert info["gmac"] > 0 and info["params"] > 100_000 and results["machine"] and results["threads"] == 2
    assert results["verdict"]["met"] is None  # no student measured: no verdict
    assert results["figure"]["points"][0]["nss"] == {"osie": 2.0}
    assert Path(out + ".png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.startswith("# Quality against speed")
    assert Path(out + ".md").read_text().startswith("# Quality against speed")
    assert tiny == [1, 8]

    export = next(Path(tmp_path / "work").rglob("*.onnx"))
    stamp = export.stat().st_mtime_ns
    tiny.clear()
    qs.measure(_args(tmp_path), out)
    assert tiny == [] and export.stat().st_mtime_ns == stamp  # nothing timed, nothing exported again
    qs.measure(_args(tmp_path, redo=["|8"]), out)
    assert tiny == [8]
    results = json.loads(Path(out + ".json").read_text())
    assert len(results["rows"]["fastgaze-centre@32x48|onnxruntime|float32|8"]["earlier"]) == 1
    assert len(results["runs"]) == 3


def test_another_student_is_refused_until_its_rows_are_redone(tmp_path, monkeypatch):
    monkeypatch.setattr(qs, "SIZES", ((8, 8),))
    monkeypatch.setattr(qs, "export_entry", lambda *a, **k: {})
    monkeypatch.setattr(qs, "model_info", lambda model, size, student=None: {"gmac": 1.0, "params": 10})
    monkeypatch.setattr(qs, "runners", lambda model, paths, threads, int8=False: {
        ("onnxruntime", "float32"): (lambda batch: None, 10, None)})
    monkeypatch.setattr(qs.bench, "time_rate", lambda fn, batch, **k: (5.0 * len(batch), [0.1]))
    out = str(tmp_path / "res")
    qs.measure(_args(tmp_path, models=["student"], student_size=[8, 8]), out)
    with pytest.raises(ValueError, match="student rows are of random-init.*--redo student@"):
        qs.measure(_args(tmp_path, models=["student"], student_size=[8, 8], student=str(tmp_path / "run")), out)
    qs.measure(_args(tmp_path, models=["student"], student_size=[8, 8], student=str(tmp_path / "run"),
                     redo=["student@"]), out)
    results = json.loads(Path(out + ".json").read_text())
    assert results["student_source"] == str(tmp_path / "run") and len(results["rows"]) == 2
    assert all(not r["earlier"] for r in results["rows"].values())  # dropped, not kept as earlier figures
    qs.measure(_args(tmp_path, models=["student"], student_size=[8, 8], student=str(tmp_path / "run"),
                     redo=["student@8x8|onnxruntime|float32|1"]), out)  # the same student: one row again
    rows = json.loads(Path(out + ".json").read_text())["rows"]
    assert [len(r["earlier"]) for r in rows.values()] == [1, 0]


def test_fastgaze_with_its_network_at_the_export_size():
    """`fastgaze_student(max_side=W)` is FastGaze + centre whose network sees HxW (not 320 wide)."""
    from inference.builtin_export import fastgaze_student
    from teacher.fastgaze import build_fastgaze

    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 48, 3)).astype(np.float32)
    small = np.exp(fastgaze_student("fastgaze-centre", (32, 48), max_side=48)(x)["saliency"].numpy()[0, ..., 0])
    reference = build_fastgaze(centre_prior=True, max_side=48)(x).numpy()[0, ..., 0]
    np.testing.assert_allclose(small / small.sum(), reference / reference.sum(), rtol=1e-4, atol=1e-7)
    shipped = np.exp(fastgaze_student("fastgaze-centre", (32, 48))(x)["saliency"].numpy()[0, ..., 0])
    assert np.abs(shipped / shipped.sum() - small / small.sum()).max() > 1e-4  # the shipped one runs at 320


def test_cli_help_runs_as_a_script():
    for argv in ([], ["speed"], ["quality"]):
        done = subprocess.run([sys.executable, "benchmarks/quality_speed.py", *argv, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "usage: benchmarks/quality_speed.py" in done.stdout, done.stderr


def test_the_card_decoder_entry_is_timed_but_never_plotted():
    assert qs.keras_model(qs.STUDENT_CARD, (32, 48)).get_layer("decoder_up5") is not None
    with pytest.raises(ValueError):
        qs.keras_model(qs.STUDENT, (32, 48)).get_layer("decoder_up5")
    rates = {(FG, "litert", "float32", 1): 12.0, ("student-card@240x320", "litert", "float32", 1): 20.0}
    results = _results(rates, {"student-card@240x320": {"osie": {"nss": 2.0}}})
    points = qs.figure_points(results)
    assert [p["entry"] for p in points["points"]] == [FG] and "student-card@240x320" not in points["no_score"]
