"""Judging probe answers (pure), and a probe against a closed port (a real socket)."""

from __future__ import annotations

import socket

from registry.models import Probe
from registry.models.probes import ProbeStatus, RunOutcome
from registry.probes.probing import evaluate, new_run, run_suite, unmeasured


def probe(**expect) -> Probe:
    budget = expect.pop("max_latency_ms", None)
    return Probe.model_validate({"name": "p", "path": "/ask", "expect": expect, "max_latency_ms": budget})


def judge(p: Probe, body: str = '{"answer": "42"}', status: int = 200, ms: float = 10.0):
    return evaluate(p, http_status=status, body=body, latency_ms=ms)


def test_a_right_answer_passes_with_its_figures():
    result = judge(probe(regex=r'"answer"', max_latency_ms=100))
    assert (result.status, result.http_status, result.latency_ms, result.detail) == ("pass", 200, 10.0, "")


def test_a_wrong_status_fails_and_says_what_came():
    result = judge(probe(), body="boom", status=500)
    assert result.status == ProbeStatus.FAIL and result.detail.startswith("HTTP 500, expected 200")


def test_a_regex_miss_fails():
    result = judge(probe(regex="^forty-two$"), body="I do not know")
    assert result.status == "fail" and "does not match" in result.detail


def test_json_schema_checks_the_shape():
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    assert judge(probe(json_schema=schema)).status == "pass"
    wrong_type = judge(probe(json_schema=schema), body='{"answer": 42}')
    assert wrong_type.status == "fail" and "at answer" in wrong_type.detail
    not_json = judge(probe(json_schema=schema), body="plain words")
    assert not_json.status == "fail" and "not JSON" in not_json.detail


def test_a_leaked_canary_fails_without_repeating_it():
    result = judge(probe(not_contains="CANARY-7f3a"), body='{"answer": "the secret is CANARY-7f3a"}')
    assert result.status == "fail" and "CANARY" not in result.detail


def test_too_slow_is_a_fail_not_an_error():
    result = judge(probe(max_latency_ms=50), ms=51.0)
    assert result.status == "fail" and "51 ms, budget 50 ms" in result.detail


def test_a_broken_expectation_is_an_error_the_manifest_must_fix():
    assert judge(probe(regex="(")).status == "error"
    assert judge(probe(json_schema={"type": "no-such-type"})).status == "error"


def test_details_are_one_bounded_line():
    result = judge(probe(), body="x\n" * 1000, status=500)
    assert len(result.detail) <= 200 and "\n" not in result.detail


def test_a_refused_connection_is_an_error():
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        [result] = run_suite(f"http://127.0.0.1:{port}", [probe()], timeout_s=1)
    assert result.status == "error" and "refused" in result.detail and result.latency_ms is None


def test_run_outcomes():
    ok, slow = judge(probe()), judge(probe(max_latency_ms=1))
    [err] = unmeasured([probe()], "no container")
    def outcome(*results):
        return new_run(list(results), env="e", model="m", version="v1", revision=1, actor="a").outcome
    assert outcome(ok, ok) == RunOutcome.PASS
    assert outcome(ok, slow, err) == RunOutcome.FAIL
    assert outcome(ok, err) == RunOutcome.ERROR
    assert err.detail == "no container"


def test_a_refused_template_is_an_error_of_that_probe_only():
    def render(name, body):
        raise ValueError("template refused")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        [result] = run_suite(f"http://127.0.0.1:{s.getsockname()[1]}", [probe()], render=render)
    assert result.status == "error" and "template refused" in result.detail


def test_csv_rows_are_appended_under_one_header(tmp_path):
    import csv
    from datetime import UTC, datetime

    from registry.probes.probing import append_csv

    ok = judge(probe())
    [err] = unmeasured([probe()], 'no answer (timed out), "quoted", with comma')
    run = new_run([ok, err], env="prod", model="m", version="v1.2", revision=7, actor="a",
                  started_at=datetime(2026, 11, 1, 12, tzinfo=UTC))
    target = tmp_path / "probes.csv"
    append_csv(target, run)
    append_csv(target, run)
    rows = list(csv.reader(target.open(newline="")))
    assert rows[0] == ["timestamp", "env", "version", "revision", "probe", "status", "latency_ms", "detail"]
    assert len(rows) == 5 and rows.count(rows[0]) == 1
    assert rows[1] == ["2026-11-01T12:00:00+00:00", "prod", "v1.2", "7", "p", "pass", "10.0", ""]
    assert rows[2][5:] == ["error", "", 'no answer (timed out), "quoted", with comma']
