"""evaluate.py and evaluation.scoring on records whose answers are known."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import evaluate as evaluate_cli
from datasets import nusvip, records
from datasets.io import encode_png
from evaluation import scoring as evaluation

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
    assert evaluate_cli.main(["--records-dir", str(tmp_path), "--quiet"]) == 1
    assert "export_teacher.py" in capsys.readouterr().err


# ---------------------------------------------------------------- real-data tables and reference rows
REAL_SHAPE = (30, 40)


def _fixation_records(path, split, dataset, n_images, rng, observers_agree):
    """Records whose observers either all fixate the image's one hot spot, or each fixate at random."""
    with tf.io.TFRecordWriter(str(path / records.shard_name(split, 0, 1))) as writer:
        for i in range(n_images):
            spot = (rng.integers(5, 25), rng.integers(5, 35))
            points, observers = [], []
            for observer in range(6):
                for _ in range(4):
                    if observers_agree:
                        points.append((spot[0] + rng.integers(-1, 2), spot[1] + rng.integers(-1, 2)))
                    else:
                        points.append((rng.integers(0, REAL_SHAPE[0]), rng.integers(0, REAL_SHAPE[1])))
                    observers.append(observer)
            points = np.array(points)
            human = nusvip.fixation_density(points, REAL_SHAPE, 3.0)
            human = np.round(human / human.max() * 255).astype(np.uint8)
            image = rng.integers(0, 256, size=(*REAL_SHAPE, 3), dtype=np.uint8)
            writer.write(records.serialize_example(
                f"{dataset}{i}", encode_png(image), *REAL_SHAPE, encode_png(human), human / 255.0, points,
                observers=observers, durations=np.full(len(points), 200.0), dataset=dataset))


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    rng = np.random.default_rng(3)
    agree, scatter = tmp_path_factory.mktemp("agree"), tmp_path_factory.mktemp("scatter")
    for split, n in (("train", 5), ("test", 4)):
        _fixation_records(agree, split, "agree", n, rng, observers_agree=True)
        _fixation_records(scatter, split, "scatter", n, rng, observers_agree=False)
    return agree, scatter


def test_one_table_per_data_set_with_floor_and_ceiling_rows(two_datasets):
    results = evaluation.evaluate(list(two_datasets), "test", {"flat": UniformPredictor()}, progress=False,
                                  observer_sigma=3.0)
    assert set(results["datasets"]) == {"agree", "scatter"}
    for name in ("agree", "scatter"):
        table = results["datasets"][name]
        assert table["num_images"] == 4
        assert {evaluation.TEACHER_RECORDS, "flat", evaluation.CENTRE_BIAS, evaluation.INTER_OBSERVER} == set(
            table["models"])
        assert set(table["models"]["flat"]["metrics"]) >= {"nss", "auc_judd", "auc_borji", "sauc", "cc"}
        # The inter-observer row has fixation scores only.
        assert set(table["models"][evaluation.INTER_OBSERVER]["metrics"]) == {"nss", "auc_judd", "auc_borji", "sauc"}
    agree = results["datasets"]["agree"]["models"][evaluation.INTER_OBSERVER]["metrics"]
    scatter = results["datasets"]["scatter"]["models"][evaluation.INTER_OBSERVER]["metrics"]
    # Observers looking at the same spot predict each other almost perfectly; random ones do not at all.
    assert agree["auc_judd"] > 0.95 and agree["nss"] > 3.0
    assert abs(scatter["auc_borji"] - 0.5) < 0.1 and abs(scatter["nss"]) < 0.5
    markdown = evaluation.to_markdown(results)
    assert "**agree**, split `test`, 4 images" in markdown and "**scatter**" in markdown
    assert "AUC-Borji" in markdown and evaluation.INTER_OBSERVER in markdown


def test_centre_bias_is_fitted_to_the_training_fixations():
    rng = np.random.default_rng(4)
    mean, covariance = np.array([0.45, 0.55]), np.array([[0.02, 0.004], [0.004, 0.03]])
    fixations = []
    for shape in ((60, 80), (80, 60), (50, 50)):
        normalised = rng.multivariate_normal(mean, covariance, size=4000)
        points = np.floor(normalised * shape).astype(int)
        fixations.append((points, shape))
    fitted_mean, fitted_cov = evaluation.fit_centre_bias(fixations)
    np.testing.assert_allclose(fitted_mean, mean, atol=0.01)
    np.testing.assert_allclose(fitted_cov, covariance, atol=0.003)
    # The map peaks at the fitted mean, in each image's own coordinates.
    peak = np.unravel_index(np.argmax(evaluation.centre_bias_map(mean, covariance, (100, 200))), (100, 200))
    assert peak[0] in (44, 45) and peak[1] in (109, 110)  # (row + 0.5) / 100 = 0.45, (col + 0.5) / 200 = 0.55


def test_centre_bias_needs_a_training_split(exact_teacher_records):
    results = evaluation.evaluate(exact_teacher_records, "val", {}, progress=False)
    table = next(iter(results["datasets"].values()))
    assert evaluation.CENTRE_BIAS not in table["models"]
    assert any("no 'train' records" in note for note in table["notes"])
    assert any("inter-observer" in note for note in table["notes"])


def test_sauc_negatives_come_from_the_same_data_set():
    examples = [{"dataset": d, "fixations": np.array([[r, c]]), "saliency": np.zeros((10, 10))}
                for d, r, c in (("a", 1, 1), ("a", 2, 2), ("b", 8, 8))]
    others = evaluation._other_maps(examples, n_other=10, seed=0)
    assert others[0][2, 2] == 1 and others[0].sum() == 1  # only the other "a" image
    assert others[2] is None  # no other image of "b"


