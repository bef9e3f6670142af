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
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from registry.errors import InvalidInput
from registry.models.probes import MetricsSnapshot, ProbeRun, ProbeStatus, RunOutcome

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


def registry_for(source: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A registry holding only Cellar's collector (no process or GC metrics of this CLI)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CellarCollector(source))
    return registry


def render(source: Callable[[], MetricsSnapshot]) -> str:
    """The page as text, as a scrape would see it."""
    from prometheus_client import generate_latest

    return generate_latest(registry_for(source)).decode()


def serve(source: Callable[[], MetricsSnapshot], listen: str):
    """Serve the page on ``HOST:PORT`` in a daemon thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    host, port = parse_listen(listen)
    try:
        return start_http_server(port, addr=host, registry=registry_for(source))
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick a free port") from None


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
