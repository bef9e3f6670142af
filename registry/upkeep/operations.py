"""Keeping a registry whole: verify, gc, backup and restore, deprecate and delete.

Each function is one operation, run with a ``Configuration``; the SQL is in
``registry.store.sql.upkeep``, the blob scan in ``registry.store.files.scan``, gc's pure planner in
``registry.upkeep.gc``, backup's file work in ``registry.upkeep.backup``. Export and import are in
``registry.upkeep.transfer``. Every change is recorded with an audit event in the transaction that
makes it.

gc and a concurrent push: a push stores new blobs before it records them (fresh mtimes, kept
by the grace period), and may reuse an old unreferenced blob the stat cache vouches for. gc
therefore re-reads what is referenced, and unlinks blobs, inside one write transaction; push
checks, inside its own write transaction, that every blob it records still exists and stores
it again if not. The two transactions are serialised, so one of them sees the other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from registry import clock, ledger
from registry.configuration import Configuration
from registry.errors import CellarError, Conflict, InvalidInput
from registry.ledger import Release, ReleaseStatus
from registry.models.upkeep import (
    BackupResult,
    ContainerItem,
    DeleteResult,
    Deprecation,
    GcResult,
    PathItem,
    ProblemKind,
    RestoreResult,
    StorageProblem,
    VerifyReport,
)
from registry.store.files import scan
from registry.store.sql import environments, events, releases, versions
from registry.store.sql import upkeep as store
from registry.trust import seals
from registry.upkeep import backup as backup_store
from registry.upkeep import gc as gc_mod

VerifyProgress = Callable[[int, int], None]  # (bytes hashed since the last call, bytes to hash in all)


# --- verify ----------------------------------------------------------------------------------


def verify(cfg: Configuration, *, progress: VerifyProgress | None = None) -> VerifyReport:
    """Re-hash every blob (both cores), resolve every recorded reference, check each
    materialised snapshot, the audit chain and the database's own integrity check."""
    started = time.monotonic()
    with cfg.store.read() as conn:
        recorded = store.recorded_blobs(conn)
        users = store.blob_users(conn)
        records = store.records_by_digest(conn)
        problems = store.reference_problems(conn)
        chain = events.check_chain(conn)
        db_check, db_problems = store.integrity_check(conn)
    total = sum(recorded.get(d, 0) for d in users)
    tick = (lambda n: progress(n, total)) if progress else None
    result = scan.scan(cfg.blobs, recorded=recorded, referenced=set(users), progress=tick)
    problems += scan.name_versions(result.problems, users)
    snaps = list(gc_mod.list_snapshots(cfg.snapshots))
    problems += _snapshot_problems(cfg, snaps, records)
    if not chain.ok:
        problems.append(StorageProblem(kind=ProblemKind.AUDIT, detail=_chain_problem(chain)))
    problems += db_problems
    stale = [str(f.path) for f in scan.list_temp_files(cfg.blobs) if not f.owner_alive]
    return VerifyReport(ok=not any(p.damage for p in problems), blobs_checked=result.blobs_checked,
                        bytes_hashed=result.bytes_hashed, seconds=round(time.monotonic() - started, 3),
                        problems=problems, stale_temp_files=stale, snapshots_checked=len(snaps),
                        audit_events=chain.checked, database_check=db_check)


def _chain_problem(chain) -> str:
    p = chain.problem
    return f"event {p.event}: {p.message}; run `registry audit verify`" if p else "the audit chain is broken"


def _snapshot_problems(cfg: Configuration, snaps: list[gc_mod.Snapshot],
                       records: dict[str, tuple[dict, list[str]]]) -> list[StorageProblem]:
    out = []
    for snap in snaps:
        if snap.manifest_digest not in records:
            continue  # a deleted version's snapshot: gc's business, not damage
        record, refs = records[snap.manifest_digest]
        out += [p.model_copy(update={"versions": sorted(refs)})
                for p in scan.check_snapshot(snap.path, record, cfg.blobs)]
    return out


# --- gc --------------------------------------------------------------------------------------


