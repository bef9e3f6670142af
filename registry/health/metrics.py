"""``registry metrics``: a Prometheus page built from the database on every scrape.

A custom collector calls ``source()`` (the caller reads the database and returns a
``MetricsSnapshot``) each time it is scraped, so the page also shows the runs that a cron-driven
``registry probe`` recorded, and no counter lives only in this process's memory.

Families (all labelled by ``env``):

    cellar_deployed_version_info{env,model,version,revision}     1 per deployed release
    cellar_probe_latency_seconds{env,probe}                     histogram of measured answers
    cellar_probe_results_total{env,probe,status}                pass / fail / error counts
    cellar_probe_consecutive_failures{env}                      failing runs since the last pass
    cellar_last_deploy_timestamp_seconds{env}                   Unix time
    cellar_last_rollback_timestamp_seconds{env}                 Unix time
    cellar_dark_since_timestamp_seconds{env}                    Unix time; only while the environment is dark

and for fleets (environments of several Docker hosts) only:

    cellar_host_serving{env,host}                               1 where the deployed release serves, 0 where dark
    cellar_probe_host_results_total{env,host,probe,status}      pass / fail / error counts per host

The server (``serve``) answers GET and HEAD of ``/metrics`` only (its query is ignored: ``?name[]=``
would select nothing), with no version banner. Bound to the loopback, it answers only requests
whose Host names the loopback, as ``registry ui`` does, so no page elsewhere can read it through
DNS rebinding. A client has ``HEADER_TIMEOUT_S`` to send its request line and headers, and at
most ``MAX_CONNECTIONS`` are served at once (more are closed at once).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from registry.errors import InvalidInput
from registry.ledger import short_host
from registry.models.probes import MetricsSnapshot, ProbeRun, ProbeStatus, RunOutcome

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUSES = tuple(s.value for s in ProbeStatus)


@dataclass
class _ProbeStats:
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))
    count: int = 0
    total_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))


class CellarCollector(Collector):
    """Reads ``source()`` on every collect: the page reflects the database, not this process."""

    def __init__(self, source: Callable[[], MetricsSnapshot]):
        self._source = source

    def collect(self):
        snapshot = self._source()
        yield _deployed(snapshot)
        stats = aggregate(snapshot.runs)
        yield _histogram(stats)
        yield _counter(stats)
        yield _streaks(snapshot.runs)
        yield _timestamps("cellar_last_deploy_timestamp_seconds", "When the last release was deployed",
                          snapshot.last_deploy)
        yield _timestamps("cellar_last_rollback_timestamp_seconds", "When the last rollback happened",
                          snapshot.last_rollback)
        yield _timestamps("cellar_dark_since_timestamp_seconds",
                          "Since when an environment that had a release serves nothing (absent: it serves)",
                          snapshot.dark_since)
        yield _serving(snapshot)
        yield _host_counter(snapshot.runs)


def registry_for(source: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A registry holding only Cellar's collector (no process or GC metrics of this CLI)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CellarCollector(source))
    return registry


def render(source: Callable[[], MetricsSnapshot]) -> str:
    """The page as text, as a scrape would see it."""
    from prometheus_client import generate_latest

    return generate_latest(registry_for(source)).decode()


def serve(source: Callable[[], MetricsSnapshot], listen: str, *, header_timeout_s: float = HEADER_TIMEOUT_S):
    """Serve the page on ``HOST:PORT`` in a daemon thread; returns (server, thread)."""
    from prometheus_client import make_wsgi_app

    host, port = parse_listen(listen)
    app = _guarded(make_wsgi_app(registry_for(source)), loopback=_is_loopback(host))
    try:
        server = _server_class(host, port)((host, port), _handler_class(header_timeout_s))
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick a free port") from None
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, name="cellar-metrics", daemon=True)
    thread.start()
    return server, thread


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(app: Callable, *, loopback: bool) -> Callable:
    """The WSGI app in front of prometheus_client's: method, path, Host, query (see the docstring)."""

    def guarded(environ: dict[str, Any], start_response: Callable) -> Any:
        host = environ.get("HTTP_HOST", "")
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "only GET and HEAD", [("Allow", "GET, HEAD")])
        if environ.get("PATH_INFO") != "/metrics":
            return _plain(start_response, "404 Not Found", "the metrics are at /metrics")
        if loopback and not _is_loopback(host):
            return _plain(start_response, "421 Misdirected Request", "this server answers on the loopback address only")
        environ["QUERY_STRING"] = ""  # the whole page, whatever the query asks
        return app(environ, lambda status, headers, *rest: start_response(status, [*headers, *_HEADERS], *rest))

    return guarded


