"""Alerts to a Slack-compatible webhook: POST ``{"text": "..."}``.

The webhook URL is a secret (it is the credential), so it never appears in any output,
log line, exception text or ``repr``: failures are described by their kind and status only.
Delivery has a timeout and retries with backoff; a failure is logged and reported as False,
never raised, because a watch loop must keep probing when the chat service is down.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from registry.errors import InvalidInput

log = logging.getLogger("registry.health.alerting")


class Webhook:
    """A Slack-compatible incoming webhook. ``send(text)`` returns whether it was delivered."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep):
        if not url.startswith(("http://", "https://")):
            raise InvalidInput("the alert webhook must be an http:// or https:// URL (it is not shown: it is a secret)")
        self._url = url
        self.timeout_s, self.attempts, self.backoff_s, self._sleep = timeout_s, attempts, backoff_s, sleep

    def __repr__(self) -> str:
        return "Webhook(<hidden>)"

    def send(self, text: str) -> bool:
        """POST ``{"text": text}``; retry with doubling backoff; log and return False on failure."""
        why = ""
        for attempt in range(1, self.attempts + 1):
            why = self._post(text)
            if not why:
                return True
            if attempt < self.attempts:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
        log.warning("alert webhook delivery failed after %d attempts (%s); the watch goes on",
                    self.attempts, why)
        return False

    def _post(self, text: str) -> str:
        """'' when delivered, else why not, in words that cannot contain the URL."""
        data = json.dumps({"text": text}).encode()
        request = urllib.request.Request(self._url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                return "" if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            return _kind(exc.reason)
        except (OSError, ValueError) as exc:
            return _kind(exc)


def from_env(var: str, **options) -> Webhook:
    """The webhook whose URL is in environment variable ``var`` (the way to keep it off the command line)."""
    url = os.environ.get(var, "").strip()
    if not url:
        raise InvalidInput(f"environment variable {var} holds no webhook URL; export it or drop --alert-webhook-env")
    return Webhook(url, **options)


webhook_from_env = from_env  # the name ``registry`` exports


def _kind(reason: object) -> str:
    # str(reason) of a DNS failure or a proxy error can quote the host: only the kind and errno go out
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.errno:
        return f"{type(reason).__name__} errno {reason.errno}"
    return type(reason).__name__


failure_kind = _kind  # for registry.hooks: the same words for the same failures


# --- the messages -------------------------------------------------------------------------


def failing_text(*, env: str, version: str, failures: int, probes: list[str], next_step: str) -> str:
    return (f":red_circle: {env}: {version} failed {failures} probe runs in a row "
            f"(failing: {', '.join(probes) or 'none named'}). Next: {next_step}.")


def error_text(*, env: str, version: str, runs: int, detail: str) -> str:
    return (f":warning: {env}: could not probe {version} in {runs} runs in a row ({detail}). "
            "No rollback: nothing was measured.")


def restored_text(*, env: str, version: str, rolled_back: bool) -> str:
    how = "restored by an automatic rollback and" if rolled_back else "recovered:"
    return f":large_green_circle: {env}: {version} {how} passes its probes again."


def degraded_text(*, env: str, version: str, detail: str) -> str:
    return (f":rotating_light: {env}: degraded: {version} fails too ({detail}). "
            "The watch stops acting; a person has to look.")


def restarting_text(*, env: str, version: str, restarts: int, minutes: float, last_exit: int | None) -> str:
    code = f" (last exit code {last_exit})" if last_exit is not None else ""
    return (f":repeat: {env}: {version}'s container was restarted {restarts} times by Docker in {minutes:g} min"
            f"{code}: its server keeps crashing. See `docker logs` and `registry status --env {env}`.")
