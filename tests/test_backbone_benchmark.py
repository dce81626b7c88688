"""The backbone rows of run_benchmarks.py: one row at a time into the JSON, a rerun skips finished rows, --redo.

The exports and timings are replaced by stand-ins: what is tested is the bookkeeping, not the runtimes (the
runtimes' maps are tests/test_backbone_exports.py's and tests/test_fastgaze_export.py's).
"""

import argparse
import json
from pathlib import Path

import pytest

import benchmarks.backbone_runtimes as bench

CONFIGS = [("tf saved_model", "float32")] + [(r, w) for _, r in bench.RUNTIMES for w in ("float32", "int8")]


@pytest.fixture
def fakes(monkeypatch):
    calls = []

    def runners(model, paths, threads):
        configs = ([("tf keras", "float32")] if model.startswith("fastgaze") else []) + CONFIGS

        def make(key):
            def fn(batch):
                if key in fakes_state["fail"]:
                    raise RuntimeError(f"{key} broke")
                calls.append((key, len(batch)))
            return fn

        return {config: (make(f"{model}|{config[0]}"), 1000, None) for config in configs}

    fakes_state = {"fail": set(), "calls": calls}
    monkeypatch.setattr(bench, "calibration_records", lambda work: "records")
    monkeypatch.setattr(bench, "export_model", lambda model, work, records: {})
    monkeypatch.setattr(bench, "model_info", lambda model: {"gmac": 1.5, "params": 2_000_000})
    monkeypatch.setattr(bench, "runners", runners)
    monkeypatch.setattr(bench, "time_rate", lambda fn, batch: (fn(batch), (10.0 * len(batch), [0.1, 0.1]))[1])
    monkeypatch.setattr(bench, "SIZE", (8, 8))
    return fakes_state


def _args(**kwargs):
    return argparse.Namespace(**{"backbones": ["resnet18", "mobilenetv2"], "builtin": "fastgaze-centre", "threads": 2,
                                 "redo": None, **kwargs})


def test_rows_are_saved_one_by_one_and_a_rerun_skips_them(fakes, tmp_path, capsys):
    out = str(tmp_path / "results_backbones")
    fakes["fail"] = {"mobilenetv2|litert"}
    with pytest.raises(RuntimeError, match="broke"):
        bench.measure_backbones(_args(), str(tmp_path), out)
    rows = json.loads(Path(out + ".json").read_text())["rows"]
    assert len(rows) == 14 + 10  # resnet18's 7 runtimes x 2 batches, then mobilenetv2's up to LiteRT
    assert all(not key.startswith("fastgaze") for key in rows)

    fakes["fail"], fakes["calls"][:] = set(), []
    assert bench.measure_backbones(_args(), str(tmp_path), out) == 0
    results = json.loads(Path(out + ".json").read_text())
    assert len(results["rows"]) == 2 * 14 + 16  # FastGaze also as its Keras model
    assert len(fakes["calls"]) == 4 + 16  # only the rows not there yet (each measured once here)
    assert results["rows"]["fastgaze-centre|tf keras|float32|8"]["images_per_s"] == 80.0
    assert results["machine"] and len(results["runs"]) == 2 and results["runs"][1]["command"].startswith("python")

    fakes["calls"][:] = []
    bench.measure_backbones(_args(), str(tmp_path), out)
    assert fakes["calls"] == []  # nothing left to measure
    bench.measure_backbones(_args(redo=["mobilenetv2|openvino"]), str(tmp_path), out)
    assert sorted(set(fakes["calls"])) == [("mobilenetv2|openvino", 1), ("mobilenetv2|openvino", 8)]
    row = json.loads(Path(out + ".json").read_text())["rows"]["mobilenetv2|openvino|int8|8"]
    assert [e["images_per_s"] for e in row["earlier"]] == [80.0]  # the figure it replaced
    assert len(fakes["calls"]) == 4  # float32 and int8, batch 1 and 8


def test_markdown_names_the_fastest_student_and_its_ratio(fakes, tmp_path, capsys):
    out = str(tmp_path / "r")
    bench.measure_backbones(_args(backbones=["resnet18"]), str(tmp_path), out)
    results = json.loads(Path(out + ".json").read_text())
    results["rows"]["resnet18|openvino|int8|8"]["images_per_s"] = 400.0
    results["rows"]["fastgaze-centre|onnxruntime|float32|8"]["images_per_s"] = 100.0
    text = bench.to_markdown(results)
    assert "| 8 | resnet18 (openvino, int8) | 400.0 | onnxruntime, float32 | 100.0 | 4.00x |" in text
    assert "**400.0**" in text and text.count("| resnet18 |") == 7 and text.count("| fastgaze-centre |") == 8
    assert capsys.readouterr().out.startswith("# Every student backbone")  # the table on stdout


# One section's measurements, as `run_benchmarks._measure` stores them (made-up values).
SECTION_RESULTS = {
    "inference": {"student_images_per_s": 40.0, "teacher_images_per_s": 4.0, "ratio": 10.0},
    "pipeline": {"pipeline_s_per_step": 0.11, "in_memory_s_per_step": 0.1, "overhead": 0.1},
    "export": {"export_images_per_s": 2.0, "bare_forward_images_per_s": 2.2, "overhead": 0.1},
    "b_vs_a": {"B_s_per_step": 0.2, "A_s_per_step": 0.19, "overhead": 0.05,
               "xla": {"B_s_per_step": 0.1, "A_s_per_step": 0.095, "overhead": 0.05}},
    "export_memory": {"images": [16, 64], "peak_rss_mib": [900.0, 910.0], "ratio": 1.01},
    "graph_vs_keras": {"graph_images_per_s": 1.25, "keras_images_per_s": 1.5, "ratio_keras_over_graph_speed": 1.2,
                       "max_abs_diff": 0.0},
}
ROW_OF = {"inference": "| 1. inference", "pipeline": "| 2. training", "export": "| 3. export_teacher vs",
          "b_vs_a": "| 4. step time", "export_memory": "| 5. export_teacher peak", "graph_vs_keras": "| 6. teacher"}


@pytest.mark.parametrize("section", list(SECTION_RESULTS))
def test_a_single_section_run_writes_its_row(section):
    """`--only graph` (or any one section) into a new --out: the .md has the machine and that section's row."""
    import benchmarks.run_benchmarks as run_benchmarks

    machine = {"cpu": "Test CPU", "cpu_cores": 2, "gpus": ["none"], "tensorflow": "2.21", "keras": "3"}
    text = run_benchmarks.to_markdown({"machine": machine, section: SECTION_RESULTS[section]})
    assert "Machine: Test CPU, 2 cores" in text and ROW_OF[section] in text
    assert [row for row in ROW_OF.values() if row in text] == [ROW_OF[section]]
    if section == "graph_vs_keras":
        assert "| 1.25 vs 1.50 images/s | Keras 1.20x; max diff 0.0e+00 | parity |" in text
