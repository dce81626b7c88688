"""benchmarks/train_step.py (the real train step, timed per backbone and setting) and the XLA rule it informs."""

import json

import pytest

import benchmarks.train_step as bench
from student import training


def test_a_row_is_the_real_train_step_and_a_rerun_skips_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "rows.json"
    monkeypatch.setattr(bench, "SETTINGS", (("float32", False),))
    args = ["--backbones", "mobilenetv2", "--image-size", "32", "32", "--batch-size", "2", "--steps", "1",
            "--out", str(out)]
    assert bench.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backbone"], r["policy"], r["jit_compile"]) for r in rows] == [("mobilenetv2", "float32", False)]
    assert rows[0]["seconds"] > 0
    assert "| mobilenetv2 | float32 | off |" in capsys.readouterr().out

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was measured again")

    monkeypatch.setattr(bench, "time_train_step", fail)
    assert bench.main(args) == 0
    assert json.loads(out.read_text())["rows"] == rows


def test_the_ratio_column_is_against_float32_without_xla_of_the_same_backbone():
    rows = [dict(backbone=b, policy=p, jit_compile=j, seconds=s, batch_size=16, load=0.0)
            for b, p, j, s in [("x", "float32", False, 0.5), ("x", "float32", True, 2.0), ("y", "float32", False, 1.0),
                               ("y", "mixed_bfloat16", False, 0.5)]]
    table = bench.to_markdown(rows)
    assert "| x | float32 | on | 2000 | 8.0 | 0.25x |" in table
    assert "| y | mixed_bfloat16 | off | 500 | 32.0 | 2.00x |" in table


@pytest.mark.parametrize("gpus, expected", [([], False), (["GPU:0"], True)])
def test_xla_is_chosen_only_where_there_is_a_gpu(monkeypatch, gpus, expected):
    monkeypatch.setattr(training.tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    assert training.xla_pays_off() is expected
