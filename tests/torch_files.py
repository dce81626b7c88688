"""Writes PyTorch state-dict files byte for byte as ``torch.save`` does, without torch (for the reader's tests).

``torch.save`` pickles with protocol 2 and turns every storage into a persistent id; a tensor pickles as
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, OrderedDict())``. Here
:class:`Tensor` / :class:`Storage` stand in for torch's objects and :class:`_Pickler` (the pure-Python pickler)
writes the globals torch's objects would name (``torch FloatStorage``, ...) as plain ``GLOBAL`` opcodes without
importing anything. With the same storage keys, the bytes equal torch 2.13's (checked in test_torch_weights.py
against files torch wrote).

* :func:`save_legacy`: ``_use_new_zipfile_serialization=False``: magic number, protocol 1001, sys_info, the object
  (persistent ids ``("storage", torch.<T>Storage, key, "cpu", numel, None)``), the sorted storage keys, then per
  key an 8-byte little-endian element count and the raw bytes.
* :func:`save_zip`: the default: ``<name>/data.pkl`` (persistent ids ``("storage", torch.<T>Storage, key, "cpu",
  numel)``), ``<name>/data/<key>`` raw bytes, ``<name>/byteorder``, ``<name>/version``.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import zipfile
from typing import ClassVar

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
}


class Global:
    """A reference to ``module.name``, pickled as ``GLOBAL`` without importing it (callable only for pickle)."""

    _cache: ClassVar[dict] = {}

    def __new__(cls, module: str, name: str):
        # One object per name, so the pickler memoizes repeats (BINGET) as it does for torch's real globals.
        key = (module, name)
        if key not in cls._cache:
            obj = super().__new__(cls)
            obj.module, obj.name = module, name
            cls._cache[key] = obj
        return cls._cache[key]

    def __call__(self, *args):  # pickle.save_reduce insists on a callable
        raise TypeError("a stand-in for pickling only")


REBUILD_TENSOR_V2 = Global("torch._utils", "_rebuild_tensor_v2")
REBUILD_PARAMETER = Global("torch._utils", "_rebuild_parameter")


class Storage:
    """A torch storage: a 1-D array and its key in the file."""

    def __init__(self, data: np.ndarray, key: str):
        self.data = np.ascontiguousarray(data).reshape(-1)
        self.key = key
        self.type = Global("torch", STORAGE_NAMES[self.data.dtype])


class Tensor:
    """A tensor as torch pickles it: a strided view (in elements) of a :class:`Storage`."""

    def __init__(self, storage: Storage, offset: int, size, stride, parameter: bool = False):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.parameter = parameter

    @classmethod
    def from_array(cls, array, key: str, parameter: bool = False) -> Tensor:
        array = np.asarray(array)
        strides = tuple(s // array.itemsize for s in array.strides) if array.ndim else ()
        return cls(Storage(array, key), 0, array.shape, strides, parameter)

    def __reduce_ex__(self, protocol):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        tensor = (REBUILD_TENSOR_V2, args)
        if not self.parameter:
            return tensor
        data = Tensor(self.storage, self.offset, self.size, self.stride)
        return (REBUILD_PARAMETER, (data, False, collections.OrderedDict()))

    def expected(self) -> np.ndarray:
        """The array the file should read back as."""
        data = self.storage.data
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], self.size, [s * data.itemsize for s in self.stride]
        )
        return np.array(view)


class _Pickler(pickle._Pickler):
    """The pure-Python pickler, plus :class:`Global` written as GLOBAL and storages as persistent ids."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy: bool, storages: dict | None = None):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages = {} if storages is None else storages

    def _save_global_ref(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = _save_global_ref

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj
        pid = ("storage", obj.type, obj.key, "cpu", obj.data.size)
        return pid + (None,) if self.legacy else pid


def _dump(obj, f):
    _Pickler(f, legacy=True).dump(obj)


def save_legacy(obj, path) -> None:
    """Writes ``obj`` (a dict of :class:`Tensor`, possibly nested) as torch's legacy format."""
    with open(path, "wb") as f:
        f.write(legacy_bytes(obj))


def legacy_bytes(obj) -> bytes:
    f = io.BytesIO()
    _dump(MAGIC_NUMBER, f)
    _dump(PROTOCOL_VERSION, f)
    sys_info = {
        "protocol_version": PROTOCOL_VERSION,
        "little_endian": sys.byteorder == "little",
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    _dump(sys_info, f)
    pickler = _Pickler(f, legacy=True)
    pickler.dump(obj)
    keys = sorted(pickler.storages)
    _dump(keys, f)
    for key in keys:
        data = pickler.storages[key].data
        f.write(struct.pack("<q", data.size))
        f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
    return f.getvalue()


def data_pkl(obj) -> tuple[bytes, dict]:
    """The zip format's ``data.pkl`` bytes for ``obj`` and the storages it references."""
    f = io.BytesIO()
    pickler = _Pickler(f, legacy=False)
    pickler.dump(obj)
    return f.getvalue(), pickler.storages


def save_zip(obj, path, name: str = "archive") -> None:
    """Writes ``obj`` as torch's zip format (storages keyed "0", "1", ... as torch does)."""
    pkl, storages = data_pkl(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", pkl)
        archive.writestr(f"{name}/byteorder", "little")
        for key, storage in storages.items():
            archive.writestr(f"{name}/data/{key}", storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())
        archive.writestr(f"{name}/version", "3\n")
