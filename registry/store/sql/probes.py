"""Probe runs in the database: record one, read them back as ``ProbeRun`` models (never rows).

Functions take a SQLAlchemy Connection inside the caller's transaction (``Store.write()`` to
record, ``Store.read()`` to list), so a gate's run is stored in the same transaction as the
release it judged.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, or_, select
from sqlalchemy.engine import Connection

from registry.clock import utc
from registry.models.probes import ProbeResult, ProbeRun, ProbeStatus
from registry.store.sql.schema import probe_results, probe_runs


def record_run(conn: Connection, run: ProbeRun) -> int:
    """Store ``run`` and its results; returns the run's id (also set on ``run.id``)."""
    inserted = conn.execute(insert(probe_runs).values(
        env=run.env, model=run.model, version=run.version, revision=run.revision,
        started_at=run.started_at, actor=run.actor, ok=run.ok,
        passed=run.count(ProbeStatus.PASS), failed=run.count(ProbeStatus.FAIL),
        errors=run.count(ProbeStatus.ERROR),
    )).inserted_primary_key
    assert inserted is not None  # a single-row INSERT
    run_id = inserted[0]
    if run.results:
        conn.execute(insert(probe_results), [
            {"run_id": run_id, "position": i, "probe": r.probe, "status": r.status.value,
             "latency_ms": r.latency_ms, "http_status": r.http_status, "detail": r.detail, "host": r.host}
            for i, r in enumerate(run.results)])
    run.id = run_id
    return run_id


def runs(conn: Connection, env: str | None = None, since: datetime | None = None,
         *, limit: int | None = None) -> list[ProbeRun]:
    """Stored runs, oldest first; ``limit`` keeps the newest ``limit`` of them.

    Two statements whatever the number of runs: the heads, then their results selected by the
    same filter as a subquery (no IN list of ids, so no statement grows with the answer)."""
    chosen = _chosen(env, since, limit)
    heads = list(reversed(conn.execute(
        select(probe_runs).where(probe_runs.c.id.in_(chosen))
        .order_by(probe_runs.c.started_at.desc(), probe_runs.c.id.desc())).all()))
    results = _results(conn, chosen)
    return [_run(h, results.get(h.id, [])) for h in heads]


def failed_versions(conn: Connection, env: str) -> frozenset[str]:
    """Versions whose last judged probe run in ``env`` got an answer wrong (``fail``). A run that
    measured nothing (only ``error``: the container stopped, the port dark) judges nothing, so
    it neither condemns nor clears a version."""
    c = probe_runs.c
    judged = select(func.max(c.id).label("id")).where(c.env == env, or_(c.ok.is_(True), c.failed > 0)) \
        .group_by(c.model, c.version).subquery()
    rows = conn.execute(select(c.version).where(c.id.in_(select(judged.c.id)), c.failed > 0))
    return frozenset(r.version for r in rows)


def _chosen(env: str | None, since: datetime | None, limit: int | None):
    """The ids of the runs a read wants, as a subquery: newest first, at most ``limit``."""
    query = select(probe_runs.c.id).order_by(probe_runs.c.started_at.desc(), probe_runs.c.id.desc())
    if env is not None:
        query = query.where(probe_runs.c.env == env)
    if since is not None:
        query = query.where(probe_runs.c.started_at >= since)
    if limit is not None:
        query = query.limit(limit)
    # PostgreSQL and SQLite both take LIMIT inside IN (subquery) when it is wrapped once more
    return select(query.subquery().c.id)


def _results(conn: Connection, chosen) -> dict[int, list[ProbeResult]]:
    found: dict[int, list[ProbeResult]] = {}
    query = (select(probe_results).where(probe_results.c.run_id.in_(chosen))
             .order_by(probe_results.c.run_id, probe_results.c.position))
    for row in conn.execute(query):
        found.setdefault(row.run_id, []).append(ProbeResult(
            probe=row.probe, status=ProbeStatus(row.status), latency_ms=row.latency_ms,
            http_status=row.http_status, detail=row.detail, host=row.host))
    return found


def _run(head, results: list[ProbeResult]) -> ProbeRun:
    return ProbeRun(id=head.id, env=head.env, model=head.model, version=head.version, revision=head.revision,
                    started_at=utc(head.started_at), actor=head.actor, results=results)
