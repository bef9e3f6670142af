"""The safetensors header reader: offsets match the safetensors package, bad headers are refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from registry.safetensors_index import SafetensorsError, read_index
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


@pytest.mark.parametrize("header,body,length,match", [
    (b"", b"", None, "not JSON"),
    (b"{not json", b"", None, "not JSON"),
    ([1, 2], b"", None, "not a JSON object"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"", None, "malformed"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}}, b"\0" * 4, None, "outside the file"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, None, "outside the file"),
    ({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
      "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6, None, "overlap"),
    ({}, b"", 1 << 40, "does not fit"),
])
def test_bad_headers_are_refused(tmp_path, header, body, length, match):
    path = _write(tmp_path / "bad.safetensors", header, body, length)
    with pytest.raises(SafetensorsError, match=match):
        read_index(path)


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
