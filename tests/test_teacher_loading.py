"""Loading the published MSI-Net formats and converting them to Keras (teacher/loading.py, teacher/convert.py).

The published files are stood in for by tests/msinet_reference.py: the author's TF1 graph rebuilt with random
weights, frozen to model_salicon_{cpu,gpu}.pb and converted to the TF2 SavedModel, built once per session.
"""

import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf

from msinet_reference import build_reference_pb, build_reference_savedmodel
from teacher import loading
from teacher.convert import convert, expected_shapes, load_constants_into
from teacher.loading import load_teacher
from teacher.msinet import SCOPE_TO_LAYER

ATOL = 1e-5


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("msinet")
    cpu, gpu, saved_model = str(root / "model_salicon_cpu.pb"), str(root / "model_salicon_gpu.pb"), str(root / "hf")
    weights = build_reference_pb(cpu, seed=0, device="cpu")
    build_reference_pb(gpu, device="gpu", weights=weights)
    # A revision-specific output key: the loader must not assume "output".
    build_reference_savedmodel(saved_model, cpu, output_key="layer_from_saved_model")
    return {"cpu": cpu, "gpu": gpu, "saved_model": saved_model, "weights": weights, "root": root}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(42)
    return {
        "small": rng.uniform(0, 255, (2, 64, 96, 3)).astype(np.float32),
        "salicon": rng.uniform(0, 255, (1, 240, 320, 3)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def frozen_teacher(published):
    return load_teacher(published["cpu"])


@pytest.fixture(scope="module")
def reference_small(frozen_teacher, images):
    """The original graph's answer on the small batch (computed once)."""
    return frozen_teacher(images["small"]).numpy()


@pytest.fixture(scope="module")
def keras_from_pb(published):
    return convert(published["cpu"])


def test_frozen_graph_and_its_keras_conversion_agree(published, frozen_teacher, keras_from_pb, images,
                                                     reference_small):
    assert frozen_teacher.format == "frozen_graph" and frozen_teacher.backend == "graph"
    assert frozen_teacher.input_size == (240, 320) and frozen_teacher.dataset == "salicon"
    assert reference_small.shape == (2, 64, 96, 1) and reference_small.dtype == np.float32
    assert reference_small.std() > 0.05  # random weights still give a non-trivial map
    for scope, layer_name in SCOPE_TO_LAYER.items():
        kernel, bias = keras_from_pb.get_layer(layer_name).get_weights()
        np.testing.assert_array_equal(kernel, published["weights"][f"{scope}/kernel"])
        np.testing.assert_array_equal(bias, published["weights"][f"{scope}/bias"])

    np.testing.assert_allclose(keras_from_pb(images["small"]).numpy(), reference_small, atol=ATOL)
    salicon = images["salicon"]
    np.testing.assert_allclose(keras_from_pb(salicon).numpy(), frozen_teacher(salicon).numpy(), atol=ATOL)


def test_saved_model_and_its_keras_conversion_agree(published, images, reference_small):
    teacher = load_teacher(published["saved_model"])
    assert teacher.format == "saved_model" and teacher.name == "hf" and teacher.input_size == (240, 320)
    from_saved_model = teacher(images["small"]).numpy()
    np.testing.assert_allclose(from_saved_model, reference_small, atol=ATOL)

    # The constants live in the nested function library, not at the top level of the graph.
    keras_model = convert(published["saved_model"])
    np.testing.assert_allclose(keras_model(images["small"]).numpy(), from_saved_model, atol=ATOL)


def test_gpu_graph_gives_the_same_maps(published, images, reference_small):
    teacher = load_teacher(published["gpu"])
    assert teacher.backend in ("graph", "keras")  # "graph" where this CPU build has NCHW kernels (oneDNN)
    np.testing.assert_allclose(teacher(images["small"]).numpy(), reference_small, atol=ATOL)


def test_gpu_graph_without_cpu_kernels(published, images, reference_small, monkeypatch):
    """Where TF lacks NCHW CPU kernels: a clear error, or the same weights through the Keras model."""
    def without_nchw_kernels(graph_def):
        def run(images):
            raise tf.errors.InvalidArgumentError(
                None, None, "Graph execution error:\n\nDefault MaxPoolingOp only supports NHWC on device type CPU"
            )

        return run

    monkeypatch.setattr(loading, "_frozen_graph_function", without_nchw_kernels)
    with pytest.raises(RuntimeError, match=r"model_salicon_gpu\.pb.*NHWC on device type CPU.*_cpu file"):
        load_teacher(published["gpu"], nchw_fallback="error")
    teacher = load_teacher(published["gpu"])
    assert teacher.backend == "keras" and teacher.format == "frozen_graph"
    np.testing.assert_allclose(teacher(images["small"]).numpy(), reference_small, atol=ATOL)


def test_keras_weights_file_and_dataset_from_name(keras_from_pb, images, reference_small, tmp_path):
    path = str(tmp_path / "model_mit1003_cpu.weights.h5")
    keras_from_pb.save_weights(path)
    teacher = load_teacher(path)
    assert teacher.format == "keras" and teacher.dataset == "mit1003" and teacher.input_size == (360, 360)
    np.testing.assert_allclose(teacher(images["small"]).numpy(), reference_small, atol=ATOL)
    assert load_teacher(path, dataset="cat2000").input_size == (216, 384)


def test_manifest_names_and_hashes_the_file(published, frozen_teacher):
    with open(published["cpu"], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert frozen_teacher.sha256 == digest
    assert frozen_teacher.manifest() == {
        "name": "model_salicon_cpu.pb",
        "sha256": digest,
        "format": "frozen_graph",
        "backend": "graph",
        "dataset": "salicon",
        "input_size": [240, 320],
        "contract": "msinet",
    }


def test_teacher_input_checks(frozen_teacher):
    with pytest.raises(ValueError, match=r"model_salicon_cpu\.pb.*\(64, 96, 3\).*images\[None\]"):
        frozen_teacher(np.zeros((64, 96, 3), np.float32))


def test_wrong_files_are_clear_errors(published, tmp_path):
    hint = r"nowhere\.pb: MSI-Net weights not found.*1Xy9C72pcA8DO4CY0rc6B7wsuE9L9DDZY.*weights/model_salicon_cpu\.pb"
    with pytest.raises(FileNotFoundError, match=hint):
        load_teacher(str(tmp_path / "nowhere.pb"))

    not_a_graph = tmp_path / "model_salicon_cpu.pb"
    not_a_graph.write_text("not a graph")
    with pytest.raises(ValueError, match=r"model_salicon_cpu\.pb: not a binary TensorFlow GraphDef"):
        load_teacher(str(not_a_graph))

    other_graph = tf.Graph()
    with other_graph.as_default():
        tf.constant(1.0, name="something")
    wrong_graph = tmp_path / "other.pb"
    wrong_graph.write_bytes(other_graph.as_graph_def().SerializeToString())
    with pytest.raises(ValueError, match=r"other\.pb: the graph has no node\(s\) \['input', 'output'\]"):
        load_teacher(str(wrong_graph))

    no_signature = str(tmp_path / "no_signature")
    tf.saved_model.save(tf.Module(), no_signature)
    with pytest.raises(ValueError, match=r"no_signature: the SavedModel has no 'serving_default' signature"):
        load_teacher(no_signature)

    onnx = tmp_path / "msinet.onnx"
    onnx.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"msinet\.onnx: unsupported"):
        load_teacher(str(onnx))
    with pytest.raises(ValueError, match=r"unknown dataset 'coco'"):
        load_teacher(published["cpu"], dataset="coco")


def test_converter_names_missing_and_misshaped_tensors(published, keras_from_pb):
    constants = dict(published["weights"])
    del constants["aspp/conv1_3/bias"]
    with pytest.raises(ValueError, match=r"src\.pb: 1 of the 46 MSI-Net weight tensors are missing: aspp/conv1_3/bias"):
        load_constants_into(keras_from_pb, constants, source="src.pb")

    constants = dict(published["weights"])
    constants["decoder/conv4/kernel"] = np.zeros((3, 3, 1, 32), np.float32)  # output and input swapped
    with pytest.raises(ValueError, match=r"decoder/conv4/kernel: \(3, 3, 1, 32\) \(expected \(3, 3, 32, 1\)\)"):
        load_constants_into(keras_from_pb, constants, source="src.pb")
    assert expected_shapes()["aspp/conv1_2/kernel"] == (3, 3, 1280, 256) and len(expected_shapes()) == 46
    assert os.path.exists(published["cpu"])
