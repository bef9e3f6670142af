"""Serving real LLM containers (issue 24) against the real Docker engine: the runtime settings a
container is created with, slow starters, restart after the server's process dies, GPUs.

The busybox test server (conftest.py) plays the LLM server: ``LOAD_FOR`` makes its health answer
503 "Loading model" (llama.cpp's words) for a while, ``READY_DELAY`` refuses connections first,
``EXIT_AFTER`` dies while still loading. This host has no GPU and no NVIDIA runtime, which is what
the GPU tests need.
"""

from __future__ import annotations

import os
import signal
import time

import docker
import pytest

from registry.api import Registry
from registry.engines.docker import DockerEngine
from registry.engines.engine import ContainerSpec, HostSettings
from registry.errors import Conflict, HealthGateFailed
from tests.conftest import cli, free_port

pytestmark = pytest.mark.docker
MiB = 1 << 20
HEALTH = {"path": "/cgi-bin/health", "timeout_s": 20}


@pytest.fixture
def served(docker_image, home, model_dir, monkeypatch):
    """(registry on the parametrised database, push(version, env_vars, **runtime), env name):
    every container of the registry is removed after."""
    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-" + os.urandom(6).hex())
    reg = Registry.open(home)
    name = "r" + os.urandom(4).hex()

    def push(version: str, env_vars: dict | None = None, **runtime) -> str:
        model_dir.set_prompt(f"prompt-{version}")
        model_dir.write_manifest(version=version, image=docker_image, runtime={
            "port": 8080, "env": {"MAX_TOKENS": "64", **(env_vars or {})}, "secrets": ["SUPPORT_API_TOKEN"],
            "health": HEALTH, **runtime})
        reg.push(model_dir.manifest)
        return version

    reg.add_env(name, port=free_port(), default=True)
    yield reg, push, name
    own = reg.cfg.registry_id
    reg.close()
    client = docker.from_env()
    for c in client.containers.list(all=True, filters={"label": [f"cellar.registry={own}"]}):
        c.remove(force=True)
    client.close()


def host_config(container_id: str) -> dict:
    client = docker.from_env()
    try:
        return client.api.inspect_container(container_id)["HostConfig"]
    finally:
        client.close()


def deployed_id(reg, env: str) -> str:
    return reg.history(env)[-1].container_id


# --- 1. runtime settings ---------------------------------------------------------------------


def test_the_created_container_carries_the_runtime_settings_asked_for(served):
    reg, push, env = served
    memlock = _memlock_hard()  # -1 (unlimited, what vLLM wants) needs a host that allows it; this one may not
    push("v1", shm_size="256m", memory="512m", ipc="host", cpus=0.5,
         ulimits={"memlock": memlock, "nofile": {"soft": 1024, "hard": 2048}},
         log={"driver": "json-file", "max_size": "10m", "max_file": 2}, restart="on-failure:5")
    reg.promote("v1")
    hc = host_config(deployed_id(reg, env))
    assert hc["ShmSize"] == 256 * MiB and hc["Memory"] == 512 * MiB and hc["IpcMode"] == "host"
    assert hc["NanoCpus"] == 500_000_000
    assert sorted(hc["Ulimits"], key=lambda u: u["Name"]) == [
        {"Name": "memlock", "Soft": memlock, "Hard": memlock}, {"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}}
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}


def _memlock_hard() -> int:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


def test_memlock_unlimited_runs_where_the_host_allows_it_and_fails_cleanly_where_not(served):
    reg, push, env = served
    push("v1"), push("v2", ulimits={"memlock": -1})  # what vLLM's docs ask for
    reg.promote("v1")
    if _memlock_hard() == -1:  # this host allows it
        reg.promote("v2")
        assert host_config(deployed_id(reg, env))["Ulimits"] == [{"Name": "memlock", "Soft": -1, "Hard": -1}]
        return
    with pytest.raises(HealthGateFailed, match="does not allow the runtime.ulimits asked for"):
        reg.promote("v2")
    assert reg.history(env)[-1].version == "v1"


def test_defaults_rotate_logs_restart_unless_stopped_and_kept_containers_have_no_policy(served):
    reg, push, env = served
    push("v1"), push("v2")
    reg.promote("v1")
    first = deployed_id(reg, env)
    reg.promote("v2")
    hc = host_config(deployed_id(reg, env))
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "20m", "max-file": "5"}}
    assert hc["RestartPolicy"]["Name"] == "unless-stopped"
    assert hc["IpcMode"] == "private" and not hc.get("DeviceRequests")
    assert host_config(first)["RestartPolicy"]["Name"] in ("", "no")  # kept for rollback: stays stopped
    reg.rollback(env=env)
    assert host_config(first)["RestartPolicy"]["Name"] == "unless-stopped"  # serving again: restarts again