def gc(cfg: Configuration, *, actor: str, dry_run: bool = False,
       grace: timedelta = gc_mod.GRACE) -> GcResult:
    """Remove unreferenced blobs, stale temp files, snapshots no release needs and stopped
    containers beyond each environment's retention. The dry run returns the same plan."""
    inputs, engines = _gc_inputs(cfg, grace=grace)
    plan = gc_mod.plan(inputs)
    if dry_run:
        return gc_mod.dry_run(plan)
    removed = _remove_containers(cfg, plan.containers, engines)
    with cfg.store.write() as conn:
        # Under the write lock: a push that recorded one of these blobs since the plan keeps it,
        # and a push recording one after this commit finds it gone and stores it again.
        still_used = store.referenced_digests(conn) | _needed_blobs(conn)
        blobs = [b for b in plan.blobs if b.digest not in still_used]
        result = gc_mod.execute(plan.model_copy(update={"blobs": blobs, "containers": []}), now=time.time(),
                                grace=grace, needed_snapshots_now=lambda: _needed(conn)[1])
        kept = {s.path for s in result.skipped}
        store.forget_blobs(conn, [b.digest for b in blobs if b.path not in kept])
        result = result.model_copy(update={
            "blobs": plan.blobs, "containers": plan.containers,
            "skipped": result.skipped + _skipped_blobs(plan.blobs, still_used) + removed})
        events.append(conn, actor=actor, action="gc", object="blobs", db_user=cfg.store.db_user(conn), detail={
            "blobs": len(blobs), "bytes_freed": plan.bytes_freed, "temp_files": len(plan.temp_files),
            "snapshots": len(plan.snapshots), "containers": [c.id[:12] for c in plan.containers],
            "skipped": len(result.skipped)})
    return result


def _skipped_blobs(planned, still_used: set[str]) -> list:
    return [PathItem(path=b.path, size=b.size, why="a version uses it since the plan")
            for b in planned if b.digest in still_used]


def _gc_inputs(cfg: Configuration, *, grace: timedelta) -> tuple[gc_mod.Inputs, dict]:
    with cfg.store.read() as conn:
        referenced = store.referenced_digests(conn)
        needed_blobs = _needed_blobs(conn)
        kept, needed_snaps = _needed(conn)
        envs = environments.all_(conn)
    blobs, _stray = scan.list_blobs(cfg.blobs)
    containers, engines, warnings = _containers(cfg, envs)
    return gc_mod.Inputs(
        now=time.time(), referenced=referenced, needed_by_releases=needed_blobs, blobs=blobs,
        temp_files=scan.list_temp_files(cfg.blobs), snapshots=list(gc_mod.list_snapshots(cfg.snapshots)),
        needed_snapshots=needed_snaps, containers=containers, keep={e.name: e.keep for e in envs},
        kept_containers=kept, grace=grace, warnings=warnings), engines


def _needed_releases(conn) -> tuple[list[Release], set[str]]:
    """Releases whose files must stay: deployed, pending, and those whose containers are kept
    (retention plus the default rollback target); and the container ids kept."""
    needed, kept = [], set()
    by_env: dict[str, list[Release]] = {}
    for r in releases.newest(conn):
        by_env.setdefault(r.env, []).append(r)
    keep = {e.name: e.keep for e in environments.all_(conn)}
    for env, rows in by_env.items():
        ids = ledger.keep_containers(rows, keep=keep.get(env, 3))
        kept |= ids
        target = _default_target(rows)
        needed += [r for r in rows if r.status is ReleaseStatus.DEPLOYED or r.status.pending
                   or (r.container_id and r.container_id in ids) or r is target]
    return needed, kept


def _default_target(rows: list[Release]) -> Release | None:
    try:
        return ledger.rollback_target(rows)
    except CellarError:
        return None


def _needed(conn) -> tuple[set[str], set[str]]:
    """(container ids kept, manifest digests of snapshots that releases need)."""
    needed, kept = _needed_releases(conn)
    return kept, {r.manifest_digest for r in needed}


def _needed_blobs(conn) -> set[str]:
    needed, _kept = _needed_releases(conn)
    return store.digests_of(conn, {(r.model, r.version) for r in needed})


def _containers(cfg: Configuration, envs) -> tuple[list[gc_mod.Container], dict, list[str]]:
    """Containers of this registry on each environment's engine (by label), their engines,
    and a warning per engine that could not be asked (its containers are left alone)."""
    found, engines, warnings, seen = [], {}, [], set()
    for env in envs:
        if env.docker_host in engines or env.docker_host in seen:
            continue
        seen.add(env.docker_host)
        try:
            engine = cfg.engine(env.docker_host)
            infos = engine.find_labelled(registry=cfg.registry_id)
        except CellarError as exc:
            warnings.append(f"containers on {env.docker_host or 'the local engine'} left alone: {exc}")
            continue
        engines[env.docker_host] = engine
        host_envs = {e.name for e in envs if e.docker_host == env.docker_host}
        found += [gc_mod.Container(env=i.labels.get("cellar.env", ""), id=i.id, name=i.name,
                                   version=i.labels.get("cellar.version", ""), revision=i.revision,
                                   running=i.running)
                  for i in infos if i.labels.get("cellar.env") in host_envs]
    return found, {e.name: engines[e.docker_host] for e in envs if e.docker_host in engines}, warnings


