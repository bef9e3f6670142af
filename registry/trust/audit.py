"""The append-only audit log's logic: the hash chain, its verification, filters. No I/O.

Every mutation writes one event in the same transaction (``registry.store.sql.events.append``).
Events are hash-chained: ``hash = sha256(prev_hash + canonical(event))``, the event's id
included, so an altered, inserted, deleted or reordered row breaks the chain from there on.
``verify`` recomputes the chain over rows in id order (streamed by the store, so memory stays
flat) and names the first bad event; a chain cannot see its own tail cut off, so a
``Checkpoint`` gives the head hash and count to keep elsewhere, and ``verify(against=...)``
checks the log still reaches it. Push events record ``prompts_changed`` so that
"who changed the system prompt?" is one filtered query.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry import clock
from registry.errors import InvalidInput
from registry.formats import canonical
from registry.models import check_name
from registry.trust.seals import Row, SealProblem

GENESIS = "0" * 64

# Every action an event can record; `registry audit --action` accepts only these.
ACTIONS = ("init", "db-upgrade", "push", "promote", "rollback", "recover", "env-add", "env-set", "env-remove",
           "gc", "backup", "restore", "export", "import", "deprecate", "delete", "seal", "new-identity",
           "key-add", "key-remove", "env-trust", "sign", "approve",  # issue 25
           "remote-add", "remote-remove", "remote-push", "pull",  # issue 23
           "hook-add", "hook-remove", "alert",  # issue 26
           "env-host-add", "env-host-remove")  # issue 22: fleets


def timestamp(at: datetime) -> str:
    return clock.utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical.dumps(body)).encode()).hexdigest()


def event_body(row: Row) -> dict[str, Any]:
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


def new_event(last: tuple[int, str] | None, *, at: datetime, actor: str, action: str, object: str,
              detail: dict[str, Any], model: str | None = None, env: str | None = None,
              reason: str | None = None, db_user: str | None = None) -> dict[str, Any]:
    """The row that follows ``last`` (its id and hash; None for the first event), hash included."""
    if action not in ACTIONS:  # a programming error: --action could never find the event
        raise ValueError(f"audit action {action!r} is not in audit.ACTIONS")
    row = {"id": last[0] + 1 if last else 1, "at": clock.utc(at), "actor": actor, "db_user": db_user,
           "action": action, "object": object, "model": model, "env": env,
           "detail": canonical.dumps(detail), "reason": reason}
    prev = last[1] if last else GENESIS
    return {**row, "prev_hash": prev, "hash": chain_hash(prev, event_body(row))}


def prompts_changed(before: Mapping[str, str], prompts: list[dict[str, Any]]) -> list[str]:
    """Names of prompts whose digest differs from ``before`` (name -> digest; added and removed
    too). Recorded in the push event so ``registry audit --prompt NAME`` need not read versions."""
    after = {p["name"]: p["digest"] for p in prompts}
    return sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))


# --- reading the log ---------------------------------------------------------------------


class Event(BaseModel):
    """One audit event, as ``registry audit --json`` prints it."""

    id: int
    at: datetime
    actor: str
    db_user: str | None = None
    action: str
    object: str
    model: str | None = None
    env: str | None = None
    detail: dict[str, Any]
    reason: str | None = None
    hash: str


ID_MAX = 2**63 - 1  # the largest event id a BIGINT column (and SQLite) holds


class AuditFilter(BaseModel):
    """Which events ``query`` returns; every field narrows the result."""

    model_config = ConfigDict(extra="forbid")

    action: str | None = None
    actor: str | None = None  # a case-insensitive substring of the actor
    env: str | None = None
    model: str | None = None
    prompt: str | None = None  # events that changed this prompt (detail.prompts_changed)
    since: datetime | None = None  # also an ISO date or an age like 7d, 12h
    limit: int | None = None
    before: int | None = Field(default=None, ge=1, le=ID_MAX)  # only events older than event ID (the next page)
    after: int | None = Field(default=None, ge=0, le=ID_MAX)  # only events newer than event ID (the page before)

    @field_validator("since", mode="before")
    @classmethod
    def _since(cls, value: Any) -> Any:
        return parse_since(value) if isinstance(value, str) else value

    @field_validator("action")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        if value is not None and value not in ACTIONS:
            raise ValueError(f"unknown action {value!r}: use one of {', '.join(ACTIONS)}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | None) -> str | None:
        return check_name(value, "prompt name") if value is not None else None


def filter_of(**fields: Any) -> AuditFilter:
    """An ``AuditFilter``, or InvalidInput naming the field that is wrong."""
    try:
        return AuditFilter(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"audit filter {first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None


_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` before now, or an ISO date/time (UTC when no zone is given)."""
    text = text.strip()
    if m := _RELATIVE.fullmatch(text):
        try:
            return clock.utc(now or clock.now()) - timedelta(**{_UNITS[m[2]]: int(m[1])})
        except (OverflowError, ValueError):  # before year 1, or a number too long to read
            raise InvalidInput(f"--since {text!r} reaches back before year 1: give a smaller age "
                               "or an ISO date") from None
    try:
        return clock.utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:59-23:59 is past year 9999 in UTC
        raise InvalidInput(f"--since {text!r}: write an ISO date (2026-11-01, 2026-11-01T12:00) "
                           "or an age like 7d, 12h, 30m, 2w") from None


