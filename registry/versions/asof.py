"""What ran when: the release that was serving in an environment at any moment (``ENV@TIME``).

The answer is read from the sealed ledger alone, never from Docker (which only knows now):

- A release starts serving at its ``finished_at`` when it ended healthy (status ``deployed``,
  or ``superseded`` later): promotes, rollbacks, automatic rollbacks and adopted containers.
- A failed release changes nothing, unless the event that recorded its failure also wrote the
  row of the release serving before it: then that release was stopped for the switch and
  did not come back (``settle(previous="lost")``), and the environment was dark from then
  until the next healthy release. (An automatic rollback at the same moment serves again.)
- A release still pending at that moment is reported beside the answer: the switch was under way.

Every row the answer rests on is checked first: each release row against its seal (the store
does it as it reads the ledger), each event that wrote the ledger against its seal and its own
hash, and each release row against the newest event that names it (``seals.check_bindings``),
so neither an edited row nor an older, once-valid copy of one can change what the past says.
Times: ISO 8601 with an optional zone (none means UTC) or an age like ``2h``, ``3d`` before now.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from registry import clock
from registry.configuration import Configuration
from registry.errors import AuditBroken, InvalidInput, NotFound
from registry.ledger import Release, ReleaseStatus
from registry.models import check_name
from registry.store.sql import environments, events, releases, sealing
from registry.trust import audit, seals

TIME_HELP = ("an ISO 8601 date/time (2026-11-20T03:12, 2026-11-20T03:12+01:00; no zone means UTC) "
             "or an age like 30m, 2h, 3d, 1w")


class AsOf(BaseModel):
    """What served in ``env`` at ``at`` (UTC), as the sealed ledger records it."""

    env: str
    at: datetime
    release: Release | None = None  # the release serving then; None: nothing (yet, or dark)
    since: datetime | None = None  # when that release (or the darkness) began
    until: datetime | None = None  # when it ended; None: it still holds now
    dark: bool = False  # something served before, and nothing served then
    dark_reason: str | None = None
    pending: Release | None = None  # a switch under way at that moment


# --- reading times and references ----------------------------------------------------------


def parse_time(text: str | datetime, *, option: str = "--at", now: datetime | None = None,
               future: bool = False) -> datetime:
    """A moment in UTC from ``text`` (see ``TIME_HELP``); one-line InvalidInput naming ``option``
    when it cannot be read or (unless ``future``) lies in the future."""
    if isinstance(text, datetime):
        at = clock.utc(text)
    else:
        try:
            at = audit.parse_since(text, now=now)
        except InvalidInput:
            raise InvalidInput(f"{option} {text!r} is not a time: write {TIME_HELP}") from None
    if not future and at > clock.utc(now or clock.now()):
        raise InvalidInput(f"{option} {text!r} is in the future ({audit.timestamp(at)}): the ledger only "
                           "knows the past; give an earlier time")
    return at


def window(since: str | datetime | None, until: str | datetime | None) -> tuple[datetime | None, datetime | None]:
    """``--since``/``--until`` as UTC moments (either may be None); InvalidInput when they cross."""
    start = None if since is None else parse_time(since, option="--since", future=True)
    end = None if until is None else parse_time(until, option="--until", future=True)
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"--since {audit.timestamp(start)} is after --until {audit.timestamp(end)}: "
                           "swap them")
    return start, end


def split_ref(ref: str, env_names: Iterable[str]) -> tuple[str, datetime] | None:
    """``ENV@TIME`` -> (env, moment) when the part before the last ``@`` names an environment and
    the rest reads as a time; None for anything else (``model@version``, a bare version)."""
    env, sep, when = ref.rpartition("@")
    if not sep or env not in set(env_names):
        return None
    try:
        check_name(env, "environment")
    except ValueError:
        return None
    if _looks_like_version(when):
        return None
    return env, parse_time(when, option=f"{env}@")


def _looks_like_version(text: str) -> bool:
    return text[:1] in ("v", "V") and text[1:2].isdigit()


# --- the answer ----------------------------------------------------------------------------


def as_of(cfg: Configuration, env_name: str | None, at: datetime) -> AsOf:
    """What served in ``env_name`` (the default environment when None) at ``at``, from the
    sealed ledger; AuditBroken when a row it rests on is not what Cellar wrote."""
    with cfg.store.read() as conn:
        env = environments.named_or_default(conn, env_name).name
        ledger = releases.ledger(conn, env)  # AuditBroken on a row whose seal does not hold
        wrote = events.ledger_rows(conn, env)
        check_sealed(sealing.key_of(conn), env, releases.bindings(ledger), wrote)
    removed = [clock.utc(e["at"]) for e in wrote if e["action"] == "env-remove"]
    return serving_at(ledger, failure_writes(wrote, env), clock.utc(at), env=env, removed=removed)


def served(cfg: Configuration, env_name: str, at: datetime) -> Release:
    """The release serving in ``env_name`` at ``at``; NotFound when nothing did."""
    answer = as_of(cfg, env_name, at)
    if answer.release is None:
        raise nothing_then(answer)
    return answer.release


def env_names(cfg: Configuration) -> list[str]:
    return [e.name for e in cfg.store.read_once(environments.all_)]


def serving_at(ledger: list[Release], wrote: Mapping[int, set[str]], at: datetime, *, env: str,
               removed: Iterable[datetime] = ()) -> AsOf:
    """Pure: what served in ``env`` at ``at`` from its ledger (oldest revision first), per
    revision the release row names written with it (``wrote``), and when ``env`` was removed
    (``registry env remove`` stops what runs: nothing serves until a release of its successor)."""
    changes = sorted([*_changes(ledger, wrote, env=env),
                      *((t, None, f"environment {env} was removed") for t in removed)], key=lambda c: c[0])
    before = [c for c in changes if c[0] <= at]
    after = [c for c in changes if c[0] > at]
    pending = next((r for r in reversed(ledger) if r.started_at <= at and
                    (r.finished_at is None or clock.utc(r.finished_at) > at)), None)
    if not before:
        return AsOf(env=env, at=at, pending=pending, until=after[0][0] if after else None)
    since, release, reason = before[-1]
    current_key = (release.revision if release else None, reason)
    until = next((t for t, r, why in after if (r.revision if r else None, why) != current_key), None)
    return AsOf(env=env, at=at, release=release, since=since, until=until, dark=release is None,
                dark_reason=reason, pending=pending)


def _changes(ledger: list[Release], wrote: Mapping[int, set[str]], *, env: str
             ) -> list[tuple[datetime, Release | None, str | None]]:
    """(moment, the release serving from then on or None when dark, why dark), in order."""
    out: list[tuple[datetime, Release | None, str | None]] = []
    serving: Release | None = None
    for r in ledger:  # revisions are appended in time order
        if r.finished_at is None:
            continue
        at = clock.utc(r.finished_at)
        if r.healthy and r.status is not ReleaseStatus.FAILED:  # it served from then on
            serving = r
            out.append((at, r, None))
        elif (r.status is ReleaseStatus.FAILED and serving is not None
              and seals.row_key("release", {"env": env, "revision": serving.revision}) in wrote.get(r.revision, ())):
            out.append((at, None, f"revision {r.revision} ({r.ref}) failed and {serving.ref} "
                                  f"(revision {serving.revision}) did not come back"))
            serving = None
    return out


def failure_writes(events: Iterable[Mapping[str, Any]], env: str) -> dict[int, set[str]]:
    """Per revision of ``env``, the release rows written together with it (``detail.rows`` of
    every event naming its row): a failed promote's, or a ``recover`` that reverted one."""
    prefix = f"release:{env}#"
    out: dict[int, set[str]] = {}
    for e in events:
        rows = set(_detail(e).get("rows") or {})
        for name in rows:
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                out.setdefault(int(name[len(prefix):]), set()).update(rows)
    return out


