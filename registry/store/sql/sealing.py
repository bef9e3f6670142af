"""Seals in SQL (``registry.trust.seals`` says what is sealed and why): every row the store writes
gets its ``mac``; rows a decision rests on are checked as they are read; ``check`` gathers
everything ``registry audit verify`` adds to the hash chain; ``seal_unsealed`` seals a record
written before seals existed (``registry init``, trust on first use).

The key rides on the connection (``conn.info``, set by ``Store.read``/``Store.write``): a
Store opened without a key (tests of the schema, tools) writes unsealed rows and checks nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from registry.errors import AuditBroken
from registry.store.sql import KEY_INFO, Statement, upsert
from registry.store.sql import schema as t
from registry.trust import seals
from registry.trust.seals import Key, Row, SealProblem


def key_of(conn: Connection) -> Key | None:
    return conn.info.get(KEY_INFO)


def sealed(conn: Connection, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a release or environment row's columns) with their ``mac``."""
    key = key_of(conn)
    return {**values, "mac": seals.row_mac(key, kind, values) if key else None}


def event_seals(conn: Connection, event_id: int, event_hash: str) -> tuple[str | None, dict[str, Any] | None]:
    """The event's mac and the ``audit_head`` row that moves to it, for the caller to write in
    the same transaction (``registry.store.sql.events.append``); (None, None) without a key."""
    key = key_of(conn)
    if key is None:
        return None, None
    head = {"id": 1, "count": event_id, "head": event_hash, "mac": seals.head_mac(key, event_id, event_hash)}
    return seals.event_mac(key, event_id, event_hash), head


def seal_event(conn: Connection, event_id: int, event_hash: str) -> str | None:
    """The event's mac; the signed head of the log moves to it (same transaction)."""
    mac, head = event_seals(conn, event_id, event_hash)
    if head is not None:
        move_head(conn, head)
    return mac


def move_head(conn: Connection, head: dict[str, Any]) -> None:
    """Rewrite the one ``audit_head`` row (write it, the first time)."""
    conn.execute(*moving_head(conn, head))


def moving_head(conn: Connection, head: dict[str, Any]) -> Statement:
    """``move_head`` as a statement, for a caller's ``run_all``."""
    return _head_upsert(conn.dialect.name), head


@functools.cache
def _head_upsert(dialect: str):
    stmt = upsert(dialect)(t.audit_head)
    return stmt.on_conflict_do_update(index_elements=["id"],
                                      set_={c: stmt.excluded[c] for c in ("count", "head", "mac")})


def seal_version(conn: Connection, fields: Row) -> str | None:
    """The mac of a versions row (``fields`` as ``seals.version_fields`` reads them)."""
    key = key_of(conn)
    return seals.version_mac(key, fields) if key else None


def require_version(conn: Connection, row: Row) -> None:
    """AuditBroken unless the version row (model name, version, manifest_digest, manifest,
    message, actor, created_at, provenance, mac) is what was sealed; the stored manifest must
    hash to its digest even without a key."""
    key = key_of(conn)
    if key is not None:
        seals.check_version(key, row)
    elif not seals.manifest_matches(row["manifest"], row["manifest_digest"]):
        raise AuditBroken(f"{row['model']}@{row['version']}: the stored manifest does not hash to its "
                          "manifest_digest: it was edited in the database; refusing to use it")


def require_rows(conn: Connection, kind: str, rows: Iterable[Row]) -> None:
    """AuditBroken naming the first release or environment row whose seal does not hold."""
    key = key_of(conn)
    if key is None:
        return
    for row in rows:
        if (problem := seals.row_problem(key, kind, row)) is not None:
            raise AuditBroken(f"{problem.message}; refusing to act on it (run `registry audit verify`)")


def check(conn: Connection) -> list[SealProblem]:
    """Every seal problem in the record: events, the signed head, versions, releases,
    environments, and rows that are not what the newest event naming them wrote."""
    key = key_of(conn)
    if key is None:
        return []
    head = conn.execute(select(t.audit_head)).mappings().first()
    return seals.check_record(
        key, events=_stream(conn, select(t.events.c.id, t.events.c.hash, t.events.c.mac, t.events.c.detail)
                            .order_by(t.events.c.id)),
        head=head, versions=_stream(conn, version_rows()),
        releases=[dict(r) for r in conn.execute(select(t.releases)).mappings()],
        environments=[dict(r) for r in conn.execute(select(t.environments)).mappings()],
        others={kind: [dict(r) for r in conn.execute(select(table)).mappings()]
                for kind, table in (("signing_key", t.signing_keys), ("trust", t.env_trust))})


def version_rows():
    """The columns a version's seal covers, the model's name included."""
    v = t.versions.c
    return (select(t.models.c.name.label("model"), v.id, v.version, v.manifest_digest, v.manifest, v.message, v.actor,
                   v.created_at, v.provenance, v.mac).select_from(t.versions.join(t.models)))


def seal_unsealed(conn: Connection) -> int:
    """Seal every row that has no seal yet (a record written before seals existed): trust on
    first use, so run it on a record you trust. Returns how many rows were sealed."""
    key = key_of(conn)
    if key is None:
        return 0
    count = 0
    for row in list(conn.execute(version_rows().where(t.versions.c.mac.is_(None))).mappings()):
        conn.execute(update(t.versions).where(t.versions.c.id == row["id"]).values(mac=seals.version_mac(key, row)))
        count += 1
    for table, kind in ((t.releases, "release"), (t.environments, "environment")):
        for row in list(conn.execute(select(table).where(table.c.mac.is_(None))).mappings()):
            conn.execute(update(table).where(table.c.id == row["id"]).values(mac=seals.row_mac(key, kind, row)))
            count += 1
    last = None
    for event in list(conn.execute(select(t.events.c.id, t.events.c.hash, t.events.c.mac).order_by(t.events.c.id))):
        last = event
        if event.mac is None:
            mac = seals.event_mac(key, event.id, event.hash)
            conn.execute(update(t.events).where(t.events.c.id == event.id).values(mac=mac))
            count += 1
    if last is not None and conn.execute(select(t.audit_head)).first() is None:
        seal_event(conn, last.id, last.hash)
    return count


def _stream(conn: Connection, stmt) -> Iterator[dict]:
    with conn.execution_options(yield_per=2000).execute(stmt) as result:
        for row in result.mappings():
            yield dict(row)
