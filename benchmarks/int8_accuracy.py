"""What int8 costs on real photos: int8 vs float student exports on OSIE images with human fixations.

    python benchmarks/int8_accuracy.py --exports exports/B --osie ../shared/data/eyetracking/osie \
        --count 100 --out benchmarks/int8_accuracy

For each pair (float file, its int8 file) in `--exports` (`<name>.onnx` / `<name>_int8.onnx`, `<name>.xml` /
`<name>_int8.xml` (OpenVINO), `<name>.tflite` / `<name>_int8.tflite`), every image is predicted at its own size by
both; the table gives the mean CC between the int8 and float maps and the NSS and AUC-Judd of each against the
fixations of OSIE's 15 observers.
The images are OSIE's fixed test split (`datasets/splits/osie.json`, 100 images; `--count` takes the first N),
read with the project's NUS-VIP reader (`datasets.nusvip`: fixations rounded and clamped as the lab's
computeFixationMaps.m does).
"Small" loss, the condition for shipping int8: NSS and AUC-Judd within 1% (relative) of the float file's,
and a mean int8-vs-float CC of at least 0.99.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PAIRS = ((".onnx", "_int8.onnx"), (".xml", "_int8.xml"), (".tflite", "_int8.tflite"))
SMALL = {"relative_nss": 0.01, "relative_auc_judd": 0.01, "cc": 0.99}


def osie_test_samples(osie_dir, count=None):
    """OSIE's test split as `datasets.nusvip.EyeSample`s (image path and 0-based fixations), the first `count`."""
    from datasets import sources

    return sources.list_samples("osie", osie_dir, "test")[:count]


def measure(exports_dir, osie_dir, count=None, name="student"):
    from datasets.io import read_image
    from metrics import saliency
    from inference.predictors import load_predictor

    samples = osie_test_samples(osie_dir, count)
    names = [os.path.basename(sample.image_path) for sample in samples]
    pairs = [(os.path.join(exports_dir, name + a), os.path.join(exports_dir, name + b)) for a, b in PAIRS]
    pairs = [(a, b) for a, b in pairs if os.path.isfile(a) and os.path.isfile(b)]
    if not pairs:
        raise FileNotFoundError(f"{exports_dir}: no float/int8 pair ({name}.onnx + {name}_int8.onnx, or .xml, or "
                                ".tflite); run export_student.py with --int8")
    results = {"images": [names[0], names[-1]], "count": len(names), "pairs": {}}
    for float_path, int8_path in pairs:
        predictors = {"float": load_predictor(float_path), "int8": load_predictor(int8_path)}
        scores = {"float": {"nss": [], "auc_judd": []}, "int8": {"nss": [], "auc_judd": []}, "cc": []}
        for sample in samples:
            image = read_image(sample.image_path)
            fixated = saliency.fixation_map_from_points(sample.fixations, image.shape[:2])
            maps = {k: p.predict(image) for k, p in predictors.items()}
            for k, m in maps.items():
                scores[k]["nss"].append(saliency.nss(m, fixated))
                scores[k]["auc_judd"].append(saliency.auc_judd(m, fixated, seed=0))
            scores["cc"].append(saliency.cc(maps["int8"], maps["float"]))
        entry = {"cc_int8_vs_float": float(np.mean(scores["cc"])), "cc_min": float(np.min(scores["cc"]))}
        for metric in ("nss", "auc_judd"):
            f, q = float(np.mean(scores["float"][metric])), float(np.mean(scores["int8"][metric]))
            entry[metric] = {"float": f, "int8": q, "relative_change": (q - f) / abs(f)}
        entry["small"] = bool(abs(entry["nss"]["relative_change"]) <= SMALL["relative_nss"]
                              and abs(entry["auc_judd"]["relative_change"]) <= SMALL["relative_auc_judd"]
                              and entry["cc_int8_vs_float"] >= SMALL["cc"])
        results["pairs"][f"{os.path.basename(float_path)} vs {os.path.basename(int8_path)}"] = entry
    return results


def to_markdown(results):
    lines = [f"OSIE test split, {results['count']} images ({results['images'][0]}..{results['images'][1]}), each "
             "at 800x600, 15 observers' fixations. Small: NSS and AUC-Judd within 1% of float, mean CC >= 0.99.", "",
             "| files | CC int8 vs float (min) | NSS float / int8 (change) | AUC-Judd float / int8 (change) | small |",
             "|---|---|---|---|---|"]
    for pair, e in results["pairs"].items():
        lines.append(f"| {pair} | {e['cc_int8_vs_float']:.4f} ({e['cc_min']:.4f}) | {e['nss']['float']:.4f} / "
                     f"{e['nss']['int8']:.4f} ({100 * e['nss']['relative_change']:+.2f}%) | "
                     f"{e['auc_judd']['float']:.4f} / {e['auc_judd']['int8']:.4f} "
                     f"({100 * e['auc_judd']['relative_change']:+.2f}%) | {'yes' if e['small'] else 'no'} |")
    return "\n".join(lines) + "\n"


PROG = "int8_accuracy.py"


def main(argv=None):
    """Exit status 2 for a usage error, 1 for any other error (no exports, no OSIE)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--exports", required=True, help="folder from export_student.py --int8")
    p.add_argument("--osie", default=os.path.join(ROOT, "..", "shared", "data", "eyetracking", "osie"))
    p.add_argument("--count", type=int, default=None, help="only the first N images of OSIE's test split")
    p.add_argument("--name", default="student", help="base name of the exported files")
    p.add_argument("--out", default=None, help="writes <out>.json and <out>.md")
    args = p.parse_args(argv)
    from datasets.io import import_tensorflow_quietly

    import_tensorflow_quietly()  # after argparse: --help stays instant; no CUDA/oneDNN lines
    try:
        results = measure(args.exports, args.osie, args.count, args.name)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    text = to_markdown(results)
    if args.out:
        from datasets.io import write_report

        write_report(args.out, results, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
