"""Online backup and restore of a registry: its database and its blobs, with a digest manifest.

DEST holds ``registry.db`` (SQLite, copied with SQLite's backup API: one consistent snapshot
while pushes and promotes go on) or ``registry.pgdump`` (``pg_dump`` custom format), the
blobs at ``blobs/sha256/<2 hex>/<62 hex>``, and ``MANIFEST.json`` (every blob's digest and
size, the database file's sha256), written last and fsynced, then read back and checked.

The blobs backed up are exactly those the database snapshot records: a push stores its blobs
before it records them, so every one of them is already on disk. A blob already in DEST is
skipped (names are digests, blobs immutable), so a second backup copies only new blobs. New
blobs are hashed while copied (or before being linked): a damaged one is reported, not saved.
Copies are independent of the store (the kernel copies, ``copy_file_range``, as a push does), so
a byte flipped in the store later is not flipped in the backup. ``link=True`` (``registry backup
--hard-links``) links blobs on the same filesystem instead: no space, but the backup and the
store are then one file each, and damage to one is damage to both.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from registry import clock
from registry.action import Action
from registry.configuration import Configuration
from registry.durable import fsync_dir
from registry.errors import CorruptBlob, InvalidInput, StorageError
from registry.models.upkeep import (
    BackupResult,
    ProblemKind,
    RestoreResult,
    StorageProblem,
)
from registry.store.files.blobs import BlobStore
from registry.store.files.scan import hash_path
from registry.store.sql import dump, events
from registry.trust import seals

MANIFEST = "MANIFEST.json"
FORMAT = "cellar-backup"
WORKERS = 2  # hashing releases the GIL: two threads keep both cores busy


@dataclass(frozen=True)
class _Moved:
    digest: str
    size: int
    linked: bool
    problem: StorageProblem | None = None


# --- backup -------------------------------------------------------------------------------


def backup(*, db_url: str, blobs: BlobStore, dest: Path, link: bool = False) -> BackupResult:
    """Back up the database at ``db_url`` and the blobs it records into ``dest`` (created if
    needed; a previous backup there is brought up to date); ``link``: hard-link blobs where
    ``dest`` is on the store's filesystem instead of copying them."""
    started = time.monotonic()
    dest = dest.absolute()
    _mkdirs(dest / "blobs" / "sha256", dest / "blobs" / "tmp")
    db_file, recorded = dump.dump(db_url, dest)
    moved = _transfer_all(recorded, src=blobs, dest=BlobStore(dest / "blobs"), link=link and _same_fs(blobs.root, dest))
    problems = [m.problem for m in moved if m.problem]
    saved = {d: n for d, n in recorded.items() if not any(p.digest == d for p in problems)}
    manifest = _write_manifest(dest, db_file, saved, kind="sqlite" if dump.is_sqlite(db_url) else "postgresql")
    problems += verify_backup(dest)
    new = [m for m in moved if m.problem is None]
    return BackupResult(
        dest=str(dest), db_kind=manifest["db"]["kind"], db_file=db_file.name, db_sha256=manifest["db"]["sha256"],
        blobs_total=len(saved), blobs_copied=len(new), blobs_linked=sum(m.linked for m in new),
        bytes_copied=sum(m.size for m in new if not m.linked), seconds=time.monotonic() - started,
        problems=problems)


# --- blobs --------------------------------------------------------------------------------


def _transfer_all(recorded: dict[str, int], *, src: BlobStore, dest: BlobStore, link: bool) -> list[_Moved]:
    """Link or copy every recorded blob not yet in ``dest``, verifying each digest."""
    todo = sorted((d for d, n in recorded.items() if not dest.has(d, size=n)), key=lambda d: recorded[d], reverse=True)
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cellar-backup") as pool:
        return list(pool.map(lambda d: _transfer(d, recorded[d], src, dest, link), todo))


