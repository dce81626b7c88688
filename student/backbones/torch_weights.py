"""Reads PyTorch state dicts (``torch.save`` files) and ``.safetensors`` as numpy arrays, without torch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. This reader never imports
torch and never resolves a global the file asks for: a restricted :class:`pickle.Unpickler` answers only the few
names a state dict is made of (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` /
``_rebuild_parameter`` and the typed storage classes such as ``torch.FloatStorage``) with harmless stand-ins
defined here, and refuses every other global (``os.system``, ``builtins.eval``, ...) with
:class:`ForbiddenGlobalError` before anything is called.

Both formats ``torch.save`` writes are read:

* the zip format (torch >= 1.6, the default): ``<name>/data.pkl`` holds the pickled object, whose storages are
  persistent ids ``("storage", torch.FloatStorage, key, location, numel)``; storage ``key``'s raw bytes are the
  member ``<name>/data/<key>``; ``<name>/byteorder`` says ``little`` or ``big`` (absent: little).
* the legacy format (``_use_new_zipfile_serialization=False``, and most files from before torch 1.6): pickle
  protocol 2 records back to back: the magic number ``0x1950a86a20f9469cfc6c``, the protocol version ``1001``, a
  ``sys_info`` dict (byte order, type sizes), the object with persistent ids ``("storage", torch.FloatStorage,
  key, location, numel, view_metadata)``, then the sorted list of storage keys and, for each key in that order,
  its element count as an 8-byte integer and its raw bytes.

Tensors are views ``(storage, storage_offset, size, stride)`` of a storage, in elements; they are materialised
with :func:`numpy.lib.stride_tricks.as_strided` after a bounds check, then copied (so no array aliases another).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Typed storage classes -> numpy dtype (without byte order). bfloat16 has no numpy dtype: it is read as uint16
# and widened to float32 (exact: bfloat16 is the top half of a float32).
STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "bf16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}

# (module, name) the unpickler answers; anything else is refused.
ALLOWED_GLOBALS = frozenset(
    [("collections", "OrderedDict")]
    + [("torch._utils", name) for name in ("_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter",
                                           "_rebuild_parameter_with_state")]
    + [("torch", name) for name in STORAGE_DTYPES]
)

# Wrappers a training checkpoint keeps its weights under.
_WRAPPER_KEYS = ("state_dict", "model")


class TorchFileError(ValueError):
    """The file is not a readable PyTorch/safetensors state dict (not a torch file, truncated, corrupt)."""


class ForbiddenGlobalError(TorchFileError, pickle.UnpicklingError):
    """The pickle asks for a global outside :data:`ALLOWED_GLOBALS`; nothing it names was imported or run."""


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins for the torch objects a state-dict pickle builds.
# ---------------------------------------------------------------------------------------------------------------


class _StorageType:
    """Stands for ``torch.<name>Storage`` in a persistent id."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """One storage of the file: dtype, element count and (once read) its data as a 1-D array."""

    def __init__(self, key: str, dtype: str, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None


class _StorageView:
    """A legacy-format view ``(root storage, offset, size)`` of another storage (files from torch < 0.4)."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root, self.offset, self.numel = root, offset, numel


class _Tensor:
    """A tensor as pickled: a strided view of a storage; :meth:`numpy` materialises it."""

    def __init__(self, storage, storage_offset, size, stride):
        if isinstance(storage, _StorageView):
            storage_offset = storage.offset + storage_offset
            storage = storage.root
        if not isinstance(storage, _Storage):
            raise TorchFileError(f"tensor built on a {type(storage).__name__}, not a storage")
        self.storage = storage
        self.offset = _check_int(storage_offset, "storage offset")
        self.size = tuple(_check_int(s, "size") for s in size)
        self.stride = tuple(_check_int(s, "stride") for s in stride)
        if len(self.size) != len(self.stride):
            raise TorchFileError(f"tensor size {self.size} and stride {self.stride} differ in length")

    def numpy(self, source: str) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchFileError(f"{source}: storage {self.storage.key!r} was never written to the file (truncated?)")
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        extent = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if extent > data.size:
            raise TorchFileError(
                f"{source}: tensor of size {self.size}, stride {self.stride} at offset {self.offset} reaches element "
                f"{extent} of storage {self.storage.key!r}, which has {data.size} (corrupt file)"
            )
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * data.itemsize for s in self.stride], writeable=False
        )
        return np.array(view, order="C")  # a C-contiguous copy


