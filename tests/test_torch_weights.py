"""read_torch_state_dict: torch's legacy and zip formats and safetensors, read without torch and without running
the pickle; files are written by tests/torch_files.py (torch.save's bytes, checked against files torch wrote)."""

import base64
import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch_files as T

from student.backbones.torch_weights import ForbiddenGlobalError, TorchFileError, read_torch_state_dict

# Written by torch 2.13.0 (CPU) from OrderedDict(w=torch.arange(6.).reshape(2, 3), b=torch.ones(3).half()):
# torch.save(sd, f, _use_new_zipfile_serialization=False) (storage keys 94108055964208 / ...320) and
# torch.save(sd, "small_zip.pth") (the zip format, with torch's 64-byte alignment and .format_version members).

TORCH_LEGACY_SMALL = base64.b64decode(
    "gAKKCmz8nEb5IGqoUBkugAJN6QMugAJ9cQAoWBAAAABwcm90b2NvbF92ZXJzaW9ucQFN6QNYDQAAAGxpdHRsZV9lbmRpYW5xAohY"
    "CgAAAHR5cGVfc2l6ZXNxA31xBChYBQAAAHNob3J0cQVLAlgDAAAAaW50cQZLBFgEAAAAbG9uZ3EHSwR1dS6AAmNjb2xsZWN0aW9u"
    "cwpPcmRlcmVkRGljdApxAClScQEoWAEAAAB3cQJjdG9yY2guX3V0aWxzCl9yZWJ1aWxkX3RlbnNvcl92MgpxAygoWAcAAABzdG9y"
    "YWdlcQRjdG9yY2gKRmxvYXRTdG9yYWdlCnEFWA4AAAA5NDEwODA1NTk2NDIwOHEGWAMAAABjcHVxB0sGTnRxCFFLAEsCSwOGcQlL"
    "A0sBhnEKiWgAKVJxC3RxDFJxDVgBAAAAYnEOaAMoKGgEY3RvcmNoCkhhbGZTdG9yYWdlCnEPWA4AAAA5NDEwODA1NTk2NDMyMHEQ"
    "aAdLA050cRFRSwBLA4VxEksBhXETiWgAKVJxFHRxFVJxFnUugAJdcQAoWA4AAAA5NDEwODA1NTk2NDIwOHEBWA4AAAA5NDEwODA1"
    "NTk2NDMyMHECZS4GAAAAAAAAAAAAAAAAAIA/AAAAQAAAQEAAAIBAAACgQAMAAAAAAAAAADwAPAA8"
)
TORCH_ZIP_SMALL = base64.b64decode(
    "UEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAASABAAc21hbGxfemlwL2RhdGEucGtsRkIMAFpaWlpaWlpaWlpaWoACY2NvbGxlY3Rp"
    "b25zCk9yZGVyZWREaWN0CnEAKVJxAShYAQAAAHdxAmN0b3JjaC5fdXRpbHMKX3JlYnVpbGRfdGVuc29yX3YyCnEDKChYBwAAAHN0"
    "b3JhZ2VxBGN0b3JjaApGbG9hdFN0b3JhZ2UKcQVYAQAAADBxBlgDAAAAY3B1cQdLBnRxCFFLAEsCSwOGcQlLA0sBhnEKiWgAKVJx"
    "C3RxDFJxDVgBAAAAYnEOaAMoKGgEY3RvcmNoCkhhbGZTdG9yYWdlCnEPWAEAAAAxcRBoB0sDdHERUUsASwOFcRJLAYVxE4loAClS"
    "cRR0cRVScRZ1LlBLBwihepor9gAAAPYAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAABkAQwBzbWFsbF96aXAvLmZvcm1hdF92"
    "ZXJzaW9uRkI/AFpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWjFQ"
    "SwcIt+/cgwEAAAABAAAAUEsDBAAACAgAAAAAAAAAAAAAAAAAAAAAAAAcADUAc21hbGxfemlwLy5zdG9yYWdlX2FsaWdubWVudEZC"
    "MQBaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaNjRQSwcIP3dx6QIAAAACAAAAUEsDBAAA"
    "CAgAAAAAAAAAAAAAAAAAAAAAAAATAD0Ac21hbGxfemlwL2J5dGVvcmRlckZCOQBaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa"
    "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpsaXR0bGVQSwcIhT3jGQYAAAAGAAAAUEsDBAAACAgAAAAAAAAAAAAAAAAAAAAA"
    "AAAQADwAc21hbGxfemlwL2RhdGEvMEZCOABaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa"
    "WlpaWlpaWgAAAAAAAIA/AAAAQAAAQEAAAIBAAACgQFBLBwgXkOeRGAAAABgAAABQSwMEAAAICAAAAAAAAAAAAAAAAAAAAAAAABAA"
    "KgBzbWFsbF96aXAvZGF0YS8xRkImAFpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaADwAPAA8UEsHCFeUDdcG"
    "AAAABgAAAFBLAwQAAAgIAAAAAAAAAAAAAAAAAAAAAAAAEQA7AHNtYWxsX3ppcC92ZXJzaW9uRkI3AFpaWlpaWlpaWlpaWlpaWlpa"
    "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlozClBLBwjRnmdVAgAAAAIAAABQSwMEAAAICAAAAAAAAAAAAAAA"
    "AAAAAAAAACAAMABzbWFsbF96aXAvLmRhdGEvc2VyaWFsaXphdGlvbl9pZEZCLABaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa"
    "WlpaWlpaWlpaWlpaWlpaWjA1NjExMDg1MjM2MTk2NzA1Mjk0MDcwOTgxNTAzNTEwNjEwNTQzMDJQSwcIdQj98igAAAAoAAAAUEsB"
    "AgAAAAAICAAAAAAAAKF6miv2AAAA9gAAABIAAAAAAAAAAAAAAAAAAAAAAHNtYWxsX3ppcC9kYXRhLnBrbFBLAQIAAAAACAgAAAAA"
    "AAC379yDAQAAAAEAAAAZAAAAAAAAAAAAAAAAAEYBAABzbWFsbF96aXAvLmZvcm1hdF92ZXJzaW9uUEsBAgAAAAAICAAAAAAAAD93"
    "cekCAAAAAgAAABwAAAAAAAAAAAAAAAAA0QEAAHNtYWxsX3ppcC8uc3RvcmFnZV9hbGlnbm1lbnRQSwECAAAAAAgIAAAAAAAAhT3j"
    "GQYAAAAGAAAAEwAAAAAAAAAAAAAAAABSAgAAc21hbGxfemlwL2J5dGVvcmRlclBLAQIAAAAACAgAAAAAAAAXkOeRGAAAABgAAAAQ"
    "AAAAAAAAAAAAAAAAANYCAABzbWFsbF96aXAvZGF0YS8wUEsBAgAAAAAICAAAAAAAAFeUDdcGAAAABgAAABAAAAAAAAAAAAAAAAAA"
    "aAMAAHNtYWxsX3ppcC9kYXRhLzFQSwECAAAAAAgIAAAAAAAA0Z5nVQIAAAACAAAAEQAAAAAAAAAAAAAAAADWAwAAc21hbGxfemlw"
    "L3ZlcnNpb25QSwECAAAAAAgIAAAAAAAAdQj98igAAAAoAAAAIAAAAAAAAAAAAAAAAABSBAAAc21hbGxfemlwLy5kYXRhL3Nlcmlh"
    "bGl6YXRpb25faWRQSwYGLAAAAAAAAAAeAy0AAAAAAAAAAAAIAAAAAAAAAAgAAAAAAAAAGwIAAAAAAAD4BAAAAAAAAFBLBgcAAAAA"
    "EwcAAAAAAAABAAAAUEsFBgAAAAAIAAgAGwIAAPgEAAAAAA=="
)
TORCH_LEGACY_KEYS = ("94108055964208", "94108055964320")


