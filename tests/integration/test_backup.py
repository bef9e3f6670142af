"""Backup and restore of a real registry (SQLite and PostgreSQL), also while pushes go on."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from registry.api import Registry
from registry.errors import CellarError, InvalidInput
from registry.store.files import scan
from registry.store.sql import Store, dump
from registry.upkeep import backup
from registry.versions import pushing
from tests import helpers
from tests.conftest import push_versions


def _open(path: Path, url: str, monkeypatch) -> Registry:
    monkeypatch.setenv("REGISTRY_HOME", str(path))
    monkeypatch.setenv("REGISTRY_DB_URL", url)
    return Registry.open(path)


def _recorded(store: Store) -> dict[str, int]:
    with store.read() as conn:
        return {d: n for d, n in conn.execute(text("SELECT digest, size FROM blobs"))}


def _assert_intact(reg: Registry) -> None:
    """Every recorded blob present with its bytes, and the audit chain whole."""
    result = scan.scan(reg.blobs, recorded=_recorded(reg.store))
    assert [p for p in result.problems if p.damage] == []
    assert reg.verify_audit().ok


def test_backup_restore_round_trip(reg, db_url, model_dir, tmp_path, target, monkeypatch):
    push_versions(reg, model_dir, "v1.0")
    dest = tmp_path / "backup"
    first = backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest)
    assert first.problems == [] and first.blobs_total == first.blobs_copied == 2
    assert first.blobs_linked == 0  # independent copies, though on the same filesystem
    assert (dest / backup.MANIFEST).is_file() and backup.verify_backup(dest) == []
    before = [v.model_dump() for v in reg.versions()]

    path, url = target
    restored = backup.restore(dest, home=path, db_url=url)
    shutil.copy(reg.home.path / "signing.key", path / "signing.key")  # Registry.restore does this
    assert restored.ok and restored.blobs_restored == 2
    with _open(path, url, monkeypatch) as again:
        assert [v.model_dump() for v in again.versions()] == before
        _assert_intact(again)
        for digest in _recorded(again.store):
            assert os.stat(again.blobs.path(digest)).st_ino != os.stat(dest / "blobs" / "sha256"
                                                                      / digest[7:9] / digest[9:]).st_ino
        push_versions(again, model_dir, "v1.1")  # the restored registry takes new work


def test_incremental_backup_copies_only_new_blobs(reg, model_dir, tmp_path):
    push_versions(reg, model_dir, "v1.0")
    dest = tmp_path / "backup"
    backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest)
    again = backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest)
    assert (again.blobs_total, again.blobs_copied) == (2, 0)
    push_versions(reg, model_dir, "v1.1")  # a new prompt, the same weights
    third = backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest)
    assert (third.blobs_total, third.blobs_copied) == (3, 1)
    assert backup.verify_backup(dest) == []


def test_backup_during_concurrent_pushes_restores_consistently(reg, home, tmp_path, target, monkeypatch):
    """A backup taken while a push has stored its blobs but not recorded them, and others
    while the rest go on: the overlap is forced (the push waits at that step until a backup
    has run), not hoped for, so a slow machine cannot make the test vacuous."""
    pusher_dir = helpers.ModelDir.create(tmp_path / "pusher")
    errors: list[BaseException] = []
    done, in_flight, backed_up = threading.Event(), threading.Event(), threading.Event()

    def pause_once(name: str) -> None:
        if name == "push:blobs-stored" and not in_flight.is_set():
            in_flight.set()
            assert backed_up.wait(60), "no backup ran while the push waited"

    monkeypatch.setattr(pushing, "crashpoint", pause_once)

    def push_many():
        try:
            with Registry.open(home) as mine:
                for i in range(12):
                    push_versions(mine, pusher_dir, f"v2.{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=push_many)
    thread.start()
    dest = tmp_path / "backup"
    assert in_flight.wait(60), "the push never reached its blobs-stored step"
    results = [backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest)]  # the push is mid-way
    backed_up.set()
    while not done.wait(0.01):
        results.append(backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest))
    thread.join(60)
    assert errors == [] and all(r.problems == [] for r in results)
    assert results[0].blobs_total < len(_recorded(reg.store))  # it saw the push before it recorded

    path, url = target
    assert backup.restore(dest, home=path, db_url=url).ok
    shutil.copy(reg.home.path / "signing.key", path / "signing.key")  # Registry.restore does this
    with _open(path, url, monkeypatch) as again:
        _assert_intact(again)  # whatever prefix of the pushes it caught, it caught whole
        assert 0 <= len(again.versions()) <= 12


def test_restore_refuses_a_non_empty_home_and_an_unfinished_backup(reg, model_dir, tmp_path, target):
    push_versions(reg, model_dir, "v1.0")
    dest = tmp_path / "backup"
    backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest)
    path, url = target
    path.mkdir()
    (path / "something").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        backup.restore(dest, home=path, db_url=url)
    (dest / backup.MANIFEST).unlink()
    with pytest.raises(InvalidInput, match="did not finish"):
        backup.restore(dest, home=tmp_path / "new", db_url=url)
    assert not (tmp_path / "new").exists()


def test_damaged_blob_is_reported_not_backed_up(reg, model_dir, tmp_path):
    push_versions(reg, model_dir, "v1.0")
    prompt = next(d for d, n in _recorded(reg.store).items() if n < 100)
    path = reg.blobs.path(prompt)
    os.chmod(path, 0o644)
    path.write_bytes(b"X" * path.stat().st_size)
    result = backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=tmp_path / "backup")
    assert [(p.kind, p.digest) for p in result.problems] == [("corrupt", prompt)]
    assert result.blobs_total == 1


def test_sqlite_backup_is_one_self_contained_file(reg, model_dir, tmp_path, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    push_versions(reg, model_dir, "v1.0")
    dest = tmp_path / "backup"
    backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest)
    assert sorted(p.name for p in dest.iterdir()) == [backup.MANIFEST, "blobs", dump.SQLITE_FILE]
    conn = sqlite3.connect(dest / dump.SQLITE_FILE)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_missing_pg_dump_says_what_to_install(reg, tmp_path, db_url, monkeypatch):
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CellarError, match="pg_dump is not installed.*postgresql-client"):
        backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=tmp_path / "backup")


def test_password_never_on_the_command_line():
    from sqlalchemy.engine import make_url

    info = dump._conninfo(make_url("postgresql+psycopg://u:s3cret@db.example:5433/reg?sslmode=require"))
    assert "s3cret" not in info
    assert info == "host='db.example' port='5433' user='u' dbname='reg' sslmode='require'"


def _blob_in(folder: Path, digest: str) -> Path:
    return folder / "blobs" / "sha256" / digest[7:9] / digest[9:]


def test_a_backup_does_not_share_bytes_with_the_store(reg, db_url, model_dir, tmp_path, target, monkeypatch):
    """Bit rot in the store after a backup is not in the backup: restore brings the good bytes."""
    push_versions(reg, model_dir, "v1.0")
    dest = tmp_path / "backup"
    assert backup.backup(db_url=reg.store.url, blobs=reg.blobs, dest=dest).problems == []
    digest = max(_recorded(reg.store).items(), key=lambda item: item[1])[0]
    stored = reg.blobs.path(digest)
    assert os.stat(stored).st_ino != os.stat(_blob_in(dest, digest)).st_ino
    os.chmod(stored, 0o644)
    with open(stored, "r+b") as f:  # a flipped byte, in place
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    path, url = target
    restored = backup.restore(dest, home=path, db_url=url)
    assert restored.ok and restored.problems == []
    shutil.copy(reg.home.path / "signing.key", path / "signing.key")
    with _open(path, url, monkeypatch) as again:
        _assert_intact(again)


def test_hard_links_only_when_asked(reg, model_dir, tmp_path):
    push_versions(reg, model_dir, "v1.0")
    dest = tmp_path / "linked"
    result = reg.backup(dest, hard_links=True)
    assert result.problems == [] and result.blobs_linked == result.blobs_total == 2
    for digest in _recorded(reg.store):
        assert os.stat(reg.blobs.path(digest)).st_ino == os.stat(_blob_in(dest, digest)).st_ino
    assert [e.detail["linked"] for e in reg.audit(action="backup")] == [2]
