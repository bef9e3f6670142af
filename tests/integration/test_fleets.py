"""Fleets (issue 22): an environment on several Docker hosts, here the local engine and the
second engine (scripts/second-engine.sh), which shares no disk and publishes on its own address.
A promote rolls (the first host is the canary), one ledger revision records each host's
container and state, a host failing health puts every switched host back, a rollback returns
every host, a host down fails before anything changes. Both databases."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager

import pytest

from tests.conftest import as_json, cli, free_port
from tests.integration.test_remote_hosts import TOKEN, _expected, _model_files, _push
from tests.second_engine import NETNS

LOCAL = "unix:///var/run/docker.sock"


@pytest.fixture
def fleet(second_engine, home, model_dir, monkeypatch, docker_client):
    """A registry with v1.0, v1.1 (another prompt), v1.2 (new weights) and v1.3 (unhealthy), and an
    environment on the local engine (the canary) and the second engine."""
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    reg = Registry.open(home)
    for version, seed, env in (("v1.0", None, {}), ("v1.1", None, {}), ("v1.2", 7, {}),
                               ("v1.3", None, {"MAX_TOKENS": "lots"})):
        _push(reg, model_dir, version, second_engine.image, seed=seed, **env)
    name = "f" + os.urandom(4).hex()
    reg.add_env(name, port=free_port(), hosts=[LOCAL, second_engine.url], health_timeout_s=5, default=True)
    yield reg, name
    second_engine.cleanup(reg.cfg.registry_id)
    for c in docker_client.containers.list(all=True, filters={"label": f"cellar.registry={reg.cfg.registry_id}"}):
        c.remove(force=True)
    reg.close()


def _running(second_engine, docker_client, reg, env: str) -> dict[str, list[str]]:
    """The versions whose containers run on each host, found by this registry's labels."""
    label = {"label": [f"cellar.registry={reg.cfg.registry_id}", f"cellar.env={env}"]}
    there = second_engine.client()
    try:
        return {host: sorted(c.labels["cellar.version"] for c in client.containers.list(filters=label))
                for host, client in (("local", docker_client), ("remote", there))}
    finally:
        there.close()


