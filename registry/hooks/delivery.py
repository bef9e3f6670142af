"""Delivering hooks: each hook's events after its cursor, oldest first, at least once.

One pass (``Deliver.run``) takes each hook's lease, sends its due events one at a time, and
records every attempt. A 2xx moves the cursor past the event; anything else schedules the same
event again after a doubling backoff (so events reach a receiver in the order they happened,
per environment and overall), and after ``MAX_ATTEMPTS`` the event is given up (recorded as
``gave-up``, visible in ``registry hook deliveries``) and the next one is tried. A deliverer
killed mid-request leaves the cursor where it was: the event goes again (at least once; the
event's ``id`` lets a receiver drop the copy).

Each request has a time limit (``TIMEOUT_S`` to connect and between bytes); a promote never
waits for any of it, since it only appends its audit event.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

from registry import clock
from registry.action import Action
from registry.errors import CellarError, InvalidInput
from registry.hooks import payload
from registry.models.hooks import DeliveryPass
from registry.store.files.blobs import process_alive
from registry.store.sql import hooks as store
from registry.trust.audit import Event

log = logging.getLogger("registry.hooks")

TIMEOUT_S = 5.0
MAX_ATTEMPTS = 8  # 1 + 2 + ... + 64 s of backoff: a receiver down for two minutes misses nothing
BACKOFF_S = 1.0
BACKOFF_MAX_S = 300.0
LEASE_S = 60.0  # a deliverer renews it per event; one that died is replaced after this (or at once, same host)
BATCH = 100


class Deliver(Action):
    """``Deliver(cfg).run(budget_s=...)``: one pass over every hook (or ``only``), for at most
    about ``budget_s`` seconds plus one request's time limit."""

    def __init__(self, cfg, *, actor: str = "", send=None):
        super().__init__(cfg, actor=actor)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._send = send or post

    def run(self, *, budget_s: float = 30.0, only: str | None = None) -> DeliveryPass:
        deadline = time.monotonic() + budget_s
        out = DeliveryPass()
        with self.cfg.store.read() as conn:
            names = [only] if only else store.names(conn)
            if only:
                store.get(conn, only)  # NotFound, naming the hooks there are
        for name in names:
            if not self._lease(name):
                out.busy.append(name)
                continue
            try:
                self._drain(name, deadline, out)
            finally:
                with self.cfg.store.write() as conn:
                    store.drop_lease(conn, name, self.owner)
        with self.cfg.store.read() as conn:
            out.waiting = sum(store.count_after(conn, r["cursor"], r["events"]) for r in store.all_(conn)
                              if r["name"] in names)
        return out

    def _lease(self, name: str) -> bool:
        now = clock.now()
        until = now + timedelta(seconds=LEASE_S)
        with self.cfg.store.write() as conn:
            if store.take_lease(conn, name, self.owner, until, now=now, gone=[]):
                return True
            holder = store.lease_owner(conn, name) or ""
            host, _, pid = holder.rpartition(":")
            dead = host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
            return dead and store.take_lease(conn, name, self.owner, until, now=now, gone=[holder])

    def _drain(self, name: str, deadline: float, out: DeliveryPass) -> None:
        while time.monotonic() < deadline:
            with self.cfg.store.read() as conn:
                row = store.get(conn, name)
                due = store.after(conn, row["cursor"], row["events"], limit=BATCH)
            if not due or (row["next_at"] is not None and row["next_at"] > clock.now()):
                return
            for event in due:
                if time.monotonic() >= deadline:
                    return
                attempt = row["attempts"] + 1
                outcome, status, detail, ms = self._attempt(row, event)
                done = outcome == "delivered" or attempt >= MAX_ATTEMPTS
                if not done:
                    outcome = "failed"
                elif outcome != "delivered":
                    outcome = "gave-up"
                next_at = None if done else clock.now() + timedelta(seconds=backoff_s(attempt))
                record = {"event_id": event.id, "action": event.action, "attempt": attempt, "at": clock.now(),
                          "outcome": outcome, "status": status, "detail": detail, "ms": ms}
                with self.cfg.store.write() as conn:
                    kept = store.record(conn, name, self.owner, record, cursor=event.id if done else None,
                                        attempts=0 if done else attempt, next_at=next_at)
                    if kept:
                        store.take_lease(conn, name, self.owner, clock.now() + timedelta(seconds=LEASE_S),
                                         now=clock.now(), gone=[])
                if not kept:
                    return  # another deliverer took the hook over (this one was presumed dead)
                setattr(out, outcome.replace("-", "_"), getattr(out, outcome.replace("-", "_")) + 1)
                if not done:
                    return  # the same event again after the backoff: order is kept
                row = {**row, "attempts": 0, "next_at": None, "cursor": event.id}

    def _attempt(self, row: dict, event: Event) -> tuple[str, int | None, str, int]:
        started = time.monotonic()
        try:
            url, secret = resolve(row, self.cfg.environ)
        except InvalidInput as exc:
            return "failed", None, str(exc), 0
        body = payload.body_of(event, fmt=row["format"], web_url=row["web_url"])
        headers = payload.headers(body, event=event, delivery=str(uuid.uuid4()), secret=secret,
                                  timestamp=int(clock.now().timestamp()))
        status, why = self._send(url, body, headers)
        ms = int((time.monotonic() - started) * 1000)
        return ("delivered" if not why else "failed"), status, why, ms


