"""``registry gc``: remove what nothing needs, with the plan from ``registry.upkeep.gc_plan``
(pure); the SQL is in ``registry.store.sql.upkeep``, the blob scan in ``registry.store.files.scan``.

gc and a concurrent push: a push stores new blobs before it records them (fresh mtimes, kept
by the grace period), and may reuse an old unreferenced blob the stat cache vouches for. gc
therefore re-reads what is referenced, and unlinks blobs, inside one write transaction; push
checks, inside its own write transaction, that every blob it records still exists and stores
it again if not. The two transactions are serialised, so one of them sees the other.
"""

from __future__ import annotations

import time
from datetime import timedelta

from registry import ledger
from registry.action import Action
from registry.configuration import Configuration
from registry.engines.engine import Engine
from registry.errors import CellarError
from registry.ledger import Release, ReleaseStatus
from registry.models.upkeep import (
    BlobItem,
    ContainerItem,
    GcResult,
    PathItem,
)
from registry.store.files import scan
from registry.store.sql import environments, events, releases
from registry.store.sql import upkeep as store
from registry.upkeep import gc_plan
from registry.upkeep import hosts as host_caches

# --- gc --------------------------------------------------------------------------------------


class Gc(Action):
    """``Gc(cfg, actor=...).run(...)``: Remove unreferenced blobs, stale temp files, snapshots no
    release needs and stopped containers beyond each environment's retention. The dry run returns
    the same plan."""

    def run(self, *, dry_run: bool = False, grace: timedelta = gc_plan.GRACE) -> GcResult:
        cfg = self.cfg
        actor = self.actor
        inputs, engines = _gc_inputs(cfg, grace=grace)
        plan = gc_plan.plan(inputs)
        host_blobs = _host_blobs(cfg, dry_run=dry_run, grace=grace, warnings=plan.warnings)
        if dry_run:
            return gc_plan.dry_run(plan).model_copy(update={"host_blobs": host_blobs})
        removed = _remove_containers(cfg, plan.containers, engines)
        with cfg.store.write() as conn:
            # Under the write lock: a push that recorded one of these blobs since the plan keeps it,
            # and a push recording one after this commit finds it gone and stores it again.
            still_used = store.referenced_digests(conn) | _needed_blobs(conn)
            blobs = [b for b in plan.blobs if b.digest not in still_used]
            result = gc_plan.execute(plan.model_copy(update={"blobs": blobs, "containers": []}), now=time.time(),
                                    grace=grace, needed_snapshots_now=lambda: _needed(conn)[1])
            kept = {s.path for s in result.skipped}
            store.forget_blobs(conn, [b.digest for b in blobs if b.path not in kept])
            result = result.model_copy(update={
                "blobs": plan.blobs, "containers": plan.containers, "host_blobs": host_blobs,
                "skipped": result.skipped + _skipped_blobs(plan.blobs, still_used) + removed})
            events.append(conn, actor=actor, action="gc", object="blobs", db_user=cfg.store.db_user(conn), detail={
                "blobs": len(blobs), "bytes_freed": plan.bytes_freed, "temp_files": len(plan.temp_files),
                "snapshots": len(plan.snapshots), "containers": [c.id[:12] for c in plan.containers],
                "host_blobs": len(host_blobs),
                "skipped": len(result.skipped)})
        return result


def _host_blobs(cfg: Configuration, *, dry_run: bool, grace: timedelta, warnings: list[str]) -> list[BlobItem]:
    """The blobs that Docker hosts' caches hold and no kept release needs (removed unless dry run)."""
    with cfg.store.read() as conn:
        needed, _kept = _needed_releases(conn)
        keep = _needed_blobs(conn)
        envs = environments.all_(conn)
    return host_caches.collect(cfg, envs, needed, keep, dry_run=dry_run, grace_s=grace.total_seconds(),
                               warnings=warnings)


def _skipped_blobs(planned, still_used: set[str]) -> list:
    return [PathItem(path=b.path, size=b.size, why="a version uses it since the plan")
            for b in planned if b.digest in still_used]


