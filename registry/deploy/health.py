"""HTTP checks against a started container: wait for its health path, send warm-up requests.

Plain ``http.client`` with short timeouts: a readiness poll must not wait on a 30 s default,
and no new dependency is needed.
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

from registry.deploy.engine import StepFailed, redact, secret_env_values
from registry.models import Request

POLL_S = 0.02
CONNECT_TIMEOUT_S = 1.0
EXIT_CHECK_EVERY_S = 0.15


def get(url: str, *, method: str = "GET", body=None, timeout: float = CONNECT_TIMEOUT_S) -> tuple[int, str]:
    """One request; (status, first 300 characters of the body). Raises OSError when unreachable."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, parts.path or "/", body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(300).decode("utf-8", "replace")
    except http.client.HTTPException as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
    finally:
        conn.close()


def answers(url: str) -> bool:
    try:
        return 200 <= get(url)[0] < 300
    except OSError:
        return False


def wait_healthy(engine, container_id: str, *, url: str, timeout: float) -> None:
    """Poll ``url`` until it answers 2xx; StepFailed on timeout or when the container exits."""
    deadline = time.monotonic() + timeout
    last, next_exit_check = "no answer", 0.0
    while True:
        try:
            status, body = get(url, timeout=min(CONNECT_TIMEOUT_S, max(timeout, 0.1)))
            if 200 <= status < 300:
                return
            last = f"HTTP {status} {body.strip()[:200]}"
        except OSError as exc:
            last = f"no answer ({exc.__class__.__name__})"
        now = time.monotonic()
        if now >= next_exit_check:
            _fail_if_exited(engine, container_id)
            next_exit_check = now + EXIT_CHECK_EVERY_S
        if now >= deadline:
            raise StepFailed(f"health check timed out after {timeout:g} s on {urlsplit(url).path} "
                             f"(last answer: {last})")
        time.sleep(POLL_S)


def _fail_if_exited(engine, container_id: str) -> None:
    info = engine.inspect(container_id)
    if info is None:
        raise StepFailed("the container disappeared while starting")
    if not info.running:
        # Log text leaves the adapter here: scrub the container's own secret values at once.
        tail = redact(engine.logs(container_id, tail=10).strip(), secret_env_values(info.env))
        lines = ("; last log lines:\n" + tail) if tail else " (no log output)"
        raise StepFailed(f"container exited with code {info.exit_code}{lines}")


def warm_up(*, base_url: str, requests: list[Request]) -> None:
    """Send the manifest's warm-up requests; any non-2xx answer fails the release."""
    for req in requests:
        try:
            status, body = get(base_url + req.path, method=req.method, body=req.json_body, timeout=30)
        except OSError as exc:
            raise StepFailed(f"warm-up {req.method} {req.path} got no answer ({exc})") from None
        if not 200 <= status < 300:
            raise StepFailed(f"warm-up {req.method} {req.path} answered HTTP {status} {body.strip()[:200]}")
