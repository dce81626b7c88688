"""export_teacher.py on eye-tracking data sets (--dataset mit1003|osie|nus) and on unlabelled folders (--images):
records with the real fixations, observers, durations, data set name and human maps, and the manifest's counts.
A random-weight MSI-Net graph (tests/msinet_reference.py) is the teacher, at a tiny input size."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import export_teacher
from datasets import nusvip, records
from datasets.io import read_map
from teacher import export
from tests.nusvip_fixtures import make_nusvip

EYETRACKING = Path(__file__).resolve().parents[2] / "shared" / "data" / "eyetracking"
TINY = ["--input-size", "48", "64", "--batch-size", "2", "--no-progress", "--verify"]


@pytest.fixture(scope="module")
def msinet(msinet_pb):
    """The graph loaded once, for the library calls (each CLI call loads it again)."""
    from teacher.loading import load_teacher

    return load_teacher(msinet_pb)


def read_back(out_dir, split):
    return [{k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ex.items()}
            for ex in records.read_records(records.list_shards(out_dir, split))]


def _listed(root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nusvip.OutsideImageWarning)
        return {s.stem: s for s in nusvip.list_nusvip(root, **kwargs)}


def _check_records(examples, samples, dataset):
    for ex in examples:
        sample = samples[ex["stem"].decode()]
        assert ex["dataset"].decode() == dataset
        assert (ex["height"], ex["width"]) == (sample.height, sample.width)
        np.testing.assert_array_equal(ex["fixations"], sample.fixations)  # duplicates and order kept
        np.testing.assert_array_equal(ex["observers"], sample.observers)
        np.testing.assert_allclose(ex["durations"], sample.durations)
        assert ex["has_saliency"] and ex["has_teacher"]
        np.testing.assert_array_equal(np.round(ex["saliency"][:, :, 0] * 255), nusvip.load_human_map(sample))
        assert ex["teacher"].shape[2] == 1 and 0 <= ex["teacher"].min() and ex["teacher"].max() <= 1


def test_nus_dataset_with_split_file(msinet_pb, tmp_path, capsys):
    root = make_nusvip(tmp_path / "mini")
    split_file = tmp_path / "mini_split.json"
    split_file.write_text(json.dumps({"train": ["a", "b"], "val": [], "test": []}))
    out = tmp_path / "records"
    args = ["--dataset", "nus", "--data-dir", str(root), "--split-file", str(split_file), "--teacher", str(msinet_pb),
            "--out", str(out), "--sigma", "3", *TINY]
    assert export_teacher.main(args) == 0
    assert "train: 2 images in 1 shards (mini: 2 with human maps, 0 without)" in capsys.readouterr().out
    examples = read_back(out, "train")
    assert [ex["stem"].decode() for ex in examples] == ["a", "b"]
    _check_records(examples, _listed(root, sigma=3.0), "mini")
    manifest = json.loads((out / "train.json").read_text())
    assert (manifest["dataset"], manifest["num_with_human_map"], manifest["num_without_human_map"]) == ("mini", 2, 0)
    assert "sigma 3 px" in manifest["human_maps"]
    assert manifest["fixations"] == {"images_with_observers": 2, "points": 30, "clamped_points": 1}


def test_images_folder_gives_teacher_maps_only(msinet, tmp_path):
    root = make_nusvip(tmp_path / "mini")
    out = tmp_path / "unlabelled"
    export.export_split(root / "stimuli", "train", msinet, out, batch_size=2, progress=False, verify=True,
                        input_size=(48, 64), dataset="images")
    examples = read_back(out, "train")
    assert [ex["stem"].decode() for ex in examples] == ["a", "b"]
    for ex in examples:
        assert ex["has_teacher"] and not ex["has_saliency"] and ex["dataset"] == b"images"
        assert ex["fixations"].shape == (0, 2)
    manifest = json.loads((out / "train.json").read_text())
    assert (manifest["num_with_human_map"], manifest["num_without_human_map"], manifest["human_maps"]) == (0, 2, "none")


@pytest.mark.filterwarnings("ignore::datasets.nusvip.OutsideImageWarning")
def test_bad_inputs_exit_with_one_line(tmp_path, capsys):
    root = make_nusvip(tmp_path / "mini")
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["a", "missing"], "val": [], "test": []}))
    base = ["--teacher", "oracle", "--out", str(tmp_path / "o"), "--no-progress"]
    cases = [
        (["--dataset", "osie", "--data-dir", str(tmp_path / "nowhere")], str(tmp_path / "nowhere")),
        (["--dataset", "nus", "--data-dir", str(root), "--split-file", str(split_file)], str(split_file)),
        (["--dataset", "nus", "--data-dir", str(root)], "no split file for data set 'mini'"),
        (["--images", str(root), "--data-dir", str(root)], "not both"),
    ]
    for args, named in cases:
        code = export_teacher.main(args + base)
        err = capsys.readouterr().err
        assert code == 1 and named in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("dataset, split, stems", [
    ("mit1003", "test", 3),  # includes a portrait photo (MIT1003 has mixed sizes) and the official maps
    ("osie", "val", 2),  # maps built from the points, sigma 24 px
])
def test_real_dataset_split(msinet_pb, msinet, tmp_path, dataset, split, stems):
    root = EYETRACKING / dataset
    if not (root / "eye" / "fixations.mat").is_file():
        pytest.skip(f"real eye-tracking data not found at {root} (only present in the project workspace)")
    samples = _listed(root, name=dataset)
    stored = json.loads(Path(f"datasets/splits/{dataset}.json").read_text())[split]
    pick = sorted(stored[:stems - 1] + [next(s for s in stored if samples[s].height > samples[s].width)]
                  if dataset == "mit1003" else stored[:stems])
    split_file = tmp_path / "few.json"
    split_file.write_text(json.dumps({split: pick}))
    out = tmp_path / dataset
    if dataset == "mit1003":  # the command line once; the library (teacher loaded once) otherwise
        assert export_teacher.main(["--dataset", dataset, "--data-dir", str(root), "--split", split, "--split-file",
                                    str(split_file), "--teacher", str(msinet_pb), "--out", str(out), *TINY]) == 0
    else:
        export.export_split(root, split, msinet, out, batch_size=2, progress=False, verify=True, input_size=(48, 64),
                            dataset=dataset, split_file=split_file)
    examples = read_back(out, split)
    assert [ex["stem"].decode() for ex in examples] == pick
    _check_records(examples, samples, dataset)
    if dataset == "mit1003":
        for ex in examples:  # the official map, losslessly re-encoded
            official = read_map(samples[ex["stem"].decode()].map_path)
            np.testing.assert_array_equal(np.round(ex["saliency"][:, :, 0] * 255), official)
        assert any(ex["height"] > ex["width"] for ex in examples)
    manifest = json.loads((out / f"{split}.json").read_text())
    assert (manifest["dataset"], manifest["num_with_human_map"], manifest["num_without_human_map"]) == (
        dataset, len(pick), 0)
    assert ("maps/" in manifest["human_maps"]) == (dataset == "mit1003")


class _DensityTeacher:
    """An unnormalised density (values up to 22, like FastGaze's raw output): must not be clipped silently."""

    input_size = (24, 32)
    name = "raw-density"

    def __call__(self, images):
        return np.full((len(images), *self.input_size, 1), 22.0, np.float32)


def test_teacher_maps_outside_unit_range_are_refused(tmp_path):
    root = make_nusvip(tmp_path / "mini")
    with pytest.raises(ValueError, match=r"'raw-density' returned values in \[22, 22\]; expected maps in \[0, 1\]"):
        export.export_split(root / "stimuli", "train", _DensityTeacher(), tmp_path / "o", progress=False,
                            dataset="images")


class _ZeroTeacher(_DensityTeacher):
    """An all-zero MSI-Net-like teacher (e.g. weights that never loaded): maps in [0, 1], but constant."""

    name = "all-zero"

    def __call__(self, images):
        return np.zeros((len(images), *self.input_size, 1), np.float32)


def test_constant_teacher_maps_are_refused_naming_teacher_and_image(tmp_path):
    root = make_nusvip(tmp_path / "mini")
    with pytest.raises(ValueError, match=rf"{root / 'stimuli' / 'a.jpg'}: teacher 'all-zero' returned a constant "
                                         r"map \(every pixel 0\)"):
        export.export_split(root / "stimuli", "train", _ZeroTeacher(), tmp_path / "o", progress=False,
                            dataset="images")


def test_resume_with_another_sigma_is_refused_instead_of_mixing_human_maps(msinet_pb, tmp_path, capsys):
    root = make_nusvip(tmp_path / "mini")
    split_file = tmp_path / "mini_split.json"
    split_file.write_text(json.dumps({"train": ["a", "b"], "val": [], "test": []}))
    out = tmp_path / "records"
    args = ["--dataset", "nus", "--data-dir", str(root), "--split-file", str(split_file), "--split", "train",
            "--teacher", str(msinet_pb), "--out", str(out), "--images-per-shard", "1", *TINY]
    assert export_teacher.main([*args, "--sigma", "3"]) == 0
    (out / records.shard_name("train", 1, 2)).unlink()  # as if stopped before the second shard
    capsys.readouterr()
    assert export_teacher.main([*args, "--sigma", "5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sigma 3 px" in err and "sigma 5 px" in err and "--sigma" in err
    assert not (out / records.shard_name("train", 1, 2)).exists()
    assert export_teacher.main([*args, "--sigma", "3"]) == 0  # the first run's settings resume
    _check_records(read_back(out, "train"), _listed(root, sigma=3.0), "mini")
