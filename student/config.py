"""`TrainConfig`, the settings of one training run, importable without TensorFlow.

train.py builds its parser (and `--help`) from these defaults before TensorFlow is imported; making a config
(`__post_init__`) imports what its checks need. `student.training` re-exports `TrainConfig`.
"""

import dataclasses
import os


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the seed project's (SALICON, Adam 1e-3, batch 32, 10 epochs).

    Attributes:
        variant: "A" (saliency head only) or "B" (saliency head plus a head matched to the teacher).
        records_dir: folder of distillation records from export_teacher.py, or a list of such folders (e.g.
            MIT1003 train + OSIE train + an unlabelled photo folder): training reads the `train_split` of every
            folder, validation the `val_split` of those that have one. Records without a human map only teach
            variant B's distillation terms; variant A leaves them out.
        run_dir: output folder; a rerun with the same folder resumes.
        epochs, batch_size, learning_rate: the schedule; batch_size is the global batch over all replicas.
        image_size: (H, W) the student is trained at; 240x320 is the teacher's SALICON resolution.
        resize: "letterbox" (aspect ratio kept, padded, losses on the image's pixels only) or "stretch".
        temperature, kd_weight, kd_into_saliency: the distillation loss (variant B; see student.distillation).
        backbone: the encoder, a name in `student.backbones.BACKBONES` ("resnet18", the design card's, by default).
        backbone_weights: pretrained encoder weights: "imagenet" (the file an installed package ships) or a path;
            None = random init.
        freeze_encoder_bn: keep the encoder's BatchNormalization layers in inference mode (frozen statistics,
            gamma and beta), for fine-tuning a pretrained encoder at small batch sizes.
        initial_weights: student `.weights.h5` to start from (A and B from the same initial weights).
        seed: weight init, data order and flips.
        strategy: "auto", "mirrored", "one_device" or "multiworker".
        mixed_precision, jit_compile: mixed_float16 with loss scaling; XLA compilation of the train step
            (None: where it is faster, `student.training.xla_pays_off`).
        flips: "none", "horizontal" or "both" (the seed's horizontal and vertical flips).
        train_split, val_split: record splits to train and validate on.
        label_fraction: train on the human maps of only this fraction of the training records (a fixed subset,
            `datasets.records.keeps_human_map`); the rest count as teacher-only. Validation uses all its maps.
        steps_per_epoch, validation_steps: cap the steps (quick runs); None = the whole split.
        export: write the SavedModel at the end.
        resume: require an unfinished run to continue (otherwise one is continued if found).
        verbose: Keras progress bar verbosity (2: one line per epoch, for logs).
        allow_mixed_records: train on train/val records whose manifests name different teachers.
        cache: decode the training and validation images once and keep them in memory (about H * W * 24 bytes
            per record: 0.4 GB for MIT1003 + OSIE at 96x128), instead of decoding every image every epoch; the
            examples are then shuffled whole each epoch (a different order from the uncached pipeline's).
    """

    variant: str = "B"
    records_dir: str = "data/distill"
    run_dir: str = "runs/B"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    image_size: tuple = (240, 320)
    resize: str = "letterbox"
    temperature: float = 3.0
    kd_weight: float = 2.5
    kd_into_saliency: float = 0.0
    backbone: str = "resnet18"
    backbone_weights: str = None
    freeze_encoder_bn: bool = False
    initial_weights: str = None
    seed: int = 0
    strategy: str = "auto"
    mixed_precision: bool = False
    jit_compile: bool = False
    flips: str = "horizontal"
    train_split: str = "train"
    val_split: str = "val"
    label_fraction: float = 1.0
    steps_per_epoch: int = None
    validation_steps: int = None
    export: bool = True
    resume: bool = False
    verbose: int = 1
    allow_mixed_records: bool = False
    cache: bool = False

    def __post_init__(self):
        from datasets import records  # TensorFlow: imported when a config is made, not when this module is

        self.image_size = tuple(int(s) for s in self.image_size)
        if self.jit_compile is None:
            from student.training import xla_pays_off

            self.jit_compile = xla_pays_off()
        if not isinstance(self.records_dir, (str, os.PathLike)):
            self.records_dir = [os.fspath(d) for d in self.records_dir]
            records.check_distinct_folders(self.records_dir)
            if len(self.records_dir) == 1:
                self.records_dir = self.records_dir[0]
        if not 0.0 <= float(self.label_fraction) <= 1.0:
            raise ValueError(f"label_fraction must be in [0, 1]. Received: label_fraction={self.label_fraction!r}")
        if self.resize not in records.RESIZE_MODES:
            raise ValueError(f"resize must be one of {records.RESIZE_MODES}. Received: resize={self.resize!r}")
        if self.variant not in ("A", "B"):
            raise ValueError(f"variant must be 'A' or 'B'. Received: variant={self.variant!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(
                f"epochs, batch_size and learning_rate must be positive. Received: epochs={self.epochs}, "
                f"batch_size={self.batch_size}, learning_rate={self.learning_rate}"
            )

    @property
    def records_dirs(self):
        """`records_dir` as a list of folders."""
        return [self.records_dir] if isinstance(self.records_dir, (str, os.PathLike)) else list(self.records_dir)

    def to_json(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
