"""Promote, rollback and recovery against the real Docker engine (SQLite metadata).

Uses the busybox test server image from conftest.py; every container is removed by label.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import docker
import pytest
from sqlalchemy import func, select

from registry.engines.engine import container_name
from registry.errors import HealthGateFailed
from registry.store.sql import events
from registry.store.sql import schema as t
from tests.conftest import free_port

pytestmark = pytest.mark.docker
REGISTRY = [sys.executable, "-m", "cli.main"]


def answer(reg, env: str) -> str:
    port = reg.environment(env).port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/cgi-bin/health", timeout=3) as resp:
        return resp.read().decode().strip()


def statuses(reg, env):
    return [(r.revision, r.version, str(r.status)) for r in reg.history(env)]


def running(env: str) -> list:
    client = docker.from_env()
    try:
        return client.containers.list(filters={"label": f"cellar.env={env}"})
    finally:
        client.close()


def cli(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    out = subprocess.run([*REGISTRY, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                         timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_promote_and_roll_back(docker_env):
    reg, env = docker_env
    first = reg.promote("v1.0")
    assert answer(reg, env) == "prompt=prompt-v1.0 warmed=1"
    reg.promote("v1.1", reason="new prompt")
    assert answer(reg, env).startswith("prompt=prompt-v1.1")
    back = reg.rollback()
    assert back.release.version == "v1.0" and back.release.rollback_of == 1
    assert back.release.container_id == first.release.container_id  # the kept container, started again
    assert answer(reg, env).startswith("prompt=prompt-v1.0")
    assert statuses(reg, env) == [(1, "v1.0", "superseded"), (2, "v1.1", "superseded"), (3, "v1.0", "deployed")]
    (c,) = running(env)
    host = c.attrs["HostConfig"]
    assert c.labels["cellar.version"] == "v1.0" and c.labels["cellar.revision"] == "1"
    assert host["Init"] is True and host["Privileged"] is False
    (model,) = [m for m in host["Mounts"] if m["Target"] == "/model"]  # a bind: never a silent empty folder
    assert model["Type"] == "bind" and model["ReadOnly"] is True
    assert host["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert "docker.sock" not in str(c.attrs["Mounts"])
    assert len(c.labels["cellar.registry"]) == 32 and len(c.name.rsplit("-", 1)[1]) == 6  # cellar-...-r1-<hash6>
    # the adapter reads the container's env back: a rollback scrubs the secrets it was started with
    assert reg.engine().inspect(c.id).env["SUPPORT_API_TOKEN"] == os.environ["SUPPORT_API_TOKEN"]


def test_broken_version_rolls_back_and_rollback_skips_it(docker_env):
    reg, env = docker_env
    reg.promote("v1.0")
    reg.promote("v1.1")
    with pytest.raises(HealthGateFailed, match=r"timed out .*HTTP 503.*rolled back automatically to support-bot@v1.1"):
        reg.promote("v1.2")
    assert answer(reg, env).startswith("prompt=prompt-v1.1")
    assert statuses(reg, env)[2:] == [(3, "v1.2", "failed"), (4, "v1.1", "deployed")]
    assert reg.rollback().release.version == "v1.0"  # not v1.2, not v1.1 again
    assert answer(reg, env).startswith("prompt=prompt-v1.0")
    assert [c.labels["cellar.version"] for c in running(env)] == ["v1.0"]


def test_rollback_to_a_chosen_revision_recreates_a_removed_container(docker_env):
    reg, env = docker_env
    first = reg.promote("v1.0")
    reg.promote("v1.1")
    docker.from_env().containers.get(first.release.container_id).remove(force=True)
    back = reg.rollback(revision=1)
    assert back.release.container_id != first.release.container_id
    assert answer(reg, env) == "prompt=prompt-v1.0 warmed=1"


def test_container_that_exits_at_once(docker_env):
    reg, env = docker_env
    reg.promote("v1.0")
    with pytest.raises(HealthGateFailed, match="exited with code 3") as err:
        reg.promote("v1.3")
    assert "cannot load weights" in str(err.value)
    assert os.environ["SUPPORT_API_TOKEN"] not in str(err.value)
    assert answer(reg, env).startswith("prompt=prompt-v1.0")


def test_host_port_taken_by_another_process(docker_env):
    reg, _ = docker_env
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        reg.add_env("squatted", port=squatter.getsockname()[1], health_timeout_s=2)
        try:
            with pytest.raises(HealthGateFailed, match="port is already in use"):
                reg.promote("v1.0", env="squatted")
            assert statuses(reg, "squatted") == [(1, "v1.0", "failed")]
            assert docker.from_env().containers.list(all=True, filters={"label": "cellar.env=squatted"}) == []
        finally:
            for c in docker.from_env().containers.list(all=True, filters={"label": "cellar.env=squatted"}):
                c.remove(force=True)


def test_docker_unreachable_records_nothing(docker_env, tmp_path):
    reg, env = docker_env
    with reg.store.read() as conn:
        events_before = conn.execute(select(func.count()).select_from(t.events)).scalar_one()
    dead = f"unix://{tmp_path}/no-dockerd.sock"
    out = cli("promote", "v1.0", env={"DOCKER_HOST": dead})
    assert out.returncode == 1
    assert dead in out.stderr and "DOCKER_HOST" in out.stderr and "Traceback" not in out.stderr
    assert reg.history(env) == []
    with reg.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(t.events)).scalar_one() == events_before
        assert conn.execute(select(func.count()).select_from(t.env_locks)).scalar_one() == 0


def test_two_promotes_at_once_exactly_one_wins(docker_env):
    reg, env = docker_env
    procs = [subprocess.Popen([*REGISTRY, "promote", v, "--actor", who], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for v, who in (("v1.4", "alice"), ("v1.5", "bob"))]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], results
    loser = next(err for code, err in results if code == 3)
    assert "another operation (promote v1." in loser and "is in progress" in loser
    deployed = [r for r in reg.history(env) if str(r.status) == "deployed"]
    (c,) = running(env)
    assert len(deployed) == 1 and c.labels["cellar.version"] == deployed[0].version


@pytest.mark.parametrize("point", ["pending", "created", "old-stopped", "started", "healthy"])
def test_kill_during_promote_then_recover(docker_env, point):
    reg, env = docker_env
    reg.promote("v1.0")
    killed = cli("promote", "v1.1", env={"CELLAR_CRASH_AT": f"promote:{point}"})
    assert killed.returncode == -9
    cli("recover", check=True)
    deployed = [r for r in reg.history(env) if str(r.status) == "deployed"]
    assert len(deployed) == 1
    (c,) = running(env)
    assert c.id == deployed[0].container_id and c.labels["cellar.version"] == deployed[0].version
    assert answer(reg, env).startswith(f"prompt=prompt-{deployed[0].version}")
    expect = "v1.1" if point in ("started", "healthy") else "v1.0"
    assert deployed[0].version == expect
    with reg.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(t.env_locks)).scalar_one() == 0
    cli("promote", "v1.1", check=True)  # the environment is usable again


def test_secret_canary_never_leaks(docker_env, sqlite_home):
    reg, env = docker_env
    canary = os.environ["SUPPORT_API_TOKEN"]
    outputs = [cli("promote", "v1.0"), cli("promote", "v1.3"), cli("promote", "v1.2", "--json"),
               cli("history", "--json"), cli("status", "--json"), cli("rollback", "--to", "v1.0")]
    assert [o.returncode for o in outputs] == [0, 4, 4, 0, 0, 1]
    for o in outputs:
        assert canary not in o.stdout + o.stderr
    assert "token ***" in outputs[1].stderr  # the container printed it; Cellar scrubbed it
    for path in sqlite_home.glob("registry.db*"):
        assert canary.encode() not in path.read_bytes()
    for c in running(env):
        assert canary.encode() not in c.logs()


@pytest.mark.parametrize("point", ["old-stopped", "started"])
def test_kill_during_rollback_then_recover(docker_env, point):
    reg, env = docker_env
    reg.promote("v1.0")
    reg.promote("v1.1")
    killed = cli("rollback", env={"CELLAR_CRASH_AT": f"rollback:{point}"})
    assert killed.returncode == -9
    cli("recover", check=True)
    (deployed,) = [r for r in reg.history(env) if str(r.status) == "deployed"]
    (c,) = running(env)
    assert c.id == deployed.container_id
    assert deployed.version == ("v1.0" if point == "started" else "v1.1")
    assert answer(reg, env).startswith(f"prompt=prompt-{deployed.version}")
    assert len(docker.from_env().containers.list(all=True, filters={"label": f"cellar.env={env}"})) == 2


def test_next_promote_recovers_after_a_dead_owner_by_itself(docker_env):
    reg, env = docker_env
    reg.promote("v1.0")
    assert cli("promote", "v1.1", env={"CELLAR_CRASH_AT": "promote:old-stopped"}).returncode == -9
    cli("promote", "v1.1", check=True)
    assert [(r.version, str(r.status)) for r in reg.history(env)] == [
        ("v1.0", "superseded"), ("v1.1", "failed"), ("v1.0", "superseded"), ("v1.1", "deployed")]
    assert answer(reg, env).startswith("prompt=prompt-v1.1")


def test_retention_removes_old_stopped_containers_only(docker_env):
    reg, env = docker_env
    reg.add_env(f"{env}-k", port=free_port(), keep=1, health_timeout_s=2.5)
    for version in ("v1.0", "v1.1", "v1.0"):
        reg.promote(version, env=f"{env}-k")
    client = docker.from_env()
    try:
        names = sorted(c.name for c in client.containers.list(all=True, filters={"label": f"cellar.env={env}-k"}))
        # deployed r3 and r2 (what a default rollback needs: keep=1 keeps it); r1 removed
        with reg.store.read() as conn:
            rid = events.registry_id(conn)
        assert names == [container_name(env=f"{env}-k", model="support-bot", revision=r, registry=rid) for r in (2, 3)]
        assert reg.rollback(env=f"{env}-k").release.version == "v1.1"
    finally:
        for c in client.containers.list(all=True, filters={"label": f"cellar.env={env}-k"}):
            c.remove(force=True)
        client.close()


def test_close_closes_the_engines_of_environments_on_their_own_hosts(docker_env, monkeypatch):
    from registry.engines.docker import DockerEngine, describe_host

    reg, _ = docker_env
    other = reg.add_env("t" + os.urandom(4).hex(), port=free_port(), docker_host=describe_host())
    own = reg.engine(other.docker_host)
    assert own is not reg.engine()
    closed = []
    real_close = DockerEngine.close
    monkeypatch.setattr(DockerEngine, "close", lambda self: (closed.append(self), real_close(self)))
    reg.close()
    assert any(e is own for e in closed) and any(e is reg.engine() for e in closed)


def test_ctrl_c_during_promote_brings_the_old_release_back(docker_env, docker_image, model_dir):
    reg, base = docker_env
    env = f"{base}-c"  # v1.9 never answers: Ctrl-C has the whole 15 s health check to land in
    reg.add_env(env, port=free_port(), health_timeout_s=15)
    model_dir.set_prompt("prompt-v1.9")
    model_dir.write_manifest(version="v1.9", image=docker_image, runtime={
        "port": 8080, "env": {"MAX_TOKENS": "64", "READY_DELAY": "600"}, "secrets": ["SUPPORT_API_TOKEN"],
        "health": {"path": "/cgi-bin/health"}})
    reg.push(model_dir.manifest)
    client = docker.from_env()
    try:
        reg.promote("v1.0", env=env)
        # SIGINT as a terminal sends it, even when this suite runs in the background (where the
        # shell makes children ignore SIGINT, and Python then installs no KeyboardInterrupt)
        proc = subprocess.Popen([*REGISTRY, "promote", "v1.9", "--env", env], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        seen = []
        for line in proc.stderr:  # the line comes when the container has started: the health check follows
            seen.append(line)
            if "start container" in line:
                proc.send_signal(signal.SIGINT)
                break
        _, rest = proc.communicate(timeout=120)
        assert proc.returncode == 130, "".join(seen) + rest
        assert rest.strip().splitlines()[-1] == (
            f"error: interrupted: support-bot@v1.9 was not deployed to {env}; "
            "support-bot@v1.0 was restored (revision 3)")
        assert statuses(reg, env) == [(1, "v1.0", "superseded"), (2, "v1.9", "failed"), (3, "v1.0", "deployed")]
        assert answer(reg, env).startswith("prompt=prompt-v1.0")
        assert [c.labels["cellar.version"] for c in running(env)] == ["v1.0"]
        with reg.store.read() as conn:
            assert conn.execute(select(func.count()).select_from(t.env_locks)).scalar_one() == 0
    finally:
        own = {"label": [f"cellar.env={env}", f"cellar.registry={reg.cfg.registry_id}"]}
        for c in client.containers.list(all=True, filters=own):
            c.remove(force=True)
        client.close()


def test_engine_errors_name_the_url_its_source_and_the_cause_in_a_few_words(tmp_path, monkeypatch):
    from registry.engines.docker import DockerEngine
    from registry.errors import EngineError

    dead = f"unix://{tmp_path}/no-dockerd.sock"
    with pytest.raises(EngineError) as caught:
        DockerEngine(dead)
    assert str(caught.value) == (f"cannot reach the Docker engine at {dead} (no such socket; from the environment's "
                                 "--docker-host): start dockerd there, or check the URL with `registry env list`")
    monkeypatch.setenv("DOCKER_HOST", dead)
    with pytest.raises(EngineError, match=r"\(no such socket; from \$DOCKER_HOST\): .*fix DOCKER_HOST"):
        DockerEngine()
    # ssh:// with the ssh extra installed: a refused port; without it: how to install it
    port = free_port()
    with pytest.raises(EngineError) as caught:
        DockerEngine(f"ssh://nobody@127.0.0.1:{port}", timeout=5)
    expected = ("connection refused" if importlib.util.find_spec("paramiko")
                else "ssh:// hosts need the ssh extra: pip install 'cellar-registry[ssh]'")
    assert f"({expected}; from the environment's --docker-host)" in str(caught.value)
