"""probe, health, watch and metrics without Docker: what they say when nothing is deployed,
option checks, and the one-line diff summary a change point carries (real SQLite, real files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry import Registry
from registry.health.report import diff_summary
from registry.models.probes import ProbeResult, ProbeRun
from registry.probes.suites import failures
from tests import helpers
from tests.conftest import cli


@pytest.mark.parametrize("command", ["probe", "health", "watch", "metrics"])
def test_every_command_has_help_with_an_example(command):
    assert "Example:" in cli(command, "--help").stdout


def test_probe_with_nothing_deployed_is_an_error_run_stored_and_exit_4(sqlite_home, tmp_path):
    cli("env", "add", "staging", "--port", "18191", "--default")
    out = tmp_path / "p.csv"
    doc = json.loads(cli("probe", "--json", "--csv", str(out), code=4).stdout)
    assert doc["results"][0]["status"] == "error" and "nothing is deployed in staging" in doc["results"][0]["detail"]
    assert out.read_text().splitlines()[0] == "timestamp,env,version,revision,probe,status,latency_ms,detail"
    assert "0 of 1 passed" in cli("probe", code=4).stderr
    with Registry.open(sqlite_home) as reg:
        assert [r.outcome.value for r in reg.probe_runs("staging")] == ["error", "error"]
        assert len(reg.probe_runs(since="1h", limit=1)) == 1
    assert "no environment named 'nope'" in cli("health", "--env", "nope", code=1).stderr
    report = json.loads(cli("health", "--json").stdout)
    assert report["versions"][0]["version"] == "" and report["change_points"] == []


def test_metrics_prints_a_page_that_parses(sqlite_home):
    cli("env", "add", "staging", "--port", "18192")
    page = cli("metrics").stdout
    names = {f.name for f in text_string_to_metric_families(page)}
    assert {"cellar_probe_results", "cellar_probe_latency_seconds", "cellar_probe_consecutive_failures"} <= names
    assert json.loads(cli("metrics", "--json").stdout)["deployed"] == []
    assert "HOST:PORT" in cli("metrics", "--listen", "nowhere", code=1).stderr


def test_watch_refuses_two_webhooks_an_empty_variable_and_a_bad_url(sqlite_home):
    cli("env", "add", "staging", "--port", "18193")
    both = cli("watch", "--every", "1", "--alert-webhook", "http://x/secret-path", "--alert-webhook-env", "V", code=2)
    assert "not both" in both.stderr and "secret-path" not in both.stderr
    assert "holds no webhook URL" in cli("watch", "--every", "1", "--alert-webhook-env", "EMPTY_VAR",
                                         code=1, env={"EMPTY_VAR": ""}).stderr
    bad = cli("watch", "--every", "1", "--alert-webhook", "ftp://hooks/secret-path", code=1)
    assert "secret-path" not in bad.stderr and "http://" in bad.stderr
    assert "--failures" in cli("watch", "--every", "1", "--failures", "0", code=1).stderr


def test_a_nothing_deployed_watch_alerts_errors_and_ends(sqlite_home):
    cli("env", "add", "staging", "--port", "18194")
    out = cli("watch", "--every", "0.01", "--failures", "2", "--max-runs", "2", "--auto-rollback")
    assert "alert:" in out.stderr and "nothing is deployed" in out.stderr
    assert "watch ended (max-runs): 2 runs" in out.stdout and "0 rollbacks" in out.stdout


def test_the_diff_summary_names_prompts_tensors_image_and_env_keys(sqlite_home, model_dir):
    with Registry.open(sqlite_home) as reg:
        model_dir.write_manifest(version="v1.0", image="busybox:1")
        reg.push(model_dir.manifest)
        model_dir.set_prompt("You are a helpful support assistant.\nBe brief.\nBe kind.\nSign off.\n")
        helpers.write_safetensors(model_dir.root / "weights" / "model.safetensors", helpers.tensors(
            layer0__bias=np.ones(8, dtype=np.float32), head__weight=np.ones((8, 4), dtype=np.float16)))
        model_dir.write_manifest(version="v1.1", image="busybox:2",
                                 runtime={"port": 8080, "env": {"MAX_TOKENS": "128"}, "secrets": ["SUPPORT_API_TOKEN"]})
        reg.push(model_dir.manifest)
        summary = diff_summary(reg.diff("v1.0", "v1.1"))
        same = diff_summary(reg.diff("v1.0", "v1.0"))
    assert summary == "prompt system +3 lines, 2 tensors changed, image changed, env MAX_TOKENS changed"
    assert same == "no content change"


def test_the_gate_failure_names_what_did_not_pass_on_one_line():
    from datetime import UTC, datetime

    results = [ProbeResult(probe=f"q{i}", status=s, detail=f"d{i}") for i, s in
               enumerate(["pass", "fail", "error", "fail", "fail"])]
    text = failures(ProbeRun(env="e", model="m", version="v", started_at=datetime.now(UTC), results=results))
    assert text == "4 of 5 probes did not pass: q1 (fail: d1), q2 (error: d2), q3 (fail: d3) and 1 more"
