"""Train the ResNet18 saliency student from distillation records (variant A, B, or both).

    python train.py --variant B                      # SALICON records from export_teacher.py in data/distill
    python train.py --variant both --demo            # the whole pipeline on synthetic data, a few minutes of CPU
"""

import argparse
import dataclasses
import math
import sys
import types

# Neither imports TensorFlow: the parser (and --help) is built without it; main() imports it after parsing.
from student.backbones import BACKBONES
from student.config import TrainConfig
from argtypes import positive_int

# The field defaults, read without making a config (`TrainConfig.__post_init__` imports TensorFlow).
_DEFAULTS = types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(TrainConfig)})
# What --demo honours (flag dest -> DemoSettings field); any other flag changed from its default is refused.
_DEMO_SETTINGS = {"epochs": "epochs", "batch_size": "batch_size", "image_size": "train_size", "lr": "learning_rate"}
_DEMO_ALSO_HONOURED = ("variant", "demo", "run_dir", "seed", "quiet", "jit_compile")


def finite_float(text, positive=False):
    """argparse type: a finite float (and > 0 with `positive`); NaN and inf are refused here, not mid-training."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise argparse.ArgumentTypeError(f"expected a finite{' positive' if positive else ''} number, got {text!r}")
    return value


def positive_float(text):
    return finite_float(text, positive=True)


def non_negative_float(text):
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1] (0: no human map at all, pure distillation)."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}")
    return value


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--variant", choices=["A", "B", "both"], default="B",
                   help="A: saliency head only; B: plus a head distilled from the teacher; both: A then B from "
                        "the same initial weights")
    p.add_argument("--demo", action="store_true",
                   help="run the embedded demo: synthetic SALICON-like data, oracle teacher, A and B, evaluation "
                        "and figures in one run folder; honours --epochs, --batch-size, --image-size, --lr, --seed, "
                        "--run-dir and refuses the data and model options")
    p.add_argument("--records-dir", nargs="+", default=[_DEFAULTS.records_dir],
                   help="folders of <split>-NNNNN-of-NNNNN.tfrecord shards written by export_teacher.py; several "
                        "(e.g. MIT1003, OSIE and an unlabelled photo folder) train together: records without a "
                        "human map only teach variant B's distillation terms and are left out for A")
    p.add_argument("--train-split", default=_DEFAULTS.train_split,
                   help="record split to train on (MIT1003 and OSIE: the fixed splits train / val / test)")
    p.add_argument("--val-split", default=_DEFAULTS.val_split, help="record split to validate on")
    p.add_argument("--run-dir", default=None,
                   help="output folder (default runs/<variant>; with --variant both, the parent of A/ and B/). "
                        "Rerunning with the same folder resumes an interrupted run")
    p.add_argument("--resume", action="store_true", help="require an unfinished run in --run-dir and continue it")
    p.add_argument("--allow-mixed-records", action="store_true",
                   help="train even if the train and val manifests name different teachers, input sizes or "
                        "pipelines")
    p.add_argument("--epochs", type=positive_int, default=_DEFAULTS.epochs)
    p.add_argument("--batch-size", type=positive_int, default=_DEFAULTS.batch_size,
                   help="global batch over all replicas")
    p.add_argument("--lr", type=positive_float, default=_DEFAULTS.learning_rate, help="Adam learning rate")
    p.add_argument("--image-size", type=positive_int, nargs=2, default=list(_DEFAULTS.image_size), metavar=("H", "W"),
                   help="training resolution in pixels (the teacher's SALICON input is 240 320)")
    p.add_argument("--resize", choices=["letterbox", "stretch"], default=_DEFAULTS.resize,
                   help="letterbox: keep each image's aspect ratio, pad, and train on its pixels only; stretch: "
                        "resize to --image-size ignoring the aspect ratio")
    p.add_argument("--label-fraction", type=fraction, default=_DEFAULTS.label_fraction,
                   help="use the human maps of only this fraction of the training records (a fixed subset); the "
                        "others count as teacher-only (label-scarce training); 0 = no human map at all (pure "
                        "distillation: variant B with --kd-into-saliency)")
    p.add_argument("--temperature", type=positive_float, default=_DEFAULTS.temperature,
                   help="distillation temperature T on the teacher and student logits (variant B)")
    p.add_argument("--kd-weight", type=non_negative_float, default=_DEFAULTS.kd_weight,
                   help="weight of the T^2-scaled teacher term on head 2 (variant B)")
    p.add_argument("--kd-into-saliency", type=non_negative_float, default=_DEFAULTS.kd_into_saliency,
                   help="weight of an extra teacher term on the saliency head (variant B; 0 = off, as the seed)")
    p.add_argument("--backbone", choices=list(BACKBONES), default=_DEFAULTS.backbone,
                   help="the student's encoder (default: the design card's resnet18)")
    p.add_argument("--backbone-weights", default=None,
                   help="pretrained encoder weights: 'imagenet' (the file that the `pretrained` extra's packages "
                        "ship; efficientnet-lite0/1/2, mobilenetv2) or a path (for resnet18: torchvision's or timm's "
                        ".pth / .safetensors, or a .weights.h5); default: random init, as the seed project")
    p.add_argument("--freeze-encoder-bn", action="store_true",
                   help="keep the encoder's BatchNormalization in inference mode (its ImageNet statistics and scale "
                        "fixed): the usual fine-tuning choice for a pretrained encoder at small batch sizes")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="weight init, data order and flips")
    p.add_argument("--strategy", choices=["auto", "mirrored", "one_device", "multiworker"], default="auto",
                   help="auto: MirroredStrategy on more than one GPU, else one device; multiworker reads TF_CONFIG")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 with loss scaling (GPU)")
    p.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    p.add_argument("--flips", choices=["none", "horizontal", "both"], default=_DEFAULTS.flips,
                   help="random flips; 'both' adds the seed project's vertical flips")
    p.add_argument("--cache", action="store_true",
                   help="decode the images once and keep them in memory (about H*W*24 bytes per record) instead of "
                        "decoding them every epoch: faster on a few thousand images, too big for SALICON at 240x320")
    p.add_argument("--steps-per-epoch", type=positive_int, default=None, help="cap the training steps per epoch")
    p.add_argument("--validation-steps", type=positive_int, default=None, help="cap the validation steps")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (when stdout is not a terminal, one line per epoch is printed)")
    return p


def config_from_args(args, variant, run_dir, initial_weights=None):
    return TrainConfig(
        variant=variant,
        records_dir=args.records_dir,
        run_dir=run_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        image_size=tuple(args.image_size),
        resize=args.resize,
        label_fraction=args.label_fraction,
        train_split=args.train_split,
        val_split=args.val_split,
        temperature=args.temperature,
        kd_weight=args.kd_weight,
        kd_into_saliency=args.kd_into_saliency,
        backbone=args.backbone,
        backbone_weights=args.backbone_weights,
        freeze_encoder_bn=args.freeze_encoder_bn,
        initial_weights=initial_weights,
        seed=args.seed,
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
        flips=args.flips,
        steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps,
        resume=args.resume,
        verbose=_verbosity(args),
        allow_mixed_records=args.allow_mixed_records,
        cache=args.cache,
    )


def _verbosity(args):
    """Keras verbosity: none with --quiet, a progress bar on a terminal, else one line per epoch (logs)."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def demo_settings(args, parser):
    """The `DemoSettings` for --demo from the flags it honours; other changed flags are an error naming them."""
    from experiments.demo import DemoSettings

    ignored = [
        "--" + dest.replace("_", "-")
        for dest, value in vars(args).items()
        if dest not in _DEMO_SETTINGS and dest not in _DEMO_ALSO_HONOURED and value != parser.get_default(dest)
    ]
    if ignored:
        raise ValueError(
            f"--demo does not use {', '.join(ignored)}: it makes its own synthetic data, records and students. "
            f"Drop {'it' if len(ignored) == 1 else 'them'}, or train on your records without --demo"
        )
    changes = {field: getattr(args, dest) for dest, field in _DEMO_SETTINGS.items()
               if getattr(args, dest) != parser.get_default(dest)}
    if "train_size" in changes:
        changes["train_size"] = tuple(changes["train_size"])
    return dataclasses.replace(DemoSettings(), **changes)


