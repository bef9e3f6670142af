"""The metrics page, parsed with prometheus_client's own parser; served on a real port."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry.errors import InvalidInput
from registry.health import metrics
from registry.models.probes import DeployedInfo, MetricsSnapshot, ProbeResult, ProbeRun

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def run(minute: int, *statuses: str, env: str = "prod") -> ProbeRun:
    results = [ProbeResult(probe=f"q{i}", status=s, latency_ms=None if s == "error" else 30.0 + i)
               for i, s in enumerate(statuses)]
    return ProbeRun(env=env, model="bot", version="v1.2", revision=4, started_at=T0 + timedelta(minutes=minute),
                    results=results)


def snapshot() -> MetricsSnapshot:
    return MetricsSnapshot(
        deployed=[DeployedInfo(env="prod", model="bot", version="v1.2", revision=4)],
        runs=[run(0, "pass", "pass"), run(1, "fail", "pass"), run(2, "error", "pass"), run(3, "fail", "pass"),
              run(0, "pass", "pass", env="staging")],
        last_deploy={"prod": T0}, last_rollback={"prod": T0 + timedelta(hours=1)})


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_page_parses_and_holds_every_family():
    got = samples(metrics.render(snapshot))
    assert got[("cellar_deployed_version_info", (("env", "prod"), ("model", "bot"), ("revision", "4"),
                                                 ("version", "v1.2")))] == 1
    assert got[("cellar_probe_results_total", (("env", "prod"), ("probe", "q0"), ("status", "fail")))] == 2
    assert got[("cellar_probe_results_total", (("env", "prod"), ("probe", "q0"), ("status", "error")))] == 1
    assert got[("cellar_probe_latency_seconds_count", (("env", "prod"), ("probe", "q0")))] == 3  # errors unmeasured
    assert got[("cellar_probe_latency_seconds_bucket", (("env", "prod"), ("le", "0.025"), ("probe", "q0")))] == 0
    assert got[("cellar_probe_latency_seconds_bucket", (("env", "prod"), ("le", "0.05"), ("probe", "q0")))] == 3
    assert got[("cellar_probe_latency_seconds_sum", (("env", "prod"), ("probe", "q0")))] == pytest.approx(0.09)
    assert got[("cellar_probe_consecutive_failures", (("env", "prod"),))] == 2  # fail, error (ignored), fail
    assert got[("cellar_probe_consecutive_failures", (("env", "staging"),))] == 0
    assert got[("cellar_last_deploy_timestamp_seconds", (("env", "prod"),))] == T0.timestamp()
    assert got[("cellar_last_rollback_timestamp_seconds", (("env", "prod"),))] == T0.timestamp() + 3600


def test_every_scrape_reads_the_source_again():
    calls = []

    def source():
        calls.append(1)
        return MetricsSnapshot(runs=[run(0, "pass")] * len(calls))

    server, thread = metrics.serve(source, "127.0.0.1:0")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        first = urllib.request.urlopen(url, timeout=5).read().decode()
        second = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    key = ("cellar_probe_results_total", (("env", "prod"), ("probe", "q0"), ("status", "pass")))
    assert samples(first)[key] == 1 and samples(second)[key] == 2
    assert "process_cpu" not in first  # only Cellar's families


@pytest.mark.parametrize("listen", ["9105", "host:", ":9105", "h:99999", "h:x"])
def test_a_bad_listen_address_is_refused(listen):
    with pytest.raises(InvalidInput, match="HOST:PORT"):
        metrics.parse_listen(listen)


def test_listen_addresses():
    assert metrics.parse_listen("127.0.0.1:9105") == ("127.0.0.1", 9105)
    assert metrics.parse_listen("[::1]:9105") == ("::1", 9105)
