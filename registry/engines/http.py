"""The HTTP checks port: wait for a started container's health path, send warm-up requests,
ask whether a release answers. ``HttpChecks`` does it for real; ``registry.engines.fake``
has the in-memory double.

Plain ``http.client`` with short timeouts: a readiness poll must not wait on a 30 s default,
and no new dependency is needed.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from registry.errors import StepFailed
from registry.models import Request

POLL_S = 0.02
SLOW_POLL_S = 0.25  # after SLOW_AFTER_S of waiting: a server loading for minutes is not polled 50 times a second
SLOW_AFTER_S = 5.0
WARMUP_TIMEOUT_S = 30.0  # per warm-up request, unless runtime.warmup_timeout_s says otherwise
CONNECT_TIMEOUT_S = 1.0
EXIT_CHECK_EVERY_S = 0.15

BODY_LIMIT = 64 << 10  # read this much of an answer: enough for any secret in it to be scrubbed whole
# Asked now and then while waiting: why the container can no longer answer (it exited or
# disappeared: a message for the user, already scrubbed), or None while it runs.
ExitCheck = Callable[[], str | None]
# Turns an answer's body (untrusted: it may echo a secret) into the excerpt a message may hold:
# scrubbed first, then cut and escaped. The action that knows the secrets supplies it.
Untrusted = Callable[[str], str]
# Told each new answer while a health wait goes on ("HTTP 503 Loading model"): the spinner line.
OnAnswer = Callable[[str], None]


def plain_excerpt(body: str) -> str:
    return body.strip()[:200]


class Checks(Protocol):
    def wait_healthy(self, url: str, *, timeout: float, exited: ExitCheck,
                     untrusted: Untrusted = plain_excerpt, on_answer: OnAnswer | None = None) -> None:
        """Return once ``url`` answers 2xx; StepFailed on timeout or when ``exited`` says why not.
        Any other answer (refused, reset, 503 ...) means "still starting"; ``on_answer`` hears
        each new one. A body quoted in the error goes through ``untrusted`` first."""

    def warm_up(self, base_url: str, requests: list[Request], *, untrusted: Untrusted = plain_excerpt,
                timeout: float = WARMUP_TIMEOUT_S) -> None:
        """Send each request, each allowed ``timeout`` seconds; StepFailed on the first that gets
        no 2xx answer."""

    def answers(self, url: str) -> bool:
        """True when ``url`` answers 2xx now (one short try, never raises)."""


class HttpChecks:
    """The real checks, over HTTP on the published port."""

    def wait_healthy(self, url: str, *, timeout: float, exited: ExitCheck,
                     untrusted: Untrusted = plain_excerpt, on_answer: OnAnswer | None = None) -> None:
        # Every answer but a 2xx means "still starting" until the deadline: refused and reset
        # while the server loads its weights, 502/503 from llama.cpp ("Loading model"), TGI and
        # TEI, or a proxy in front. Only the container's exit ends the wait early.
        deadline = time.monotonic() + timeout
        last, shown, next_exit_check = "no answer yet", "", 0.0
        while True:
            try:
                status, body = request(url, timeout=min(CONNECT_TIMEOUT_S, max(timeout, 0.1)))
                if 200 <= status < 300:
                    return
                last = f"HTTP {status} {untrusted(body)}".strip()
            except OSError as exc:
                last = describe_no_answer(exc)
            if on_answer is not None and last != shown:
                on_answer(last)
                shown = last
            now = time.monotonic()
            if now >= next_exit_check:
                if why := exited():
                    raise StepFailed(why)
                next_exit_check = now + EXIT_CHECK_EVERY_S
            if now >= deadline:
                raise StepFailed(f"health check timed out after {timeout:g} s on {urlsplit(url).path} "
                                 f"(last answer: {last}){_hint(last)}")
            time.sleep(POLL_S if now - (deadline - timeout) < SLOW_AFTER_S else SLOW_POLL_S)

    def warm_up(self, base_url: str, requests: list[Request], *, untrusted: Untrusted = plain_excerpt,
                timeout: float = WARMUP_TIMEOUT_S) -> None:
        for req in requests:
            try:
                status, body = request(base_url + req.path, method=req.method, body=req.json_body, timeout=timeout)
            except TimeoutError:
                raise StepFailed(f"warm-up {req.method} {req.path} got no answer within {timeout:g} s "
                                 "(runtime.warmup_timeout_s)") from None
            except OSError as exc:
                raise StepFailed(f"warm-up {req.method} {req.path} got no answer ({describe_no_answer(exc)})") from None
            if not 200 <= status < 300:
                raise StepFailed(f"warm-up {req.method} {req.path} answered HTTP {status} {untrusted(body)}")

    def answers(self, url: str) -> bool:
        try:
            return 200 <= request(url)[0] < 300
        except OSError:
            return False


def describe_no_answer(exc: OSError) -> str:
    """A failed connection in a few words: "connection refused" while a server has not bound its port."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "no answer within the poll's timeout"
    return f"no answer ({str(exc) or exc.__class__.__name__})"


def _hint(last: str) -> str:
    if last.startswith("HTTP 404"):
        return "; the server answers but not on that path: check runtime.health.path"
    if last.startswith(("HTTP 502", "HTTP 503", "connection refused", "connection reset", "no answer")):
        return "; a server still loading needs a longer runtime.health.timeout_s (or env add --health-timeout)"
    return ""


def request(url: str, *, method: str = "GET", body=None, timeout: float = CONNECT_TIMEOUT_S) -> tuple[int, str]:
    """One request; (status, the body's first ``BODY_LIMIT`` bytes as text). OSError when unreachable."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise OSError(f"no host in {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, parts.path or "/", body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(BODY_LIMIT).decode("utf-8", "replace")
    except http.client.HTTPException as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
    finally:
        conn.close()