def test_event(actor: str) -> Event:
    """What ``registry hook test`` sends: an event of action ``test`` that is in no audit log."""
    return Event(id=0, at=clock.now(), actor=actor, action="test", object="test", detail={},
                 hash="0" * 64)


def send_test(cfg, name: str, *, actor: str, send=None) -> tuple[bool, str]:
    """Send hook ``name`` a test event now, record the attempt; (delivered, what happened)."""
    with cfg.store.read() as conn:
        row = store.get(conn, name)
    deliver = Deliver(cfg, send=send)
    outcome, status, detail, ms = deliver._attempt(row, test_event(actor))
    with cfg.store.write() as conn:
        store.record_test(conn, name, {"event_id": None, "action": "test", "attempt": 1, "at": clock.now(),
                                       "outcome": outcome, "status": status, "detail": detail, "ms": ms})
    said = f"HTTP {status}" if status else detail
    return outcome == "delivered", said + (f" ({detail})" if status and detail and detail != said else "")


def resolve(row: dict, environ) -> tuple[str, str | None]:
    """The hook's URL and secret, from the row and this process's environment."""
    url = row["url"]
    if row["url_env"]:
        url = environ.get(row["url_env"], "").strip()
        if not url:
            raise InvalidInput(f"environment variable {row['url_env']} (the hook's URL) is not set in the "
                               "process delivering")
    secret = None
    if row["secret_env"]:
        secret = environ.get(row["secret_env"], "")
        if not secret:
            raise InvalidInput(f"environment variable {row['secret_env']} (the hook's secret) is not set in the "
                               "process delivering: nothing is sent unsigned")
    return url, secret


def backoff_s(attempt: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1))


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST; (HTTP status or None, '' when delivered else why not). The reason never quotes the
    URL (it may hold a token): only a status, or the kind of network failure.

    ``TIMEOUT_S`` bounds each connect and read; a receiver trickling a byte at a time could keep
    a request going for hours within it, so the whole request has twice that, after which the
    deliverer moves on and the request is left to end on its own (a late answer is a duplicate
    at most: deliveries are at least once)."""
    answer: list[tuple[int | None, str]] = []
    worker = threading.Thread(target=lambda: answer.append(_post(url, body, headers)), daemon=True,
                              name="cellar-hook-post")
    worker.start()
    worker.join(TIMEOUT_S * 2)
    return answer[0] if answer else (None, "timed out")


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    from registry.health.alerting import failure_kind

    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:  # noqa: S310  (http/https checked at add)
            return resp.status, "" if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return None, failure_kind(exc.reason)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # HTTPException: not HTTP at all
        return None, failure_kind(exc)


def keep_delivering(cfg, *, should_stop, wait, every_s: float = 2.0,
                    on_pass=None) -> None:
    """Delivery passes every ``every_s`` seconds until ``should_stop()``: ``registry hook run``,
    and a thread of ``registry watch`` (so a team that runs watch needs nothing more)."""
    deliver = Deliver(cfg)
    while True:  # at least one pass: a watch of one run still sends what it recorded
        try:
            result = deliver.run(budget_s=max(every_s, 5.0))
        except CellarError as exc:  # the database away for a moment: try again next time
            log.warning("hook delivery pass failed: %s", exc)
        else:
            if on_pass is not None:
                on_pass(result)
        if should_stop():
            return
        wait(every_s)


def start_thread(cfg, *, should_stop, wait, every_s: float = 2.0) -> threading.Thread | None:
    """``keep_delivering`` in a daemon thread, when there is any hook (None otherwise)."""
    with cfg.store.read() as conn:
        if not store.names(conn):
            return None
    thread = threading.Thread(target=keep_delivering, name="cellar-hooks", daemon=True,
                              kwargs={"cfg": cfg, "should_stop": should_stop, "wait": wait, "every_s": every_s})
    thread.start()
    return thread