def _small_state(keys):
    return collections.OrderedDict(
        w=T.Tensor.from_array(np.arange(6, dtype="float32").reshape(2, 3), keys[0]),
        b=T.Tensor.from_array(np.ones(3, "float16"), keys[1]),
    )


def _check_small(state):
    assert list(state) == ["w", "b"]
    np.testing.assert_array_equal(state["w"], np.arange(6, dtype="float32").reshape(2, 3))
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["b"], np.ones(3, "float16"))
    assert state["b"].dtype == np.float16


def test_writer_matches_torch_bytes():
    assert T.legacy_bytes(_small_state(TORCH_LEGACY_KEYS)) == TORCH_LEGACY_SMALL
    with zipfile.ZipFile(io.BytesIO(TORCH_ZIP_SMALL)) as archive:
        assert T.data_pkl(_small_state(("0", "1")))[0] == archive.read("small_zip/data.pkl")


@pytest.mark.parametrize("blob", [TORCH_LEGACY_SMALL, TORCH_ZIP_SMALL], ids=["legacy", "zip"])
def test_reads_files_written_by_torch(tmp_path, blob):
    path = tmp_path / "small.pth"
    path.write_bytes(blob)
    _check_small(read_torch_state_dict(path))


def _varied_state():
    """Dtypes, a scalar, shared storage, a non-contiguous view, a storage offset, a Parameter and an empty tensor."""
    rng = np.random.default_rng(0)
    base = T.Storage(np.arange(60, dtype="float32"), "base")
    return collections.OrderedDict(
        [
            ("conv.weight", T.Tensor.from_array(rng.standard_normal((4, 3, 3, 3)).astype("float32"), "k0")),
            ("half", T.Tensor.from_array(rng.standard_normal(7).astype("float16"), "k1")),
            ("long", T.Tensor.from_array(np.array(123, "int64"), "k2")),
            ("base", T.Tensor(base, 0, (3, 4, 5), (20, 5, 1))),
            ("transposed", T.Tensor(base, 0, (5, 4, 3), (1, 5, 20))),
            ("offset", T.Tensor(base, 30, (2, 5), (5, 1))),
            ("param", T.Tensor.from_array(rng.standard_normal((2, 3)).astype("float32"), "k3", parameter=True)),
            ("double", T.Tensor.from_array(rng.standard_normal(2), "k4")),
            ("empty", T.Tensor.from_array(np.zeros((0, 3), "float32"), "k5")),
        ]
    )