def event_of(row: Row) -> Event:
    """An ``Event`` from a row of the events table."""
    fields = {k: row[k] for k in Event.model_fields if k in row}
    return Event(**{**fields, "at": clock.utc(row["at"]), "detail": json.loads(row["detail"])})


def matches_prompt(event: Event, prompt: str | None) -> bool:
    """The exact check behind ``--prompt`` (the store narrows by text first)."""
    return prompt is None or prompt in event.detail.get("prompts_changed", [])


# --- verifying the chain -----------------------------------------------------------------


class Checkpoint(BaseModel):
    """The head of the log at some moment: keep it elsewhere to detect a truncated tail later."""

    head: str
    count: int

    def __str__(self) -> str:
        return f"{self.head}:{self.count}"


class Problem(BaseModel):
    event: int  # the first event that is wrong (or missing)
    kind: str  # altered, inserted, deleted, reordered, truncated
    message: str


class Verification(BaseModel):
    ok: bool
    checked: int  # events whose hash was recomputed before the first problem (all when ok)
    head: str | None = None
    problem: Problem | None = None  # the first break in the hash chain
    # rows that are not what Cellar sealed (registry.trust.seals): edited, forged, replayed, deleted
    seals: list[SealProblem] = Field(default_factory=list)


def parse_checkpoint(text: str) -> Checkpoint:
    """``HASH:COUNT``, or a file holding that (or the JSON of ``registry audit checkpoint --json``)."""
    path = Path(text)
    if len(text) < 200 and path.is_file():
        text = path.read_text().strip()
    try:
        if text.startswith("{"):
            return Checkpoint.model_validate_json(text)
        head, _, count = text.strip().rpartition(":")
        if len(head) != 64 or not count.isdigit():
            raise ValueError
        return Checkpoint(head=head, count=int(count))
    except ValueError:
        raise InvalidInput(f"--checkpoint {text[:80]!r}: give HASH:COUNT as printed by "
                           "`registry audit checkpoint`, or a file holding it") from None


FindByHash = Callable[[str], int | None]  # event hash -> id of the event holding it, if any


def check_chain(rows: Iterable[Row], *, find_by_hash: FindByHash,
           against: Checkpoint | None = None) -> Verification:
    """Recompute the chain over ``rows`` (id order) and name the first event that is wrong."""
    prev, count, bad = GENESIS, 0, None
    for row in rows:
        if row["id"] != count + 1 or row["prev_hash"] != prev or chain_hash(prev, event_body(row)) != row["hash"]:
            bad = dict(row)
            break
        prev, count = row["hash"], count + 1
        if against and count == against.count and prev != against.head:
            return _broken(count, prev, Problem(event=count, kind="truncated", message=(
                f"event {count} no longer has the checkpointed hash {against.head[:12]}: "
                "the log was cut and written again (or re-hashed) after the checkpoint")))
    if bad is not None:
        return _broken(count, prev, _classify(find_by_hash, bad, expected=count + 1, prev=prev))
    if against and count < against.count:
        return _broken(count, prev, Problem(event=count + 1, kind="truncated", message=(
            f"the log ends at event {count} but the checkpoint recorded {against.count}: "
            f"events {count + 1}..{against.count} were deleted")))
    return Verification(ok=True, checked=count, head=prev if count else None)


def _broken(count: int, prev: str, problem: Problem) -> Verification:
    return Verification(ok=False, checked=count, head=prev if count else None, problem=problem)


def _classify(find_by_hash: FindByHash, row: dict[str, Any], *, expected: int, prev: str) -> Problem:
    """Say what most likely happened at the first row that does not chain."""
    rid, linked = row["id"], row["prev_hash"] == prev
    if rid != expected:
        if linked:
            return Problem(event=rid, kind="inserted",
                           message=f"event {rid} was inserted: it follows event {expected - 1} but skips id {expected}")
        return Problem(event=expected, kind="deleted", message=(
            f"event {expected} was deleted" if rid == expected + 1
            else f"events {expected}..{rid - 1} were deleted"))
    if linked:
        return Problem(event=rid, kind="altered",
                       message=f"event {rid} was altered: its content no longer matches its hash")
    origin = find_by_hash(row["prev_hash"])
    if origin is None:
        if chain_hash(row["prev_hash"], event_body(row)) == row["hash"]:
            return Problem(event=rid - 1, kind="altered", message=(
                f"event {rid - 1} was altered and re-hashed: event {rid} was chained to other content"))
        return Problem(event=rid, kind="deleted", message=(
            f"an event before event {rid} was deleted and the ids after it renumbered"))
    if origin > rid:
        return Problem(event=rid, kind="reordered", message=(
            f"event {rid} is out of order: it was written after event {origin}"))
    return Problem(event=origin + 1, kind="inserted", message=(
        f"event {origin + 1} was inserted: event {rid} was chained directly after event {origin}"
        if origin + 1 == rid - 1 else
        f"events {origin + 1}..{rid - 1} were inserted: event {rid} was chained directly after event {origin}"))
