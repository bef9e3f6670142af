"""The audit log in SQL: append in the caller's transaction, filtered reads, the chain streamed
to ``registry.trust.audit.check_chain``. The chain's logic is ``registry.trust.audit``; the rows live here."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from registry import clock
from registry.store.sql import Statement, run_all, sealing
from registry.store.sql.schema import event_prompts, events
from registry.trust import audit
from registry.trust.audit import AuditFilter, Checkpoint, Event, Verification
from registry.trust.seals import SealProblem

# Statements on the push path are built once: building one costs more than running it.
_LAST = select(events.c.id, events.c.hash).order_by(events.c.id.desc()).limit(1)
LAST: Statement = (_LAST, {})  # what ``appending`` needs to know, for a caller's ``run_all``
_INSERT = insert(events)
_INDEX = insert(event_prompts)


def append(conn: Connection, *, actor: str, action: str, object: str, detail: dict[str, Any],
           model: str | None = None, env: str | None = None, reason: str | None = None,
           db_user: str | None = None) -> str:
    """Append one event inside the caller's (serialised) write transaction; return its hash."""
    statements, digest = appending(conn, conn.execute(_LAST).first(), actor=actor, action=action, object=object,
                                   detail=detail, model=model, env=env, reason=reason, db_user=db_user)
    run_all(conn, statements)
    return digest


def appending(conn: Connection, last: tuple[int, str] | None, *, actor: str, action: str, object: str,
              detail: dict[str, Any], model: str | None = None, env: str | None = None,
              reason: str | None = None, db_user: str | None = None) -> tuple[list[Statement], str]:
    """The statements that append one event after ``last`` (the newest event's id and hash as
    ``LAST`` reads them; None in an empty log), and the new event's hash: the event, the signed
    head moving to it, the prompts it changed (one round trip on PostgreSQL, see ``run_all``)."""
    row = audit.new_event((last[0], last[1]) if last else None, at=clock.now(), actor=actor, action=action,
                          object=object, detail=detail, model=model, env=env, reason=reason, db_user=db_user)
    mac, head = sealing.event_seals(conn, row["id"], row["hash"])
    statements: list[Statement] = [(_INSERT, {**row, "mac": mac})]
    if head is not None:
        statements.append(sealing.moving_head(conn, head))
    statements.append((_INDEX, [{"prompt": p, "event_id": row["id"]} for p in _prompts_of(detail)]))
    return statements, row["hash"]


def _prompts_of(detail: dict[str, Any]) -> list[str]:
    """The prompts an event says it changed, each once (what ``event_prompts`` indexes)."""
    return list(dict.fromkeys(detail.get("prompts_changed") or []))


def query(conn: Connection, flt: AuditFilter) -> list[Event]:
    """Events matching ``flt``, newest first. ``before``/``after`` page by event id through the
    primary key, so the thousandth page costs what the first does."""
    # after: the ``limit`` oldest events newer than it (read upwards, returned newest first)
    stmt = select(events).order_by(events.c.id.asc() if flt.after is not None else events.c.id.desc())
    if flt.before is not None:
        stmt = stmt.where(events.c.id < flt.before)
    if flt.after is not None:
        stmt = stmt.where(events.c.id > flt.after)
    for column, value in ((events.c.action, flt.action), (events.c.env, flt.env), (events.c.model, flt.model)):
        if value:
            stmt = stmt.where(column == value)
    if flt.actor:
        stmt = stmt.where(events.c.actor.ilike(f"%{_escape_like(flt.actor)}%", escape="\\"))
    if flt.since:
        stmt = stmt.where(events.c.at >= flt.since)
    if flt.prompt:
        # Through the index of prompts changed, then checked against the parsed (sealed) detail.
        stmt = stmt.where(events.c.id.in_(select(event_prompts.c.event_id).where(event_prompts.c.prompt == flt.prompt)))
    if flt.limit:
        stmt = stmt.limit(flt.limit)
    out = []
    # Streamed: with a limit, reading stops at the limit-th match instead of fetching every match.
    with conn.execution_options(yield_per=500).execute(stmt) as result:
        for row in result.mappings():
            event = audit.event_of(row)
            if not audit.matches_prompt(event, flt.prompt):
                continue
            out.append(event)
            if flt.limit and len(out) >= flt.limit:
                break
    return out[::-1] if flt.after is not None else out


