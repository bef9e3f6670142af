"""Run a version's probe suite against a base URL and judge each answer.

``run_suite`` does the I/O (one HTTP request per probe, with a timeout); ``evaluate`` is the
pure judgement of one answer against the probe's ``expect`` and ``max_latency_ms``:

- ``fail``: the model answered, but wrong (status, regex, JSON Schema, ``not_contains``) or
  too slowly;
- ``error``: nothing could be measured (refused, timed out, no container, or a probe whose
  own regex/schema is invalid): errors alert but never trigger a rollback.

The transport is a plain function (``send``), so tests and ``promote --gate`` can pass their own.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from registry import clock
from registry.models import Probe
from registry.models.probes import ProbeResult, ProbeRun, ProbeStatus, bounded

DEFAULT_TIMEOUT_S = 10.0
MAX_BODY_BYTES = 1 << 20  # a probe answer is a short completion; more is read no further

# send(method, url, body, timeout_s) -> (http status, body text); OSError when nothing answered
Send = Callable[[str, str, Any, float], tuple[int, str]]
# render(probe_name, json_body) -> json_body with its templates rendered (registry.probes.templating)
Render = Callable[[str, Any], Any]


def http_send(method: str, url: str, body: Any, timeout_s: float) -> tuple[int, str]:
    """One HTTP request with ``body`` as JSON; OSError (incl. timeouts) when nothing answered."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise OSError(f"no host in {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target or "/", body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(MAX_BODY_BYTES).decode("utf-8", "replace")
    except http.client.HTTPException as exc:  # a malformed answer: nothing measurable
        raise OSError(f"malformed HTTP answer ({type(exc).__name__})") from None
    finally:
        conn.close()


def run_suite(base_url: str, probes: Iterable[Probe], *, timeout_s: float = DEFAULT_TIMEOUT_S,
              render: Render | None = None, send: Send = http_send) -> list[ProbeResult]:
    """Send every probe once, in order, and judge each answer."""
    return [run_probe(base_url, p, timeout_s=timeout_s, render=render, send=send) for p in probes]


def run_probe(base_url: str, probe: Probe, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              render: Render | None = None, send: Send = http_send) -> ProbeResult:
    """Send one probe and judge its answer; never raises for a network or template problem."""
    try:
        body = render(probe.name, probe.json_body) if render else probe.json_body
    except Exception as exc:  # a refused template: the suite is at fault, not the model
        return _error(probe, f"body template: {exc}")
    started = time.perf_counter()
    try:
        status, text = send(probe.method, base_url.rstrip("/") + probe.path, body, timeout_s)
    except TimeoutError:
        return _error(probe, f"no answer within {timeout_s:g} s (timed out)")
    except OSError as exc:
        return _error(probe, f"no answer ({_why(exc)})")
    latency_ms = (time.perf_counter() - started) * 1000
    return evaluate(probe, http_status=status, body=text, latency_ms=latency_ms)


def unmeasured(probes: Iterable[Probe], reason: str) -> list[ProbeResult]:
    """Every probe as ``error`` with ``reason``, e.g. "no container" or "Docker engine unreachable"."""
    return [_error(p, reason) for p in probes]


def new_run(results: list[ProbeResult], *, env: str, model: str, version: str, revision: int | None,
            actor: str, started_at: datetime | None = None) -> ProbeRun:
    """Wrap ``results`` as a run to store (``registry.store.sql.probes.record_run``) and print."""
    return ProbeRun(env=env, model=model, version=version, revision=revision, actor=actor,
                    started_at=started_at or clock.now(), results=results)


def evaluate(probe: Probe, *, http_status: int, body: str, latency_ms: float) -> ProbeResult:
    """Judge one answer (pure): the first unmet expectation names the failure."""
    def result(status: ProbeStatus, detail: str = "") -> ProbeResult:
        return ProbeResult(probe=probe.name, status=status, latency_ms=round(latency_ms, 3),
                           http_status=http_status, detail=bounded(detail))

    expect = probe.expect
    if expect.status is not None and http_status != expect.status:
        return result(ProbeStatus.FAIL, f"HTTP {http_status}, expected {expect.status}: {body}")
    for check in (_check_regex, _check_schema, _check_not_contains):
        verdict = check(probe, body)
        if verdict is not None:
            return result(*verdict)
    if probe.max_latency_ms is not None and latency_ms > probe.max_latency_ms:
        return result(ProbeStatus.FAIL, f"too slow: {latency_ms:.0f} ms, budget {probe.max_latency_ms} ms")
    return result(ProbeStatus.PASS)


def _check_regex(probe: Probe, body: str) -> tuple[ProbeStatus, str] | None:
    pattern = probe.expect.regex
    if pattern is None:
        return None
    try:
        found = re.search(pattern, body)
    except re.error as exc:
        return ProbeStatus.ERROR, f"expect.regex is not a valid regular expression ({exc}); fix the manifest"
    return None if found else (ProbeStatus.FAIL, f"answer does not match /{pattern}/: {body}")


def _check_schema(probe: Probe, body: str) -> tuple[ProbeStatus, str] | None:
    schema = probe.expect.json_schema
    if schema is None:
        return None
    import jsonschema  # only suites with a schema pay for it: 90-180 ms of import (bench/probes.py)

    try:
        doc = json.loads(body)
    except ValueError:
        return ProbeStatus.FAIL, f"answer is not JSON: {body}"
    try:
        validator = _validator(schema)
    except jsonschema.SchemaError as exc:
        return ProbeStatus.ERROR, f"expect.json_schema is not a valid JSON Schema ({exc.message}); fix the manifest"
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        return ProbeStatus.FAIL, f"answer breaks the JSON Schema at {where}: {error.message}"
    return None


_VALIDATORS: dict[str, Any] = {}


def _validator(schema: dict):
    """A checked validator per schema, kept: ``jsonschema.validate`` checks the schema against
    its meta-schema on every call, most of a probe's judging time (bench/probe.py)."""
    import jsonschema

    key = json.dumps(schema, sort_keys=True)
    if key not in _VALIDATORS:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATORS[key] = cls(schema)
    return _VALIDATORS[key]


def _check_not_contains(probe: Probe, body: str) -> tuple[ProbeStatus, str] | None:
    canary = probe.expect.not_contains
    if canary is None or canary not in body:
        return None
    # the canary itself is not repeated: it may be a planted secret
    return ProbeStatus.FAIL, "answer contains the text expect.not_contains forbids"


def _error(probe: Probe, detail: str) -> ProbeResult:
    return ProbeResult(probe=probe.name, status=ProbeStatus.ERROR, detail=bounded(detail))


def _why(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


CSV_HEADER = ["timestamp", "env", "version", "revision", "probe", "status", "latency_ms", "detail"]


def append_csv(path, run: ProbeRun) -> None:
    """Append one row per result to ``path`` (``registry probe --csv``); the header is written
    only when the file is new or empty, so cron can point every run at the same file."""
    import csv
    from pathlib import Path

    path = Path(path)
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if fh.tell() == 0:
            writer.writerow(CSV_HEADER)
        for r in run.results:
            latency = "" if r.latency_ms is None else f"{r.latency_ms:.1f}"
            writer.writerow([run.started_at.isoformat(), run.env, run.version,
                             "" if run.revision is None else run.revision, r.probe, r.status.value, latency, r.detail])
