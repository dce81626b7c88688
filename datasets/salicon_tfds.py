"""TFDS builder for SALICON (manual download): image, human saliency map and fixations, keyed on the stem.

    import tensorflow_datasets as tfds
    import datasets.salicon_tfds  # registers "salicon"
    ds = tfds.load("salicon", split="val", download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir="/data/salicon")})

Files are listed (and paired by stem) by `datasets.salicon.list_salicon`, so both on-disk layouts work,
and every sample goes through `load_sample`, so a map of the wrong size fails the build naming the file.
The stored image and map are the original file bytes (no re-encoding). File access lives in
`datasets.salicon`: tfds' test harness forbids `os` and `open` inside builder modules.
"""

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from datasets.salicon import detect_layout, list_salicon, load_sample

_CITATION = """\
@inproceedings{jiang2015salicon,
  title={SALICON: Saliency in Context},
  author={Jiang, Ming and Huang, Shengsheng and Duan, Juanyong and Zhao, Qi},
  booktitle={CVPR},
  year={2015}
}"""

# TFDS split names follow the SALICON folder names used throughout this project.
_SPLITS = ("train", "val")


class Salicon(tfds.core.GeneratorBasedBuilder):
    """SALICON 2017 (LSUN'17) train and val: 480x640 COCO images, 8-bit maps, inferred fixations."""

    name = "salicon"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: SALICON 2017 train/val, fixations from the .mat 'fixations' field "
        "as 0-based (row, col), clipped to the image.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Register and download the SALICON 2017 (LSUN'17) release from http://salicon.net/challenge-2017/
    (images, maps and fixations zips) and extract them into `manual_dir` so that it contains

        images/train/COCO_train2014_*.jpg   (10,000)    images/val/COCO_val2014_*.jpg   (5,000)
        maps/train/*.png                    (10,000)    maps/val/*.png                  (5,000)
        fixations/train/*.mat               (10,000)    fixations/val/*.mat             (5,000)

    MSI-Net's download layout (stimuli/, saliency/, fixations/ with train/ and val/) works too. The
    fixations/ folder is optional; without it every example has zero fixations. A split whose folder is
    absent is skipped with a warning. The test split has no ground truth and is not built.
    """

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="SALICON: mouse-contingent saliency on 480x640 MS-COCO images (16 observers, 5 s).",
            features=tfds.features.FeaturesDict(
                {
                    "stem": tfds.features.Text(),
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "saliency": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                    "fixations": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
                }
            ),
            supervised_keys=("image", "saliency"),
            homepage="http://salicon.net/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        root = dl_manager.manual_dir
        image_dir = detect_layout(root)[0]
        present = {}
        for split in _SPLITS:
            if (root / image_dir / split).is_dir():
                present[split] = self._generate_examples(list_salicon(root, split))
            else:
                logging.warning("SALICON split %r not found at %s; skipping it", split, root / image_dir / split)
        if not present:
            expected = ", ".join(str(root / image_dir / split) for split in _SPLITS)
            raise FileNotFoundError(f"{root}: no SALICON split found; expected {expected}")
        return present

    def _generate_examples(self, samples):
        for sample in samples:
            fixations = load_sample(sample)["fixations"]  # also checks that the map has the image's size
            if fixations is None:
                fixations = np.zeros((0, 2), np.int32)
            yield sample.stem, {
                "stem": sample.stem,
                "image": sample.image_path,
                "saliency": sample.map_path,
                "fixations": fixations,
            }
