"""The release ledger in SQL: append-only rows per environment. Functions take the caller's
connection, so a ledger change, its lock and its audit event share one transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection

from registry import clock
from registry.formats import canonical
from registry.ledger import (
    HostState,
    Operation,
    Release,
    ReleaseStatus,
    Settlement,
    current,
    step_back_from,
)
from registry.store.sql import schema as t
from registry.store.sql.sealing import require_rows, sealed
from registry.trust import seals

_COLUMNS = [c.name for c in t.releases.columns if c.name not in ("id", "mac")]


def ledger(conn: Connection, env: str) -> list[Release]:
    """An environment's releases, oldest revision first; AuditBroken when a row is not what
    Cellar wrote (every decision and report about an environment rests on its ledger)."""
    rows = conn.execute(select(t.releases).where(t.releases.c.env == env).order_by(t.releases.c.revision)).all()
    require_rows(conn, "release", [r._mapping for r in rows])
    return [_release(r) for r in rows]


def newest(conn: Connection, env: str | None = None, *, limit: int | None = None) -> list[Release]:
    """The newest ``limit`` releases (all when None) of one environment or of all, returned oldest
    first (by environment, then revision); reads only those rows, through the (env, revision) index."""
    c = t.releases.c
    query = select(t.releases).order_by(c.started_at.desc(), c.revision.desc()) if env is None else (
        select(t.releases).where(c.env == env).order_by(c.revision.desc()))
    if limit:
        query = query.limit(limit)
    rows = conn.execute(query).all()
    require_rows(conn, "release", [r._mapping for r in rows])
    return sorted((_release(r) for r in rows), key=lambda r: (r.env, r.revision))


WINDOW = 50  # the newest releases a deploy decision reads (plus the rows working_set names)
_LIVE = ["deployed", "pending-deploy", "pending-rollback"]


def working_set(conn: Connection, env: str, *, containers: Sequence[str] = ()) -> tuple[list[Release], bool]:
    """What promote, rollback and retention decide on without reading the whole ledger, oldest
    revision first: the newest ``WINDOW`` releases, the deployed and pending ones, the release a
    default rollback copies (``registry.ledger.rollback_target``, found through the (env, revision) index),
    and those that ran one of ``containers``. Also whether that is the whole ledger: a rollback
    to a named version or revision reads the rest only when the answer lies further back."""
    c = t.releases.c
    found = {r.id: r for r in conn.execute(
        select(t.releases).where(c.env == env).order_by(c.revision.desc()).limit(WINDOW))}
    complete = len(found) < WINDOW
    if not complete:
        found.update((r.id, r) for r in conn.execute(select(t.releases).where(c.env == env, c.status.in_(_LIVE))))
        now = current(sorted((_release(r) for r in found.values()), key=lambda r: r.revision))
        query = select(t.releases).where(c.env == env, c.healthy.is_(True), c.status != "failed")
        if now is not None:
            query = query.where(~and_(c.model == now.model, c.version == now.version))
        if (before := step_back_from(now)) is not None:
            query = query.where(c.revision < before)
        found.update((r.id, r) for r in conn.execute(query.order_by(c.revision.desc()).limit(1)))
        if containers:
            found.update((r.id, r) for r in conn.execute(
                select(t.releases).where(c.env == env, c.container_id.in_(list(containers)))))
    rows = sorted(found.values(), key=lambda r: r.revision)
    require_rows(conn, "release", [r._mapping for r in rows])
    return [_release(r) for r in rows], complete


def last_known_good(conn: Connection, env: str) -> list[Release]:
    """The rows ``registry.ledger.went_dark`` needs when nothing is deployed: the newest release
    and the newest that served healthily (the last known good), oldest first. Two one-row reads
    through the (env, revision) index, whatever the ledger's length."""
    c = t.releases.c
    good = conn.execute(select(t.releases).where(c.env == env, c.healthy.is_(True), c.status != "failed")
                        .order_by(c.revision.desc()).limit(1)).all()
    last = conn.execute(select(t.releases).where(c.env == env).order_by(c.revision.desc()).limit(1)).all()
    rows = {r.id: r for r in [*good, *last]}.values()
    require_rows(conn, "release", [r._mapping for r in rows])
    return sorted((_release(r) for r in rows), key=lambda r: r.revision)


def count(conn: Connection, env: str | None = None) -> int:
    query = select(func.count()).select_from(t.releases)
    return conn.execute(query if env is None else query.where(t.releases.c.env == env)).scalar_one()


def current_and_pending(conn: Connection, env: str) -> list[Release]:
    """Only the rows ``status`` needs: the deployed release and a pending one, if any."""
    c = t.releases.c
    rows = conn.execute(select(t.releases).where(
        c.env == env, c.status.in_(["deployed", "pending-deploy", "pending-rollback"])).order_by(c.revision)).all()
    require_rows(conn, "release", [r._mapping for r in rows])
    return [_release(r) for r in rows]


def insert_(conn: Connection, r: Release) -> None:
    conn.execute(insert(t.releases).values(**sealed(conn, "release", _values(r))))


def update_(conn: Connection, r: Release) -> None:
    conn.execute(update(t.releases).values(**sealed(conn, "release", _values(r)))
                 .where(t.releases.c.env == r.env, t.releases.c.revision == r.revision))


def bindings(rows: list[Release]) -> dict:
    """``{row name: digest}`` of the rows a change wrote, for its event (``registry.trust.seals``)."""
    return seals.bindings("release", [_values(r) for r in rows])


def apply(conn: Connection, settlement: Settlement) -> None:
    """Write a settlement; rows leaving ``deployed`` first, so the one-deployed index holds
    after every statement (SQLite checks it per statement)."""
    rows = [*settlement.updates, *settlement.appended]
    appended = {id(r) for r in settlement.appended}
    for r in sorted(rows, key=lambda r: r.status is ReleaseStatus.DEPLOYED):
        (insert_ if id(r) in appended else update_)(conn, r)


def _release(row) -> Release:
    data = {c: getattr(row, c) for c in _COLUMNS}
    for key in ("started_at", "finished_at"):
        if data[key] is not None:
            data[key] = clock.utc(data[key])
    data["status"], data["operation"] = ReleaseStatus(row.status), Operation(row.operation)
    data["hosts"] = [HostState(**h) for h in json.loads(row.hosts)] if row.hosts else None
    return Release(**data)


def _values(r: Release) -> dict:
    data = r.model_dump(include=set(_COLUMNS))
    data["status"], data["operation"] = str(r.status), str(r.operation)
    data["hosts"] = canonical.dumps(data["hosts"]) if r.hosts is not None else None
    return data
