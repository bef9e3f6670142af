"""Hooks in SQL: their settings and cursors, leases, the attempts, and the events after a
cursor (the audit log is the outbox). What to send and when is ``registry.hooks``."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from registry import clock
from registry.errors import AlreadyExists, NotFound
from registry.models.hooks import Delivery
from registry.store.sql.schema import events, hook_deliveries, hooks
from registry.trust import audit
from registry.trust.audit import Event


def add(conn: Connection, row: dict) -> None:
    if conn.execute(select(hooks.c.name).where(hooks.c.name == row["name"])).first():
        raise AlreadyExists(f"hook {row['name']!r} exists: `registry hook remove {row['name']}` first, "
                            "or choose another name")
    conn.execute(insert(hooks).values({**row, "events": json.dumps(row["events"]), "attempts": 0}))


def remove(conn: Connection, name: str) -> dict:
    row = get(conn, name)
    conn.execute(delete(hook_deliveries).where(hook_deliveries.c.hook == name))
    conn.execute(delete(hooks).where(hooks.c.name == name))
    return row


def get(conn: Connection, name: str) -> dict:
    row = conn.execute(select(hooks).where(hooks.c.name == name)).mappings().first()
    if row is None:
        known = ", ".join(r for r in names(conn)) or "none yet"
        raise NotFound(f"no hook named {name!r} (known: {known}); add one with `registry hook add`")
    return _row(row)


def names(conn: Connection) -> list[str]:
    return list(conn.execute(select(hooks.c.name).order_by(hooks.c.name)).scalars())


def all_(conn: Connection) -> list[dict]:
    return [_row(r) for r in conn.execute(select(hooks).order_by(hooks.c.name)).mappings()]


def head_event(conn: Connection) -> int:
    """The id of the newest audit event (0 in an empty log): where a new hook starts."""
    return conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one()


def after(conn: Connection, cursor: int, actions: list[str], *, limit: int) -> list[Event]:
    """The events after ``cursor`` whose action is one of ``actions``, oldest first."""
    stmt = (select(events).where(events.c.id > cursor, events.c.action.in_(actions))
            .order_by(events.c.id).limit(limit))
    return [audit.event_of(r) for r in conn.execute(stmt).mappings()]


def count_after(conn: Connection, cursor: int, actions: list[str]) -> int:
    return conn.execute(select(func.count()).select_from(events)
                        .where(events.c.id > cursor, events.c.action.in_(actions))).scalar_one()


def take_lease(conn: Connection, name: str, owner: str, until: datetime, *, now: datetime,
               gone: list[str]) -> bool:
    """Hold hook ``name`` until ``until``: when nobody holds it, its lease ran out, or its
    holder is one of ``gone`` (owners known dead). False when another deliverer holds it."""
    c = hooks.c
    free = or_(c.lease_owner.is_(None), c.lease_until < now, c.lease_owner == owner, c.lease_owner.in_(gone or [""]))
    taken = conn.execute(update(hooks).where(c.name == name, free).values(lease_owner=owner, lease_until=until))
    return taken.rowcount == 1


def lease_owner(conn: Connection, name: str) -> str | None:
    return conn.execute(select(hooks.c.lease_owner).where(hooks.c.name == name)).scalar()


def drop_lease(conn: Connection, name: str, owner: str) -> None:
    conn.execute(update(hooks).where(hooks.c.name == name, hooks.c.lease_owner == owner)
                 .values(lease_owner=None, lease_until=None))


def record(conn: Connection, name: str, owner: str, attempt: dict, *, cursor: int | None,
           attempts: int, next_at: datetime | None) -> bool:
    """Record one attempt and move the hook on (the cursor when its event is done with, else the
    retry count and time), if ``owner`` still holds the lease; False when it lost it."""
    values: dict = {"attempts": attempts, "next_at": next_at}
    if cursor is not None:
        values["cursor"] = cursor
    moved = conn.execute(update(hooks).where(hooks.c.name == name, hooks.c.lease_owner == owner).values(**values))
    if moved.rowcount != 1:
        return False
    conn.execute(insert(hook_deliveries).values(hook=name, **attempt))
    return True


def record_test(conn: Connection, name: str, attempt: dict) -> None:
    conn.execute(insert(hook_deliveries).values(hook=name, **attempt))


def deliveries(conn: Connection, name: str, *, limit: int | None) -> list[Delivery]:
    get(conn, name)  # NotFound, naming the hooks there are
    stmt = (select(hook_deliveries).where(hook_deliveries.c.hook == name)
            .order_by(hook_deliveries.c.id.desc()))
    if limit:
        stmt = stmt.limit(limit)
    return [Delivery(**{**r, "at": clock.utc(r["at"])}) for r in conn.execute(stmt).mappings()]


def _row(row) -> dict:
    out = dict(row)
    out["events"] = json.loads(out["events"])
    for key in ("created_at", "next_at", "lease_until"):
        if out[key] is not None:
            out[key] = clock.utc(out[key])
    return out
