"""Fixtures shared by several test modules: a tiny synthetic SALICON folder, records made from it, a random-weight
MSI-Net graph, the shared MIT1003 sample, and one ResNet18 student exported to every format (test_deploy.py and
test_backbone_exports.py both check it; one export set costs about half a minute). TensorFlow is imported inside
the fixtures that need it, so that collecting the tests stays cheap."""

import glob
from pathlib import Path

import pytest

from datasets.synthetic import generate_synthetic_salicon
from tests.helpers import RESNET18_EXPORT_SIZE, randomize_batchnorm

MIT1003_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mit1003_sample"


# pytest-xdist hands whole files to its two workers (--dist loadfile). Files that share a session fixture go to one
# worker, so that it is built once: conftest's `resnet18_exports` (about 45 s) for these two.
SAME_WORKER = {"test_backbone_exports.py": "test_deploy.py"}
# The files that train or export, slowest first (seconds summed over their tests with --durations=0 on a 2-core
# Xeon, 2026-12-08): handed out before the rest, so that no long file starts last while the other worker idles.
SLOW_FILES = ("test_deploy.py", "test_training.py", "test_demo.py", "test_real_study.py", "test_backbones.py",
              "test_distillation.py", "test_fastgaze_export.py", "test_export_nusvip.py", "test_teacher_loading.py",
              "test_multiworker.py", "test_student_model.py", "test_light_decoder.py", "test_readme.py")


def slow_files_first():
    """pytest-xdist's --dist loadfile scheduler with `SAME_WORKER`'s groups and `SLOW_FILES` first (a class)."""
    from xdist.scheduler import LoadFileScheduling

    def rank(scope):
        name = scope.rpartition("/")[2]
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)

    class SlowFilesFirst(LoadFileScheduling):
        def _split_scope(self, nodeid):
            directory, slash, name = super()._split_scope(nodeid).rpartition("/")
            return directory + slash + SAME_WORKER.get(name, name)

        def sort_queue(self):
            """`SLOW_FILES` to the front of the work queue (a stable sort: the others keep their order)."""
            for scope in sorted(self.workqueue, key=rank):
                self.workqueue.move_to_end(scope)

        def _assign_work_unit(self, node):
            if not getattr(self, "_sorted", False):  # the queue is complete at the first assignment
                self.sort_queue()
                self._sorted = True
            super()._assign_work_unit(node)

    return SlowFilesFirst


def pytest_xdist_make_scheduler(config, log):
    return slow_files_first()(config, log) if config.getoption("dist") == "loadfile" else None


@pytest.fixture(scope="session", autouse=True)
def weights_cache_in_a_temporary_folder(tmp_path_factory):
    """Backbone weights converted by any test go to a session folder (SALIENCY_KD_CACHE), never ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SALIENCY_KD_CACHE", str(tmp_path_factory.mktemp("weights_cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def synthetic_salicon_dir(tmp_path_factory):
    """A 2017-layout SALICON folder: 8 train, 4 val, 2 test images of 48x64, seed 0 (treat as read-only)."""
    root = tmp_path_factory.mktemp("synthetic_salicon")
    generate_synthetic_salicon(root, n_train=8, n_val=4, n_test=2, image_size=(48, 64), seed=0)
    return root


@pytest.fixture(scope="session")
def mit1003_sample_dir():
    """The ten real MIT1003 images with maps in ../shared/data/mit1003_sample; skips when absent."""
    if not (MIT1003_SAMPLE / "stimuli").is_dir():
        pytest.skip(f"MIT1003 sample not found at {MIT1003_SAMPLE} (only present in the project workspace)")
    return MIT1003_SAMPLE


@pytest.fixture(scope="module")
def records_dir(synthetic_salicon_dir, tmp_path_factory):
    """Records of the tiny synthetic folder; the teacher map is the true density at half resolution."""
    import numpy as np
    import tensorflow as tf

    from datasets import records
    from datasets.io import encode_png
    from datasets.salicon import list_salicon, load_sample

    out = tmp_path_factory.mktemp("distill")
    for split in ("train", "val"):
        path = out / records.shard_name(split, 0, 1)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for sample in list_salicon(synthetic_salicon_dir, split):
                ex = load_sample(sample)
                density = np.load(synthetic_salicon_dir / "densities" / split / f"{sample.stem}.npy")
                teacher = density[::2, ::2] / density.max()
                with open(sample.image_path, "rb") as f:
                    image_bytes = f.read()
                h, w = ex["image"].shape[:2]
                writer.write(records.serialize_example(
                    sample.stem, image_bytes, h, w, encode_png(ex["saliency"]), teacher, ex["fixations"]))
    return out


@pytest.fixture(scope="session")
def calibration_records(synthetic_salicon_dir, tmp_path_factory):
    """Train records holding the synthetic images only (int8 calibration of the exports reads nothing else)."""
    import tensorflow as tf

    from datasets import records
    from datasets.io import read_image

    out = tmp_path_factory.mktemp("calibration_records")
    with tf.io.TFRecordWriter(str(out / records.shard_name("train", 0, 1))) as writer:
        for path in sorted(glob.glob(str(synthetic_salicon_dir / "images" / "train" / "*.jpg"))):
            image = read_image(path)
            with open(path, "rb") as f:
                writer.write(records.serialize_example(path.rsplit("/", 1)[-1], f.read(), *image.shape[:2]))
    return out


@pytest.fixture(scope="module")
def msinet_pb(tmp_path_factory):
    """The author's MSI-Net graph frozen with random weights (tests/msinet_reference.py)."""
    from tests.msinet_reference import build_reference_pb

    path = tmp_path_factory.mktemp("weights") / "model_salicon_cpu.pb"
    build_reference_pb(str(path), seed=0, device="cpu")
    return path


@pytest.fixture(scope="session")
def resnet18_student():
    """Variant B with ResNet18, seed 3, its BatchNormalization statistics randomised (treat as read-only)."""
    from student.model import build_student

    return randomize_batchnorm(build_student("B", backbone="resnet18", seed=3))


@pytest.fixture(scope="session")
def resnet18_exports(resnet18_student, calibration_records, tmp_path_factory):
    """`resnet18_student` in every format at `RESNET18_EXPORT_SIZE`, int8 files too, written once through the
    library entry point: {format: path} (treat as read-only)."""
    for module in ("onnxruntime", "openvino", "ai_edge_litert", "tf2onnx", "nncf"):
        pytest.importorskip(module)
    from inference import export as deploy

    out = tmp_path_factory.mktemp("resnet18_exports")
    return deploy.export_student(resnet18_student, out, input_size=RESNET18_EXPORT_SIZE, int8=True,
                                 records_dir=calibration_records, calibration_count=8)