@pytest.mark.parametrize("save", [T.save_legacy, T.save_zip], ids=["legacy", "zip"])
def test_roundtrip_dtypes_views_offsets(tmp_path, save):
    state = _varied_state()
    path = tmp_path / "varied.pth"
    save(state, path)
    read = read_torch_state_dict(path)
    assert list(read) == list(state)
    for key, tensor in state.items():
        expected = tensor.expected()
        assert read[key].dtype == expected.dtype, key
        assert read[key].shape == expected.shape, key
        np.testing.assert_array_equal(read[key], expected, err_msg=key)
    np.testing.assert_array_equal(read["transposed"], np.arange(60, dtype="float32").reshape(3, 4, 5).T)
    np.testing.assert_array_equal(read["offset"], np.arange(30, 40, dtype="float32").reshape(2, 5))
    assert read["transposed"].flags.c_contiguous and read["transposed"].flags.writeable


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_unwraps_checkpoints_and_strips_module(tmp_path, wrapper):
    inner = collections.OrderedDict(
        [("module.a", T.Tensor.from_array(np.ones(2, "float32"), "0")),
         ("module.b", T.Tensor.from_array(np.zeros(1, "int64"), "1"))]
    )
    path = tmp_path / "ckpt.pth"
    T.save_zip({wrapper: inner, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    read = read_torch_state_dict(path)
    assert list(read) == ["a", "b"]
    np.testing.assert_array_equal(read["a"], np.ones(2, "float32"))


def test_safetensors(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file({"module.x": np.arange(4, dtype="float16"), "module.y": np.eye(2, dtype="float32")}, str(path))
    read = read_torch_state_dict(path)
    assert sorted(read) == ["x", "y"] and read["x"].dtype == np.float16
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(TorchFileError, match="safetensors"):
        read_torch_state_dict(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _malicious_legacy(path, payload):
    with open(path, "wb") as f:
        for header in (T.MAGIC_NUMBER, T.PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(payload, f, protocol=2)


@pytest.mark.parametrize("container", ["legacy", "zip", "bare"])
def test_malicious_pickle_is_refused_without_running(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = collections.OrderedDict(weight=_Exploit(f"touch {marker}"))
    path = tmp_path / "evil.pth"
    if container == "legacy":
        _malicious_legacy(path, payload)
    elif container == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
    else:  # a plain pickle, as torch.load(weights_only=False) would run it
        path.write_bytes(pickle.dumps(_Exploit(f"touch {marker}"), protocol=2))
    with pytest.raises(ForbiddenGlobalError) as info:
        read_torch_state_dict(path)
    # os.system pickles as posix.system (nt.system on Windows); the message names it and the file
    assert f"'{os.system.__module__}.system'" in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()
    assert isinstance(info.value, ValueError)


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "eval.pth"
    _malicious_legacy(path, {"w": __import__("builtins").eval})
    with pytest.raises(ForbiddenGlobalError, match=r"'__builtin__\.eval'"):
        read_torch_state_dict(path)
    # a torch name that is not a state dict's (torch.load would run code) is refused too
    blob = pickle.GLOBAL + b"torch\nload\n" + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.STOP
    with zipfile.ZipFile(tmp_path / "load.pth", "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + blob)
    with pytest.raises(ForbiddenGlobalError, match=r"'torch\.load'"):
        read_torch_state_dict(tmp_path / "load.pth")


def test_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_torch_state_dict(tmp_path / "missing.pth")


@pytest.mark.parametrize(
    "content",
    [b"hello, this is a text file\n", b"", pickle.dumps({"a": 1}, protocol=2), bytes(range(256))],
    ids=["text", "empty", "plain-pickle", "binary"],
)
def test_not_a_torch_file(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(TorchFileError, match="not a PyTorch file"):
        read_torch_state_dict(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "x.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(TorchFileError, match="not a torch file"):
        read_torch_state_dict(path)


def test_truncated_legacy(tmp_path):
    blob = T.legacy_bytes(_varied_state())
    for cut in (len(blob) - 3, len(blob) - 300, 200, 40):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(blob[:cut])
        with pytest.raises(TorchFileError, match="truncated"):
            read_torch_state_dict(path)


def test_truncated_zip(tmp_path):
    full = tmp_path / "full.pth"
    T.save_zip(_varied_state(), full)
    blob = full.read_bytes()
    for cut in (len(blob) - 10, len(blob) // 2):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(blob[:cut])
        with pytest.raises(TorchFileError):
            read_torch_state_dict(path)
    # a storage member shorter than the pickle says
    path = tmp_path / "short.pth"
    with zipfile.ZipFile(full) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[:-4] if name == "archive/data/k0" else data)
    with pytest.raises(TorchFileError, match="truncated or corrupt"):
        read_torch_state_dict(path)


def test_out_of_bounds_view_is_refused(tmp_path):
    storage = T.Storage(np.arange(6, dtype="float32"), "0")
    path = tmp_path / "oob.pth"
    T.save_zip({"w": T.Tensor(storage, 4, (2, 3), (3, 1))}, path)
    with pytest.raises(TorchFileError, match="corrupt"):
        read_torch_state_dict(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    T.save_zip([T.Tensor.from_array(np.ones(2, "float32"), "0")], path)
    with pytest.raises(TorchFileError, match="not a state dict"):
        read_torch_state_dict(path)