def _transfer(digest: str, size: int, src: BlobStore, dest: BlobStore, link: bool) -> _Moved:
    path = src.path(digest)
    try:
        if link and hash_path(path) == (digest, size) and _link(path, dest.path(digest)):
            return _Moved(digest, size, linked=True)
        dest.copy_in(path, digest, size)
        return _Moved(digest, size, linked=False)
    except FileNotFoundError:
        return _Moved(digest, size, False, StorageProblem(kind=ProblemKind.MISSING, digest=digest, expected_size=size,
                                                          detail=f"not in {src.root}; it is not in this backup"))
    except CorruptBlob:
        return _Moved(digest, size, False, StorageProblem(kind=ProblemKind.CORRUPT, digest=digest, path=str(path),
                                                          expected_size=size, actual_size=_size_of(path),
                                                          detail="damaged in the store; not backed up"))


def _link(path: Path, final: Path) -> bool:
    """Hard-link ``path`` at ``final`` (replacing what a partial run left); False where the
    filesystem refuses, and the caller copies."""
    final.parent.mkdir(exist_ok=True)
    try:
        final.unlink(missing_ok=True)
        os.link(path, final)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        return False


def _size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# --- the manifest -------------------------------------------------------------------------


def _write_manifest(dest: Path, db_file: Path, blobs: dict[str, int], *, kind: str) -> dict:
    """Written last: a backup without a manifest that matches is an unfinished one."""
    manifest = {
        "format": FORMAT, "format_version": 1, "created_at": clock.now().isoformat(),
        "db": {"kind": kind, "file": db_file.name, "sha256": _sha256(db_file), "size": db_file.stat().st_size},
        "blobs": dict(sorted(blobs.items())),
    }
    tmp = dest / f".{MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    fsync_dir(tmp)
    os.replace(tmp, dest / MANIFEST)
    fsync_dir(dest)
    return manifest