def test_unfinished_export_is_refused_instead_of_scoring_part_of_it(exact_teacher_records, tmp_path, capsys):
    import shutil

    partial = shutil.copytree(exact_teacher_records, tmp_path / "partial")
    (partial / "val.plan.json").write_text("{}")
    assert evaluate_cli.main(["--records-dir", str(partial), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "has not finished" in err and f"python export_teacher.py --split val --out {partial}" in err


def test_models_with_the_same_folder_name_get_distinct_rows(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_evaluate(records_dir, split, models, **kwargs):
        seen.update(models)
        return {"split": split, "num_images": 1, "models": {n: {"metrics": {"kld": 0.5}, "num_params": None,
                                                                "images_per_s": 1.0} for n in models}}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    paths = [str(tmp_path / "runs" / "s0" / "B"), str(tmp_path / "runs" / "s1" / "B"), str(tmp_path / "runs" / "A")]
    assert evaluate_cli.main(["--models", *paths, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert seen == {os.path.join("s0", "B"): paths[0], os.path.join("s1", "B"): paths[1], "A": paths[2]}
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "| s0/B |" in table and "| s1/B |" in table
    assert evaluate_cli.main(["--models", paths[0], paths[0] + "/", "--out", str(tmp_path / "out")]) == 1
    assert "same model" in capsys.readouterr().err


def test_unwritable_out_is_refused_before_scoring(monkeypatch, tmp_path, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("scored before checking --out")

    monkeypatch.setattr(evaluation, "evaluate", must_not_run)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert evaluate_cli.main(["--out", str(blocker / "eval"), "--quiet"]) == 1
    assert f"{blocker / 'eval'}: cannot write output there" in capsys.readouterr().err


def test_corrupt_saved_model_is_a_clear_error(exact_teacher_records, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"\x0a\xff\xff garbage")
    code = evaluate_cli.main(["--records-dir", str(exact_teacher_records), "--models", str(model), "--out",
                              str(tmp_path / "out"), "--quiet"])
    assert code == 1 and f"{model / 'saved_model.pb'}: not a readable SavedModel" in capsys.readouterr().err


# --- issue 18 ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_images_below_one_is_refused_at_parse_time(value, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate_cli.main(["--max-images", value])
    assert info.value.code == 2 and "--max-images: expected a positive integer" in capsys.readouterr().err


def test_the_same_records_folder_twice_is_refused(exact_teacher_records, tmp_path, capsys):
    code = evaluate_cli.main(["--records-dir", str(exact_teacher_records), str(exact_teacher_records) + os.sep,
                              "--out", str(tmp_path), "--quiet"])
    assert code == 1 and f"--records-dir: {exact_teacher_records}" in capsys.readouterr().err
    assert not (tmp_path / "metrics.md").exists()


def test_teacher_only_records_are_an_error_saying_there_is_no_human_data(exact_teacher_records, tmp_path, capsys):
    out = tmp_path / "unlabelled"
    out.mkdir()
    with tf.io.TFRecordWriter(str(out / records.shard_name("val", 0, 1))) as writer:
        for ex in records.read_records(records.list_shards(exact_teacher_records, "val")).as_numpy_iterator():
            writer.write(records.serialize_example(ex["stem"].decode(), encode_png(ex["image"]), *SHAPE,
                                                   teacher_map=ex["teacher"][..., 0], dataset="images"))
    code = evaluate_cli.main(["--records-dir", str(out), "--split", "val", "--out", str(tmp_path / "eval"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{out}: the 'val' records have no human data" in err
    assert not (tmp_path / "eval" / "metrics.md").exists()


class _MakesAFolderWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("case", ["nan", "pickled"])
def test_a_bad_true_density_is_named_and_never_unpickled(case, exact_teacher_records, tmp_path, capsys):
    import shutil

    densities = shutil.copytree(exact_teacher_records / "densities", tmp_path / "densities")
    bad = densities / "img2.npy"
    marker = tmp_path / "unpickled"
    if case == "nan":
        density = np.load(bad)
        density[3, 4] = np.nan
        np.save(bad, density)
    else:
        np.save(bad, np.array([_MakesAFolderWhenUnpickled(str(marker))], dtype=object), allow_pickle=True)
    code = evaluate_cli.main(["--records-dir", str(exact_teacher_records), "--densities-dir", str(densities),
                              "--out", str(tmp_path / "eval"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"{bad}: " in err, err
    assert ("NaN" in err) if case == "nan" else ("pickled" in err and not marker.exists())
    assert "model" not in err


def test_one_data_set_in_two_folders_is_refused_instead_of_mixing_their_teachers(two_datasets, tmp_path, capsys):
    agree, _ = two_datasets
    other_teacher = tmp_path / "agree_other_teacher"  # the same images and data set, another export
    other_teacher.mkdir()
    for split in ("train", "test"):
        name = records.shard_name(split, 0, 1)
        (other_teacher / name).write_bytes((agree / name).read_bytes())
    code = evaluate_cli.main(["--records-dir", str(agree), str(other_teacher), "--split", "test",
                              "--out", str(tmp_path / "eval"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{agree} and {other_teacher} both hold image agree0 of agree" in err
    assert not (tmp_path / "eval" / "metrics.md").exists()
