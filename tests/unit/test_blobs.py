"""The blob store: one-pass hashing copy, verified, atomic, read-only; temp files swept."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from registry.errors import CorruptBlob, NotFound, StorageError
from registry.safetensors_index import read_index
from registry.store import blobs as blobs_mod
from registry.store.blobs import BlobStore, hash_file
from tests import helpers


@pytest.fixture
def store(tmp_path):
    s = BlobStore(tmp_path / "blobs")
    s.create()
    return s


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, blobs_mod.CHUNK - 1, blobs_mod.CHUNK, 3 * blobs_mod.CHUNK + 5])
def test_ingest_stores_exact_bytes_read_only(store, tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    got = store.ingest(src)
    assert got.digest == sha(data) and got.size == size and got.written
    final = store.path(got.digest)
    assert final.read_bytes() == data
    assert stat.S_IMODE(final.stat().st_mode) == 0o444
    assert list(store.tmp.iterdir()) == []


def test_ingesting_again_is_a_noop(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"same")
    assert store.ingest(src).written
    assert not store.ingest(src).written
    assert list(store.tmp.iterdir()) == []


def _damage(path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.chmod(path, 0o444)


@pytest.mark.parametrize(("damaged", "counted"), [(b"go", True), (b"gxod", False)])
def test_ingest_repairs_a_damaged_blob_at_the_final_path(store, tmp_path, damaged, counted):
    src = tmp_path / "src.bin"
    src.write_bytes(b"good")
    final = store.path(store.ingest(src).digest)
    _damage(final, damaged)
    assert store.ingest(src).written is counted  # new bytes: judged by the cheap size check
    assert final.read_bytes() == b"good" and stat.S_IMODE(final.stat().st_mode) == 0o444
    assert list(store.tmp.iterdir()) == []


def test_has_with_a_size_refuses_a_truncated_blob(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"good")
    digest = store.ingest(src).digest
    assert store.has(digest, size=4)
    _damage(store.path(digest), b"go")
    assert store.has(digest) and not store.has(digest, size=4)
    assert not store.has(sha(b"other"), size=4)


def test_writeback_path_with_small_window(store, tmp_path, monkeypatch):
    # Exercise the sync_file_range branch with many windows on a small file.
    monkeypatch.setattr(blobs_mod, "CHUNK", 4096)
    monkeypatch.setattr(blobs_mod, "WRITEBACK_EVERY", 3 * 4096)
    data = os.urandom(100_000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    got = store.ingest(src)
    assert store.path(got.digest).read_bytes() == data


def test_tensor_digests_while_copying(store, tmp_path, monkeypatch):
    monkeypatch.setattr(blobs_mod, "CHUNK", 100)  # tensors straddle chunk boundaries
    data = helpers.tensors()
    src = helpers.write_safetensors(tmp_path / "m.safetensors", data)
    index = read_index(src)
    got = store.ingest(src, tensors=index)
    expected = {name: sha(arr.tobytes()) for name, arr in data.items()}
    assert got.tensor_digests == expected
    assert hash_file(src, index).tensor_digests == expected
    assert hash_file(src).digest == got.digest


def test_progress_reports_every_byte(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(blobs_mod.CHUNK * 2 + 7))
    seen = []
    store.ingest(src, progress=seen.append)
    assert sum(seen) == src.stat().st_size


def test_a_write_error_leaves_no_temp_file(store, tmp_path, monkeypatch):
    def broken(self, offset, buf):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobs_mod._Writer, "feed", broken)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(blobs_mod.CHUNK * 3))
    with pytest.raises(StorageError, match="Input/output error"):
        store.ingest(src)
    assert list(store.tmp.iterdir()) == []
    assert not list((store.root / "sha256").rglob("*"))


def test_verify_finds_corruption(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"good bytes")
    digest = store.ingest(src).digest
    store.verify(digest)
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"evil bytes")
    with pytest.raises(CorruptBlob):
        store.verify(digest)
    path.unlink()
    with pytest.raises(NotFound):
        store.verify(digest)


@pytest.mark.parametrize("digest", ["md5:abc", "sha256:" + "0" * 63, "sha256:../" + "0" * 61,
                                    "sha256:" + "G" * 64])
def test_malformed_digests_never_become_paths(store, digest):
    with pytest.raises(StorageError):
        store.path(digest)


def test_sweep_removes_temps_of_dead_processes_only(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = store.tmp / f"ingest-{dead.stdout.strip()}-abc"
    stale_cache = store.tmp / f"statcache-{dead.stdout.strip()}-123"
    mine = store.tmp / f"ingest-{os.getpid()}-def"
    odd = store.tmp / "ingest-notapid-x"
    for p in (stale, stale_cache, mine, odd):
        p.write_bytes(b"partial")
    assert store.sweep_tmp() == 3
    assert [p.name for p in store.tmp.iterdir()] == [mine.name]