def check_chain(conn: Connection, *, against: Checkpoint | None = None, batch: int = 2000) -> Verification:
    """Stream every event in id order through ``audit.check_chain``."""
    def find_by_hash(digest: str) -> int | None:
        return conn.execute(select(events.c.id).where(events.c.hash == digest)).scalar()

    with conn.execution_options(yield_per=batch).execute(select(events).order_by(events.c.id)) as result:
        chain = audit.check_chain(result.mappings(), find_by_hash=find_by_hash, against=against)
    problems = sealing.check(conn) + index_problems(conn)
    if not problems:
        return chain
    return chain.model_copy(update={"ok": False, "seals": problems})


def index_problems(conn: Connection, batch: int = 2000) -> list[SealProblem]:
    """Where ``event_prompts`` differs from what the events themselves say: a row removed there
    would hide an event from ``audit --prompt``, one added would show an event that changed nothing."""
    said: set[tuple[int, str]] = set()
    query = select(events.c.id, events.c.detail).where(events.c.detail.like('%"prompts_changed":["%'))
    with conn.execution_options(yield_per=batch).execute(query) as result:
        for event_id, detail in result:
            said.update((event_id, p) for p in _prompts_of(json.loads(detail)))
    # a row of an event that is gone changes no answer (the chain reports the deletion itself)
    indexed = {(r.event_id, r.prompt) for r in conn.execute(
        select(event_prompts).join(events, events.c.id == event_prompts.c.event_id))}
    return [SealProblem(kind="index", object=f"event:{event_id}", message=(
                f"the prompt index {'lacks' if (event_id, prompt) in said else 'invents'} event {event_id} "
                f"changing prompt {prompt!r}: `registry audit --prompt` would "
                f"{'miss' if (event_id, prompt) in said else 'show'} it"))
            for event_id, prompt in sorted(said ^ indexed)]


def checkpoint(conn: Connection) -> Checkpoint:
    """The log's head hash and event count now."""
    last = conn.execute(select(events.c.hash).order_by(events.c.id.desc()).limit(1)).scalar()
    count = conn.execute(select(func.count()).select_from(events)).scalar_one()
    return Checkpoint(head=last or audit.GENESIS, count=count)


NEW_IDENTITY = "new-identity"  # the audit action that gives a registry (a restored copy) its own identity


def registry_id(conn: Connection) -> str:
    """This registry's identity, labelled on its containers: the hash of the first audit event.

    Derived from the database rather than a file in the home, so every home sharing one database
    (one ledger) sees the same containers, and two registries never do; the hash covers the init
    event's time and path, and the audit chain makes it immutable."""
    # A copy given its own identity (``registry restore --new-identity``) is the newest
    # new-identity event's hash: as immutable as the first, and read through the action index.
    first = conn.execute(select(events.c.hash).where(events.c.action == NEW_IDENTITY)
                         .order_by(events.c.id.desc()).limit(1)).scalar()
    if first is None:
        first = conn.execute(select(events.c.hash).order_by(events.c.id).limit(1)).scalar()
    if first is None:  # a database nobody initialised through `registry init`: derive from its URL
        first = hashlib.sha256(str(conn.engine.url.render_as_string(hide_password=True)).encode()).hexdigest()
    return first[:32]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


LEDGER_ACTIONS = ("promote", "rollback", "recover", "env-remove")  # the actions that write release rows


def ledger_rows(conn: Connection, env: str) -> list[dict[str, Any]]:
    """The raw rows (seals and hashes included) of the events that wrote ``env``'s ledger, in id
    order: what ``registry.versions.asof`` checks and binds an as-of answer to."""
    query = (select(events).where(events.c.env == env, events.c.action.in_(LEDGER_ACTIONS))
             .order_by(events.c.id))
    return [dict(r) for r in conn.execute(query).mappings()]
