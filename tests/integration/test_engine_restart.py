"""A Docker engine restarted (as after a reboot of the GPU server) brings the deployed container
back by itself, without `registry recover`, and leaves the containers kept for rollback stopped
(issue 24).

The engine is one of this test's own, started with issue 22's harness (scripts/second-engine.sh)
under other names and addresses, so restarting it never disturbs the shared second engine other
tests may be using at the same moment, nor the machine's own engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import docker
import pytest

from registry.api import Registry
from tests.conftest import free_port

pytestmark = pytest.mark.docker
HARNESS = Path(__file__).parents[2] / "scripts" / "second-engine.sh"
# the harness's names -> this test's (interface names stay within 15 characters)
RENAMES = {"/run/cellar-engine2": "/run/cellar-engine24", "/var/lib/cellar-engine2": "/var/lib/cellar-engine24",
           "/var/log/cellar-engine2.log": "/var/log/cellar-engine24.log", "NETNS=cellar-e2": "NETNS=cellar-e24",
           "HOST_IF=ce2-host": "HOST_IF=ce24-host", "NS_IF=ce2-engine": "NS_IF=ce24-engine",
           "10.231.0.": "10.232.0.", "172.30.99.1/24": "172.30.124.1/24"}
DATA, RUN = Path("/var/lib/cellar-engine24"), Path("/run/cellar-engine24")


@pytest.fixture
def own_engine(tmp_path, docker_image):
    """(script, url): an engine of this test's own, with the test server image; gone afterwards."""
    from tests.conftest import need

    if os.geteuid() != 0 or not shutil.which("dockerd"):
        need("a Docker engine of the test's own", "needs root and dockerd (scripts/second-engine.sh)")
    text = HARNESS.read_text()
    for old, new in RENAMES.items():
        assert old in text, f"the harness no longer names {old}"
        text = text.replace(old, new)
    script = tmp_path / "engine24.sh"
    script.write_text(text)
    script.chmod(0o755)
    try:
        url = _run(script, "start")
        here, there = docker.from_env(timeout=120), docker.DockerClient(base_url=url, timeout=120)
        try:
            there.images.load(b"".join(here.images.get(docker_image).save(named=True)))
        finally:
            here.close()
            there.close()
        yield script, url
    finally:
        _run(script, "stop")
        for folder in (DATA, RUN):  # its containers, images and sockets: nothing is left behind
            shutil.rmtree(folder, ignore_errors=True)
        Path("/var/log/cellar-engine24.log").unlink(missing_ok=True)


def _run(script: Path, command: str) -> str:
    done = subprocess.run([str(script), command], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _state(url: str, container_id: str) -> dict:
    client = docker.DockerClient(base_url=url, timeout=30)
    try:
        data = client.api.inspect_container(container_id)
        return {"running": data["State"]["Running"], "policy": data["HostConfig"]["RestartPolicy"]["Name"]}
    finally:
        client.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_a_restarted_engine_brings_the_deployed_container_back_and_leaves_kept_ones_stopped(
        own_engine, docker_image, sqlite_home, model_dir, monkeypatch):
    script, url = own_engine
    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-" + os.urandom(6).hex())
    with Registry.open(sqlite_home) as reg:
        for version in ("v1", "v2"):
            model_dir.set_prompt(f"prompt-{version}")
            model_dir.write_manifest(version=version, image=docker_image, runtime={
                "port": 8080, "env": {"MAX_TOKENS": "64"}, "secrets": ["SUPPORT_API_TOKEN"],
                "health": {"path": "/cgi-bin/health", "timeout_s": 30}})
            reg.push(model_dir.manifest)
        port = free_port()
        reg.add_env("gpu-box", port=port, docker_host=url, bind_addr="0.0.0.0", default=True)
        reg.promote("v1")
        reg.promote("v2")
        kept, deployed = (r.container_id for r in reg.history("gpu-box")[-2:])

    assert _state(url, deployed) == {"running": True, "policy": "unless-stopped"}
    assert _state(url, kept) == {"running": False, "policy": "no"}

    _run(script, "stop")  # the GPU server goes down: its engine stops every container
    _run(script, "start")  # and comes back

    health = f"http://{url.split('//')[1].rsplit(':', 1)[0]}:{port}/cgi-bin/health"
    deadline = time.monotonic() + 60
    while not _answers(health):
        assert time.monotonic() < deadline, "the deployed container did not come back within 60 s"
        time.sleep(0.2)
    assert _state(url, deployed)["running"] and not _state(url, kept)["running"]
    with Registry.open(sqlite_home) as reg:
        (status,) = reg.status()
        assert status.deployed.version == "v2" and status.healthy and status.problem is None
