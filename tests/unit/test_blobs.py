"""The blob store: one read and one SHA-256 pass per byte, a kernel copy, dedup before writing,
damaged blobs repaired, atomic and read-only; temp files swept."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys

import blake3
import numpy as np
import pytest

from registry.errors import CorruptBlob, NoSpace, NotFound, StorageError
from registry.formats.safetensors_index import read_index
from registry.store.files import blobs as blobs_mod
from registry.store.files import streams
from registry.store.files.blobs import BlobStore, hash_file
from tests import helpers


def small_chunks(monkeypatch, size: int) -> None:
    """Chunks of ``size`` bytes: files "large" (over one chunk) and tensors straddling chunks."""
    monkeypatch.setattr(blobs_mod, "CHUNK", size)
    monkeypatch.setattr(streams, "CHUNK", size)


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
    small_chunks(monkeypatch, 4096)
    monkeypatch.setattr(streams, "WRITEBACK_EVERY", 3 * 4096)
    data = os.urandom(100_000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    got = store.ingest(src)
    assert store.path(got.digest).read_bytes() == data


def b3(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


@pytest.mark.parametrize("chunk", [100, 1 << 20])  # tensors straddle chunks / one inline read
def test_one_read_gives_the_blob_sha256_and_each_tensors_blake3(store, tmp_path, monkeypatch, chunk):
    small_chunks(monkeypatch, chunk)
    data = helpers.tensors()
    src = helpers.write_safetensors(tmp_path / "m.safetensors", data)
    index = read_index(src)
    got = store.ingest(src, tensors=index)
    expected = {name: b3(arr.tobytes()) for name, arr in data.items()}
    assert got.digest == sha(src.read_bytes())
    assert got.tensor_digests == expected
    assert hash_file(src, index).tensor_digests == expected
    assert hash_file(src).digest == got.digest
    assert store.rehash_tensors(got.digest) == expected


def test_each_byte_is_hashed_once_with_sha256(store, tmp_path, monkeypatch):
    """The whole file goes through SHA-256 once; the tensors through BLAKE3 only."""
    small_chunks(monkeypatch, 4096)
    data = helpers.tensors(embed__weight=np.zeros((64, 64), np.float32))
    src = helpers.write_safetensors(tmp_path / "m.safetensors", data)
    fed = []
    real = hashlib.sha256

    class Counting:
        def __init__(self, *a):
            self._h = real(*a)

        def update(self, b):
            fed.append(len(b))
            self._h.update(b)

        def hexdigest(self):
            return self._h.hexdigest()

    monkeypatch.setattr(blobs_mod.hashlib, "sha256", Counting)
    store.ingest(src, tensors=read_index(src))
    assert sum(fed) == src.stat().st_size
def test_progress_reports_every_byte(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(blobs_mod.CHUNK * 2 + 7))
    seen = []
    store.ingest(src, progress=seen.append)
    assert sum(seen) == src.stat().st_size


def test_a_write_error_leaves_no_temp_file(store, tmp_path, monkeypatch):
    def broken(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobs_mod.os, "copy_file_range", broken)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(blobs_mod.CHUNK * 3))
    with pytest.raises(StorageError, match="Input/output error"):
        store.ingest(src)
    assert list(store.tmp.iterdir()) == []
    assert not list((store.root / "sha256").rglob("*"))


def test_no_space_is_a_one_line_error(store, tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blobs_mod.os, "copy_file_range", full)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(blobs_mod.CHUNK * 2))
    with pytest.raises(NoSpace, match="free some space"):
        store.ingest(src)
    assert list(store.tmp.iterdir()) == []


@pytest.mark.parametrize("without", [["copy_file_range"], ["copy_file_range", "sendfile"]])
def test_falls_back_when_the_kernel_cannot_copy(store, tmp_path, monkeypatch, without):
    def cross_device(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    for name in without:
        monkeypatch.setattr(blobs_mod.os, name, cross_device)
    data = os.urandom(blobs_mod.CHUNK * 2 + 12345)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    got = store.ingest(src)
    assert got.digest == sha(data) and store.path(got.digest).read_bytes() == data


# --- dedup before writing -----------------------------------------------------------------


@pytest.fixture
def big(tmp_path, monkeypatch):
    """A "large" file (over one chunk, so the hash-first path applies) and a copy of it."""
    small_chunks(monkeypatch, 4096)
    data = os.urandom(100_000)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "copy.bin").write_bytes(data)  # same bytes, another inode: no stat-cache hit
    return data, tmp_path / "a.bin", tmp_path / "copy.bin"


def _no_writes(monkeypatch):
    def refuse(self, fill):
        raise AssertionError("a temp file was created")

    monkeypatch.setattr(BlobStore, "_write", refuse)


def test_a_copy_of_a_stored_blob_is_hashed_and_nothing_is_written(store, big, monkeypatch):
    _, src, copy = big
    first = store.ingest(src)
    final = store.path(first.digest)
    before = final.stat()
    _no_writes(monkeypatch)
    again = BlobStore(store.root).ingest(copy)  # another process: the stamp is on disk
    assert again.digest == first.digest and not again.written
    after = final.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (before.st_ino, before.st_mtime_ns,
                                                                   before.st_ctime_ns)


def test_a_stored_blob_is_read_once_when_its_stamp_holds(store, big, monkeypatch):
    _, src, copy = big
    store.ingest(src)
    reads = []
    monkeypatch.setattr(blobs_mod, "hash_file", lambda *a: reads.append(a) or pytest.fail("re-hashed"))
    assert not store.ingest(copy).written and reads == []


def test_a_blob_stored_before_stamps_existed_is_verified_then_reused(store, big, monkeypatch):
    _, src, copy = big
    digest = store.ingest(src).digest
    (store.root / "stamps.json").unlink()
    store = BlobStore(store.root)
    store.stamps.record(src, os.stat(src), digest)  # the size hint, as if from a user's file
    _no_writes(monkeypatch)
    assert not store.ingest(copy).written
    assert BlobStore(store.root).stamps.lookup(store.path(digest)) == digest


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_blob_is_repaired_never_reused(store, big, damage):
    data, src, copy = big
    final = store.path(store.ingest(src).digest)
    os.chmod(final, 0o644)
    if damage == "flip":
        with open(final, "r+b") as f:
            f.seek(5000)
            f.write(bytes([data[5000] ^ 1]))
    else:
        os.truncate(final, 50_000)
    os.chmod(final, 0o444)
    got = store.ingest(copy)
    assert final.read_bytes() == data
    assert got.written is (damage == "truncate")  # new bytes: judged by the size
    assert stat.S_IMODE(final.stat().st_mode) == 0o444 and list(store.tmp.iterdir()) == []
    store.check(got.digest)


def test_a_damaged_blob_whose_timestamps_were_put_back_is_still_caught(store, big):
    data, src, copy = big
    final = store.path(store.ingest(src).digest)
    st = final.stat()
    os.chmod(final, 0o644)
    with open(final, "r+b") as f:
        f.write(b"\0" * 16)
    os.chmod(final, 0o444)
    os.utime(final, ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime cannot be put back
    store.ingest(copy)
    assert final.read_bytes() == data


def test_other_bytes_of_the_same_size_are_stored(store, big):
    data, src, copy = big
    store.ingest(src)
    other = bytes(reversed(data))
    copy.write_bytes(other)
    got = store.ingest(copy)
    assert got.written and got.digest == sha(other) and store.path(got.digest).read_bytes() == other


def test_a_file_of_equal_size_but_other_bytes_is_not_hashed_twice(store, big, monkeypatch):
    """Shards of one model often share a size: only sampled bytes equal to a blob's send a
    file down the hash-first path (whose wrong guess costs a second read)."""
    data, src, copy = big
    monkeypatch.setattr(blobs_mod, "SAMPLE", 1024)
    store.ingest(src)
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # differs in the last sample only
    hashed_first = []
    real = blobs_mod.hash_fd
    monkeypatch.setattr(blobs_mod, "hash_fd", lambda *a: hashed_first.append(1) or real(*a))
    assert store.ingest(copy).written and hashed_first == []
    copy.write_bytes(data[:5000] + bytes([data[5000] ^ 1]) + data[5001:])  # not sampled: guessed wrong
    assert store.ingest(copy).written and hashed_first == [1]


def test_a_small_file_already_stored_writes_nothing(store, tmp_path, monkeypatch):
    (tmp_path / "p1").write_text("prompt")
    (tmp_path / "p2").write_text("prompt")
    store.ingest(tmp_path / "p1")
    _no_writes(monkeypatch)
    assert not store.ingest(tmp_path / "p2").written


def test_verify_finds_corruption(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"good bytes")
    digest = store.ingest(src).digest
    store.check(digest)
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"evil bytes")
    with pytest.raises(CorruptBlob):
        store.check(digest)
    path.unlink()
    with pytest.raises(NotFound):
        store.check(digest)


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