def read_manifest(src: Path) -> dict:
    """The manifest of the backup in ``src``; InvalidInput when there is none or it is unreadable."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise InvalidInput(f"{src} holds no {MANIFEST}: it is not a Cellar backup, or the backup "
                           "did not finish; run `registry backup` again") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {src / MANIFEST} ({exc}): the backup is damaged") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != 1:
        raise InvalidInput(f"{src / MANIFEST} is not a Cellar backup manifest this program knows")
    return manifest


def verify_backup(src: Path) -> list[StorageProblem]:
    """Cheap check of a backup against its manifest: the database file's sha256, and every
    blob present with its size (blob bytes are hashed when they are copied in or out)."""
    manifest = read_manifest(src)
    db = manifest["db"]
    problems = []
    db_path = src / db["file"]
    if not db_path.is_file() or _sha256(db_path) != db["sha256"]:
        problems.append(StorageProblem(kind=ProblemKind.DATABASE, path=str(db_path),
                                detail="the database file does not match the backup manifest"))
    store = BlobStore(src / "blobs")
    for digest, size in manifest["blobs"].items():
        if not store.has(digest, size=size):
            kind = ProblemKind.TRUNCATED if store.has(digest) else ProblemKind.MISSING
            problems.append(StorageProblem(kind=kind, digest=digest, expected_size=size))
    return problems


# --- restore ------------------------------------------------------------------------------


def restore(src: Path, *, home: Path, db_url: str) -> RestoreResult:
    """Restore the backup in ``src`` into ``home`` (new or empty) and the database at
    ``db_url`` (a new SQLite file, or an empty PostgreSQL database); every blob is hashed
    while copied and checked against the manifest."""
    started = time.monotonic()
    src, home = src.absolute(), home.absolute()
    manifest = read_manifest(src)
    if bad := [p for p in verify_backup(src) if p.kind == ProblemKind.DATABASE]:
        raise InvalidInput(f"refusing to restore {src}: {bad[0].detail}")
    _refuse_non_empty(home)
    kind = "sqlite" if dump.is_sqlite(db_url) else "postgresql"
    if manifest["db"]["kind"] != kind:
        raise InvalidInput(f"{src} is a {manifest['db']['kind']} backup but REGISTRY_DB_URL is {kind}: "
                           f"point REGISTRY_DB_URL at a {manifest['db']['kind']} database")
    blobs = BlobStore(home / "blobs")
    blobs.create()
    dump.load(src / manifest["db"]["file"], db_url)
    recorded = manifest["blobs"]
    moved = _transfer_all(recorded, src=BlobStore(src / "blobs"), dest=blobs, link=False)
    problems = [m.problem for m in moved if m.problem]
    return RestoreResult(home=str(home), db_kind=kind, blobs_restored=len(moved) - len(problems),
                         bytes_restored=sum(m.size for m in moved if not m.problem),
                         seconds=time.monotonic() - started, problems=problems)


def _refuse_non_empty(home: Path) -> None:
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise InvalidInput(f"refusing to restore into {home}: it is not empty; "
                           "restore into a new folder (REGISTRY_HOME=/new/path registry restore SRC)")


# --- helpers ------------------------------------------------------------------------------


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _mkdirs(*paths: Path) -> None:
    try:
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {exc.filename} ({exc.strerror}): pick a writable backup folder") from None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- the operations: the signing key goes along, and an audit event records each --------


class Backup(Action):
    """``Backup(cfg, actor=...).run(dest)``: a consistent online backup into ``dest``
    (incremental when ``dest`` holds one)."""

    def run(self, dest: Path, *, link: bool = False) -> BackupResult:
        cfg = self.cfg
        actor = self.actor
        result = backup(db_url=cfg.store.url, blobs=cfg.blobs, dest=Path(dest), link=link)
        # The signing key goes along (mode 0600): without it a restored record cannot be proven.
        # So a backup is as private as the home itself.
        _copy_private(seals.key_path(cfg.home.path), Path(dest) / seals.KEY_FILE)
        with cfg.store.write() as conn:
            events.append(conn, actor=actor, action="backup", object=result.dest, db_user=cfg.store.db_user(conn),
                          detail={"db_sha256": result.db_sha256, "blobs": result.blobs_total,
                                  "copied": result.blobs_copied, "linked": result.blobs_linked,
                                  "problems": len(result.problems)})
        return result


def restore_with_key(src: Path, *, home: Path, db_url: str) -> RestoreResult:
    # A function of paths, not an Action: no registry (no Configuration) exists until it is done.
    """Restore the backup in ``src`` into the empty or new ``home`` and database ``db_url``, its
    signing key included (the record's seals are checked with it)."""
    result = restore(Path(src), home=home, db_url=db_url)
    if (Path(src) / seals.KEY_FILE).is_file():
        _copy_private(Path(src) / seals.KEY_FILE, seals.key_path(home))
    return result


def _copy_private(src: Path, dst: Path) -> None:
    """Copy a secret file so that only its owner can read the copy, at no moment more."""
    data = src.read_bytes()
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def record_restore(cfg: Configuration, result: RestoreResult, *, src: Path, actor: str,
                   new_identity: bool = False) -> RestoreResult:
    """The restored registry's own record of where it came from; with ``new_identity`` also an
    identity of its own (a copy meant to live beside the original, acting on its own containers
    only). ``result`` with the identity the restored registry now has."""
    with cfg.store.write() as conn:
        before = events.registry_id(conn)
        events.append(conn, actor=actor, action="restore", object=str(cfg.home.path),
                      db_user=cfg.store.db_user(conn),
                      detail={"from": str(Path(src).absolute()), "blobs": result.blobs_restored,
                              "problems": len(result.problems)})
        if new_identity:
            events.append(conn, actor=actor, action=events.NEW_IDENTITY, object=str(cfg.home.path),
                          db_user=cfg.store.db_user(conn), reason="a copy restored to live beside the original",
                          detail={"previous": before})
        now = events.registry_id(conn)
    return result.model_copy(update={"registry_id": now, "identity_shared": now == before})


