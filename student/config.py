"""`TrainConfig`, the settings of one training run, importable without TensorFlow.

Each field holds its default, its help and its check in one place: train.py builds its parser (and `--help`) from
them before TensorFlow is imported, and `TrainConfig.__post_init__` applies the same checks to every config,
from the command line or from Python. `student.training` re-exports `TrainConfig`.
"""

import dataclasses
import math
import os
from typing import Optional, Sequence, Union

from datasets.geometry import RESIZE_MODES  # the one list, without TensorFlow
from student.backbones import BACKBONES  # the registry, without TensorFlow

# The student's decoders (`student.model`): the design card's full-resolution one, and a light one for small encoders.
DECODERS = ("card", "light")


# --- value checks: each converts a value (or the text of a flag) and raises ValueError saying what it expected ---

def integer(value):
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None


def positive_int(value):
    """An integer >= 1."""
    try:
        number = integer(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def _number(value, what, accept):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not accept(number):
        raise ValueError(f"expected {what}, got {value!r}")
    return number


def positive_number(value):
    """A finite number > 0 (NaN and inf are refused here, not mid-training)."""
    return _number(value, "a finite positive number", lambda x: x > 0)


def non_negative_number(value):
    return _number(value, "a finite number >= 0", lambda x: x >= 0)


def fraction(value):
    """A number in [0, 1]."""
    return _number(value, "a fraction in [0, 1]", lambda x: 0 <= x <= 1)


def _option(default, help, check=None, choices=None, flag=None, metavar=None):
    """A field that train.py offers as a flag (`--<name>`, or `flag`) with this help; `check` converts and checks
    its value (None is always allowed where the default is None), `choices` lists the allowed values."""
    return dataclasses.field(default=default, metadata=dict(help=help, check=check, choices=choices, flag=flag,
                                                            metavar=metavar))


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the seed project's (SALICON, Adam 1e-3, batch 32, 10 epochs).

    Each field's `help` (in its metadata, shown by `train.py --help`) says what it does. Fields without one are
    for Python callers only: `initial_weights` (student `.weights.h5` to start from; A and B from the same initial
    weights), `export` (write the SavedModel at the end) and `verbose` (Keras progress: 0 none, 1 a bar, 2 one
    line per epoch). `jit_compile=None` means XLA where it is faster (`xla_pays_off`).

    Raises (on construction):
        ValueError: a value fails its check, or settings contradict each other (the message says what to pass).
    """

    variant: str = _option("B", "A: saliency head only; B: plus a head distilled from the teacher",
                           choices=("A", "B"))
    records_dir: Union[str, Sequence[str]] = _option(
        "data/distill",
        "folders of <split>-NNNNN-of-NNNNN.tfrecord shards written by export_teacher.py; several (e.g. MIT1003, OSIE "
        "and an unlabelled photo folder) train together: records without a human map only teach variant B's "
        "distillation terms and are left out for A")
    run_dir: str = _option("runs/B", "output folder; rerunning with the same folder resumes an interrupted run")
    epochs: int = _option(10, "training epochs", check=positive_int)
    batch_size: int = _option(32, "global batch over all replicas", check=positive_int)
    learning_rate: float = _option(1e-3, "Adam learning rate", check=positive_number, flag="--lr")
    image_size: tuple = _option((240, 320), "training resolution in pixels (the teacher's SALICON input is 240 320)",
                                check=positive_int, metavar=("H", "W"))
    resize: str = _option("letterbox", "letterbox: keep each image's aspect ratio, pad, and train on its pixels only; "
                          "stretch: resize to --image-size ignoring the aspect ratio", choices=RESIZE_MODES)
    temperature: float = _option(3.0, "distillation temperature T on the teacher and student logits (variant B)",
                                 check=positive_number)
    kd_weight: float = _option(2.5, "weight of the T^2-scaled teacher term on head 2 (variant B)",
                               check=non_negative_number)
    kd_into_saliency: float = _option(0.0, "weight of an extra teacher term on the saliency head (variant B; 0 = off, "
                                      "as the seed)", check=non_negative_number)
    backbone: str = _option("resnet18", "the student's encoder (resnet18 is the design card's)",
                            choices=tuple(BACKBONES))
    decoder: str = _option("card", "the student's decoder: card (the design card's: five x2 upsamplings to full "
                           "resolution, 3x3 convs) or light (stride 8 over the stride-8/16/32 taps, 64 channels, "
                           "logits upsampled x8: a third of EfficientNet-Lite0's compute at 240x320)",
                           choices=DECODERS)
    backbone_weights: Optional[str] = _option(
        None, "pretrained encoder weights: 'imagenet' (the file that the `pretrained` extra's packages ship; "
        "efficientnet-lite0/1/2, mobilenetv2) or a path (for resnet18: torchvision's or timm's .pth / .safetensors, "
        "or a .weights.h5); default: random init, as the seed project")
    freeze_encoder_bn: bool = _option(
        False, "keep the encoder's BatchNormalization in inference mode (its ImageNet statistics and scale fixed): "
        "the usual fine-tuning choice for a pretrained encoder at small batch sizes; needs --backbone-weights")
    initial_weights: Optional[str] = None
    seed: int = _option(0, "weight init, data order and flips", check=integer)
    strategy: str = _option("auto", "auto: MirroredStrategy on more than one GPU, else one device; multiworker reads "
                            "TF_CONFIG", choices=("auto", "mirrored", "one_device", "multiworker"))
    mixed_precision: bool = _option(False, "mixed_float16 with loss scaling (GPU)")
    jit_compile: Optional[bool] = _option(False, "compile the train step with XLA")
    flips: str = _option("horizontal", "random flips; 'both' adds the seed project's vertical flips",
                         choices=("none", "horizontal", "both"))
    train_split: str = _option("train", "record split to train on (MIT1003 and OSIE: the fixed splits train / val / "
                               "test)")
    val_split: str = _option("val", "record split to validate on (all its human maps)")
    label_fraction: float = _option(
        1.0, "use the human maps of only this fraction of the training records (a fixed subset, "
        "datasets.records.keeps_human_map); the others count as teacher-only (label-scarce training); 0 = no human "
        "map at all (pure distillation: variant B with --kd-into-saliency)", check=fraction)
    steps_per_epoch: Optional[int] = _option(None, "cap the training steps per epoch (default: the whole split)",
                                             check=positive_int)
    validation_steps: Optional[int] = _option(None, "cap the validation steps (default: the whole split)",
                                              check=positive_int)
    export: bool = True
    resume: bool = _option(False, "require an unfinished run in --run-dir and continue it (otherwise one is "
                           "continued if found)")
    verbose: int = 1
    allow_mixed_records: bool = _option(False, "train even if the train and val manifests name different teachers, "
                                        "input sizes or pipelines")
    cache: bool = _option(
        False, "decode the images once and keep them in memory (about H*W*24 bytes per record: 0.4 GB for MIT1003 + "
        "OSIE at 96x128) instead of decoding them every epoch: faster on a few thousand images, too big for SALICON "
        "at 240x320; the cached examples are shuffled whole each epoch (another order than the uncached pipeline's)")

    def __post_init__(self):
        from datasets import records  # TensorFlow: imported when a config is made, not when this module is

        self._check_values()
        if self.jit_compile is None:
            self.jit_compile = xla_pays_off()
        if not isinstance(self.records_dir, (str, os.PathLike)):
            self.records_dir = [os.fspath(d) for d in self.records_dir]
            records.check_distinct_folders(self.records_dir)
            if len(self.records_dir) == 1:
                self.records_dir = self.records_dir[0]
        self._check_combination()

    def _check_values(self):
        """Each field's check and choices (`_option`); tuples are checked item by item."""
        for field in dataclasses.fields(self):
            value, check, choices = getattr(self, field.name), field.metadata.get("check"), field.metadata.get("choices")
            if value is None and field.default is None:
                continue
            if choices is not None and value not in choices:
                raise ValueError(f"{field.name} must be one of {', '.join(map(repr, choices))}. "
                                 f"Received: {field.name}={value!r}")
            if check is None:
                continue
            try:
                value = tuple(map(check, value)) if isinstance(field.default, tuple) else check(value)
            except ValueError as e:
                raise ValueError(f"{field.name}: {e}") from None
            setattr(self, field.name, value)

    def _check_combination(self):
        """Settings that are each valid but together train something other than what was meant."""
        if self.freeze_encoder_bn and not self.backbone_weights and not self.initial_weights:
            raise ValueError(
                "--freeze-encoder-bn keeps the encoder's BatchNormalization statistics fixed, but without "
                "--backbone-weights the encoder is randomly initialised: it would freeze meaningless statistics "
                "(mean 0, variance 1). Pass --backbone-weights imagenet (or a weights file), or drop "
                "--freeze-encoder-bn")
        if self.variant == "B" and self.label_fraction == 0 and self.kd_into_saliency == 0:
            raise ValueError(
                "--label-fraction 0 keeps no human map, and with --kd-into-saliency 0 nothing trains the saliency "
                "head that the SavedModel serves (only the teacher head would learn). Pass --kd-into-saliency 1 for "
                "pure distillation into the saliency head, or a --label-fraction above 0")

    @property
    def records_dirs(self):
        """`records_dir` as a list of folders."""
        return [self.records_dir] if isinstance(self.records_dir, (str, os.PathLike)) else list(self.records_dir)

    def to_json(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def xla_pays_off():
    """Whether XLA should compile the train step where the caller has no preference (`jit_compile=None`).

    On a GPU, yes. On a CPU, no: `benchmarks/train_step.py` timed the Distiller's step (variant B, batch 16,
    96x128) on a 2-core AMD EPYC at 0.70x the speed of TensorFlow's default kernels for ResNet18 and 0.14x / 0.19x
    for EfficientNet-Lite0 / MobileNetV2 (XLA's CPU depthwise convolutions are slow); on an Intel Xeon with
    AVX-512, ResNet18's step was 0.68x (0.84 against 0.57 s).
    """
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
