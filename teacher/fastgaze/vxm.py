"""A reader of FastGaze's `.vxm` container (Twitter's image-crop-analysis, `bin/fastgaze.vxm`).

Layout (little-endian): bytes 0-3 the magic `\\x01tPM`, bytes 4-7 a
uint32 entry count, then per entry a uint32 key length, the key (NUL-terminated, the length counts the NUL), a
uint32 value length and the value. The entries must consume the file exactly. Scalars are int32. Layer `i`
has `<i>Type` (0 conv, 2 pool, 3 blur) and, by type, `<i>Act` (1 ReLU, 4 PReLU), `<i>Pool`, `<i>KernelSize`,
`<i>Std`; arrays `<i>w` (OIHW), `<i>b`, `<i>alpha` come with `<name>.dtype` (`float32`) and `<name>.shape`
(int32 list), optionally `<name>.ndims`, `<name>.shape.listlength` and `<name>.shape[k]`, which must agree.
The file also holds `layerCount` and `modelType`.

`read_vxm(path)` checks all of that and returns a `VxmModel`: one `VxmLayer` per layer (its kind, activation
and numpy weights). Every error is a `ValueError` that names the file and what is wrong.
"""

import dataclasses
import os
import re
import struct

import numpy as np

MAGIC = b"\x01tPM"
LAYER_TYPES = {0: "conv", 2: "pool", 3: "blur"}
ACTIVATIONS = {1: "relu", 4: "prelu"}
POOLS = {2: "max"}  # the only pooling code the file uses (2x2, stride 2)
_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
_LAYER_KEY = re.compile(r"^(\d+)(.+)$")


@dataclasses.dataclass(frozen=True)
class VxmLayer:
    """One layer of a `.vxm` network.

    Attributes:
        index: its position (the `<i>` of its keys).
        kind: "conv", "pool" or "blur".
        activation: "relu" or "prelu" for a conv, else None.
        pool: "max" for a pool, else None.
        kernel_size: the conv kernel's side (from `w`) or the blur's `KernelSize`; None for a pool.
        std: the blur's `Std`, else None.
        weights: numpy float32 arrays by name: a conv has "w" (O, I, kH, kW), "b" (O,) and, with PReLU, "alpha".
    """

    index: int
    kind: str
    activation: object = None
    pool: object = None
    kernel_size: object = None
    std: object = None
    weights: dict = dataclasses.field(default_factory=dict)

    @property
    def filters(self):
        """Output channels of a conv (None otherwise)."""
        return int(self.weights["w"].shape[0]) if self.kind == "conv" else None

    @property
    def in_channels(self):
        """Input channels of a conv (None otherwise)."""
        return int(self.weights["w"].shape[1]) if self.kind == "conv" else None


@dataclasses.dataclass(frozen=True)
class VxmModel:
    """A parsed `.vxm` file: `layers` in order, the `model_type` code and every raw entry (key -> bytes)."""

    path: str
    model_type: object
    layers: tuple
    entries: dict

    @property
    def num_params(self):
        return int(sum(w.size for layer in self.layers for w in layer.weights.values()))


