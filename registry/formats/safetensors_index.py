"""Read and validate the header of a ``.safetensors`` file: each tensor's name, dtype, shape and
byte range.

The format is an 8-byte little-endian header length, a JSON header, then the tensor bytes.
We parse the header ourselves because the ``safetensors`` package does not expose the byte
offsets, and we need them to hash every tensor in the same pass that stores the file. We refuse
what the ``safetensors`` library refuses (its ``Metadata::validate``), so a file we record is a
file that loads: a known dtype, a byte range of exactly shape x dtype size, ranges that tile
the data with no overlap, no gap and nothing after the last tensor, a sane header size.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

# The safetensors library's own bound (MAX_HEADER_SIZE): the header is read whole into memory.
MAX_HEADER = 100_000_000

# Bits per element, as the safetensors library knows them (0.8: Dtype::bitsize).
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}


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
    """Return the tensors of a safetensors file in file order, refusing a malformed one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsError("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise SafetensorsError(f"header length {n} is over the {MAX_HEADER}-byte limit")
        if 8 + n > size:
            raise SafetensorsError(f"header length {n} does not fit the file ({size} bytes)")
        raw = f.read(n)
    return parse_header(raw, data_size=size - 8 - n, base=8 + n)


def parse_header(raw: bytes, *, data_size: int, base: int = 0) -> list[TensorRange]:
    """Validate a header's JSON against ``data_size`` bytes of tensor data; offsets from ``base``."""
    if not raw.startswith(b"{"):
        raise SafetensorsError("header is not a JSON object")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise SafetensorsError(f"header is not JSON ({_first_line(exc)})") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    _check_metadata(header.get("__metadata__"))
    tensors = [_tensor(name, info, base) for name, info in header.items() if name != "__metadata__"]
    tensors.sort(key=lambda t: (t.begin, t.end))
    _check_tiling(tensors, base, data_size)
    return tensors


def _check_metadata(meta: object) -> None:
    if meta is None:
        return
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SafetensorsError("__metadata__ must map names to strings")


def _tensor(name: str, info: object, base: int) -> TensorRange:
    try:
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]  # type: ignore[index]
    except (KeyError, TypeError):
        raise SafetensorsError(f"tensor {_show(name)} has a malformed entry "
                               "(it needs dtype, shape and data_offsets)") from None
    if dtype not in DTYPE_BITS:
        raise SafetensorsError(f"tensor {_show(name)} has an unknown dtype {_show(dtype)}")
    if not _naturals(shape):
        raise SafetensorsError(f"tensor {_show(name)} has a malformed shape (a list of sizes >= 0)")
    if not (_naturals(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        raise SafetensorsError(f"tensor {_show(name)} has malformed data_offsets ([begin, end], begin <= end)")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8:
        raise SafetensorsError(f"tensor {_show(name)} ends inside a byte ({dtype} x {list(shape)})")
    if bits // 8 != offsets[1] - offsets[0]:
        raise SafetensorsError(f"tensor {_show(name)} is {dtype} x {list(shape)} = {bits // 8} bytes "
                               f"but its range holds {offsets[1] - offsets[0]}")
    return TensorRange(name=name, dtype=dtype, shape=tuple(shape), begin=base + offsets[0], end=base + offsets[1])


def _check_tiling(tensors: list[TensorRange], base: int, data_size: int) -> None:
    """Ranges in order must each start where the one before ended and end at the file's end."""
    at, before = base, ""  # the name of the tensor before
    for t in tensors:
        if t.begin < at:
            raise SafetensorsError(f"tensors {_show(before)} and {_show(t.name)} overlap")
        if t.begin > at:
            raise SafetensorsError(f"gap of {t.begin - at} bytes before tensor {_show(t.name)}")
        at, before = t.end, t.name
    if at > base + data_size:
        raise SafetensorsError(f"tensor {_show(before)} ends {at - base - data_size} bytes "
                               "past the end of the file")
    if at < base + data_size:
        raise SafetensorsError(f"{base + data_size - at} bytes after the last tensor "
                               "(the data is not fully covered by the header)")


def _naturals(value: object) -> bool:
    # bool is an int in Python, not in JSON's sense of a size
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _show(value: object, limit: int = 80) -> str:
    """A value for a one-line message: repr escapes control characters; long ones are cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
