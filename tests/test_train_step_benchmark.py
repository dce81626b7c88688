"""benchmarks/train_step.py (the real train step, timed per backbone and setting) and the XLA rule it informs."""

import json

import pytest

import benchmarks.train_step as bench
from student import training


def test_a_row_is_the_real_train_step_and_a_rerun_skips_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "rows.json"
    monkeypatch.setattr(bench, "SETTINGS", (("float32", False),))
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    args = ["--backbones", "mobilenetv2", "--image-size", "32", "32", "--batch-size", "2", "--steps", "1",
            "--out", str(out)]
    assert bench.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backbone"], r["policy"], r["jit_compile"]) for r in rows] == [("mobilenetv2", "float32", False)]
    assert rows[0]["seconds"] > 0
    assert "| mobilenetv2 | card | frozen | float32 | off | glibc |" in capsys.readouterr().out

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was measured again")

    monkeypatch.setattr(bench, "time_train_step", fail)
    assert bench.main(args) == 0
    assert json.loads(out.read_text())["rows"] == rows


def test_the_ratio_column_is_against_float32_without_xla_of_the_same_backbone():
    rows = [dict(backbone=b, policy=p, jit_compile=j, seconds=s, batch_size=16, image_size=[8, 8], load=0.0)
            for b, p, j, s in [("x", "float32", False, 0.5), ("x", "float32", True, 2.0), ("y", "float32", False, 1.0),
                               ("y", "mixed_bfloat16", False, 0.5)]]
    table = bench.to_markdown(rows)
    assert "| x | card | frozen | float32 | on | glibc | 2000 | 8.0 | 0.25x | 1.00x |" in table
    assert "| y | card | frozen | mixed_bfloat16 | off | glibc | 500 | 32.0 | 2.00x | 1.00x |" in table


def test_rows_name_their_allocator_and_compare_with_glibc_of_the_same_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert bench.allocator() == "glibc"
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert bench.allocator() == "tcmalloc_minimal"
    timed = []

    def fake(backbone, image_size, batch_size, policy, jit, steps, decoder, train_encoder_bn):
        timed.append((decoder, train_encoder_bn, jit))
        return 0.25

    monkeypatch.setattr(bench, "time_train_step", fake)
    out = tmp_path / "rows.json"
    old = dict(backbone="mobilenetv2", policy="float32", jit_compile=False, image_size=[32, 32], batch_size=2,
               seconds=0.5, load=0.0)  # a row from before the allocator and decoder keys: glibc, card, frozen
    out.write_text(json.dumps({"rows": [old, dict(old, decoder="light", train_encoder_bn=True, seconds=1.0)]}))
    args = ["--backbones", "mobilenetv2", "--image-size", "32", "32", "--batch-size", "2", "--policies", "float32",
            "--xla", "off", "--out", str(out)]
    assert bench.main(args + ["--decoder", "light", "--train-encoder-bn"]) == 0
    assert timed == [("light", True, False)]  # only the asked setting, with this process's allocator
    table = capsys.readouterr().out
    assert "| mobilenetv2 | light | trained | float32 | off | tcmalloc_minimal | 250 | 8.0 | 1.00x | 4.00x |" in table
    assert "| mobilenetv2 | card | frozen | float32 | off | glibc | 500 |" in table


@pytest.mark.parametrize("gpus, expected", [([], False), (["GPU:0"], True)])
def test_xla_is_chosen_only_where_there_is_a_gpu(monkeypatch, gpus, expected):
    monkeypatch.setattr(training.tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    assert training.xla_pays_off() is expected
