"""Operation locks in SQL: one row per environment while an operation runs on it.

Who may take or break a lock is decided in ``registry.deploy.ownership``; this module only reads
and writes the rows, inside the caller's (serialised) write transaction.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from registry import clock
from registry.errors import OperationInProgress
from registry.models import Lock
from registry.store.sql import schema as t


def get(conn: Connection, env: str) -> Lock | None:
    row = conn.execute(select(t.env_locks).where(t.env_locks.c.env == env)).first()
    return _lock(row) if row else None


def all_(conn: Connection) -> list[Lock]:
    return [_lock(r) for r in conn.execute(select(t.env_locks))]


def take(conn: Connection, lock: Lock) -> None:
    conn.execute(insert(t.env_locks).values(**lock.model_dump()))


def drop(conn: Connection, lock: Lock, *, missing_ok: bool = False) -> None:
    """Release exactly this lock (same env, owner and operation). Raises when it is no longer
    there, e.g. a forced recover took the environment over: the caller must not carry on as owner."""
    c = t.env_locks.c
    gone = conn.execute(delete(t.env_locks).where(
        c.env == lock.env, c.pid == lock.pid, c.host == lock.host, c.operation == lock.operation,
        c.actor == lock.actor, c.target == lock.target)).rowcount
    if gone != 1 and not missing_ok:
        raise OperationInProgress(f"the lock on {lock.env} ({lock.operation} {lock.target}) was taken over by "
                                  f"another process meanwhile: run `registry status`, then "
                                  f"`registry recover --env {lock.env}` if the state looks wrong")


def _lock(row) -> Lock:
    return Lock(**{**row._mapping, "started_at": clock.utc(row.started_at)})
