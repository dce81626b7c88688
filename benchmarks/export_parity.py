"""How close each runtime file's maps are to the SavedModel's, per backbone, at one input size.

    python benchmarks/export_parity.py --size 144 192 --images ../shared/data/mit1003_sample/stimuli

For each backbone, a student (variant B, seeded random weights with random BatchNormalization statistics, as in
tests/test_backbone_exports.py) is exported by `inference.export.export_student` to the SavedModel, ONNX,
OpenVINO and LiteRT at `--size`. Each photo of `--images` is letterboxed to that size (so that only the converted
graphs differ, not the resizing), and every runtime's [0, 1] map is compared with the SavedModel's: the mean and
the worst CC over the photos, and the largest absolute difference. The table goes to stdout (progress to stderr)
and `--out` (JSON) if given.
"""

import argparse
import glob
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RUNTIMES = ("onnx", "openvino", "litert")


def _cc(a, b):
    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    return float((a * b).mean())


def randomize_batchnorm(model, seed=0):
    """Random gamma, beta, mean and variance in every BatchNormalization (nested models too), so that folding them
    into the convolutions is actually tested; a model without one is an error (there would be nothing to test)."""
    import keras

    rng = np.random.default_rng(seed)
    stack, count = [model], 0
    while stack:
        for layer in stack.pop().layers:
            if isinstance(layer, keras.Model):
                stack.append(layer)
            elif isinstance(layer, keras.layers.BatchNormalization):
                n = layer.gamma.shape[0]
                layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                                   rng.uniform(0.5, 2.0, n)])
                count += 1
    if count == 0:
        raise ValueError(f"randomize_batchnorm: {model.name} has no BatchNormalization layer")
    return model


def measure(backbones, size, images, work):
    """{backbone: {runtime: {"cc_mean", "cc_min", "max_abs_diff"}}} of each runtime's maps against the SavedModel's."""
    from inference import export as deploy
    from inference.predictors import load_predictor
    from student.model import build_student

    results = {}
    for backbone in backbones:
        print(f"[export_parity] {backbone} at {size[0]}x{size[1]}", file=sys.stderr, flush=True)
        student = randomize_batchnorm(build_student("B", backbone=backbone, seed=3))
        paths = deploy.export_student(student, os.path.join(work, backbone), formats=("saved_model", *RUNTIMES),
                                      input_size=size)
        reference = np.stack(load_predictor(paths["saved_model"]).predict_batch(images))
        results[backbone] = {}
        for runtime in RUNTIMES:
            maps = np.stack(load_predictor(paths[runtime]).predict_batch(images))
            ccs = [_cc(a, b) for a, b in zip(maps, reference)]
            results[backbone][runtime] = {"cc_mean": float(np.mean(ccs)), "cc_min": float(np.min(ccs)),
                                          "max_abs_diff": float(np.abs(maps - reference).max())}
    return results


def to_markdown(results, size):
    lines = [f"| backbone ({size[0]}x{size[1]}) | " + " | ".join(f"{r}: CC (min) / max abs diff" for r in RUNTIMES)
             + " |", "|---|" + "---|" * len(RUNTIMES)]
    for backbone, row in results.items():
        cells = [f"{row[r]['cc_mean']:.6f} ({row[r]['cc_min']:.6f}) / {row[r]['max_abs_diff']:.1e}" for r in RUNTIMES]
        lines.append(f"| {backbone} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    from student.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(144, 192), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--images", required=True, help="a folder of photos (.jpg, .png)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args(argv)
    from datasets.io import import_tensorflow_quietly, read_image
    from inference.predictors import fit_to_input

    import_tensorflow_quietly()
    files = sorted(p for p in glob.glob(os.path.join(args.images, "*")) if p.lower().endswith((".jpg", ".png")))
    if not files:
        parser.error(f"--images {args.images}: no .jpg or .png files")
    size = tuple(args.size)
    images = [fit_to_input(read_image(p), size, "letterbox")[0] for p in files]
    with tempfile.TemporaryDirectory() as work:
        results = measure(args.backbones, size, images, work)
    print(to_markdown(results, size))
    if args.out:
        from datasets.io import atomic_write

        with atomic_write(args.out, "w") as f:
            json.dump({"size": list(size), "images": len(files), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