def _remove_containers(cfg: Configuration, planned: list[ContainerItem], engines: dict) -> list:
    """Remove the planned containers, each re-checked first: a rollback since the plan may
    have started one, or a new release may keep it."""
    if not planned:
        return []
    with cfg.store.read() as conn:
        kept, _ = _needed(conn)
    skipped = []
    for c in planned:
        engine = engines[c.env]
        info = engine.inspect(c.id)
        if info is None or info.running or c.id in kept:
            why = "already gone" if info is None else "running or kept since the plan"
            skipped.append(PathItem(path=f"container {c.name or c.id[:12]}", size=0, why=why))
            continue
        engine.remove(c.id)
    return skipped


# --- backup and restore ------------------------------------------------------------------------


def backup(cfg: Configuration, dest: Path, *, actor: str) -> BackupResult:
    """A consistent online backup into ``dest`` (incremental when ``dest`` holds one)."""
    result = backup_store.backup(db_url=cfg.store.url, blobs=cfg.blobs, dest=Path(dest))
    # The signing key goes along (mode 0600): without it a restored record cannot be proven.
    # So a backup is as private as the home itself.
    _copy_private(seals.key_path(cfg.home.path), Path(dest) / seals.KEY_FILE)
    with cfg.store.write() as conn:
        events.append(conn, actor=actor, action="backup", object=result.dest, db_user=cfg.store.db_user(conn),
                      detail={"db_sha256": result.db_sha256, "blobs": result.blobs_total,
                              "copied": result.blobs_copied, "problems": len(result.problems)})
    return result


def restore(src: Path, *, home: Path, db_url: str) -> RestoreResult:
    """Restore the backup in ``src`` into the empty or new ``home`` and database ``db_url``, its
    signing key included (the record's seals are checked with it)."""
    result = backup_store.restore(Path(src), home=home, db_url=db_url)
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


def record_restore(cfg: Configuration, result: RestoreResult, *, src: Path, actor: str) -> None:
    """The restored registry's own record of where it came from."""
    with cfg.store.write() as conn:
        events.append(conn, actor=actor, action="restore", object=str(cfg.home.path),
                      db_user=cfg.store.db_user(conn),
                      detail={"from": str(Path(src).absolute()), "blobs": result.blobs_restored,
                              "problems": len(result.problems)})


# --- deprecate and delete ----------------------------------------------------------------------


def deprecate(cfg: Configuration, model: str, version: str, *, actor: str, reason: str | None) -> Deprecation:
    """Hide ``model@version`` from listings and refuse to promote it; already deprecated: no-op."""
    with cfg.store.write() as conn:
        if (was := store.deprecation(conn, model, version)) is not None:
            return was.model_copy(update={"changed": False})
        at = clock.now()
        store.deprecate(conn, model, version, at=at, reason=reason)
        events.append(conn, actor=actor, action="deprecate", object=f"{model}@{version}", model=model,
                      reason=reason, detail={}, db_user=cfg.store.db_user(conn))
    return Deprecation(model=model, version=version, deprecated_at=at, reason=reason)


def delete(cfg: Configuration, model: str, version: str, *, actor: str, force: bool,
           reason: str | None = None) -> DeleteResult:
    """Remove a version that no release ever named (``force`` required); gc reclaims its blobs."""
    if not force:
        raise InvalidInput(f"deleting {model}@{version} cannot be undone: pass --force "
                           "(or `registry deprecate` to hide it instead)")
    with cfg.store.write() as conn:
        stored = versions.record_of(conn, model, version)
        if named := store.releases_naming(conn, model, version):
            env, revision = named[-1]
            raise Conflict(f"{model}@{version} was deployed ({env} revision {revision}) and the ledger needs it: "
                           "deprecate it instead (`registry deprecate`)")
        digests = store.delete_version(conn, model, version)
        released = sorted(set(digests) - store.referenced_digests(conn))
        events.append(conn, actor=actor, action="delete", object=f"{model}@{version}", model=model, reason=reason,
                      detail={"manifest_digest": stored.digest, "blobs_released": len(released)},
                      db_user=cfg.store.db_user(conn))
    return DeleteResult(model=model, version=version, manifest_digest=stored.digest, blobs_released=released)
