"""The project's own students, shipped as package data: packaging a training run, and loading it by name.

Each shipped student is a folder here, named after it (e.g. `saliency-kd/`), holding

- `student.weights.h5`: the run's best checkpoint with every float32 array stored as float16 (half the bytes;
  Keras casts them back to float32 on load);
- `model.json`: what it is (variant, backbone, decoder, input size, resize), where it came from (the run folder,
  the sha256 of its checkpoint, the command) and its model card's facts (training data and licences, scores);
- `reference.npz`: the maps that the run's own SavedModel gave for a few fixed synthetic images, so that a test
  can check that the shipped file predicts what the run predicted;
- `NOTICE`: the weights' terms and what they derive from (`notice_text`, from `model.json`).

`builtins()` lists them as `teacher.builtin.Builtin(kind="student")` entries for `inference.predictors`
(reading only the JSON files: no TensorFlow import), whose `load_shipped(name)` returns a `Predictor`;
`inference.export.package_student` writes a folder from a run (`python -m experiments.own_model ship`).
This module reads the folders only, so that both can import it.
"""

import json
import os

import numpy as np

from teacher import builtin

SHIPPED_DIR = os.path.dirname(os.path.abspath(__file__))
WEIGHTS, CARD, REFERENCE, NOTICE = "student.weights.h5", "model.json", "reference.npz", "NOTICE"
MAX_BYTES = 10 * 2 ** 20  # the limit on package data for one student
# The synthetic images of `reference.npz`: (height, width) each, odd shapes so that the letterbox pads.
REFERENCE_SHAPES = ((120, 160), (97, 203), (181, 135))


def folder(name, root=None):
    """The folder of the shipped student `name` (which may not exist)."""
    return os.path.join(SHIPPED_DIR if root is None else root, name)


def read_card(name, root=None):
    """The `model.json` of the shipped student `name`, as a dict."""
    path = os.path.join(folder(name, root), CARD)
    with open(path) as f:
        return json.load(f)


def names(root=None):
    """The shipped students' names: the folders here that hold a `model.json`, sorted."""
    root = SHIPPED_DIR if root is None else root
    return tuple(sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, CARD))))


def builtins(root=None):
    """{name: `Builtin`} of every shipped student, for `inference.predictors.STUDENT_BUILTINS`."""
    entries = {}
    for name in names(root):
        card = read_card(name, root)
        entries[name] = builtin.Builtin(
            name, "inference.predictors:load_shipped", card["description"], card["licence"],
            f"RGB 0..255 at any size, letterboxed inside the model to {card['input_size'][0]}x"
            f"{card['input_size'][1]}", files=tuple(f"shipped/{name}/{f}" for f in (WEIGHTS, CARD, NOTICE)),
            kind="student")
    return entries


def reference_images():
    """The fixed synthetic uint8 RGB images of `reference.npz` (smooth blobs on noise; no data needed)."""
    rng = np.random.default_rng(20261207)
    images = []
    for h, w in REFERENCE_SHAPES:
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-(((yy - 0.4 * h) / (0.15 * h)) ** 2 + ((xx - 0.6 * w) / (0.2 * w)) ** 2))
        base = rng.integers(0, 120, (h, w, 3)) + 135 * blob[..., None] * np.array([1.0, 0.3, 0.2])
        images.append(np.clip(base, 0, 255).astype(np.uint8))
    return images


def reference(name, root=None):
    """(images, maps) of the shipped student's `reference.npz`: what its run's SavedModel predicted."""
    with np.load(os.path.join(folder(name, root), REFERENCE), allow_pickle=False) as data:
        count = len(REFERENCE_SHAPES)
        return [data[f"image{i}"] for i in range(count)], [data[f"map{i}"] for i in range(count)]


def card_markdown(card):
    """The model card of a shipped student (its `model.json`) as the README's Markdown section: what it is, its
    training data and their terms, the command that reproduces it, its test scores over seeds and its cost."""
    h, w = card["input_size"]
    lines = [f"### `{card['name']}`", "", f"{card['description'][0].upper()}{card['description'][1:]}; "
             f"{card['params'] / 1e6:.2f}M parameters, input {h}x{w} (letterboxed inside the model), weights stored "
             f"as {card.get('weights_dtype', 'float32')}.", "",
             f"**Licence of the weights: {card['licence']}.**", "", "Training data:", ""]
    lines += [f"- {item}" for item in card.get("training_data", [])]
    test = card.get("test")
    if test:
        seeds = test["seeds"]
        lines += ["", f"Test scores, mean ± sd over seeds {', '.join(map(str, seeds))} (the shipped weights are "
                  f"seed {card.get('seed_chosen_on_val', card['source'].get('seed'))}, the best on val):", "",
                  "| data set | NSS | CC |", "|---|---|---|"]
        for dataset, metrics in test["scores"].items():
            cells = [f"{metrics[m]['mean']:.3f} ± {metrics[m]['sd']:.3f}" if m in metrics else "" for m in ("nss", "cc")]
            lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    if card.get("initial_weights"):
        lines += ["", f"Initial weights: {card['initial_weights']}."]
    if card.get("reproduce"):
        lines += ["", "Reproduce (the teacher's records, then the recipe; the study ran its seeds as "
                  "`python -m experiments.own_model final`, [own-model.md](docs/own-model.md#the-study)):", "",
                  "```bash", *card["reproduce"], "```"]
    return "\n".join(lines) + "\n"


def notice_text(card):
    """The `NOTICE` of a shipped student: what it is, the terms of its weights and what they derive from."""
    lines = [f"{card['name']}: a saliency model trained by this project (saliency-kd)", "",
             f"{card['description'][0].upper()}{card['description'][1:]}.", "",
             f"Terms of the weights in this folder: {card['licence']}.", ""]
    if card.get("initial_weights"):
        lines += [f"Its encoder started from: {card['initial_weights']}.", ""]
    teacher = card.get("teacher")
    if teacher and builtin.is_builtin(teacher):
        licences = ", ".join(f"{t.name}: {builtin.BUILTINS[t.name].licence}" for t in builtin.parse_spec(teacher))
        lines += [f"Its teacher ({teacher}) is built from models shipped in teacher/ with their own LICENSE and "
                  f"NOTICE ({licences}).", ""]
    elif teacher:
        lines += [f"Its teacher: {teacher}.", ""]
    if card.get("training_data"):
        lines += ["Trained on:", *[f"- {item}" for item in card["training_data"]], ""]
    lines += ["The code that loads and runs it is this project's, under the MIT licence (the repository's LICENSE); "
              "the terms above are those of the weights."]
    return "\n".join(lines) + "\n"
