"""Can a pretrained student beat its teacher? ImageNet encoders, the teacher, and 2,500 unlabelled photos.

    python -m experiments.pretrained_study --records-dir data/distill_mit1003 data/distill_osie \
        --photos-dir data/distill_photos --backbone efficientnet-lite0 --seeds 0 1 2

For every seed, all variants start from the same initial weights (the ImageNet encoder and a seeded decoder),
each with its own optimizer:

| variant | human maps | teacher maps | training images |
|---|---|---|---|
| `P_A` | all | - | MIT1003 + OSIE train (the strong no-teacher baseline) |
| `P_B` | all | all, on both heads | MIT1003 + OSIE train |
| `P_B_photos` | all | all, on both heads | + the unlabelled photos (teacher maps only) |
| `P_KD` | none | all, on both heads | MIT1003 + OSIE train + photos: pure distillation, fidelity to the teacher |

Scoring, curves and resumption are the real-data study's (`experiments.real_study`): after every epoch the val
splits, at the end the best checkpoint on the test splits at the original resolution, beside the teacher, the
centre-bias floor and the inter-observer ceiling. `P_KD` picks its checkpoint by val KLD to the human maps like
the others (the only human data it sees). Output in `--out` (default `runs/pretrained_study`).
"""

import argparse
import dataclasses
import json
import os
import sys

# In the order they run for each seed: the main comparison first, so a study cut short has it.
VARIANTS = {
    "P_A": dict(variant="A"),
    "P_B": dict(variant="B", kd_into_saliency=1.0),
    "P_B_photos": dict(variant="B", kd_into_saliency=1.0, photos=True),
    "P_KD": dict(variant="B", kd_into_saliency=1.0, label_fraction=0.0, photos=True),
}


@dataclasses.dataclass
class PretrainedSettings:
    """The recipe (chosen on the val splits; see the README) and the data."""

    records_dirs: tuple = ("data/distill_mit1003", "data/distill_osie")
    photos_dirs: tuple = ("data/distill_photos",)
    backbone: str = "efficientnet-lite0"
    backbone_weights: str = "imagenet"
    freeze_encoder_bn: bool = True
    image_size: tuple = (96, 128)
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 1e-3
    jit_compile: bool = None
    cache: bool = True

    def train_config(self, name, run_dir, initial_weights, seed):
        from student.training import TrainConfig

        options = dict(VARIANTS[name])
        photos = options.pop("photos", False)
        dirs = list(self.records_dirs) + (list(self.photos_dirs) if photos else [])
        return TrainConfig(
            records_dir=dirs, run_dir=run_dir, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, image_size=tuple(self.image_size), initial_weights=initial_weights,
            backbone=self.backbone, backbone_weights=None, freeze_encoder_bn=self.freeze_encoder_bn, seed=seed,
            strategy="one_device", jit_compile=self.jit_compile, cache=self.cache, verbose=0, **options,
        )


def model_cost(backbone, image_size):
    """Parameters and GMAC (multiply-adds) of the served student (variant A's graph) at `image_size`."""
    from student.model import build_student, count_params, forward_gmac

    student = build_student("A", backbone=backbone)
    return {"params": count_params(student)["total"], "gmac": forward_gmac(student, tuple(image_size))}


def run_study(seeds=(0, 1, 2), out_dir="runs/pretrained_study", settings=None, variants=tuple(VARIANTS),
              report_only=False):
    """Train every variant for every seed (resuming), score them, and write the summary (`study.json`,
    `study.md`, `curves.png`); `report_only` trains nothing and reports the finished runs."""
    from experiments import real_study

    settings = settings or PretrainedSettings()
    needs_photos = any(VARIANTS[name].get("photos") for name in variants)
    for directory in settings.photos_dirs if needs_photos and not report_only else ():
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{directory}: no records of the unlabelled photos; run `python export_teacher.py "
                                    f"--images <photos> --teacher fastgaze-centre --out {directory}`")
    os.makedirs(out_dir, exist_ok=True)
    cost = real_study._cached(os.path.join(out_dir, "cost.json"),
                              lambda: model_cost(settings.backbone, settings.image_size))
    summary = real_study.run_study(seeds, out_dir, settings, variants, report_only=report_only,
                                   variant_table=VARIANTS, title="Pretrained students (MIT1003 + OSIE val)")
    summary["cost"] = cost
    return summary


def main(argv=None):
    from student.backbones import BACKBONES

    defaults = PretrainedSettings()
    p = argparse.ArgumentParser(prog="python -m experiments.pretrained_study",
                                description="Pretrained students with and without the teacher and the unlabelled "
                                            "photos, over seeds (resumable).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", nargs="+", default=list(defaults.records_dirs),
                   help="eye-tracking record folders with train, val and test splits (export_teacher.py --split all)")
    p.add_argument("--photos-dir", nargs="+", default=list(defaults.photos_dirs),
                   help="record folders of unlabelled photos (export_teacher.py --images)")
    p.add_argument("--backbone", choices=list(BACKBONES), default=defaults.backbone)
    p.add_argument("--backbone-weights", default=defaults.backbone_weights,
                   help="'imagenet' (the pretrained extra's file) or a path")
    p.add_argument("--train-encoder-bn", action="store_true",
                   help="train the encoder's BatchNormalization instead of keeping its ImageNet statistics")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 3 for a spread")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default="runs/pretrained_study", help="output folder (rerun to resume)")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--lr", type=float, default=defaults.learning_rate)
    p.add_argument("--image-size", type=int, nargs=2, default=list(defaults.image_size), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--report", action="store_true", help="train nothing; summarise the runs that have finished")
    args = p.parse_args(argv)
    settings = PretrainedSettings(records_dirs=tuple(args.records_dir), photos_dirs=tuple(args.photos_dir),
                                  backbone=args.backbone, backbone_weights=args.backbone_weights,
                                  freeze_encoder_bn=not args.train_encoder_bn, image_size=tuple(args.image_size),
                                  epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size)
    try:
        summary = run_study(args.seeds, args.out, settings, tuple(args.variants), report_only=args.report)
    except (FileNotFoundError, ValueError) as e:
        print(f"pretrained_study: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pretrained_study: interrupted; run the same command again to resume (finished runs in {args.out} "
              "are kept, an unfinished one continues from its last epoch)", file=sys.stderr)
        return 130
    print(json.dumps(summary["cost"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
