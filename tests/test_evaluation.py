"""evaluate.py and metrics.evaluation on records whose answers are known."""

import json

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
