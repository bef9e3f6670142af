"""Garbage collection: a pure planner and an executor that removes exactly a plan's files.

The dry run and the real run share one ``plan()``, so they name the same set by
construction. Two rules keep a rollback and a concurrent push safe:

- never collect what a version references, what a release needs (deployed, pending, or a
  kept rollback target), a snapshot such a release runs from, a running container, or a
  container a kept release names;
- never collect a blob or a temp file younger than the grace period: a push stores its blobs
  before it records the version, so a fresh unreferenced blob is probably about to be used.

A push that reuses an *old* blob (the stat cache says it is there) must refresh its mtime
(``os.utime``) before it records the version; the executor re-checks the mtime of each blob
right before unlinking it and skips one that became fresh.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from registry.models.upkeep import BlobItem, ContainerItem, GcPlan, GcResult, PathItem
from registry.store.files.scan import StoredBlob, TempFile

GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot folder on disk; ``size`` counts only bytes it alone holds (copies, not links)."""

    manifest_digest: str
    path: Path
    size: int = 0
    mtime: float = 0.0  # a snapshot materialised within the grace period is kept (a promote runs)


@dataclass(frozen=True)
class Container:
    """A container carrying ``cellar.*`` labels, as found in the engine."""

    env: str
    id: str
    name: str = ""
    version: str = ""
    revision: int | None = None
    running: bool = False


@dataclass
class Inputs:
    """Everything the planner looks at; the caller gathers it (database, disk, Docker)."""

    now: float                                        # time.time() of the plan
    referenced: set[str] = field(default_factory=set)  # blob digests any version uses
    needed_by_releases: set[str] = field(default_factory=set)  # blobs of releases' versions
    blobs: list[StoredBlob] = field(default_factory=list)
    temp_files: list[TempFile] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    needed_snapshots: set[str] = field(default_factory=set)  # manifest digests releases need
    containers: list[Container] = field(default_factory=list)
    keep: dict[str, int] = field(default_factory=dict)  # env -> stopped containers to keep
    kept_containers: set[str] = field(default_factory=set)  # ids releases name (never removed)
    grace: timedelta = GRACE
    warnings: list[str] = field(default_factory=list)  # e.g. an engine that could not be asked


def plan(inputs: Inputs) -> GcPlan:
    """What gc removes, and the bytes that frees. Pure: same inputs, same plan."""
    cutoff = inputs.now - inputs.grace.total_seconds()
    blobs, fresh = _blobs(inputs, cutoff)
    temps = [PathItem(path=str(t.path), size=t.size, why="its writer is gone")
             for t in sorted(inputs.temp_files, key=lambda t: str(t.path))
             if not t.owner_alive and t.mtime < cutoff]
    snaps = [PathItem(path=str(s.path), size=s.size, why=f"no release needs {s.manifest_digest}")
             for s in sorted(inputs.snapshots, key=lambda s: str(s.path))
             if s.manifest_digest not in inputs.needed_snapshots and s.mtime < cutoff]
    containers = _containers(inputs)
    freed = sum(b.size for b in blobs) + sum(t.size for t in temps) + sum(s.size for s in snaps)
    return GcPlan(blobs=blobs, temp_files=temps, snapshots=snaps, containers=containers,
                  bytes_freed=freed, kept_fresh=fresh, warnings=list(inputs.warnings))


def _blobs(inputs: Inputs, cutoff: float) -> tuple[list[BlobItem], list[str]]:
    keep = inputs.referenced | inputs.needed_by_releases
    gone, fresh = [], []
    for b in sorted(inputs.blobs, key=lambda b: b.digest):
        if b.digest in keep:
            continue
        if b.mtime >= cutoff:
            fresh.append(b.digest)
        else:
            gone.append(BlobItem(digest=b.digest, size=b.size, path=str(b.path)))
    return gone, fresh


def _containers(inputs: Inputs) -> list[ContainerItem]:
    """Stopped containers retention does not keep: ``kept_containers`` already holds each
    environment's ``keep`` (``registry.ledger.keep_containers``), so counting ``keep`` again here
    would keep twice as many. A container of an environment that no longer exists is kept by
    nothing."""
    stopped = [c for c in inputs.containers if not c.running and c.id not in inputs.kept_containers]
    stopped.sort(key=lambda c: (c.env, c.revision is not None, c.revision or 0))
    return [ContainerItem(env=c.env, id=c.id, name=c.name, version=c.version, revision=c.revision) for c in stopped]


def execute(
    gc_plan: GcPlan,
    *,
    now: float,
    grace: timedelta = GRACE,
    remove_container: Callable[[ContainerItem], None] | None = None,
    needed_snapshots_now: Callable[[], set[str]] | None = None,
) -> GcResult:
    """Remove exactly ``gc_plan``'s files (and, given ``remove_container``, its containers).

    A blob whose mtime became fresh since the plan (a push reused it) or a file that vanished
    is skipped and listed in ``skipped``; nothing outside the plan is touched.
    ``needed_snapshots_now`` re-reads the manifest digests releases need, right before the
    snapshots go: a promote that started after the plan keeps its snapshot.
    """
    cutoff = now - grace.total_seconds()
    skipped: list[PathItem] = []
    for b in gc_plan.blobs:
        _remove_file(Path(b.path), b.size, cutoff, skipped)
    for t in gc_plan.temp_files:
        _remove_file(Path(t.path), t.size, cutoff, skipped)
    needed = needed_snapshots_now() if needed_snapshots_now else set()
    for s in gc_plan.snapshots:
        if "sha256:" + Path(s.path).name in needed:
            skipped.append(PathItem(path=s.path, size=s.size, why="a release needs it since the plan"))
            continue
        _remove_tree(Path(s.path), s.size, skipped)
    for c in gc_plan.containers:
        if remove_container:
            remove_container(c)
    return GcResult(**gc_plan.model_dump(), dry_run=False, skipped=skipped)


def dry_run(gc_plan: GcPlan) -> GcResult:
    """The result the dry run prints: the plan itself."""
    return GcResult(**gc_plan.model_dump(), dry_run=True)


def _remove_file(path: Path, size: int, cutoff: float, skipped: list[PathItem]) -> None:
    try:
        if os.stat(path).st_mtime >= cutoff:
            skipped.append(PathItem(path=str(path), size=size, why="used again since the plan"))
            return
        path.unlink()
    except FileNotFoundError:
        skipped.append(PathItem(path=str(path), size=size, why="already gone"))


def _remove_tree(path: Path, size: int, skipped: list[PathItem]) -> None:
    if not path.is_dir():
        skipped.append(PathItem(path=str(path), size=size, why="already gone"))
        return
    _make_writable(path)  # snapshots are sealed read-only (registry.deploy.snapshots)
    shutil.rmtree(path)


def _make_writable(folder: Path) -> None:
    for dirpath, _dirs, _files in os.walk(folder):
        os.chmod(dirpath, stat.S_IRWXU)


def snapshot_size(path: Path) -> int:
    """Bytes a snapshot alone holds: files with one link (copies); hard links to blobs free nothing."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink == 1:
                total += st.st_size
    return total


def list_snapshots(root: Path) -> Iterable[Snapshot]:
    """Snapshot folders below ``root`` (``<hex>`` = manifest digest); temp folders of dead
    materialisations (``.tmp-<pid>-<token>``) are the temp files' business, not listed here."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [Snapshot("sha256:" + e.name, Path(e.path), snapshot_size(Path(e.path)), e.stat().st_mtime)
            for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