def _resume_hint(argv):
    """The command that continues this run."""
    command = " ".join(["python train.py", *argv])
    return f"run the same command again to continue from the last finished epoch ({command})"


def _fail(error):
    """Print `train.py: error: <message>` as one line on stderr; the exit code of every handled error (1).

    Exit codes: 0 done, 1 a handled error, 2 a usage error (argparse), 130 interrupted.
    """
    print(f"train.py: error: {' '.join(str(error).split())}", file=sys.stderr)
    return 1


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    from datasets.io import import_tensorflow_quietly

    import_tensorflow_quietly()  # before any module imports TensorFlow: no CUDA/oneDNN lines on every command
    from student.training import TrainingDivergedError

    try:
        if args.demo:
            from experiments.demo import run_demo

            variants = ("A", "B") if args.variant == "both" else (args.variant,)
            run_demo(run_dir=args.run_dir or "runs/demo", variants=variants, seed=args.seed,
                     settings=demo_settings(args, parser), verbose=_verbosity(args))
            return 0
        from student.training import train, train_both

        if args.variant == "A":
            unused = [f"--{dest.replace('_', '-')}" for dest in ("temperature", "kd_weight", "kd_into_saliency")
                      if getattr(args, dest) != parser.get_default(dest)]
            if unused:
                print(f"train.py: warning: {', '.join(unused)} only apply to variant B (the teacher's loss); ignored",
                      file=sys.stderr)

        if args.variant == "both":
            results = train_both(lambda v, d, w: config_from_args(args, v, d, w), args.run_dir or "runs")
        else:
            results = [train(config_from_args(args, args.variant, args.run_dir or f"runs/{args.variant}"))]
        for r in results:
            print(f"[train] {r.run_dir}: best val KLD {r.best_val_kld:.4f}; SavedModel {r.saved_model_dir}")
        return 0
    except (FileNotFoundError, FileExistsError, ValueError, TrainingDivergedError) as e:
        return _fail(e)
    except OSError as e:  # e.g. an unwritable --run-dir or a full disk
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}. Finished epochs are kept: free space or fix the permissions, then "
                     f"{_resume_hint(argv)}")
    except KeyboardInterrupt:
        print(f"train.py: interrupted; {_resume_hint(argv)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
