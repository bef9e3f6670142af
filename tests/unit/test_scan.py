"""Blob store scanning on real files: each kind of damage is found and named by digest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from registry.models.upkeep import ProblemKind
from registry.store.files import scan
from registry.store.files.blobs import BlobStore


def _put(store: BlobStore, tmp_path: Path, data: bytes) -> str:
    src = tmp_path / f"src-{os.urandom(4).hex()}"
    src.write_bytes(data)
    return store.ingest(src).digest


def _damage(path: Path, fn) -> None:
    os.chmod(path, 0o644)  # blobs are read-only; the "disk" does not care
    fn(path)


@pytest.fixture
def four(store, tmp_path):
    """Four recorded blobs of different sizes (one over a hashing chunk), all referenced."""
    sizes = [10, 5000, scan.CHUNK + 123, 70_000]
    digests = [_put(store, tmp_path, os.urandom(n)) for n in sizes]
    return dict(zip(digests, sizes))


def _kinds(result) -> dict[str, ProblemKind]:
    return {p.digest or p.path: p.kind for p in result.problems}


def test_intact_store_has_no_problems(store, four):
    ticks = []
    result = scan.scan(store, recorded=four, progress=ticks.append)
    assert result.problems == []
    assert result.blobs_checked == 4
    assert result.bytes_hashed == sum(four.values()) == sum(ticks)


def test_flipped_byte_is_corrupt(store, four):
    victim = max(four, key=four.get)  # the large one: the flip is in the second chunk
    def flip(p: Path):
        data = bytearray(p.read_bytes())
        data[scan.CHUNK + 7] ^= 0x01
        p.write_bytes(bytes(data))
    _damage(store.path(victim), flip)
    result = scan.scan(store, recorded=four)
    assert _kinds(result) == {victim: ProblemKind.CORRUPT}
    assert result.problems[0].damage


def test_truncated_blob(store, four):
    victim = sorted(four)[0]
    _damage(store.path(victim), lambda p: os.truncate(p, four[victim] - 1))
    [problem] = scan.scan(store, recorded=four).problems
    assert (problem.kind, problem.digest) == (ProblemKind.TRUNCATED, victim)
    assert (problem.expected_size, problem.actual_size) == (four[victim], four[victim] - 1)


def test_missing_blob(store, four):
    victim = sorted(four)[1]
    store.path(victim).unlink()
    result = scan.scan(store, recorded=four)
    assert _kinds(result) == {victim: ProblemKind.MISSING}
    assert result.blobs_checked == 3


def test_unreferenced_blob_is_a_notice_not_damage(store, four, tmp_path):
    extra = _put(store, tmp_path, b"left behind by a deleted version")
    result = scan.scan(store, recorded=four, referenced=set(four))
    [problem] = result.problems
    assert (problem.kind, problem.digest, problem.damage) == (ProblemKind.UNREFERENCED, extra, False)


def test_stray_file_in_the_store(store, four):
    stray = store.root / "sha256" / "ab" / "not-a-digest"
    stray.parent.mkdir(exist_ok=True)
    stray.write_text("?")
    assert _kinds(scan.scan(store, recorded=four)) == {str(stray): ProblemKind.STRAY}


def test_all_at_once_single_worker_agrees_with_two(store, four, tmp_path):
    a, b, c, _ = sorted(four)
    _damage(store.path(a), lambda p: p.write_bytes(b"x" * four[a]))
    _damage(store.path(b), lambda p: os.truncate(p, 1))
    store.path(c).unlink()
    one = scan.scan(store, recorded=four, workers=1)
    two = scan.scan(store, recorded=four, workers=2)
    assert one.problems == two.problems
    assert _kinds(two) == {a: ProblemKind.CORRUPT, b: ProblemKind.TRUNCATED, c: ProblemKind.MISSING}


def test_name_versions(store, four):
    victim = sorted(four)[0]
    store.path(victim).unlink()
    problems = scan.name_versions(scan.scan(store, recorded=four).problems,
                                  {victim: ["bot@v2", "bot@v1"]})
    assert problems[0].versions == ["bot@v1", "bot@v2"]


def test_temp_files_know_whether_their_writer_lives(store):
    mine = store.tmp / f"ingest-{os.getpid()}-abc"
    dead = store.tmp / "ingest-999999999-abc"
    mine.write_text("x")
    dead.write_text("yy")
    found = {t.path.name: t for t in scan.list_temp_files(store)}
    assert found[mine.name].owner_alive and not found[dead.name].owner_alive
    assert found[dead.name].size == 2


def test_snapshot_check(store, tmp_path):
    from registry.deploy import snapshots

    prompt, weights = _put(store, tmp_path, b"hello\n"), _put(store, tmp_path, os.urandom(3000))
    record = {"weights": [{"path": "w/model.bin", "digest": weights, "size": 3000}],
              "prompts": [{"name": "system", "digest": prompt, "size": 6}]}
    folder = snapshots.materialise(tmp_path / "snaps", store, manifest_digest="sha256:" + "e" * 64, record=record)
    assert scan.check_snapshot(folder, record, store) == []
    os.chmod(folder, 0o755)
    os.chmod(folder / "prompts", 0o755)
    (folder / "prompts" / "system").unlink()
    (folder / "prompts" / "system").write_text("edited\n")  # a copy with other bytes
    (folder / "extra").write_text("?")
    os.chmod(folder / "w", 0o755)
    (folder / "w" / "model.bin").unlink()
    problems = {(p.digest, p.detail.split(" ")[0]) for p in scan.check_snapshot(folder, record, store)}
    assert problems == {(prompt, "its"), (weights, "missing"), (None, "a")}
