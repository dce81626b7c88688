"""Student exports for deployment: the folded inference graph, ONNX / OpenVINO / LiteRT files, int8, the CLI."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import export_student as export_cli
from datasets.io import read_image
from inference import export as deploy
from inference.predictors import RuntimeStudentPredictor, load_predictor
from student.model import build_student, spatial_softmax
from student.serving import export_saved_model, inference_student
from tests.helpers import assert_int8_weights_cannot_saturate as _assert_weights_cannot_saturate
from tests.helpers import RESNET18_EXPORT_SIZE as SIZE  # small keeps the test fast; odd: the student pads unevenly
from tests.helpers import cc as _cc, weights_file as _weights_file


def _reference_maps(student, images):
    """The Keras student's density and [0, 1] map, computed here step by step from its logits."""
    logits = student(tf.cast(images, tf.float32), training=False)["saliency"]
    density = spatial_softmax(logits).numpy()[..., 0].astype(np.float64)
    return density, density / density.max(axis=(1, 2), keepdims=True)


@pytest.fixture(scope="session")
def trained_like_student(resnet18_student):
    """Variant B, seed 3, with non-trivial BatchNormalization statistics (conftest.py's, shared)."""
    return resnet18_student


@pytest.fixture(scope="session")
def exports(resnet18_exports):
    """Every format and the int8 files, written once through the library entry point (conftest.py's: also checked
    by test_backbone_exports.py)."""
    return resnet18_exports


@pytest.fixture(scope="session")
def test_images(synthetic_salicon_dir):
    """Synthetic scenes at the export size (the val images, resized) and at their own 48x64."""
    from inference.predictors import resize_to

    originals = [read_image(p) for p in sorted(glob.glob(str(synthetic_salicon_dir / "images" / "val" / "*.jpg")))]
    return np.stack([resize_to(im, SIZE) for im in originals]), originals


