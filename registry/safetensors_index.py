"""Read the header of a ``.safetensors`` file: each tensor's name, dtype, shape and byte range.

The format is an 8-byte little-endian header length, a JSON header, then the tensor bytes.
We parse the header ourselves because the ``safetensors`` package does not expose the byte
offsets, and we need them to hash every tensor in the same pass that stores the file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class TensorRange:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute offsets in the file
    end: int


class SafetensorsError(ValueError):
    pass


def is_safetensors(path: str | Path) -> bool:
    return str(path).endswith(".safetensors")


def read_index(path: Path) -> list[TensorRange]:
    """Return the tensors of a safetensors file, checked against the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsError("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise SafetensorsError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    base = 8 + n
    tensors = [_tensor(name, info, base, size) for name, info in header.items() if name != "__metadata__"]
    tensors.sort(key=lambda t: t.begin)
    for a, b in zip(tensors, tensors[1:]):
        if b.begin < a.end:
            raise SafetensorsError(f"tensors {a.name!r} and {b.name!r} overlap")
    return tensors


def _tensor(name: str, info: object, base: int, size: int) -> TensorRange:
    try:
        dtype, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]  # type: ignore[index]
        shape = tuple(int(d) for d in shape)
        lo, hi = int(lo), int(hi)
    except (KeyError, TypeError, ValueError):
        raise SafetensorsError(f"tensor {name!r} has a malformed entry") from None
    if not (0 <= lo <= hi and base + hi <= size):
        raise SafetensorsError(f"tensor {name!r} points outside the file")
    return TensorRange(name=name, dtype=str(dtype), shape=shape, begin=base + lo, end=base + hi)
