"""Per-tensor digests: ``blake3:<hex>`` now, ``sha256:<hex>`` in versions pushed before.

Why BLAKE3 and not SHA-256: a push already hashes every byte with SHA-256 for the blob digest,
and SHA-256 cannot give a sub-range's digest from the whole file's, so per-tensor SHA-256 was a
second full pass (1.4 GB/s a core here, against 2.5 GB/s for BLAKE3 on one core). BLAKE3 is a
cryptographic hash: finding two tensors with one digest is as infeasible as for SHA-256, so the
only use of these digests, telling which tensors changed between two versions, keeps its
guarantee even against a hostile weights author. A non-cryptographic hash (xxh3) would be
faster still but would let such an author hide a changed tensor from a diff.

Digests of different algorithms cannot be compared: ``same_bytes`` says so (None) instead of
calling every tensor changed, and ``BlobStore.rehash_tensors`` recomputes a stored blob's
tensors with the current algorithm when an old and a new version meet in a diff.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

ALGORITHM = "blake3"


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


def new() -> Hasher:
    """A fresh hasher of the current algorithm."""
    import blake3  # a compiled module; loaded on the first safetensors file, not at start-up

    return blake3.blake3()


def finish(hasher: Hasher) -> str:
    return f"{ALGORITHM}:{hasher.hexdigest()}"


def algorithm(digest: str) -> str:
    return digest.partition(":")[0]


def same_bytes(a: str, b: str) -> bool | None:
    """True/False when both digests use one algorithm; None when they cannot be compared."""
    if algorithm(a) != algorithm(b):
        return None
    return a == b


def is_current(digests: dict[str, str]) -> bool:
    """True if every digest of a tensor index uses the current algorithm."""
    return all(algorithm(d) == ALGORITHM for d in digests.values())



def upgraded(digests: dict[str, str], rehash: Callable[[], dict[str, str]]) -> dict[str, str]:
    """A blob's tensor digests in the current algorithm: as given when they are, else from
    ``rehash`` (``BlobStore.rehash_tensors``: one read of a blob indexed by an older Cellar)."""
    return digests if is_current(digests) else rehash()
