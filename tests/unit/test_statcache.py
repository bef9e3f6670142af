"""The stat cache trusts an entry only for an unchanged, not-racy file."""

from __future__ import annotations

import os
import time

from registry.store.files.statcache import RACY_NS, StatCache

DIGEST = "sha256:" + "ab" * 32


def aged(path, seconds=60):
    old = time.time_ns() - seconds * 10**9
    os.utime(path, ns=(old, old))


def remember(cache_file, path):
    cache = StatCache(cache_file)
    cache.record(path, os.stat(path), DIGEST)
    cache.save()
    return StatCache(cache_file)


def test_unchanged_old_file_is_trusted_across_instances(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    aged(f)
    assert remember(tmp_path / "cache.json", f).lookup(f) == DIGEST


def test_racy_entry_is_not_trusted(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")  # mtime == now: could change again within the same tick
    assert remember(tmp_path / "cache.json", f).lookup(f) is None


def test_racy_window_is_measured_from_recording(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    aged(f, seconds=RACY_NS // 10**9 + 1)
    assert remember(tmp_path / "cache.json", f).lookup(f) == DIGEST


def test_changed_size_mtime_or_inode_is_not_trusted(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    aged(f)
    cache = remember(tmp_path / "cache.json", f)
    f.write_bytes(b"weights, longer")
    aged(f)
    assert cache.lookup(f) is None
    f.unlink()
    f.write_bytes(b"weights")  # same size, new inode (or ctime)
    aged(f)
    assert cache.lookup(f) is None


def test_file_changed_during_read_is_not_recorded(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    aged(f)
    before = os.stat(f)
    f.write_bytes(b"changed!")
    cache = StatCache(tmp_path / "cache.json")
    cache.record(f, before, DIGEST)
    assert cache.lookup(f) is None


def test_corrupt_cache_file_is_ignored(tmp_path):
    (tmp_path / "cache.json").write_text("{not json")
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    assert StatCache(tmp_path / "cache.json").lookup(f) is None


def test_unwritable_cache_is_not_an_error(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    cache = StatCache(tmp_path / "missing-dir" / "cache.json")
    cache.record(f, os.stat(f), DIGEST)
    cache.save()  # a cache: losing it costs a re-read, never a push
    assert not (tmp_path / "missing-dir").exists()
