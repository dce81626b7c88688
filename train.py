"""Train the saliency student (ResNet18 by default) from distillation records (variant A, B, or both).

    python train.py --variant B                      # SALICON records from export_teacher.py in data/distill
    python train.py --variant both --demo            # the whole pipeline on synthetic data, a few minutes of CPU

Exit codes: 0 done, 1 a handled error (one line `train.py: error: ...` on stderr), 2 a usage error (argparse),
130 interrupted (finished epochs are kept: the same command continues).
"""

import argparse
import dataclasses
import sys

# Neither imports TensorFlow: the parser (and --help) is built without it; main() imports it after parsing.
from argtypes import HelpFormatter, arg_type, changed_flags, run_main, warn_ignored
from student.config import TrainConfig

PROG = "train.py"
# What --demo honours (flag dest -> DemoSettings field); any other flag changed from its default is refused.
_DEMO_SETTINGS = {"epochs": "epochs", "batch_size": "batch_size", "image_size": "train_size",
                  "learning_rate": "learning_rate"}
_DEMO_ALSO_HONOURED = ("variant", "demo", "run_dir", "seed", "quiet", "jit_compile")
# The fields whose flags train.py declares itself (other choices, defaults or meaning); the other options are
# `TrainConfig`'s as they are.
_OWN_FLAGS = ("variant", "run_dir")


def _add_config_option(parser, field):
    """The flag of one `TrainConfig` field, with the field's default, help, check and choices."""
    meta = field.metadata
    kwargs = dict(default=field.default, help=meta["help"], dest=field.name)
    flag = meta["flag"] or "--" + field.name.replace("_", "-")
    if field.default is False:
        parser.add_argument(flag, action="store_true", **kwargs)
        return
    if meta["check"] is not None:
        kwargs["type"] = arg_type(meta["check"])
    if meta["choices"] is not None:
        kwargs["choices"] = list(meta["choices"])
    if isinstance(field.default, tuple):
        kwargs.update(nargs=len(field.default), default=list(field.default), metavar=meta["metavar"])
    elif field.name == "records_dir":
        kwargs["nargs"] = "+"
    parser.add_argument(flag, **kwargs)


def build_parser():
    """train.py's flags: `TrainConfig`'s options (their defaults and help), --variant both, --demo and --quiet."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--variant", choices=["A", "B", "both"], default="B",
                   help="A: saliency head only; B: plus a head distilled from the teacher; both: A then B from "
                        "the same initial weights")
    p.add_argument("--demo", action="store_true",
                   help="run the embedded demo: synthetic SALICON-like data, oracle teacher, A and B, evaluation "
                        "and figures in one run folder; honours --epochs, --batch-size, --image-size, --lr, --seed, "
                        "--run-dir and refuses the data and model options")
    p.add_argument("--run-dir", default=None,
                   help="output folder (default runs/<variant>; with --variant both, the parent of A/ and B/). "
                        "Rerunning with the same folder resumes an interrupted run")
    for field in dataclasses.fields(TrainConfig):
        if "help" in field.metadata and field.name not in _OWN_FLAGS:
            _add_config_option(p, field)
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (when stdout is not a terminal, one line per epoch is printed)")
    return p


def config_from_args(args, variant, run_dir, initial_weights=None):
    """The `TrainConfig` of the parsed flags (its own checks run here)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if f.name not in _OWN_FLAGS and hasattr(args, f.name)}
    return TrainConfig(**given, variant=variant, run_dir=run_dir, initial_weights=initial_weights,
                       verbose=_verbosity(args))


def _verbosity(args):
    """Keras verbosity: none with --quiet, a progress bar on a terminal, else one line per epoch (logs)."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def demo_settings(args, parser):
    """The `DemoSettings` for --demo from the flags it honours; other changed flags are an error naming them."""
    from experiments.demo import DemoSettings

    ignored = changed_flags(parser, args, [dest for dest in vars(args)
                                           if dest not in _DEMO_SETTINGS and dest not in _DEMO_ALSO_HONOURED])
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


def _train(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    from datasets.io import import_tensorflow_quietly

    import_tensorflow_quietly()  # before any module imports TensorFlow: no CUDA/oneDNN lines on every command
    if args.demo:
        from experiments.demo import run_demo

        variants = ("A", "B") if args.variant == "both" else (args.variant,)
        run_demo(run_dir=args.run_dir or "runs/demo", variants=variants, seed=args.seed,
                 settings=demo_settings(args, parser), verbose=_verbosity(args))
        return 0
    from student.training import train, train_both

    if args.variant == "A":
        warn_ignored(parser, args, ("temperature", "kd_weight", "kd_into_saliency"), "to variant B (the teacher's loss)")
    if args.variant == "both":
        results = train_both(lambda v, d, w: config_from_args(args, v, d, w), args.run_dir or "runs")
    else:
        results = [train(config_from_args(args, args.variant, args.run_dir or f"runs/{args.variant}"))]
    for r in results:
        print(f"[train] {r.run_dir}: best val KLD {r.best_val_kld:.4f}; SavedModel {r.saved_model_dir}")
    return 0


def main(argv=None):
    """Train (see the module's docstring); returns the exit code (argtypes: 0, 1, 2 or 130)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # RuntimeError: student.training.TrainingDivergedError (a NaN loss), whose message names the best checkpoint.
    return run_main(_train, argv, prog=PROG, handled=(RuntimeError,), kept="finished epochs are kept",
                    again=_resume_hint(argv))


if __name__ == "__main__":
    sys.exit(main())
