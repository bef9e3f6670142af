"""Tensor digests: BLAKE3 now, SHA-256 before; a diff across the change compares like with like."""

from __future__ import annotations

import hashlib

import numpy as np

from registry.formats import tensor_digests
from registry.formats.safetensors_index import read_index
from registry.models import Tensor
from registry.store.files.blobs import BlobStore
from registry.versions import diffing
from tests import helpers


def _as_pushed_before(data: dict[str, np.ndarray]) -> dict[str, str]:
    """The index an older Cellar recorded: SHA-256 per tensor."""
    return {name: "sha256:" + hashlib.sha256(arr.tobytes()).hexdigest() for name, arr in data.items()}


def _tensors(index, digests: dict[str, str]) -> list[Tensor]:
    return [Tensor(name=t.name, dtype=t.dtype, shape=list(t.shape), digest=digests[t.name]) for t in index]


def test_comparing_only_like_with_like():
    assert tensor_digests.same_bytes("blake3:ab", "blake3:ab") is True
    assert tensor_digests.same_bytes("blake3:ab", "blake3:cd") is False
    assert tensor_digests.same_bytes("sha256:ab", "blake3:ab") is None


def test_a_diff_across_the_algorithm_change_names_only_the_changed_tensor(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    store.create()
    old_data = helpers.tensors()
    new_data = helpers.tensors(layer0__bias=np.ones(8, np.float32))
    old = store.ingest(helpers.write_safetensors(tmp_path / "old/m.safetensors", old_data))
    new_src = helpers.write_safetensors(tmp_path / "new/m.safetensors", new_data)
    new = store.ingest(new_src, tensors=read_index(new_src))
    index = read_index(new_src)
    recorded_old = _as_pushed_before(old_data)  # what the database holds for the old blob

    naive = diffing.tensor_changes(_tensors(index, recorded_old), _tensors(index, new.tensor_digests))
    assert len(naive.changed) == len(old_data)  # the trap: every tensor "changed"

    aligned = tensor_digests.upgraded(recorded_old, lambda: store.rehash_tensors(old.digest))
    assert tensor_digests.is_current(aligned)
    changes = diffing.tensor_changes(_tensors(index, aligned), _tensors(index, new.tensor_digests))
    assert changes.changed == ["layer0.bias"] and changes.unchanged == len(old_data) - 1


def test_current_digests_are_not_recomputed():
    current = {"w": "blake3:" + "0" * 64}
    assert tensor_digests.upgraded(current, lambda: 1 / 0) is current