_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store")]


def _plain(start_response: Callable, status: str, text: str, extra: list | None = None) -> list[bytes]:
    body = f"{status.split(' ', 1)[0]} {text}\n".encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *(extra or []), *_HEADERS])
    return [body]


def _server_class(host: str, port: int) -> type:
    from wsgiref.simple_server import WSGIServer

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    class Server(WSGIServer):
        """Threads (daemon ones), at most MAX_CONNECTIONS at once; errors of a client stay quiet."""

        address_family = family
        daemon_threads = True

        def process_request(self, request, client_address) -> None:
            if not slots.acquire(blocking=False):
                return self.shutdown_request(request)
            threading.Thread(target=self._serve_one, args=(request, client_address), daemon=True).start()

        def _serve_one(self, request, client_address) -> None:
            try:
                self.finish_request(request, client_address)
            except Exception:  # a client gone, or too slow: nothing to report
                pass
            finally:
                self.shutdown_request(request)
                slots.release()

    return Server


def _handler_class(header_timeout_s: float) -> type:
    from wsgiref.simple_server import ServerHandler, WSGIRequestHandler

    class Quiet(ServerHandler):
        server_software = ""  # no `Server: WSGIServer/0.2 CPython/3.x` banner

    class Handler(WSGIRequestHandler):
        timeout = header_timeout_s  # each read; the request line and headers together: the deadline below

        def handle(self) -> None:
            body = self.rfile
            self.rfile = _Deadline(body, self.connection, time.monotonic() + header_timeout_s)  # type: ignore[assignment]
            try:
                self.raw_requestline = self.rfile.readline(65537)
                if len(self.raw_requestline) > 65536:
                    self.requestline, self.request_version, self.command = "", "", ""
                    return self.send_error(414)
                if not self.parse_request():
                    return None
            finally:
                self.rfile = body
                self.connection.settimeout(header_timeout_s)
            handler: Any = Quiet(self.rfile, self.wfile, self.get_stderr(), self.get_environ(),  # type: ignore[arg-type]
                                 multithread=False)
            handler.request_handler = self
            handler.run(self.server.get_app())  # type: ignore[attr-defined]

        def send_response(self, code: int, message: str | None = None) -> None:
            self.send_response_only(code, message)  # without the Server header send_response adds

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

    return Handler