# --- the seals the answer rests on -----------------------------------------------------------


def check_sealed(key: seals.Key | None, env: str, current: Mapping[str, str],
                 events: Iterable[Mapping[str, Any]]) -> None:
    """AuditBroken naming the first event or release row of ``env`` that is not what Cellar wrote.
    ``current``: ``{row name: digest}`` of the ledger's rows as read (each seal checked by the
    store as it read them); ``events``: the raw rows of the events that wrote the ledger."""
    if key is None:
        return
    bound = []
    for e in events:
        problem = seals.event_problem(key, e)
        if problem is None and audit.chain_hash(e["prev_hash"], audit.event_body(e)) != e["hash"]:
            problem = seals.SealProblem(kind="forged", object=f"event:{e['id']}",
                                        message=f"event:{e['id']} was edited outside Cellar: its content no "
                                                "longer matches its hash")
        if problem is not None:
            raise AuditBroken(f"{problem.message}; refusing to answer what ran in {env} then "
                              "(run `registry audit verify`)")
        bound.append((e["id"], _detail(e)))
    problems = seals.check_bindings(current, bound, kinds=("release",))
    if problems:
        raise AuditBroken(f"{problems[0].message}; refusing to answer what ran in {env} then "
                          "(run `registry audit verify`)")


def _detail(event: Mapping[str, Any]) -> dict[str, Any]:
    detail = event.get("detail") or {}
    return json.loads(detail) if isinstance(detail, str) else dict(detail)


def nothing_then(answer: AsOf) -> NotFound:
    """The error for a reference to what ran when nothing did."""
    when = audit.timestamp(answer.at)
    if answer.dark:
        return NotFound(f"nothing served in {answer.env} at {when}: it was dark ({answer.dark_reason})")
    return NotFound(f"nothing had been deployed in {answer.env} by {when}: see `registry history --env {answer.env}`")