def _gc_inputs(cfg: Configuration, *, grace: timedelta) -> tuple[gc_plan.Inputs, dict]:
    with cfg.store.read() as conn:
        referenced = store.referenced_digests(conn)
        needed_blobs = _needed_blobs(conn)
        kept, needed_snaps = _needed(conn)
        envs = environments.all_(conn)
    blobs, _stray = scan.list_blobs(cfg.blobs)
    containers, engines, warnings = _containers(cfg, envs)
    return gc_plan.Inputs(
        now=time.time(), referenced=referenced, needed_by_releases=needed_blobs, blobs=blobs,
        temp_files=scan.list_temp_files(cfg.blobs), snapshots=list(gc_plan.list_snapshots(cfg.snapshots)),
        needed_snapshots=needed_snaps, containers=containers, keep={e.name: e.keep for e in envs},
        kept_containers=kept, grace=grace, warnings=warnings), engines


def _needed_releases(conn) -> tuple[list[Release], set[str]]:
    """Releases whose files must stay: deployed, pending, and those whose containers are kept
    (retention plus the default rollback target); and the container ids kept."""
    needed, kept = [], set()
    by_env: dict[str, list[Release]] = {}
    for r in releases.newest(conn):
        by_env.setdefault(r.env, []).append(r)
    envs = {e.name: e for e in environments.all_(conn)}
    for env, rows in by_env.items():
        if env not in envs:  # removed: its ledger stays for history, its containers and snapshots do not
            continue
        fleet = envs[env].fleet
        ids = set().union(*(ledger.keep_containers(rows, keep=envs[env].keep, host=host, first=fleet[0])
                            for host in fleet))  # on each of its hosts
        kept |= ids
        target = _default_target(rows)
        needed += [r for r in rows if r.status is ReleaseStatus.DEPLOYED or r.status.pending
                   or any(c in ids for c in r.containers()) or r is target]
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


def _containers(cfg: Configuration, envs) -> tuple[list[gc_plan.Container], dict, list[str]]:
    """Containers of this registry on each environment's engine (by label), the engine of each
    environment they belong to, and a warning per engine that could not be asked (its
    containers are left alone)."""
    found: list[gc_plan.Container] = []
    warnings: list[str] = []
    by_id: dict[str, Engine] = {}  # each container's engine
    names = {e.name for e in envs}
    # The local engine is asked even when no environment names it: containers of an environment
    # removed since (its containers left behind) are found there, and kept by nothing.
    for host in dict.fromkeys([*(h for e in envs for h in e.fleet), None]):
        try:
            engine = cfg.engine(host)
            infos = engine.find_labelled(registry=cfg.registry_id)
        except CellarError as exc:
            if host is not None or any(None in e.fleet for e in envs):
                warnings.append(f"containers on {host or 'the local engine'} left alone: {exc}")
            continue
        host_envs = {e.name for e in envs if host in e.fleet}
        for i in infos:
            env = i.labels.get("cellar.env", "")
            # one engine may be named twice (the local socket by default and by its URL): once each
            if (env in host_envs or env not in names) and i.id not in by_id:
                by_id[i.id] = engine
                found.append(gc_plan.Container(env=env, id=i.id, name=i.name, revision=i.revision,
                                               version=i.labels.get("cellar.version", ""), running=i.running))
    return found, by_id, warnings


def _remove_containers(cfg: Configuration, planned: list[ContainerItem], engines: dict) -> list:
    """Remove the planned containers, each re-checked first: a rollback since the plan may
    have started one, or a new release may keep it."""
    if not planned:
        return []
    with cfg.store.read() as conn:
        kept, _ = _needed(conn)
    skipped = []
    for c in planned:
        engine = engines[c.id]
        info = engine.inspect(c.id)
        if info is None or info.running or c.id in kept:
            why = "already gone" if info is None else "running or kept since the plan"
            skipped.append(PathItem(path=f"container {c.name or c.id[:12]}", size=0, why=why))
            continue
        engine.remove(c.id)
    return skipped


