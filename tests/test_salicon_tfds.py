"""TFDS SALICON builder: tfds' own builder test on a generated manual_dir, plus content and error checks."""

import shutil
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets.io import read_map
from datasets.salicon import list_salicon, load_salicon_fixations
from datasets.salicon_tfds import Salicon
from datasets.synthetic import generate_synthetic_salicon


class SaliconBuilderTest(tfds.testing.DatasetBuilderTestCase):
    """Registration, info, build, reload and split counts on a tiny synthetic manual_dir."""

    DATASET_CLASS = Salicon
    SPLITS = {"train": 3, "val": 2}

    @classmethod
    def setUpClass(cls):
        cls._manual_dir = tempfile.mkdtemp(prefix="salicon_manual_")
        generate_synthetic_salicon(cls._manual_dir, n_train=3, n_val=2, n_test=1, image_size=(24, 32), n_observers=3)
        cls.EXAMPLE_DIR = cls._manual_dir  # read as the manual_dir by the test harness
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls._manual_dir, ignore_errors=True)


def _build(manual_dir, data_dir):
    builder = Salicon(data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def test_examples_hold_the_files_contents(synthetic_salicon_dir, tmp_path):
    builder = _build(synthetic_salicon_dir, tmp_path)
    assert builder.info.splits["train"].num_examples == 8 and builder.info.splits["val"].num_examples == 4
    # The image stays encoded: the builder must store the original JPEG bytes, not a re-encoding.
    dataset = builder.as_dataset(split="val", decoders={"image": tfds.decode.SkipDecoding()})
    examples = {ex["stem"].decode(): ex for ex in tfds.as_numpy(dataset)}
    samples = list_salicon(synthetic_salicon_dir, "val")
    assert sorted(examples) == [s.stem for s in samples]
    for sample in samples:
        example = examples[sample.stem]
        with open(sample.image_path, "rb") as f:
            assert example["image"] == f.read()
        np.testing.assert_array_equal(example["saliency"][:, :, 0], read_map(sample.map_path))
        np.testing.assert_array_equal(example["fixations"], load_salicon_fixations(sample.fixations_path))


def test_missing_split_is_skipped_and_no_split_is_an_error(synthetic_salicon_dir, tmp_path):
    manual = tmp_path / "manual"
    for kind in ("images", "maps"):
        shutil.copytree(synthetic_salicon_dir / kind / "val", manual / kind / "val")
    builder = _build(manual, tmp_path / "data")
    assert list(builder.info.splits) == ["val"]
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="val"))))
    assert example["fixations"].shape == (0, 2)  # no fixations/ folder

    shutil.rmtree(manual / "images" / "val")
    expected = r"no SALICON split found; expected .*images[/\\]train, .*images[/\\]val"
    with pytest.raises(FileNotFoundError, match=expected):
        _build(manual, tmp_path / "data2")
