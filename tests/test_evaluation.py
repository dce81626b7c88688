"""evaluate.py and metrics.evaluation on records whose answers are known."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import evaluate as evaluate_cli
from datasets import records
from datasets.io import encode_png
from metrics import evaluation

SHAPE = (24, 32)


def _gt(rng):
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    cy, cx = rng.integers(4, SHAPE[0] - 4), rng.integers(4, SHAPE[1] - 4)
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)


@pytest.fixture(scope="module")
def exact_teacher_records(tmp_path_factory):
    """Val records whose teacher map IS the human map (same resolution), with fixations at the maps' peaks."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("eval_records")
    truths = out / "densities"
    truths.mkdir()
    with tf.io.TFRecordWriter(str(out / records.shard_name("val", 0, 1))) as writer:
        for i in range(4):
            gt = np.round(_gt(rng) * 255).astype(np.uint8)
            image = rng.integers(0, 256, size=(*SHAPE, 3), dtype=np.uint8)
            peak = np.unravel_index(np.argmax(gt), SHAPE)
            fixations = np.array([peak, (peak[0], min(peak[1] + 1, SHAPE[1] - 1))])
            np.save(truths / f"img{i}.npy", gt / gt.sum())
            writer.write(records.serialize_example(f"img{i}", encode_png(image), *SHAPE, encode_png(gt),
                                                   gt / 255.0, fixations))
    return out


class UniformPredictor:
    """A stand-in model that predicts a flat map."""

    num_params = 7

    def predict(self, image):
        return np.ones(image.shape[:2], np.float32)


def test_teacher_equal_to_the_human_map_scores_perfectly(exact_teacher_records):
    results = evaluation.evaluate(exact_teacher_records, "val", {"flat": UniformPredictor()},
                                  densities_dir=exact_teacher_records / "densities", progress=False)
    teacher = results["models"][evaluation.TEACHER_RECORDS]["metrics"]
    assert teacher["kld"] == pytest.approx(0.0, abs=1e-6)
    assert teacher["cc"] == pytest.approx(1.0, abs=1e-6)
    assert teacher["sim"] == pytest.approx(1.0, abs=1e-6)
    assert teacher["kld_true"] == pytest.approx(0.0, abs=1e-6)
    assert teacher["auc_judd"] > 0.95 and teacher["nss"] > 3.0
    assert results["num_images"] == 4


def test_flat_prediction_scores_like_the_uniform_baseline(exact_teacher_records):
    results = evaluation.evaluate(exact_teacher_records, "val", {"flat": UniformPredictor()},
                                  include_teacher=False, progress=False)
    flat = results["models"]["flat"]
    assert set(results["models"]) == {"flat"}
    # KL(G || uniform) = sum G log(G * N) for G normalised to sum 1, N pixels: computed here independently.
    expected = []
    for ex in records.read_records(records.list_shards(exact_teacher_records, "val")).as_numpy_iterator():
        g = ex["saliency"][:, :, 0].astype(np.float64)
        g = g / g.sum()
        expected.append(np.sum(g[g > 0] * np.log(g[g > 0] * g.size)))
    assert flat["metrics"]["kld"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert flat["metrics"]["nss"] == pytest.approx(0.0, abs=1e-9)
    assert flat["num_params"] == 7 and flat["images_per_s"] > 0


def test_evaluate_cli_writes_markdown_and_json(exact_teacher_records, tmp_path, capsys):
    code = evaluate_cli.main(["--records-dir", str(exact_teacher_records), "--split", "val", "--out",
                              str(tmp_path), "--quiet"])
    assert code == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluation.TEACHER_RECORDS in data["models"]
    table = (tmp_path / "metrics.md").read_text()
    assert "| teacher (records) |" in table and "KLD" in table and "AUC-Judd" in table
    assert "precomputed" in capsys.readouterr().out


def test_missing_records_are_a_clear_error(tmp_path, capsys):
    assert evaluate_cli.main(["--records-dir", str(tmp_path), "--quiet"]) == 2
    assert "export_teacher.py" in capsys.readouterr().err


def test_unfinished_export_is_refused_instead_of_scoring_part_of_it(exact_teacher_records, tmp_path, capsys):
    import shutil

    partial = shutil.copytree(exact_teacher_records, tmp_path / "partial")
    (partial / "val.plan.json").write_text("{}")
    assert evaluate_cli.main(["--records-dir", str(partial), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has not finished" in err and f"python export_teacher.py --split val --out {partial}" in err


def test_models_with_the_same_folder_name_get_distinct_rows(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_evaluate(records_dir, split, models, **kwargs):
        seen.update(models)
        return {"split": split, "num_images": 1, "models": {n: {"metrics": {"kld": 0.5}, "num_params": None,
                                                                "images_per_s": 1.0} for n in models}}

    monkeypatch.setattr(evaluate_cli, "evaluate", fake_evaluate)
    paths = [str(tmp_path / "runs" / "s0" / "B"), str(tmp_path / "runs" / "s1" / "B"), str(tmp_path / "runs" / "A")]
    assert evaluate_cli.main(["--models", *paths, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert seen == {os.path.join("s0", "B"): paths[0], os.path.join("s1", "B"): paths[1], "A": paths[2]}
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "| s0/B |" in table and "| s1/B |" in table
    assert evaluate_cli.main(["--models", paths[0], paths[0] + "/", "--out", str(tmp_path / "out")]) == 2
    assert "same model" in capsys.readouterr().err


def test_unwritable_out_is_refused_before_scoring(monkeypatch, tmp_path, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("scored before checking --out")

    monkeypatch.setattr(evaluate_cli, "evaluate", must_not_run)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert evaluate_cli.main(["--out", str(blocker / "eval"), "--quiet"]) == 2
    assert f"{blocker / 'eval'}: cannot write output there" in capsys.readouterr().err


def test_corrupt_saved_model_is_a_clear_error(exact_teacher_records, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"\x0a\xff\xff garbage")
    code = evaluate_cli.main(["--records-dir", str(exact_teacher_records), "--models", str(model), "--out",
                              str(tmp_path / "out"), "--quiet"])
    assert code == 2 and f"{model / 'saved_model.pb'}: not a readable SavedModel" in capsys.readouterr().err
