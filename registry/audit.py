"""The append-only audit log: every mutation writes one event in the same transaction.

Events are hash-chained: ``hash = sha256(prev_hash + canonical(event))``, the event's id
included, so an altered, inserted, deleted or reordered row breaks the chain from there on.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from registry import canonical, clock
from registry.store.schema import events

GENESIS = "0" * 64


def timestamp(at: datetime) -> str:
    return clock.utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical.dumps(body)).encode()).hexdigest()


def event_body(row: dict[str, Any]) -> dict[str, Any]:
    """The fields an event's hash covers, from a row of the events table."""
    return {
        "id": row["id"],
        "at": timestamp(row["at"]),
        "actor": row["actor"],
        "db_user": row["db_user"],
        "action": row["action"],
        "object": row["object"],
        "model": row["model"],
        "env": row["env"],
        "detail": row["detail"],
        "reason": row["reason"],
    }


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    object: str,
    detail: dict[str, Any],
    model: str | None = None,
    env: str | None = None,
    reason: str | None = None,
    db_user: str | None = None,
) -> str:
    """Append one event inside the caller's (serialised) write transaction; return its hash."""
    last = conn.execute(select(events.c.id, events.c.hash).order_by(events.c.id.desc()).limit(1)).first()
    row = {
        "id": (last.id + 1) if last else 1,
        "at": clock.utc(clock.now()),
        "actor": actor,
        "db_user": db_user,
        "action": action,
        "object": object,
        "model": model,
        "env": env,
        "detail": canonical.dumps(detail),
        "reason": reason,
    }
    prev = last.hash if last else GENESIS
    row["hash"] = chain_hash(prev, event_body(row))
    conn.execute(insert(events).values(**row, prev_hash=prev))
    return row["hash"]
