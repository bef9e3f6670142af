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


# --- the server under attack (issue 28) -------------------------------------------------------


@pytest.fixture
def served():
    server, _ = metrics.serve(lambda: MetricsSnapshot(runs=[run(0, "pass")]), "127.0.0.1:0", header_timeout_s=0.5)
    yield server
    server.shutdown()
    server.server_close()


def raw(server, request: bytes, timeout: float = 5) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", server.server_port), timeout=timeout) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_the_metrics_server_answers_only_metrics_on_a_loopback_host(served):
    page = raw(served, b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert page.startswith(b"HTTP/1.0 200") and b"cellar_probe_results_total" in page
    head = page.split(b"\r\n\r\n", 1)[0].lower()
    assert b"server:" not in head and b"python" not in head and b"nosniff" in head
    rebinding = raw(served, b"GET /metrics HTTP/1.0\r\nHost: attacker.example:9105\r\n\r\n")
    assert rebinding.startswith(b"HTTP/1.0 421") and b"cellar_" not in rebinding
    for path in (b"/", b"/metrics/", b"/favicon.ico", b"/../etc/passwd"):
        answer = raw(served, b"GET " + path + b" HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 404") and b"cellar_" not in answer
    assert raw(served, b"POST /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").startswith(b"HTTP/1.0 405")
    assert b"server:" not in raw(served, b"BREW /metrics HTTP/1.0\r\n\r\n").lower()  # an error page neither


def test_a_query_selects_nothing_away(served):
    page = raw(served, b"GET /metrics?name[]=nothing HTTP/1.0\r\nHost: localhost\r\n\r\n")
    assert b"cellar_probe_results_total" in page


def test_a_client_that_never_finishes_its_headers_is_let_go(served):
    import socket
    import time

    with socket.create_connection(("127.0.0.1", served.server_port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        while True:  # a header every 0.2 s: each read is quick, the whole never ends
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            if _readable(sock):  # closed by the server (EOF), or an answer
                break
            assert time.monotonic() - started < 8, "the server kept a slow client past its header deadline"
            time.sleep(0.2)
    # and the server still answers others
    assert raw(served, b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").startswith(b"HTTP/1.0 200")


def _readable(sock) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])
