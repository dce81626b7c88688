"""Train the ResNet18 saliency student from distillation records (variant A, B, or both).

    python train.py --variant B                      # SALICON records from export_teacher.py in data/distill
    python train.py --variant both --demo            # the whole pipeline on synthetic data, a few minutes of CPU
"""

import argparse
import sys

from student.training import TrainConfig, TrainingDivergedError

_DEFAULTS = TrainConfig()


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
                        "and figures in one run folder (ignores the data options)")
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
    p.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="global batch over all replicas")
    p.add_argument("--lr", type=float, default=_DEFAULTS.learning_rate, help="Adam learning rate")
    p.add_argument("--image-size", type=int, nargs=2, default=list(_DEFAULTS.image_size), metavar=("H", "W"),
                   help="training resolution in pixels (the teacher's SALICON input is 240 320)")
    p.add_argument("--resize", choices=["letterbox", "stretch"], default=_DEFAULTS.resize,
                   help="letterbox: keep each image's aspect ratio, pad, and train on its pixels only; stretch: "
                        "resize to --image-size ignoring the aspect ratio")
    p.add_argument("--label-fraction", type=float, default=_DEFAULTS.label_fraction,
                   help="use the human maps of only this fraction of the training records (a fixed subset); the "
                        "others count as teacher-only (label-scarce training)")
    p.add_argument("--temperature", type=float, default=_DEFAULTS.temperature,
                   help="distillation temperature T on the teacher and student logits (variant B)")
    p.add_argument("--kd-weight", type=float, default=_DEFAULTS.kd_weight,
                   help="weight of the T^2-scaled teacher term on head 2 (variant B)")
    p.add_argument("--kd-into-saliency", type=float, default=_DEFAULTS.kd_into_saliency,
                   help="weight of an extra teacher term on the saliency head (variant B; 0 = off, as the seed)")
    p.add_argument("--backbone-weights", default=None,
                   help="ImageNet ResNet18 weights (.safetensors / .pth from torchvision or timm, or .weights.h5); "
                        "default: random init, as the seed project")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="weight init, data order and flips")
    p.add_argument("--strategy", choices=["auto", "mirrored", "one_device", "multiworker"], default="auto",
                   help="auto: MirroredStrategy on more than one GPU, else one device; multiworker reads TF_CONFIG")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 with loss scaling (GPU)")
    p.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    p.add_argument("--flips", choices=["none", "horizontal", "both"], default=_DEFAULTS.flips,
                   help="random flips; 'both' adds the seed project's vertical flips")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap the training steps per epoch")
    p.add_argument("--validation-steps", type=int, default=None, help="cap the validation steps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
        backbone_weights=args.backbone_weights,
        initial_weights=initial_weights,
        seed=args.seed,
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
        flips=args.flips,
        steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps,
        resume=args.resume,
        verbose=0 if args.quiet else 1,
    )


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.demo:
            from student.demo import run_demo

            variants = ("A", "B") if args.variant == "both" else (args.variant,)
            run_demo(run_dir=args.run_dir or "runs/demo", variants=variants, seed=args.seed)
            return 0
        from student.training import train, train_both

        if args.variant == "both":
            results = train_both(lambda v, d, w: config_from_args(args, v, d, w), args.run_dir or "runs")
        else:
            results = [train(config_from_args(args, args.variant, args.run_dir or f"runs/{args.variant}"))]
        for r in results:
            print(f"[train] {r.run_dir}: best val KLD {r.best_val_kld:.4f}; SavedModel {r.saved_model_dir}")
        return 0
    except (FileNotFoundError, FileExistsError, ValueError, TrainingDivergedError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, TrainingDivergedError) else 1


if __name__ == "__main__":
    sys.exit(main())
