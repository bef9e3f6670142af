"""``registry verify``: re-hash every blob on both cores, resolve every recorded reference, check
each materialised snapshot, the audit chain and the database's own integrity check."""

from __future__ import annotations

import time
from collections.abc import Callable

from registry.action import Action
from registry.configuration import Configuration
from registry.home import read_config
from registry.models.upkeep import (
    ProblemKind,
    StorageProblem,
    VerifyReport,
)
from registry.store.files import scan
from registry.store.sql import environments, events
from registry.store.sql import upkeep as store
from registry.upkeep import gc, gc_plan
from registry.upkeep import hosts as host_caches

VerifyProgress = Callable[[int, int], None]  # (bytes hashed since the last call, bytes to hash in all)


# --- verify ----------------------------------------------------------------------------------


class Verify(Action):
    """``Verify(cfg).run(...)``: Re-hash every blob (both cores), resolve every recorded reference, check each
    materialised snapshot, the audit chain and the database's own integrity check."""

    def run(self, *, progress: VerifyProgress | None = None, hosts: bool = False) -> VerifyReport:
        """``hosts``: also hash, on each Docker host with a blob cache, the cached blobs versions use."""
        cfg = self.cfg
        started = time.monotonic()
        with cfg.store.read() as conn:
            recorded = store.recorded_blobs(conn)
            users = store.blob_users(conn)
            records = store.records_by_digest(conn)
            problems = store.reference_problems(conn)
            chain = events.check_chain(conn)
            db_check, db_problems = store.integrity_check(conn)
            needed, _kept = gc._needed_releases(conn) if hosts else ([], set())
            envs = environments.all_(conn) if hosts else []
        total = sum(recorded.get(d, 0) for d in users)
        tick = (lambda n: progress(n, total)) if progress else None
        result = scan.scan(cfg.blobs, recorded=recorded, referenced=set(users), progress=tick)
        problems += scan.name_versions(result.problems, users)
        if read_config(cfg.home.path).get("blob_store"):  # missing here may only mean not cached
            from registry.remotes import store as blob_store  # loads requests: only for such a home

            problems = blob_store.only_not_cached(cfg, problems)
        snaps = list(gc_plan.list_snapshots(cfg.snapshots))
        problems += _snapshot_problems(cfg, snaps, records)
        if not chain.ok:
            problems.append(StorageProblem(kind=ProblemKind.AUDIT, detail=_chain_problem(chain)))
        problems += db_problems
        warnings: list[str] = []
        if hosts:
            problems += host_caches.check(cfg, envs, needed, users, warnings)
        stale = [str(f.path) for f in scan.list_temp_files(cfg.blobs) if not f.owner_alive]
        return VerifyReport(ok=not any(p.damage for p in problems), blobs_checked=result.blobs_checked,
                            bytes_hashed=result.bytes_hashed, seconds=round(time.monotonic() - started, 3),
                            problems=problems, stale_temp_files=stale, snapshots_checked=len(snaps),
                            audit_events=chain.checked, database_check=db_check, warnings=warnings)


def _chain_problem(chain) -> str:
    p = chain.problem
    return f"event {p.event}: {p.message}; run `registry audit verify`" if p else "the audit chain is broken"


def _snapshot_problems(cfg: Configuration, snaps: list[gc_plan.Snapshot],
                       records: dict[str, tuple[dict, list[str]]]) -> list[StorageProblem]:
    out = []
    for snap in snaps:
        if snap.manifest_digest not in records:
            continue  # a deleted version's snapshot: gc's business, not damage
        record, refs = records[snap.manifest_digest]
        out += [p.model_copy(update={"versions": sorted(refs)})
                for p in scan.check_snapshot(snap.path, record, cfg.blobs)]
    return out