def test_folded_graph_matches_the_keras_student(trained_like_student):
    folded = inference_student(trained_like_student)
    layers = [layer for model in (folded, folded.get_layer("resnet18")) for layer in model.layers]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)
    assert not any(layer.name.startswith("teacher") for layer in layers)  # B's training-only branch is gone
    assert folded.get_layer("decoder_up5").input.shape[-1] == 9  # the last upsampling carries the head's taps
    images = np.random.default_rng(0).uniform(0, 255, (2, 70, 90, 3)).astype(np.float32)  # padded inside
    expected = trained_like_student(images, training=False)["saliency"].numpy()
    got = folded(images)["saliency"].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())
    density = spatial_softmax(got).numpy()[..., 0]
    np.testing.assert_allclose(density / density.max(axis=(1, 2), keepdims=True),
                               _reference_maps(trained_like_student, images)[1], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_exported_files_match_the_keras_student(exports, fmt, trained_like_student, test_images):
    images, _ = test_images
    density, expected = _reference_maps(trained_like_student, images)
    predictor = load_predictor(exports[fmt], threads=2)
    assert isinstance(predictor, RuntimeStudentPredictor) and predictor.input_size == SIZE
    maps = np.stack(predictor.predict_batch(images))
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    np.testing.assert_allclose(predictor.predict_density(images[0]), density[0], rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_saved_model_export_and_other_sizes_keep_the_contract(exports, trained_like_student, test_images):
    """The folded SavedModel equals the unfolded one; runtime files serve any size like the SavedModel."""
    images, originals = test_images
    unfolded = load_predictor(export_saved_model(trained_like_student, exports["onnx"] + "_ref", input_size=SIZE,
                                                 fold_batchnorm=False))
    folded = load_predictor(exports["saved_model"])
    np.testing.assert_allclose(np.stack(folded.predict_batch(originals)), np.stack(unfolded.predict_batch(originals)),
                               atol=1e-5)
    # A portrait image too: the fixed-size files letterbox it into their landscape input as the SavedModel does.
    originals = [*originals, np.ascontiguousarray(originals[0].transpose(1, 0, 2))]
    reference = unfolded.predict_batch(originals)
    for fmt in ("onnx", "openvino", "litert"):
        predictor = load_predictor(exports[fmt])
        assert predictor.resize == "letterbox"
        for image, ref in zip(originals, reference):
            saliency_map = predictor.predict(image)
            density = predictor.predict_density(image)
            assert saliency_map.shape == density.shape == image.shape[:2] == ref.shape
            assert saliency_map.max() == pytest.approx(1.0) and density.sum() == pytest.approx(1.0)
            # OpenCV resizes in and out instead of TensorFlow's antialiased bilinear: close, not equal.
            assert _cc(saliency_map, ref) > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx_int8", "openvino_int8", "litert_int8"])
def test_int8_exports_are_int8_and_close_to_float(exports, fmt, test_images):
    import os

    images, _ = test_images
    float_fmt = fmt[: -len("_int8")]
    assert os.path.getsize(_weights_file(exports[fmt])) < 0.4 * os.path.getsize(_weights_file(exports[float_fmt]))
    if fmt == "openvino_int8":
        import openvino as ov

        model = ov.Core().read_model(exports[fmt])
        convolutions = [op for op in model.get_ops() if op.get_type_name() == "Convolution"]
        int8_weights = [op for op in model.get_ops()
                        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
        assert len(int8_weights) == len(convolutions) > 0  # every convolution's weights
        assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())  # and its activations
        # ... but not the spatial softmax: no quantized tensor feeds its exp, log or sums.
        softmax_inputs = {t.get_node().get_type_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
                          for out in op.outputs() for t in out.get_target_inputs()}
        assert not softmax_inputs & {"Exp", "Log", "ReduceSum", "ReduceMax", "Divide"}
        assert model.input(0).get_element_type() == ov.Type.u8
        # The CPU plugin runs them in int8 under the predictor's f32 precision hint (which is for float ops).
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
                      if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
        assert precisions <= {"u8", "i8"}
    if fmt in ("onnx_int8", "openvino_int8"):
        _assert_weights_cannot_saturate(exports[fmt])
    int8_maps = load_predictor(exports[fmt]).predict_batch(images)
    float_maps = load_predictor(exports[float_fmt]).predict_batch(images)
    for a, b in zip(int8_maps, float_maps):
        assert a.shape == b.shape and a.max() == pytest.approx(1.0)
        assert not np.allclose(a, b, atol=1e-4)  # really quantized
        assert _cc(a, b) > 0.9




@pytest.mark.slow
def test_cli_exports_a_run_folder(trained_like_student, tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    student = build_student("A", seed=5)
    student.save_weights(str(run / "checkpoints" / "best.weights.h5"))
    (run / "config.json").write_text(json.dumps({"variant": "A", "image_size": [32, 64]}))
    assert export_cli.main([str(run), "--out", str(tmp_path / "out"), "--formats", "litert"]) == 0
    assert "litert" in capsys.readouterr().out
    predictor = load_predictor(tmp_path / "out" / "student.tflite")
    # A run from before letterboxing (no "resize" in its config) was trained stretched, and is served so.
    assert json.loads((tmp_path / "out" / "student.tflite.json").read_text())["resize"] == "stretch"
    assert predictor.input_size == (32, 64) and predictor.resize == "stretch"
    image = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(predictor.predict(image), _reference_maps(student, image[None])[1][0], atol=1e-5)


def test_cli_errors_name_the_fix(tmp_path, capsys):
    # Exit status 1 for a handled error, 2 for a usage error (issue 18, item 12's convention; these were all 2).
    assert export_cli.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    weights = tmp_path / "s.weights.h5"
    build_student("A", seed=0).save_weights(str(weights))
    assert export_cli.main([str(weights), "--out", str(tmp_path / "out"), "--formats", "litert"]) == 1
    assert "--input-size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        export_cli.main([str(weights), "--out", str(tmp_path / "out"), "--input-size", "32", "32", "--int8"])
    assert info.value.code == 2
    assert "records" in capsys.readouterr().err


def test_openvino_int8_without_nncf_names_the_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "nncf", None)  # `import nncf` raises ImportError
    with pytest.raises(ImportError, match="pip install nncf"):
        deploy.export_student(build_student("A", seed=0), tmp_path / "out", formats=["openvino"], input_size=(32, 32),
                              int8=True, records_dir=tmp_path)
    assert not (tmp_path / "out").exists()  # raised before writing anything


@pytest.mark.parametrize("variant", ["A", "B"])
def test_load_student_reads_the_variant_from_the_weights(variant, tmp_path):
    saved = build_student(variant, seed=7)
    saved.save_weights(str(tmp_path / "s.weights.h5"))
    loaded, input_size = deploy.load_student(tmp_path / "s.weights.h5")
    assert input_size is None and sorted(loaded.output) == sorted(saved.output)
    for a, b in zip(saved.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = "B" if variant == "A" else "A"
    with pytest.raises(ValueError, match="--variant"):
        deploy.load_student(tmp_path / "s.weights.h5", variant=other)


@pytest.mark.slow
def test_predict_and_evaluate_take_the_exported_files(exports, synthetic_salicon_dir, tmp_path, capsys):
    import evaluate as evaluate_cli
    import predict as predict_cli
    from teacher.export import export_split

    image = sorted(glob.glob(str(synthetic_salicon_dir / "images" / "val" / "*.jpg")))[0]
    assert predict_cli.main(["--model", exports["litert"], image, "--out", str(tmp_path / "pred"),
                             "--no-progress"]) == 0
    written = read_image(str(tmp_path / "pred" / (image.rsplit("/", 1)[-1][:-4] + ".png")))
    assert written.shape[:2] == read_image(image).shape[:2]

    records_dir = tmp_path / "records"
    export_split(str(synthetic_salicon_dir), "val", "oracle", str(records_dir), progress=False)
    assert evaluate_cli.main(["--records-dir", str(records_dir), "--models", exports["onnx"], exports["openvino"],
                              exports["openvino_int8"], "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    onnx, openvino = results["models"]["student.onnx"], results["models"]["student.xml"]
    openvino_int8 = results["models"]["student_int8.xml"]
    for metric in ("nss", "cc", "auc_judd"):
        assert onnx["metrics"][metric] == pytest.approx(openvino["metrics"][metric], abs=1e-4)
        assert np.isfinite(openvino_int8["metrics"][metric]) and openvino_int8["metrics"][metric] != \
            openvino["metrics"][metric]


def test_int8_accuracy_script_on_real_osie_images(exports):
    from pathlib import Path

    import benchmarks.int8_accuracy as int8_accuracy
    from datasets import splits

    osie = Path(__file__).resolve().parents[2] / "shared" / "data" / "eyetracking" / "osie"
    if not (osie / "eye" / "fixations.mat").is_file():
        pytest.skip(f"OSIE not found at {osie} (only present in the project workspace)")
    samples = int8_accuracy.osie_test_samples(osie)
    assert [s.stem for s in samples] == sorted(splits.load_split("osie", "test"))
    assert all(len(s.fixations) > 100 for s in samples)
    results = int8_accuracy.measure(Path(exports["onnx"]).parent, osie, count=2)
    assert results["count"] == 2
    assert sorted(results["pairs"]) == ["student.onnx vs student_int8.onnx", "student.tflite vs student_int8.tflite",
                                        "student.xml vs student_int8.xml"]
    for entry in results["pairs"].values():
        assert -1 <= entry["cc_int8_vs_float"] <= 1 and entry["nss"]["float"] != entry["nss"]["int8"]


# --- issue 18, item 2: the runtime files say their input size and resize mode themselves -------------------------


def _copy_without_sidecar(path, folder):
    """Copy an export (and OpenVINO's .bin) into `folder`, leaving its `.json` sidecar behind."""
    import os
    import shutil

    copied = shutil.copy(path, folder)
    if path.endswith(".xml"):
        shutil.copy(_weights_file(path), folder)
    assert not os.path.exists(copied + ".json")
    return copied


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert", "onnx_int8", "openvino_int8", "litert_int8"])
def test_a_file_copied_without_its_json_still_letterboxes(exports, fmt, tmp_path, test_images):
    _, originals = test_images
    portrait = np.ascontiguousarray(originals[0].transpose(1, 0, 2))
    copied = _copy_without_sidecar(exports[fmt], tmp_path)
    predictor = load_predictor(copied)
    assert predictor.input_size == SIZE and predictor.resize == "letterbox"
    np.testing.assert_allclose(predictor.predict(portrait), load_predictor(exports[fmt]).predict(portrait), atol=1e-6)
    # What the file says wins over a sidecar that disagrees with it.
    (tmp_path / (copied.rsplit("/", 1)[-1] + ".json")).write_text(json.dumps({"resize": "stretch",
                                                                              "input_size": [8, 8]}))
    assert load_predictor(copied).resize == "letterbox"


def _without_description(path, folder):
    """A copy of a runtime export in `folder` with neither its embedded description nor its `.json` sidecar: a file
    as written before the exports said their input size and resize mode (or by `runtime_model.export` directly)."""
    from pathlib import Path

    target = Path(folder) / f"bare{Path(path).suffix}"
    if target.suffix == ".onnx":
        import onnx

        model = onnx.load(path)
        kept = [p for p in model.metadata_props if p.key != deploy.METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        onnx.save(model, str(target))
    else:
        from ai_edge_litert.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
        model.metadata = [m for m in model.metadata if m.name not in (deploy.METADATA_KEY, deploy.METADATA_KEY.encode())]
        target.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return target


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_a_runtime_file_that_says_nothing_is_refused(exports, fmt, tmp_path):
    path = _without_description(exports[fmt], tmp_path)
    with pytest.raises(ValueError, match=rf"{path}: .*letterboxed or stretched.*export_student\.py") as info:
        load_predictor(path)
    assert f"{path}.json" in str(info.value)  # the other fix: the sidecar beside it
    (tmp_path / f"{path.name}.json").write_text(json.dumps({"resize": "stretch", "input_size": list(SIZE)}))
    assert load_predictor(path).resize == "stretch"  # a sidecar alone still serves a file from before


# --- issue 18, item 9: a corrupt or truncated runtime file is an error naming it, not the runtime's traceback ------


def _damaged(exports, fmt, damage, folder):
    """A copy of an export (OpenVINO: .xml and .bin) in `folder` with one file garbage, truncated or missing."""
    import shutil
    from pathlib import Path

    source = Path(exports[fmt])
    xml = Path(shutil.copy(source, folder))
    if fmt == "openvino":
        shutil.copy(_weights_file(str(source)), folder)
    target = xml.with_suffix(".bin") if damage.startswith("bin_") else xml
    data = target.read_bytes()
    if damage.endswith("missing"):
        target.unlink()
    elif damage.endswith("truncated"):
        target.write_bytes(data[: len(data) // 2])
    else:
        target.write_bytes(b"garbage\n" * 4)
    return xml, target


@pytest.mark.slow
@pytest.mark.parametrize("fmt, damage", [("onnx", "garbage"), ("onnx", "truncated"), ("litert", "garbage"),
                                         ("litert", "truncated"), ("openvino", "garbage"), ("openvino", "truncated"),
                                         ("openvino", "bin_truncated"), ("openvino", "bin_missing")])
def test_a_damaged_runtime_file_is_an_error_naming_it(exports, fmt, damage, tmp_path):
    path, damaged = _damaged(exports, fmt, damage, tmp_path)
    with pytest.raises(ValueError, match="export_student.py") as info:
        load_predictor(path)
    message = str(info.value)
    assert str(path) in message and str(damaged) in message and "corrupt, truncated or missing" in message


@pytest.mark.slow
def test_predict_and_evaluate_name_a_damaged_runtime_file(exports, synthetic_salicon_dir, tmp_path, capsys):
    import evaluate as evaluate_cli
    import predict as predict_cli
    from teacher.export import export_split

    image = sorted(glob.glob(str(synthetic_salicon_dir / "images" / "val" / "*.jpg")))[0]
    (tmp_path / "a").mkdir()
    onnx, _ = _damaged(exports, "onnx", "truncated", tmp_path / "a")
    tflite, _ = _damaged(exports, "litert", "garbage", tmp_path / "a")
    for model in (onnx, tflite):
        capsys.readouterr()
        assert predict_cli.main(["--model", str(model), image, "--out", str(tmp_path / "pred"), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("predict.py: error: ") and str(model) in err and "Traceback" not in err
    records_dir = tmp_path / "records"
    export_split(str(synthetic_salicon_dir), "val", "oracle", str(records_dir), progress=False)
    (tmp_path / "b").mkdir()
    xml, _ = _damaged(exports, "openvino", "bin_truncated", tmp_path / "b")
    capsys.readouterr()
    # evaluate.py's exit codes are being moved to the one convention (1) in the other half of issue 18, item 12.
    assert evaluate_cli.main(["--records-dir", str(records_dir), "--models", str(xml), "--no-teacher",
                              "--out", str(tmp_path / "eval"), "--quiet"]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: error: ") and str(xml) in err and "Traceback" not in err


# --- issue 18, item 8 (and item 12's /proc): export_student.py refuses bad input in one line, leaves nothing partial


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A bare variant A student .weights.h5."""
    path = tmp_path_factory.mktemp("small_weights") / "s.weights.h5"
    build_student("A", seed=0).save_weights(str(path))
    return path


def test_a_float_re_export_removes_the_stale_int8_files_of_its_formats(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = ["s_int8.tflite", "s_int8.tflite.json"]
    kept = ["s_int8.onnx", "s_int8.onnx.json", "other_int8.tflite", "notes.txt"]  # another format, name or file
    for name in stale + kept:
        (out / name).write_bytes(b"earlier")
    paths = deploy.export_student(build_student("A", seed=0), out, formats=["litert"], input_size=(32, 32), name="s")
    assert sorted(os.listdir(out)) == sorted(kept + ["s.tflite", "s.tflite.json"])
    assert paths == {"litert": str(out / "s.tflite")}


def test_cli_garbage_weights_name_the_file(tmp_path, capsys):
    garbage = tmp_path / "g.weights.h5"
    garbage.write_bytes(b"not an hdf5 file" * 10)
    for extra in ([], ["--variant", "B"]):
        assert export_cli.main([str(garbage), "--out", str(tmp_path / "out"), "--input-size", "32", "32",
                                *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"export_student.py: error: {garbage}: not a student .weights.h5")
        assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # a failed export leaves no empty --out behind


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_cli_unwritable_out_names_the_flag(small_weights, tmp_path, capsys, where):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "out" if where == "under_a_file" else "/proc"
    assert export_cli.main([str(small_weights), "--out", str(out), "--input-size", "32", "32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"export_student.py: error: {out}: cannot write output there") and "--out" in err
    assert err.count("\n") == 1


def test_cli_calibration_count_and_int8_without_records_are_usage_errors(small_weights, tmp_path, capsys):
    for count in ("0", "-3"):
        with pytest.raises(SystemExit) as info:
            export_cli.main([str(small_weights), "--out", str(tmp_path / "out"), "--input-size", "32", "32", "--int8",
                             "--records-dir", str(tmp_path), "--calibration-count", count])
        assert info.value.code == 2 and "--calibration-count: expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        export_cli.main([str(small_weights), "--out", str(tmp_path / "out"), "--input-size", "32", "32", "--int8"])
    assert info.value.code == 2 and "--int8 needs --records-dir" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # The library refuses it before writing anything, too.
    with pytest.raises(ValueError, match="calibration_count"):
        deploy.export_student(build_student("A", seed=0), tmp_path / "lib", formats=["litert"], input_size=(32, 32),
                              int8=True, records_dir=tmp_path, calibration_count=0)
    with pytest.raises(ValueError, match="--records-dir"):
        deploy.export_student(build_student("A", seed=0), tmp_path / "lib", formats=["litert"], input_size=(32, 32),
                              int8=True)
    assert not (tmp_path / "lib").exists()


def test_cli_full_disk_is_one_line_and_leaves_no_partial_output(small_weights, tmp_path, capsys, monkeypatch):
    """A real full disk cannot be made here: the LiteRT writer raises ENOSPC after the ONNX file was written."""
    import errno
    import os

    pytest.importorskip("tf2onnx")

    def full_disk(runtime_model, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(deploy, "export_litert", full_disk)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "student.onnx").write_bytes(b"a previous export")  # kept as it was: not replaced by half a new set
    assert export_cli.main([str(small_weights), "--out", str(out), "--input-size", "32", "32",
                            "--formats", "onnx", "litert"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("export_student.py: error: ") and "No space left on device" in err
    assert "student.tflite" in err and "free space" in err and err.count("\n") == 1
    assert sorted(os.listdir(out)) == ["student.onnx"] and (out / "student.onnx").read_bytes() == b"a previous export"


@pytest.mark.slow
def test_cli_error_prints_no_tensorflow_lines(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "export_student.py"), str(tmp_path / "missing"), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=root,
                            env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"export_student.py: error: {tmp_path / 'missing'}: no such run folder or "
                                          ".weights.h5 file"]


# --- issue 24, items 8c, 9 and 10a: calibration records and NNCF's output --------------------------------------


def test_cli_truncated_calibration_shard_names_the_file_and_the_fix(small_weights, calibration_records, tmp_path,
                                                                    capsys):
    import shutil

    records_dir = tmp_path / "records"
    shutil.copytree(calibration_records, records_dir)
    (shard,) = records_dir.glob("train-*.tfrecord")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert export_cli.main([str(small_weights), "--out", str(tmp_path / "out"), "--input-size", "32", "32",
                            "--formats", "litert", "--int8", "--records-dir", str(records_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"export_student.py: error: {shard}: truncated or corrupt record shard")
    assert "export_teacher.py" in err and "--verify-only" in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before anything was converted (no empty --out either)


def test_cli_unknown_calibration_split_advises_what_export_teacher_takes(small_weights, calibration_records,
                                                                         tmp_path, capsys):
    import re
    import shlex

    import export_teacher

    assert export_cli.main([str(small_weights), "--out", str(tmp_path / "out"), "--input-size", "32", "32",
                            "--formats", "litert", "--int8", "--records-dir", str(calibration_records),
                            "--calibration-split", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "the splits there: train" in err and "--calibration-split" in err
    commands = re.findall(r"`python export_teacher\.py ([^`]*)`", err)
    assert commands and err.count("\n") == 1
    for command in commands:  # every command it advises, export_teacher.py accepts
        export_teacher.build_parser().parse_args(shlex.split(command))


@pytest.mark.slow
def test_openvino_int8_keeps_stdout_clean(exports, test_images, tmp_path, monkeypatch):
    """NNCF logs INFO lines and draws progress bars on stdout; `export_student.py --int8 > file` must not get them.

    NNCF's log handler keeps the sys.stdout of the moment it was imported: both it and sys.stdout are pointed at
    one buffer here, as in a command line run."""
    import io
    import logging
    import sys

    stdout, stderr = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    deploy._import_nncf()
    handlers = [h for h in logging.getLogger("nncf").handlers if type(h) is logging.StreamHandler]
    assert handlers
    for handler in handlers:
        monkeypatch.setattr(handler, "stream", stdout)
    images, _ = test_images
    deploy.quantize_openvino(exports["openvino"], tmp_path / "q.xml", images[:2])
    assert (tmp_path / "q.xml").is_file()
    assert stdout.getvalue() == ""
    assert "INFO:nncf" not in stderr.getvalue() and "Statistics collection" in stderr.getvalue()
    assert all(handler.stream is stdout for handler in handlers)  # put back as it was