class _Deadline:
    """A request's reader that gives up when the headers are not in by ``deadline`` (monotonic)."""

    def __init__(self, rfile: Any, sock: socket.socket, deadline: float):
        self._rfile, self._sock, self._deadline = rfile, sock, deadline

    def readline(self, limit: int = -1) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request headers too slow")
        self._sock.settimeout(left)
        return self._rfile.readline(limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


def parse_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:9105`` -> ("127.0.0.1", 9105); ``[::1]:9105`` for IPv6; port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise InvalidInput(f"--listen {listen!r} must be HOST:PORT, e.g. 127.0.0.1:9105")
    return host.strip("[]"), int(port)


def aggregate(runs: Iterable[ProbeRun]) -> dict[tuple[str, str], _ProbeStats]:
    """Per (env, probe): bucket counts (not yet cumulative), latency sum and status counts."""
    stats: dict[tuple[str, str], _ProbeStats] = {}
    for run in runs:
        for result in run.results:
            entry = stats.setdefault((run.env, result.probe), _ProbeStats())
            entry.statuses[result.status.value] += 1
            if result.latency_ms is None:
                continue
            seconds = result.latency_ms / 1000
            entry.count += 1
            entry.total_s += seconds
            index = bisect_left(BUCKETS_S, seconds)
            if index < len(BUCKETS_S):
                entry.buckets[index] += 1
    return stats


def consecutive_failures(runs: Iterable[ProbeRun]) -> dict[str, int]:
    """Per env, the failing runs since its last passing one (error runs neither count nor reset)."""
    streaks: dict[str, int] = {}
    for run in sorted(runs, key=lambda r: r.started_at):
        if run.outcome == RunOutcome.PASS:
            streaks[run.env] = 0
        elif run.outcome == RunOutcome.FAIL:
            streaks[run.env] = streaks.get(run.env, 0) + 1
        else:
            streaks.setdefault(run.env, 0)
    return streaks


def _deployed(snapshot: MetricsSnapshot) -> InfoMetricFamily:
    family = InfoMetricFamily("cellar_deployed_version", "The release deployed in each environment",
                              labels=["env"])
    for d in snapshot.deployed:
        family.add_metric([d.env], {"model": d.model, "version": d.version, "revision": str(d.revision)})
    return family


def _histogram(stats: dict[tuple[str, str], _ProbeStats]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("cellar_probe_latency_seconds", "Latency of measured probe answers",
                                   labels=["env", "probe"])
    for (env, probe), s in sorted(stats.items()):
        cumulative, running = [], 0
        for bound, n in zip(BUCKETS_S, s.buckets):
            running += n
            cumulative.append((repr(bound), running))
        cumulative.append(("+Inf", s.count))
        family.add_metric([env, probe], cumulative, s.total_s)
    return family


def _serving(snapshot: MetricsSnapshot) -> GaugeMetricFamily:
    family = GaugeMetricFamily("cellar_host_serving", "In a fleet: 1 where the deployed release serves (as "
                               "recorded), 0 where it does not", labels=["env", "host"])
    for d in snapshot.deployed:
        for host, state in sorted((d.hosts or {}).items()):
            family.add_metric([d.env, host], 1.0 if state == "healthy" else 0.0)
    return family


def _host_counter(runs: Iterable[ProbeRun]) -> CounterMetricFamily:
    family = CounterMetricFamily("cellar_probe_host_results", "In a fleet: probe results by host and status",
                                 labels=["env", "host", "probe", "status"])
    counts: dict[tuple[str, str, str, str], int] = {}
    for run in runs:
        for r in run.results:
            if r.host:
                key = (run.env, short_host(r.host), r.probe, r.status.value)
                counts[key] = counts.get(key, 0) + 1
    for key, n in sorted(counts.items()):
        family.add_metric(list(key), n)
    return family


def _counter(stats: dict[tuple[str, str], _ProbeStats]) -> CounterMetricFamily:
    family = CounterMetricFamily("cellar_probe_results", "Probe results by status",
                                 labels=["env", "probe", "status"])
    for (env, probe), s in sorted(stats.items()):
        for status, n in s.statuses.items():
            family.add_metric([env, probe, status], n)
    return family


def _streaks(runs: list[ProbeRun]) -> GaugeMetricFamily:
    family = GaugeMetricFamily("cellar_probe_consecutive_failures", "Failing probe runs since the last pass",
                               labels=["env"])
    for env, n in sorted(consecutive_failures(runs).items()):
        family.add_metric([env], n)
    return family


def _timestamps(name: str, doc: str, values: dict) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["env"])
    for env, at in sorted(values.items()):
        family.add_metric([env], at.timestamp())
    return family