def read_entries(path):
    """The raw key -> value bytes of a `.vxm` container, in file order, after checking the container.

    Raises:
        ValueError: naming the file: truncated (header, a key, a value), bad magic, a key without its NUL or not
            ASCII, a repeated key, bytes left after the declared entries.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    size = len(data)
    if size < 8:
        raise ValueError(f"{path}: not a .vxm file: truncated, {size} bytes (the header alone is 8: magic and "
                         "entry count)")
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a .vxm file: bad magic {data[:4]!r}, expected {MAGIC!r}")
    (count,) = struct.unpack_from("<I", data, 4)
    entries = {}
    offset = 8
    for number in range(count):
        where = f"entry {number} of {count} at byte {offset}"
        key_length = _read_length(path, data, offset, where, "key length")
        offset += 4
        if key_length < 1 or offset + key_length > size:
            raise ValueError(f"{path}: truncated or corrupt .vxm: {where}: key of {key_length} bytes runs past the "
                             f"end of the file ({size} bytes)")
        raw_key = data[offset:offset + key_length]
        offset += key_length
        if raw_key[-1:] != b"\0" or b"\0" in raw_key[:-1]:
            raise ValueError(f"{path}: corrupt .vxm: {where}: key {raw_key!r} is not a NUL-terminated string")
        try:
            key = raw_key[:-1].decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: corrupt .vxm: {where}: key {raw_key!r} is not ASCII") from None
        where = f"entry {number} of {count} ({key!r})"
        value_length = _read_length(path, data, offset, where, "value length")
        offset += 4
        if offset + value_length > size:
            raise ValueError(f"{path}: truncated .vxm: {where}: value of {value_length} bytes runs past the end of "
                             f"the file ({size} bytes; {offset + value_length - size} missing)")
        if key in entries:
            raise ValueError(f"{path}: corrupt .vxm: {where}: the key appears twice")
        entries[key] = data[offset:offset + value_length]
        offset += value_length
    if offset != size:
        raise ValueError(f"{path}: corrupt .vxm: {size - offset} bytes left after the {count} entries the header "
                         "declares (the entries must consume the file exactly)")
    return entries


def _read_length(path, data, offset, where, what):
    if offset + 4 > len(data):
        raise ValueError(f"{path}: truncated .vxm: {where}: the file ends ({len(data)} bytes) before its {what}")
    return struct.unpack_from("<I", data, offset)[0]


class _Entries:
    """Typed access to the entries, with errors naming the file and the key."""

    def __init__(self, path, entries):
        self.path = path
        self.entries = entries

    def error(self, message):
        return ValueError(f"{self.path}: invalid .vxm: {message}")

    def has(self, key):
        return key in self.entries

    def raw(self, key, context):
        if key not in self.entries:
            raise self.error(f"missing key {key!r} ({context})")
        return self.entries[key]

    def int32(self, key, context):
        value = self.raw(key, context)
        if len(value) != 4:
            raise self.error(f"{key!r} should be an int32 scalar (4 bytes), has {len(value)} bytes ({context})")
        return int(np.frombuffer(value, "<i4")[0])

    def int32_list(self, key, context):
        value = self.raw(key, context)
        if len(value) % 4:
            raise self.error(f"{key!r} should be an int32 list, has {len(value)} bytes (not a multiple of 4)")
        return [int(v) for v in np.frombuffer(value, "<i4")]

    def array(self, name, context):
        """The array `name` with its `.dtype` and `.shape` (and the optional `.ndims`, `.shape[k]`) checked."""
        raw_dtype = self.raw(f"{name}.dtype", context)
        dtype_name = raw_dtype.rstrip(b"\0").decode("ascii", "replace")
        if dtype_name not in _DTYPES:
            raise self.error(f"{name!r} has dtype {dtype_name!r}; only {sorted(_DTYPES)} are supported ({context})")
        shape = self.int32_list(f"{name}.shape", context)
        if any(dim < 0 for dim in shape):
            raise self.error(f"{name!r} has a negative dimension in its shape {shape}")
        for key, expected in ((f"{name}.ndims", len(shape)), (f"{name}.shape.listlength", len(shape))):
            if self.has(key) and self.int32(key, context) != expected:
                raise self.error(f"{key!r} is {self.int32(key, context)} but {name}.shape is {shape}")
        for k, dim in enumerate(shape):
            key = f"{name}.shape[{k}]"
            if self.has(key) and self.int32(key, context) != dim:
                raise self.error(f"{key!r} is {self.int32(key, context)} but {name}.shape is {shape}")
        value = self.raw(name, context)
        dtype = _DTYPES[dtype_name]
        expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(value) != expected_bytes:
            raise self.error(f"{name!r} has {len(value)} bytes; {dtype_name} of shape {shape} needs {expected_bytes}")
        return np.frombuffer(value, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _parse_layer(entries, index):
    context = f"layer {index}"
    code = entries.int32(f"{index}Type", context)
    if code not in LAYER_TYPES:
        raise entries.error(f"layer {index} has an unknown Type {code} (known: {LAYER_TYPES})")
    kind = LAYER_TYPES[code]
    context = f"layer {index}, {kind}"
    if kind == "pool":
        pool = entries.int32(f"{index}Pool", context)
        if pool not in POOLS:
            raise entries.error(f"layer {index} has an unknown Pool code {pool} (known: {POOLS})")
        return VxmLayer(index, kind, pool=POOLS[pool])
    if kind == "blur":
        return VxmLayer(index, kind, kernel_size=entries.int32(f"{index}KernelSize", context),
                        std=entries.int32(f"{index}Std", context))
    act = entries.int32(f"{index}Act", context)
    if act not in ACTIVATIONS:
        raise entries.error(f"layer {index} has an unknown Act code {act} (known: {ACTIVATIONS})")
    activation = ACTIVATIONS[act]
    weights = {"w": entries.array(f"{index}w", context), "b": entries.array(f"{index}b", context)}
    w, b = weights["w"], weights["b"]
    if w.dtype != np.float32 or b.dtype != np.float32:
        raise entries.error(f"layer {index}: w and b must be float32, are {w.dtype} and {b.dtype}")
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0 or 0 in w.shape:
        raise entries.error(f"layer {index}: w has shape {list(w.shape)}; expected OIHW with a square, odd kernel")
    if b.shape != (w.shape[0],):
        raise entries.error(f"layer {index}: b has shape {list(b.shape)}; expected [{w.shape[0]}] (w is "
                            f"{list(w.shape)})")
    if activation == "prelu":
        alpha = entries.array(f"{index}alpha", context + " with PReLU")
        if alpha.dtype != np.float32 or alpha.shape != (1,):
            raise entries.error(f"layer {index}: alpha is {alpha.dtype} {list(alpha.shape)}; expected one float32 "
                                "(a PReLU slope shared by all channels)")
        weights["alpha"] = alpha
    return VxmLayer(index, kind, activation=activation, kernel_size=int(w.shape[2]), weights=weights)


def read_vxm(path):
    """Parse and check a `.vxm` file.

    Beyond the container (`read_entries`): `layerCount` and every layer's keys are present with the right
    types, arrays have the bytes their dtype and shape need, convs are OIHW with square odd kernels, biases
    and PReLU slopes fit, and each conv takes the channels the previous conv gives (3 for the first). Keys of
    layers beyond `layerCount` are refused too.

    Returns:
        A `VxmModel`.

    Raises:
        ValueError: naming the file and what is wrong.
    """
    path = os.fspath(path)
    entries = _Entries(path, read_entries(path))
    count = entries.int32("layerCount", "the model header")
    if count < 1:
        raise entries.error(f"layerCount is {count}")
    model_type = entries.int32("modelType", "the model header") if entries.has("modelType") else None
    strays = sorted({int(m.group(1)) for m in map(_LAYER_KEY.match, entries.entries) if m} - set(range(count)))
    if strays:
        raise entries.error(f"keys for layer(s) {strays} beyond layerCount {count}")
    layers = tuple(_parse_layer(entries, i) for i in range(count))
    channels, source = 3, "the RGB image"
    for layer in layers:
        if layer.kind == "conv":
            if layer.in_channels != channels:
                raise entries.error(f"layer {layer.index} takes {layer.in_channels} channels but gets {channels} "
                                    f"from {source}")
            channels, source = layer.filters, f"layer {layer.index}"
    if source == "the RGB image":
        raise entries.error("no convolution layer")
    return VxmModel(path=path, model_type=model_type, layers=layers, entries=dict(entries.entries))
