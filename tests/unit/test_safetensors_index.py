"""The safetensors header reader: offsets match the safetensors package, bad headers are refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors import SafetensorError, safe_open

from registry.formats.safetensors_index import DTYPE_BITS, SafetensorsError, read_index
from tests import helpers


def test_offsets_cover_each_tensors_bytes(tmp_path):
    data = helpers.tensors()
    path = helpers.write_safetensors(tmp_path / "m.safetensors", data)
    raw = path.read_bytes()
    index = read_index(path)
    assert sorted(t.name for t in index) == sorted(data)
    for t in index:
        assert raw[t.begin:t.end] == np.ascontiguousarray(data[t.name]).tobytes()
        assert list(t.shape) == list(data[t.name].shape)
    assert {t.name: t.dtype for t in index}["head.weight"] == "F16"


def _write(path, header: object, body: bytes = b"", length: int | None = None):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + body)
    return path


U8 = {"dtype": "U8", "shape": [4]}


@pytest.mark.parametrize("header,body,length,match", [
    (b"", b"", None, "not a JSON object"),
    (b"{not json", b"", None, "not JSON"),
    ([1, 2], b"", None, "not a JSON object"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"", None, "malformed entry"),
    ({"a": "F32"}, b"", None, "malformed entry"),
    ({"a": {"dtype": "Q4_K", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "unknown dtype 'Q4_K'"),
    ({"a": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 64]}}, b"\0" * 64, None,
     r"F32 x \[1000, 1000\] = 4000000 bytes but its range holds 64"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2]}}, b"\0" * 2, None, "its range holds 2"),
    ({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\0" * 2, None, "inside a byte"),
    ({"a": {"dtype": "U8", "shape": [-2], "data_offsets": [0, 2]}}, b"\0" * 2, None, "malformed shape"),
    ({"a": {"dtype": "U8", "shape": [2.0], "data_offsets": [0, 2]}}, b"\0" * 2, None, "malformed shape"),
    ({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, b"\0", None, "malformed shape"),
    ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 0]}}, b"\0" * 4, None, "malformed data_offsets"),
    ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4, 8]}}, b"\0" * 8, None, "malformed data_offsets"),
    ({"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, b"\0" * 4, None,
     "'a' ends 396 bytes past the end of the file"),
    ({"a": {**U8, "data_offsets": [0, 4]}, "b": {**U8, "data_offsets": [2, 6]}}, b"\0" * 6, None,
     "'a' and 'b' overlap"),
    ({"a": {**U8, "data_offsets": [0, 4]}, "b": {**U8, "data_offsets": [6, 10]}}, b"\0" * 10, None,
     "gap of 2 bytes before tensor 'b'"),
    ({"a": {**U8, "data_offsets": [2, 6]}}, b"\0" * 6, None, "gap of 2 bytes before tensor 'a'"),
    ({"a": {**U8, "data_offsets": [0, 4]}}, b"\0" * 7, None, "3 bytes after the last tensor"),
    ({}, b"\0", None, "1 bytes after the last tensor"),
    ({"__metadata__": {"format": 1}}, b"", None, "__metadata__"),
    ({}, b"", 1 << 40, "over the 100000000-byte limit"),
    ({}, b"", 1000, "does not fit the file"),
])
def test_bad_headers_are_refused_as_the_safetensors_library_does(tmp_path, header, body, length, match):
    path = _write(tmp_path / "bad.safetensors", header, body, length)
    with pytest.raises(SafetensorsError, match=match) as caught:
        read_index(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(SafetensorError), safe_open(str(path), "np"):  # the library refuses it too
        pass


@pytest.mark.parametrize("header,body", [
    ({}, b""),
    ({"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, b"\0" * 4),
    ({"z": {**U8, "data_offsets": [0, 4]}, "a": {"dtype": "F4", "shape": [2, 4], "data_offsets": [4, 8]}},
     b"\0" * 8),
    ({"e": {"dtype": "BF16", "shape": [0], "data_offsets": [0, 0]}, "f": {**U8, "data_offsets": [0, 4]}},
     b"\0" * 4),
    ({"__metadata__": {"format": "pt"}, "c": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
])
def test_what_the_library_accepts_is_accepted(tmp_path, header, body):
    path = _write(tmp_path / "ok.safetensors", header, body)
    with safe_open(str(path), "np"):
        pass
    assert [t.end - t.begin for t in read_index(path)] == sorted(
        v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")


def test_every_dtype_of_the_library_is_known(tmp_path):
    for dtype, bits in DTYPE_BITS.items():
        path = _write(tmp_path / f"{dtype}.safetensors",
                      {"t": {"dtype": dtype, "shape": [8], "data_offsets": [0, bits]}}, b"\0" * bits)
        with safe_open(str(path), "np"):
            pass
        assert read_index(path)[0].dtype == dtype


def test_a_hostile_tensor_name_is_escaped_in_the_message(tmp_path):
    path = _write(tmp_path / "bad.safetensors", {"evil\nname" + "x" * 500: {"dtype": "NOPE", "shape": [],
                                                                            "data_offsets": [0, 0]}})
    with pytest.raises(SafetensorsError) as caught:
        read_index(path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_too_short(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="shorter"):
        read_index(path)


def test_metadata_entry_is_not_a_tensor(tmp_path):
    path = _write(tmp_path / "m.safetensors", {"__metadata__": {"format": "pt"},
                                               "w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}},
                  b"ab")
    assert [t.name for t in read_index(path)] == ["w"]