def _check_int(value, what):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TorchFileError(f"tensor {what} {value!r} is not a non-negative integer")
    return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_REBUILDERS = {
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict: only :data:`ALLOWED_GLOBALS` resolve (to stand-ins), storages are recorded.

    Args:
        file: binary file object positioned at a pickle.
        source: str. The file name, for messages.
        legacy: bool. Persistent ids have the legacy format's sixth element (view metadata).
    """

    def __init__(self, file, source: str, legacy: bool):
        super().__init__(file)
        self.source = source
        self.legacy = legacy
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise ForbiddenGlobalError(
                f"{self.source}: refusing to load global '{module}.{name}': a state dict only needs tensors, storages "
                "and OrderedDict, and this file asks for something else (a full pickled model, or a malicious file). "
                "Nothing was imported or run. Re-save the weights with torch.save(model.state_dict(), path)."
            )
        if module == "collections":
            return collections.OrderedDict
        if module == "torch._utils":
            return _REBUILDERS[name]
        return _StorageType(name)

    def persistent_load(self, pid):
        n_fields = 6 if self.legacy else 5
        if not (isinstance(pid, tuple) and len(pid) == n_fields and pid[0] == "storage"):
            raise TorchFileError(f"{self.source}: unexpected persistent id {pid!r} (expected a torch storage)")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise TorchFileError(f"{self.source}: malformed storage reference {pid!r}")
        numel = _check_int(numel, "storage size")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        if self.legacy and pid[5] is not None:
            _view_key, offset, view_numel = pid[5]
            if offset + view_numel > numel:
                raise TorchFileError(f"{self.source}: storage view {pid[5]!r} exceeds storage {key!r} of {numel}")
            return _StorageView(storage, _check_int(offset, "view offset"), _check_int(view_numel, "view size"))
        return storage


def _np_dtype(code: str, byteorder: str) -> np.dtype:
    if code == "bf16":
        return np.dtype(byteorder + "u2")
    return np.dtype(code).newbyteorder(byteorder) if np.dtype(code).itemsize > 1 else np.dtype(code)


def _set_storage_data(storage: _Storage, raw: bytes, byteorder: str, source: str) -> None:
    dtype = _np_dtype(storage.dtype, byteorder)
    expected = storage.numel * dtype.itemsize
    if len(raw) != expected:
        raise TorchFileError(
            f"{source}: storage {storage.key!r} has {len(raw)} bytes, expected {expected} ({storage.numel} x "
            f"{dtype.itemsize}); the file is truncated or corrupt"
        )
    data = np.frombuffer(raw, dtype)
    if storage.dtype == "bf16":
        data = (data.astype("<u4") << 16).view("<f4")
    storage.data = data.astype(data.dtype.newbyteorder("="), copy=False)


def _unpickle(unpickler: RestrictedUnpickler, what: str):
    try:
        return unpickler.load()
    except TorchFileError:
        raise
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError) as e:
        raise TorchFileError(f"{unpickler.source}: cannot read {what}: the file is truncated or corrupt ({e!r})") from e


def _read_legacy(f, source: str):
    def header_unpickler():
        return RestrictedUnpickler(f, source, legacy=True)

    try:
        magic = header_unpickler().load()
    except ForbiddenGlobalError:
        raise
    except Exception as e:
        raise TorchFileError(f"{source} is not a PyTorch file (neither a zip archive nor a legacy torch pickle)") from e
    if magic != LEGACY_MAGIC_NUMBER:
        raise TorchFileError(f"{source} is not a PyTorch file (neither a zip archive nor a legacy torch pickle)")
    protocol = _unpickle(header_unpickler(), "the protocol version")
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise TorchFileError(f"{source}: unsupported legacy torch protocol version {protocol!r}")
    sys_info = _unpickle(header_unpickler(), "the sys_info header")
    if not isinstance(sys_info, Mapping):
        raise TorchFileError(f"{source}: malformed sys_info header {sys_info!r}")
    byteorder = "<" if sys_info.get("little_endian", True) else ">"
    unpickler = RestrictedUnpickler(f, source, legacy=True)
    obj = _unpickle(unpickler, "the pickled object")
    keys = _unpickle(header_unpickler(), "the storage key list")
    if not isinstance(keys, list) or set(keys) != set(unpickler.storages):
        raise TorchFileError(f"{source}: the storage key list does not match the storages the object references")
    for key in keys:
        storage = unpickler.storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise TorchFileError(f"{source}: file ends before storage {key!r} (truncated)")
        numel = struct.unpack(byteorder + "q", head)[0]
        if numel != storage.numel:
            raise TorchFileError(f"{source}: storage {key!r} holds {numel} elements, the pickle says {storage.numel}")
        itemsize = _np_dtype(storage.dtype, byteorder).itemsize
        _set_storage_data(storage, f.read(numel * itemsize), byteorder, source)
    return obj


def _read_zip(path: str, source: str):
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise TorchFileError(f"{source} is a zip archive without exactly one <name>/data.pkl: not a torch file")
            prefix = pickles[0][: -len("data.pkl")]
            names = set(archive.namelist())
            byteorder = "<"
            if f"{prefix}byteorder" in names:
                byteorder = "<" if archive.read(f"{prefix}byteorder").strip() == b"little" else ">"
            unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), source, legacy=False)
            obj = _unpickle(unpickler, "data.pkl")
            for key, storage in unpickler.storages.items():
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise TorchFileError(f"{source}: storage {member} is missing from the archive (truncated?)")
                _set_storage_data(storage, archive.read(member), byteorder, source)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise TorchFileError(f"{source}: the zip archive is truncated or corrupt ({e})") from e
    return obj


def _materialise(obj, source: str) -> dict[str, np.ndarray]:
    for wrapper in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise TorchFileError(f"{source} holds a {type(obj).__name__}, not a state dict (mapping of key to tensor)")
    state = {str(k): v.numpy(source) for k, v in obj.items() if isinstance(v, _Tensor)}
    if not state:
        raise TorchFileError(f"{source} holds a mapping without tensors, not a state dict")
    return state


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (zip or legacy ``torch.save`` file) or a ``.safetensors`` file, without torch.

    Nothing in the file is executed: see the module docstring. A checkpoint holding the weights under
    ``"state_dict"`` or ``"model"`` is unwrapped; a ``"module."`` prefix on every key (DataParallel) is stripped;
    entries that are not tensors (step counters stored as ints, say) are dropped.

    Args:
        path: str or path. The file; ``.safetensors`` by extension, otherwise a torch file of either format.

    Returns:
        dict of key to numpy array in the file's dtype (float32/float16/int64/...; bfloat16 becomes float32) and
        torch's layout (no transposition), in file order.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ForbiddenGlobalError: (a ValueError) if the pickle names a global other than a state dict's; the message
            names the file and the global.
        TorchFileError: (a ValueError) if the file is not a torch file, is truncated or corrupt, or holds no
            state dict.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"weights file not found: {source}")
    if source.lower().endswith(".safetensors"):
        state = _read_safetensors(source)
    elif zipfile.is_zipfile(source):
        state = _materialise(_read_zip(source, source), source)
    else:
        with open(source, "rb") as f:
            state = _materialise(_read_legacy(f, source), source)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _read_safetensors(source: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(source))
    except Exception as e:  # safetensors raises its own SafetensorError, and others for a bad header
        raise TorchFileError(f"{source}: cannot read as safetensors ({e})") from e