@contextmanager
def _refused_on_second_host(port: int):
    """The second host refuses connections to ``port`` from here (a firewall in its network
    namespace): its container starts, but no health request reaches it."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"]
    subprocess.run(["nsenter", f"--net={NETNS}", "iptables", "-I", *rule], check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["nsenter", f"--net={NETNS}", "iptables", "-D", *rule], check=True, timeout=30)


def test_env_add_with_several_hosts_makes_a_fleet_that_binds_every_address(fleet, second_engine):
    reg, env = fleet
    got = reg.environment(env)
    assert got.hosts == [LOCAL, second_engine.url] and got.docker_host == LOCAL
    assert got.bind_addr == "0.0.0.0"  # health requests reach every host on its own address
    listed = as_json("env", "show", env)
    assert listed["hosts"] == [LOCAL, second_engine.url]


def test_promote_rolls_over_every_host_and_records_each_container(fleet, second_engine, docker_client):
    reg, env = fleet
    result = reg.promote("support-bot@v1.0", env=env)
    release = result.release
    assert release.status == "deployed" and release.hosts is not None
    assert [(h.host, h.state) for h in release.hosts] == [(LOCAL, "healthy"), (second_engine.url, "healthy")]
    assert release.container_id == release.hosts[0].container_id
    # the canary first: its health check before the second host's container is even created
    names = [s.name for s in result.steps]
    assert names.index("health check on local") < names.index(f"create container on {second_engine.address}")
    # the second host shares no disk: its /model is exactly the version's files, sent there
    assert _model_files(second_engine, release.hosts[1].container_id) == _expected(reg, "support-bot@v1.0")
    assert _running(second_engine, docker_client, reg, env) == {"local": ["v1.0"], "remote": ["v1.0"]}
    # one revision for the whole environment, in history and status, each host named
    history = as_json("history", "--env", env)
    assert len(history) == 1 and [h["state"] for h in history[0]["hosts"]] == ["healthy", "healthy"]
    status = next(s for s in as_json("status") if s["env"] == env)
    assert [(h["host"], h["healthy"]) for h in status["hosts"]] == [(LOCAL, True), (second_engine.url, True)]
    text = cli("status").stdout
    assert second_engine.address in text and "local" in text
    event = next(e for e in as_json("audit", "--env", env) if e["action"] == "promote")
    assert [h["state"] for h in event["detail"]["hosts"]] == ["healthy", "healthy"]


def test_a_host_failing_health_puts_every_switched_host_back(fleet, second_engine, docker_client):
    reg, env = fleet
    first = reg.promote("support-bot@v1.0", env=env).release
    with _refused_on_second_host(reg.environment(env).port):
        out = cli("promote", "support-bot@v1.1", "--env", env, code=4)
        text = out.stdout + out.stderr
        assert f"on {second_engine.address}" in text and "rolled back automatically" in text
        # the firewall keeps v1.0 from answering there too: that host is named as serving nothing
        assert f"{second_engine.address} did not come back" in text
        status = next(s for s in as_json("status", code=1) if s["env"] == env)
        assert [h["healthy"] for h in status["hosts"]] == [True, False]
    rows = reg.history(env)
    failed, back = rows[-2], rows[-1]
    assert failed.status == "failed" and failed.version == "v1.1"
    assert [h.state for h in failed.hosts] == ["reverted", "failed"]
    assert back.operation == "auto-rollback" and back.status == "deployed" and back.version == "v1.0"
    assert [h.state for h in back.hosts] == ["healthy", "dark"]
    assert [h.container_id for h in back.hosts] == [h.container_id for h in first.hosts]
    # v1.0 serves again on the canary from its kept container; no v1.1 container is left anywhere
    assert _running(second_engine, docker_client, reg, env)["local"] == ["v1.0"]
    # once the host answers again, recover finds v1.0 answering there and records it healthy
    recovered = as_json("recover", "--env", env)
    assert [a["action"] for a in recovered["actions"]] == ["recorded"]
    assert [h.state for h in reg.history(env)[-1].hosts] == ["healthy", "healthy"]
    assert _running(second_engine, docker_client, reg, env) == {"local": ["v1.0"], "remote": ["v1.0"]}
    audit = reg.verify_audit()  # every row each host's state was written to is sealed and bound
    assert audit.ok and audit.seals == []


def test_a_later_host_failing_leaves_it_untouched_and_restores_the_canary(fleet, second_engine, docker_client):
    from registry.engines.engine import container_name

    reg, env = fleet
    reg.promote("support-bot@v1.0", env=env)
    # the second host cannot create the next revision's container: its name is taken there
    there = second_engine.client()
    try:
        there.containers.create(second_engine.image, name=container_name(
            env=env, model="support-bot", revision=2, registry=reg.cfg.registry_id),
            labels={"cellar.registry": reg.cfg.registry_id})
    finally:
        there.close()
    out = cli("promote", "support-bot@v1.1", "--env", env, code=1)  # an engine error, not a health gate (4)
    assert f"on {second_engine.address}" in out.stderr and "already in use" in out.stderr
    rows = reg.history(env)
    assert [h.state for h in rows[-2].hosts] == ["reverted", "failed"]
    assert [h.state for h in rows[-1].hosts] == ["healthy", "healthy"] and rows[-1].version == "v1.0"
    assert _running(second_engine, docker_client, reg, env) == {"local": ["v1.0"], "remote": ["v1.0"]}


def test_a_canary_failing_never_touches_the_other_hosts(fleet, second_engine, docker_client):
    reg, env = fleet
    reg.promote("support-bot@v1.0", env=env)
    out = cli("promote", "support-bot@v1.3", "--env", env, "--json", code=4)
    assert "on local" in out.stderr
    failed = reg.history(env)[-2]
    assert [h.state for h in failed.hosts] == ["failed", "skipped"]
    assert _running(second_engine, docker_client, reg, env) == {"local": ["v1.0"], "remote": ["v1.0"]}


def test_rollback_returns_every_host_to_the_same_release(fleet, second_engine, docker_client):
    reg, env = fleet
    first = reg.promote("support-bot@v1.0", env=env).release
    reg.promote("support-bot@v1.2", env=env)
    back = cli("rollback", "--env", env)
    assert "v1.0" in back.stdout
    now = reg.history(env)[-1]
    assert now.version == "v1.0" and [h.state for h in now.hosts] == ["healthy", "healthy"]
    # the kept containers on both hosts serve again
    assert [h.container_id for h in now.hosts] == [h.container_id for h in first.hosts]
    assert _running(second_engine, docker_client, reg, env) == {"local": ["v1.0"], "remote": ["v1.0"]}
    assert _model_files(second_engine, now.hosts[1].container_id) == _expected(reg, "support-bot@v1.0")


def test_a_host_down_fails_the_promote_before_anything_changes(second_engine, home, model_dir, monkeypatch,
                                                               docker_client):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    with Registry.open(home) as reg:
        _push(reg, model_dir, "v1.0", second_engine.image)
        registry_id = reg.cfg.registry_id
    port = str(free_port())
    cli("env", "add", "down", "--port", port, "--host", LOCAL, "--host", "tcp://10.231.0.2:1")
    failed = cli("promote", "support-bot@v1.0", "--env", "down", code=1)
    assert "cannot reach the Docker engine at tcp://10.231.0.2:1" in failed.stderr
    assert as_json("history", "--env", "down") == []
    assert docker_client.containers.list(all=True, filters={"label": f"cellar.registry={registry_id}"}) == []


def test_host_add_then_recover_starts_the_deployed_release_there(second_engine, home, model_dir, monkeypatch,
                                                                 docker_client):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    reg = Registry.open(home)
    try:
        _push(reg, model_dir, "v1.0", second_engine.image)
        reg.add_env("loop", port=free_port())  # 127.0.0.1: no other host's port is reachable there
        refused = cli("env", "host", "add", "loop", second_engine.url, code=1)
        assert "--bind 0.0.0.0" in refused.stderr and reg.environment("loop").hosts is None
        reg.add_env("grow", port=free_port(), bind_addr="0.0.0.0", health_timeout_s=5)
        reg.promote("support-bot@v1.0", env="grow")
        added = cli("env", "host", "add", "grow", second_engine.url)
        assert "recover" in added.stdout
        assert reg.environment("grow").fleet == [LOCAL, second_engine.url]
        recovered = as_json("recover", "--env", "grow")
        assert any(a["action"] == "recreated" for a in recovered["actions"])
        assert _running(second_engine, docker_client, reg, "grow") == {"local": ["v1.0"], "remote": ["v1.0"]}
        now = reg.history("grow")[-1]
        assert [h.state for h in now.hosts] == ["healthy", "healthy"]
        # and out again: its container there goes with it
        cli("env", "host", "remove", "grow", second_engine.url)
        assert reg.environment("grow").hosts is None
        assert _running(second_engine, docker_client, reg, "grow") == {"local": ["v1.0"], "remote": []}
        events = [e["action"] for e in as_json("audit", "--env", "grow")]
        assert "env-host-add" in events and "env-host-remove" in events
    finally:
        second_engine.cleanup(reg.cfg.registry_id)
        for c in docker_client.containers.list(all=True, filters={"label": f"cellar.registry={reg.cfg.registry_id}"}):
            c.remove(force=True)
        reg.close()


def test_a_promote_killed_after_the_canary_is_reverted_on_every_host_by_recover(fleet, second_engine,
                                                                                 docker_client):
    from tests.integration.test_remote_hosts import _run_cli

    reg, env = fleet
    first = reg.promote("support-bot@v1.0", env=env).release
    killed = _run_cli("promote", "support-bot@v1.1", "--env", env, env={"CELLAR_CRASH_AT": "promote:canary-healthy"})
    assert killed.returncode == -9
    stuck = reg.history(env)[-1]
    assert stuck.status == "pending-deploy" and [h.state for h in stuck.hosts] == ["healthy", "pending"]
    recovered = as_json("recover", "--env", env)
    assert [a["action"] for a in recovered["actions"]] == ["reverted"]
    rows = reg.history(env)
    assert rows[-2].status == "failed" and rows[-1].version == "v1.0" and rows[-1].status == "deployed"
    assert [h.container_id for h in rows[-1].hosts] == [h.container_id for h in first.hosts]
    assert _running(second_engine, docker_client, reg, env) == {"local": ["v1.0"], "remote": ["v1.0"]}
    audit = reg.verify_audit()
    assert audit.ok and audit.seals == []


def test_a_promote_killed_once_every_host_answers_is_completed_by_recover(fleet, second_engine, docker_client):
    from tests.integration.test_remote_hosts import _run_cli

    reg, env = fleet
    reg.promote("support-bot@v1.0", env=env)
    killed = _run_cli("promote", "support-bot@v1.1", "--env", env, env={"CELLAR_CRASH_AT": "promote:all-healthy"})
    assert killed.returncode == -9
    recovered = as_json("recover", "--env", env)
    assert [a["action"] for a in recovered["actions"]] == ["completed"]
    now = reg.history(env)[-1]
    assert (now.version, str(now.status), [h.state for h in now.hosts]) == ("v1.1", "deployed", ["healthy"] * 2)
    assert _running(second_engine, docker_client, reg, env) == {"local": ["v1.1"], "remote": ["v1.1"]}


def test_gc_keeps_every_host_s_rollback_container_and_env_remove_clears_every_host(fleet, second_engine,
                                                                                   docker_client):
    reg, env = fleet
    first = reg.promote("support-bot@v1.0", env=env).release
    reg.promote("support-bot@v1.2", env=env)
    reg.gc()
    # the rollback target's containers stay on both hosts (stopped), so a rollback reuses them
    back = reg.rollback(env=env)
    assert [h.container_id for h in back.release.hosts] == [h.container_id for h in first.hosts]
    cli("env", "remove", env, "--force")
    assert _running(second_engine, docker_client, reg, env) == {"local": [], "remote": []}
    there = second_engine.client()
    try:
        assert there.containers.list(all=True, filters={"label": f"cellar.env={env}"}) == []
    finally:
        there.close()


PROBES = [{"name": "answers", "path": "/cgi-bin/answer", "json": {"prompt": "6*7?"}, "expect": {"regex": '"42"'}}]


def test_probe_health_metrics_and_the_web_view_show_each_host(fleet, second_engine, home, model_dir):
    from starlette.testclient import TestClient

    from registry.api import Registry
    from registry.web import create_app

    reg, env = fleet
    model_dir.set_prompt("prompt-v2.0")
    model_dir.write_manifest(version="v2.0", image=second_engine.image, probes=PROBES, runtime={
        "port": 8080, "env": {"MAX_TOKENS": "64"}, "secrets": ["SUPPORT_API_TOKEN"],
        "health": {"path": "/cgi-bin/health", "timeout_s": 5}})
    reg.push(model_dir.manifest)
    reg.promote("support-bot@v2.0", env=env)
    run = as_json("probe", "--env", env)
    assert [(r["host"], r["status"]) for r in run["results"]] == [(LOCAL, "pass"), (second_engine.url, "pass")]
    with _refused_on_second_host(reg.environment(env).port):
        failed = cli("probe", "--env", env, code=4)
        watched = cli("watch", "--env", env, "--every", "0.01", "--max-runs", "1", "--failures", "1")
    assert f"answers on {second_engine.address}" in watched.stdout + watched.stderr
    assert f"answers on {second_engine.address}: " in failed.stdout and "HOST" in failed.stdout
    health = cli("health", "--env", env).stdout
    # the refused run measured nothing there (an error, not a fail): the pass rate counts judged answers
    assert f"v2.0 by host: local 100%, {second_engine.address} 100%" in health
    page = cli("metrics").stdout
    assert f'cellar_host_serving{{env="{env}",host="{second_engine.address}"}} 1.0' in page
    assert (f'cellar_probe_host_results_total{{env="{env}",host="{second_engine.address}",probe="answers",'
            'status="error"} 2.0') in page  # the probe's and the watch's
    with TestClient(create_app(lambda: Registry.open(home)), base_url="http://127.0.0.1:8765") as client:
        html = client.get(f"/envs/{env}").text
        assert 'id="hosts"' in html and second_engine.url in html and "the first is the canary" in html
        assert "2 hosts:" in client.get("/envs").text
