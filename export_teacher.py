"""Stream a data set split (SALICON, MIT1003, OSIE, NUS-VIP) or a folder of images through a teacher into sharded
distillation records.

    python export_teacher.py --split train                     # data/salicon -> data/distill/train-*.tfrecord
    python export_teacher.py --split all --verify
    python export_teacher.py --split train --data-dir data/synthetic --teacher oracle --out data/synthetic_distill
    python export_teacher.py --dataset mit1003 --data-dir data/mit1003 --split train   # -> data/distill_mit1003
    python export_teacher.py --images photos/ --out data/distill_photos               # teacher maps only

An interrupted export resumes when run again with the same arguments. Exit codes: 0 done, 1 a handled error
(missing data or teacher, an unreadable image without --skip-bad, a failed verification...: one line
`export_teacher.py: error: ...` on stderr), 2 a usage error (argparse), 130 interrupted.
"""

import argparse
import os
import sys

# None of these imports TensorFlow: the parser (and --help) is built without it; main() imports it after parsing.
from datasets import nusvip, sources
from datasets.io import check_writable_dir, import_tensorflow_quietly
from argtypes import HelpFormatter, positive_int, run_main, warn_ignored

# `teacher.export`'s defaults (it imports TensorFlow); tests/test_export_teacher.py checks that they agree.
DEFAULT_DATA_DIR = os.path.join("data", "salicon")
DEFAULT_TEACHER = os.path.join("weights", "model_salicon_cpu.pb")
DEFAULT_OUT_DIR = os.path.join("data", "distill")
DEFAULT_BATCH_SIZE = 8
DEFAULT_SHARD_SIZE_MB = 150
PROG = "export_teacher.py"


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--dataset", default="salicon", choices=[d for d in sources.DATASETS if d != "images"],
                        help="the data set in --data-dir: SALICON, MIT1003 or OSIE, or 'nus' for any data set in "
                             "the NUS-VIP layout (stimuli/ + eye/fixations.mat)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test", "all"),
                        help="split to export (MIT1003 and OSIE: the stored splits in datasets/splits); 'all' "
                             "exports train and val (SALICON) or train, val and test")
    parser.add_argument("--data-dir", default=None,
                        help=f"the data set's folder (default for SALICON: {DEFAULT_DATA_DIR})")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="a folder of images without human data: records with the teacher maps only (every "
                             "image; --split only names the shards)")
    parser.add_argument("--split-file", default=None,
                        help="a split JSON overriding the stored one (format of datasets/splits/*.json)")
    parser.add_argument("--sigma", type=float, default=nusvip.DEFAULT_SIGMA_PX,
                        help="Gaussian sigma in pixels for human maps built from fixation points (data sets without "
                             "maps/): one degree of visual angle; OSIE's is 24")
    parser.add_argument("--teacher", default=DEFAULT_TEACHER,
                        help="MSI-Net weights (frozen .pb, SavedModel folder, .keras), any saliency model following "
                        "the contract (SavedModel folder or .keras/.h5: float32 RGB 0..255 (B, H, W, 3) in, non-negative "
                        "(B, H, W, 1) out), a built-in model shipped with the package (fastgaze, fastgaze-centre, attention-center: no "
                        "download) or a spec of them (fastgaze-centre+attention-center, 0.6*fastgaze-centre+"
                        "0.4*attention-center, attention-center:flip), or 'oracle' for synthetic data")
    parser.add_argument("--teacher-format", default="auto", choices=("auto", "msinet", "contract"),
                        help="force how --teacher loads; auto: MSI-Net when the file has MSI-Net's published "
                        "signature or weight names, else the contract")
    parser.add_argument("--teacher-max-side", type=int, default=None,
                        help="contract teachers: shrink images whose longest side is larger, aspect kept; "
                        "default: each image at its own size")
    parser.add_argument("--out", default=None,
                        help=f"output folder for shards and manifests (default: {DEFAULT_OUT_DIR} for SALICON, "
                             "data/distill_<dataset> otherwise)")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="images per teacher call")
    parser.add_argument("--shard-size-mb", type=float, default=DEFAULT_SHARD_SIZE_MB,
                        help="target shard size in MB (10^6 bytes), estimated from the files' sizes")
    parser.add_argument("--images-per-shard", type=positive_int, default=None,
                        help="images per shard, overriding --shard-size-mb")
    parser.add_argument("--input-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                        help="teacher input size in pixels (default: the size its dataset was trained at, 240 320)")
    parser.add_argument("--pipeline", default="repo", choices=("repo", "hub"),
                        help="MSI-Net preprocessing: the author's repo (TF1 resize, pad 126) or Hugging Face card")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable images (listed in the manifest) instead of stopping")
    parser.add_argument("--verify", action="store_true",
                        help="reread every shard at the end and check counts, checksums and stems")
    parser.add_argument("--verify-only", action="store_true", help="only verify an existing export (no teacher)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _summary(split, manifest):
    skipped = f", {manifest['num_skipped']} skipped" if manifest["num_skipped"] else ""
    human = ""
    if manifest.get("dataset", "salicon") != "salicon":
        human = f" ({manifest['dataset']}: {manifest['num_with_human_map']} with human maps, " \
                f"{manifest['num_without_human_map']} without)"
    return f"{split}: {manifest['num_images']} images in {manifest['num_shards']} shards{skipped}{human}"


def _export(argv):
    """Parse arguments and export (or verify); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import_tensorflow_quietly()  # before any module imports TensorFlow: no CUDA/oneDNN lines on every command
    import tensorflow as tf

    from teacher import export

    dataset, data_dir = ("images", args.images) if args.images else (args.dataset, args.data_dir)
    if args.images and args.data_dir:
        raise ValueError("pass either --data-dir (a data set) or --images (a folder of images), not both")
    if args.images:
        warn_ignored(parser, args, ("dataset", "split_file", "sigma"), "to data sets with human data (--data-dir)",
                     outcome="ignored with --images")
    if data_dir is None:
        data_dir = export.DEFAULT_DATA_DIR if dataset == "salicon" else os.path.join("data", dataset)
    if args.out is None:
        name = os.path.basename(os.path.normpath(data_dir)) if dataset in ("images", "nus") else dataset
        args.out = export.DEFAULT_OUT_DIR if dataset == "salicon" else os.path.join("data", f"distill_{name}")
    all_splits = export.ALL_SPLITS if dataset == "salicon" else sources.split_names(dataset)
    splits = all_splits if args.split == "all" else (args.split,)
    try:
        if args.verify_only:
            for split in splits:
                print(_summary(split, export.verify_split(args.out, split)) + ": verified")
            return 0
        check_writable_dir(args.out)
        manifests = export.export_split(
            data_dir, args.split, args.teacher, args.out, batch_size=args.batch_size,
            shard_size_mb=args.shard_size_mb, images_per_shard=args.images_per_shard, skip_bad=args.skip_bad,
            verify=args.verify, progress=not args.no_progress, pipeline=args.pipeline, input_size=args.input_size,
            dataset=dataset, split_file=args.split_file, sigma=args.sigma,
            teacher_format=args.teacher_format, teacher_max_side=args.teacher_max_side,
        )
    except tf.errors.OpError as e:  # TensorFlow's writer on a full disk or a folder that became unwritable
        raise OSError(None, e.message) from e
    if args.split != "all":
        manifests = {args.split: manifests}
    for split, manifest in manifests.items():
        print(_summary(split, manifest) + (": verified" if args.verify else "") + f" -> {args.out}")
    return 0


def main(argv=None):
    """Export (see the module's docstring); returns the exit code (argtypes: 0, 1, 2 or 130)."""
    return run_main(_export, argv, prog=PROG, handled=(RuntimeError,),
                    kept="finished shards are kept and verified on the next run",
                    again="run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