def test_an_environment_override_wins_over_the_version(served):
    reg, push, env = served
    push("v1", memory="512m", shm_size="128m")
    reg.set_env(env, runtime={"memory": "256m"})
    reg.promote("v1")
    hc = host_config(deployed_id(reg, env))
    assert hc["Memory"] == 256 * MiB and hc["ShmSize"] == 128 * MiB
    assert reg.environment(env).runtime.memory == "256m"


def test_gpu_requests_become_device_requests(docker_image):
    engine = DockerEngine()
    snapshot = "/tmp"
    ids = []
    try:
        for gpus, want in (("all", (-1, None)), (2, (2, None)), (["0", "GPU-1f2e"], (0, ["0", "GPU-1f2e"]))):
            spec = ContainerSpec(name=f"cellar-i24-gpu-{os.urandom(4).hex()}", image=docker_image,
                                 labels={"cellar.env": "i24-gpu-test"}, env={}, snapshot=snapshot,
                                 container_port=8080, host_port=free_port(), host=HostSettings(gpus=gpus))
            ids.append(engine.create(spec))
            (req,) = host_config(ids[-1])["DeviceRequests"]
            assert (req["Count"], req["DeviceIDs"] or None) == want and req["Capabilities"] == [["gpu"]]
    finally:
        for cid in ids:
            engine.remove(cid)
        engine.close()


# --- 4. slow starters ------------------------------------------------------------------------


class Watcher:
    """An on_step that hears what the spinner line would show."""

    def __init__(self):
        self.details: list[str] = []

    def __call__(self, name, seconds, ok):
        pass

    def started(self, name, detail):
        if detail:
            self.details.append(f"{name}: {detail}")


def test_a_server_refusing_then_loading_then_ready_passes_and_the_spinner_shows_its_answers(served):
    reg, push, env = served
    push("v1", {"READY_DELAY": "1", "LOAD_FOR": "2"})
    watcher = Watcher()
    result = reg.promote("v1", on_step=watcher)
    assert str(result.release.status) == "deployed"
    shown = "\n".join(watcher.details)
    assert "last answer: connection refused" in shown or "last answer: connection reset" in shown
    assert "last answer: HTTP 503" in shown and "Loading model" in shown
    step = next(s for s in result.steps if s.name == "health check")
    assert "last answer" not in (step.detail or "")  # recorded: the timeout's source, not a passing answer


def test_a_server_that_never_becomes_ready_fails_at_the_timeout_and_the_old_one_serves(served):
    reg, push, env = served
    push("v1"), push("v2", {"LOAD_FOR": "100000"}, health={**HEALTH, "timeout_s": 3})
    reg.promote("v1")
    with pytest.raises(HealthGateFailed) as failed:
        reg.promote("v2")
    assert "timed out after 3 s" in str(failed.value) and "Loading model" in str(failed.value)
    assert [(r.version, str(r.status)) for r in reg.history(env)][-2:] == [("v2", "failed"), ("v1", "deployed")]


def test_a_server_that_exits_while_loading_fails_at_once(served):
    reg, push, env = served
    push("v1", {"LOAD_FOR": "100000", "EXIT_AFTER": "1"}, health={**HEALTH, "timeout_s": 600})
    started = time.monotonic()
    with pytest.raises(HealthGateFailed) as failed:
        reg.promote("v1")
    assert "container exited with code 7" in str(failed.value) and "out of memory" in str(failed.value)
    assert time.monotonic() - started < 300  # not the 600 s timeout (a bound, not a timing)


def test_warm_up_has_its_own_timeout(served):
    reg, push, env = served
    push("v1", {"SLOW_MS": "5000"}, warmup=[{"method": "POST", "path": "/cgi-bin/answer", "json": {"p": 1}}],
         warmup_timeout_s=1)
    with pytest.raises(HealthGateFailed) as failed:
        reg.promote("v1")
    assert "got no answer within 1 s (runtime.warmup_timeout_s)" in str(failed.value)


# --- 3. restart after the process dies ----------------------------------------------------------


def kill_server(client, container_id: str) -> None:
    """SIGKILL the container's main process from the host, as the kernel's OOM killer would."""
    pid = wait_for(lambda: client.api.inspect_container(container_id)["State"]["Pid"])
    assert pid > 1  # never 0: os.kill(0, ...) would kill this test's own process group
    os.kill(pid, signal.SIGKILL)


def wait_for(check, *, bound_s: float = 30.0):
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {bound_s} s")


def test_a_server_killed_from_the_host_comes_back_and_status_counts_it(served, docker_client):
    reg, push, env = served
    push("v1")
    reg.promote("v1")
    cid = deployed_id(reg, env)
    kill_server(docker_client, cid)  # the server's process dies, as after an out-of-memory kill
    wait_for(lambda: docker_client.api.inspect_container(cid)["RestartCount"] >= 1)
    (status,) = wait_for(lambda: [s for s in reg.status() if s.env == env and s.healthy and s.problem is None] or None)
    assert status.restarts == 1 and status.last_exit_code == 137 and status.problem is None
    shown = cli("status", "--env", env).stdout
    assert f"{env}: restarted 1 time by Docker after its process ended (last exit code 137)" in shown


def test_watch_alerts_when_the_server_restarts_in_a_loop(served, docker_client):
    reg, push, env = served
    push("v1")
    reg.promote("v1")
    cid = deployed_id(reg, env)

    def crash_three_times(_seconds):
        for n in range(1, 4):
            kill_server(docker_client, cid)
            wait_for(lambda n=n: docker_client.api.inspect_container(cid)["RestartCount"] >= n
                     and docker_client.api.inspect_container(cid)["State"]["Running"])

    sent: list[str] = []
    summary = reg.watch(env, every_s=1, max_runs=2, notify=sent.append, sleep=crash_three_times)
    assert "alert-restarting" in summary.alerts
    assert any(f"{env}: v1's container was restarted 3 times by Docker" in text and "last exit code 137" in text
               for text in sent)


# --- 2. GPUs ---------------------------------------------------------------------------------


def test_a_gpu_request_on_a_host_without_nvidia_runtime_fails_cleanly_and_the_old_release_serves(served):
    reg, push, env = served
    push("v1"), push("v2", gpus="all")
    reg.promote("v1")
    with pytest.raises(HealthGateFailed) as failed:
        reg.promote("v2")
    assert "this Docker host has no NVIDIA runtime: install nvidia-container-toolkit" in str(failed.value)
    assert failed.value.exit_code == 4
    rows = [(r.version, str(r.status), r.rollback_of) for r in reg.history(env)]
    assert rows[-2:] == [("v2", "failed", None), ("v1", "deployed", 1)]
    (status,) = [s for s in reg.status() if s.env == env]
    assert status.healthy and status.deployed.version == "v1"
    failed_again = cli("promote", "v2", "--env", env, code=4)  # the CLI: same path, exit 4
    assert "this Docker host has no NVIDIA runtime: install nvidia-container-toolkit" in failed_again.stderr


def test_two_environments_claiming_one_gpu_are_refused_unless_both_share(served, home):
    reg, push, env = served
    push("v1", gpus=[0])
    other = env + "-b"
    reg.add_env(other, port=free_port(), runtime={"gpus": "0,1"})
    # the first environment holds GPU 0 (a release recorded as deployed; no GPU runs here)
    _record_deployed(reg, env, "v1")
    with pytest.raises(Conflict) as refused:
        reg.promote("v1", env=other)
    message = str(refused.value)
    assert f"in {other}" in message and f"in {env}" in message and "GPU 0" in message
    assert [r.version for r in reg.history(other)] == []  # nothing recorded
    reg.set_env(env, share_gpus=True)
    reg.set_env(other, share_gpus=True)
    with pytest.raises(HealthGateFailed, match="no NVIDIA runtime"):  # allowed: on to the engine, which has no GPU
        reg.promote("v1", env=other)
    (status,) = [s for s in reg.status() if s.env == env]
    assert status.gpus == ["0"]
    from starlette.testclient import TestClient

    from registry.web import create_app

    with TestClient(create_app(lambda: Registry.open(home)), base_url="http://127.0.0.1:8765") as web:
        page = web.get(f"/envs/{env}").text
        assert '<td id="gpus">0</td>' in page
        assert "GPUs 0" in web.get("/envs").text


def test_gpus_a_release_is_being_deployed_with_count_as_held(served):
    reg, push, env = served
    push("v1", gpus=1)
    other = env + "-c"
    reg.add_env(other, port=free_port())
    _record_deployed(reg, env, "v1", settle=False)  # a promote in flight there: pending-deploy
    with pytest.raises(Conflict, match=f"in {other} would use GPU 0, which support-bot@v1 in {env} holds"):
        reg.promote("v1", env=other)


def _record_deployed(reg, env: str, version: str, *, settle: bool = True) -> None:
    """A deployed release for ``env`` as if its promote had run on a GPU host (or pending, not settled)."""
    from registry import clock, ledger
    from registry.store.sql import releases, versions

    with reg.cfg.store.read() as conn:
        stored = versions.record_of(conn, "support-bot", version)
    target = ledger.Target(model="support-bot", version=version, manifest_digest=stored.digest,
                           image_digest=stored.record["image"]["digest"])
    plan = ledger.plan_promote([], target, env=env, actor="test", reason=None, at=clock.now())
    with reg.cfg.store.write() as conn:
        releases.insert_(conn, plan.pending)
        if settle:
            releases.apply(conn, ledger.settle(plan, ok=True, at=clock.now(), container_id="0" * 64))
