"""Production as it is, not only as recorded (issue 27), against the real Docker engine on both
databases: an environment gone dark, the last known good, and a gate with nothing to ask.

The port-taken case is forced, not hoped for: the promote waits at its ``promote:old-stopped``
meeting point until this test has bound the environment's port, so starting the new release and
putting the old one back both fail for the reason they fail in production.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from registry.api import Registry
from registry.errors import HealthGateFailed, InvalidInput
from registry.web import create_app
from tests.conftest import _docker_client, cli, free_port

pytestmark = pytest.mark.docker

SUITE = [{"name": "answers", "path": "/cgi-bin/answer", "json": {"prompt": "6*7?"},
          "expect": {"regex": '"answer":"42"'}}]
VERSIONS = {  # version -> (server env, manifest fields)
    "v1.0": ({}, {"probes": SUITE}),
    "v1.1": ({}, {"probes": SUITE}),
    "v2.0": ({"WRONG_ANSWER": "1"}, {"probes": SUITE}),
    "bare": ({}, {"probes": []}),
}


@pytest.fixture
def prod(docker_image, home, monkeypatch, model_dir):
    """A registry on the parametrised database with the versions above and environment
    ``t<random>`` (default, free port); its containers are removed afterwards."""
    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-" + os.urandom(6).hex())
    name = "t" + os.urandom(4).hex()
    reg = Registry.open(home)
    for version, (env, extra) in VERSIONS.items():
        model_dir.set_prompt(f"prompt-{version}\n")
        model_dir.write_manifest(version=version, image=docker_image, runtime={
            "port": 8080, "env": {"MAX_TOKENS": "64", **env}, "secrets": ["SUPPORT_API_TOKEN"],
            "health": {"path": "/cgi-bin/health", "timeout_s": 2}}, **extra)
        reg.push(model_dir.manifest)
    reg.add_env(name, port=free_port(), health_timeout_s=2, default=True)
    yield reg, name
    own = reg.cfg.registry_id
    reg.close()
    client = _docker_client()
    for c in client.containers.list(all=True, filters={"label": f"cellar.registry={own}"}):
        c.remove(force=True)
    client.close()


@contextmanager
def port_taken_after_old_stops(port: int, folder, monkeypatch):
    """Another process's listener takes ``port`` the moment the promote has stopped the old
    container (the promote waits for it at its meeting point); released on exit."""
    folder.mkdir()
    monkeypatch.setenv("CELLAR_MEET_AT", f"promote:old-stopped:2:{folder}")
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def take() -> None:
        deadline = time.monotonic() + 30
        while not any(folder.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(200):  # docker-proxy lets go of the port just after the stop returns
            try:
                holder.bind(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        holder.listen()
        (folder / "holder").touch()

    thread = threading.Thread(target=take)
    thread.start()
    try:
        yield
    finally:
        thread.join(35)
        monkeypatch.delenv("CELLAR_MEET_AT")
        holder.close()


def go_dark(reg, env, version, tmp_path, monkeypatch) -> HealthGateFailed:
    with port_taken_after_old_stops(reg.environment(env).port, tmp_path / "meet", monkeypatch):
        with pytest.raises(HealthGateFailed) as failed:
            reg.promote(version, reason="port taken meanwhile")
    return failed.value


def test_a_dark_environment_says_so_everywhere_and_the_last_known_good_comes_back(prod, tmp_path, monkeypatch):
    reg, env = prod
    reg.promote("v1.0")
    assert cli("probe").exit_code == 0
    failed = go_dark(reg, env, "v1.1", tmp_path, monkeypatch)
    assert "dark" in str(failed) and "v1.0 stays the last known good" in str(failed)
    assert [(r.revision, r.version, str(r.status)) for r in reg.history(env)] == [
        (1, "v1.0", "superseded"), (2, "v1.1", "failed")]  # not "failed": its surroundings failed it
    (status,) = [s for s in reg.status() if s.env == env]
    assert status.deployed is None and status.dark_since is not None
    assert status.last_good.revision == 1 and "port is already in use" in status.dark_reason

    shown = cli("status", code=1)
    assert "DARK" in shown.stdout and "last known good: support-bot@v1.0 (revision 1)" in shown.stdout.lower()
    assert "dark since" in shown.stderr
    assert json.loads(cli("status", "--json", code=1).stdout)[0]["last_good"]["version"] == "v1.0"
    probe = json.loads(cli("probe", "--json", code=4).stdout)
    assert f"{env} is dark since" in probe["results"][0]["detail"]
    assert f"then `registry rollback --env {env}`" in cli("probe", code=4).stdout  # not cut by the table
    watched = cli("watch", "--every", "0.01", "--failures", "1", "--max-runs", "1", code=1)
    assert "alert:" in watched.stderr and "is dark since" in watched.stderr and "dark: nothing serves" in watched.stderr
    page = cli("metrics", code=1)
    dark = {s.labels["env"]: s.value for f in text_string_to_metric_families(page.stdout)
            if f.name == "cellar_dark_since_timestamp_seconds" for s in f.samples}
    assert dark == {env: pytest.approx(status.dark_since.timestamp())}
    with TestClient(create_app(lambda: Registry.open(reg.home.path)), base_url="http://127.0.0.1:8765") as web:
        page = web.get(f"/envs/{env}").text
        listing = web.get("/envs").text
    assert "Dark since" in page and f"registry rollback --env {env}" in page and "dark since" in listing
    recovered = cli("recover", code=1)
    assert "dark: nothing serves since" in recovered.stdout and "Nothing to recover" not in recovered.stdout

    back = reg.rollback(reason="port freed")  # the default target: the release that was serving
    assert (back.release.version, back.release.rollback_of) == ("v1.0", 1)
    assert cli("status").exit_code == 0 and cli("metrics").exit_code == 0


def test_the_default_rollback_skips_a_version_whose_last_probe_run_failed(prod, tmp_path, monkeypatch):
    reg, env = prod
    reg.promote("v1.0")
    cli("probe")
    reg.promote("v2.0")  # healthy, but answers wrong
    assert "0 of 1 passed" in cli("probe", code=4).stderr
    reg.promote("v1.1")
    back = reg.rollback()
    assert back.release.version == "v1.0", "v2.0 served, but its last probe run failed: not known good"
    assert reg.rollback(to="v2.0").release.version == "v2.0"  # named, it is still allowed

    # the longer ledger: the old release lost to a taken port is still the target
    reg.promote("v1.0")
    cli("probe")
    go_dark(reg, env, "v1.1", tmp_path, monkeypatch)
    assert reg.rollback().release.version == "v1.0"


def test_a_gate_or_a_probe_with_nothing_to_ask_is_never_a_pass(prod):
    reg, env = prod
    reg.promote("v1.0")
    with pytest.raises(InvalidInput, match="declares no probes, so the probe gate would check nothing"):
        reg.promote("bare", gate=True)
    assert [r.version for r in reg.history(env)] == ["v1.0"]  # refused before anything was recorded
    refused = cli("promote", "bare", "--gate", code=1)
    assert "promote without --gate" in refused.stderr and "probe gate" not in refused.stdout
    reg.add_env(env + "-g", port=free_port(), health_timeout_s=2, gate=True)
    assert "--no-gate" in cli("promote", "bare", "--env", env + "-g", code=1).stderr

    reg.promote("bare")  # without a gate it deploys; a probe run then asks nothing, and says so
    probe = cli("probe", code=4)
    assert "declares no probes, so nothing was asked" in probe.stdout and "0 of 1 passed" in probe.stderr
    run = reg.probe_runs(env, limit=1)[0]
    assert run.outcome.value == "error" and not run.ok
    watched = cli("watch", "--every", "0.01", "--max-runs", "1")
    assert "  bare  error  0/1 passed" in watched.stdout


def test_a_failed_promote_lists_the_step_that_failed(prod):
    reg, env = prod
    reg.promote("v1.0")
    doc = json.loads(cli("promote", "v2.0", "--gate", "--json", code=4).stdout)
    steps = {s["name"]: s["ok"] for s in doc["steps"]}
    assert steps["probe gate"] is False and steps["health check"] is True and steps["restart previous"] is True
    shown = cli("probe", "--env", env)  # v1.0 is back, and answers right
    assert "1 of 1 passed" in shown.stdout


def test_keep_counts_stopped_containers_and_gc_finds_what_removed_environments_left(prod, docker_image):
    reg, env = prod
    kept = env + "-k"
    reg.add_env(kept, port=free_port(), health_timeout_s=2, keep=3)
    for version in ("v1.0", "v1.1", "v2.0", "bare", "v1.0"):
        reg.promote(version, env=kept)
    client = _docker_client()
    mine = {"label": f"cellar.registry={reg.cfg.registry_id}"}
    stopped = [c for c in client.containers.list(all=True, filters=mine) if c.status != "running"]
    assert len(stopped) == 3, "--keep 3 keeps three stopped containers, the rollback target among them"
    assert reg.gc(dry_run=True).containers == []
    assert reg.rollback(env=kept).release.version == "bare"  # onto a kept one

    # what an environment removed long ago (or a crash) left behind: this registry's, kept by nothing
    orphan = client.containers.create(docker_image, labels={
        "cellar.env": "gone", "cellar.registry": reg.cfg.registry_id, "cellar.version": "v0.9"})
    reg.remove_env(kept, force=True)
    reg.remove_env(env)
    snapshots = sorted(str(p) for p in reg.cfg.snapshots.iterdir() if not p.name.startswith("."))
    dry = reg.gc(dry_run=True, grace=timedelta(0))
    assert [c.id for c in dry.containers] == [orphan.id]
    assert sorted(s.path for s in dry.snapshots) == snapshots and len(snapshots) == 4
    reg.gc(grace=timedelta(0))
    assert client.containers.list(all=True, filters=mine) == [] and not any(reg.cfg.snapshots.iterdir())
    client.close()


def switch_by_hand(reg, env) -> tuple[str, str]:
    """``docker stop`` the deployed container, ``docker start`` the kept one of revision 1."""
    client = _docker_client()
    deployed = next(r for r in reg.history(env) if str(r.status) == "deployed")
    first = reg.history(env)[0]
    client.containers.get(deployed.container_id).stop(timeout=1)
    client.containers.get(first.container_id).start()
    client.close()
    return deployed.version, first.version


def wait_answers(reg, env, version: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{reg.environment(env).port}/cgi-bin/health", timeout=2):
                pass
            break
        except OSError:
            assert time.monotonic() < deadline, f"{version} never answered"
            time.sleep(0.1)


def test_containers_switched_by_hand_are_named_and_put_back_or_adopted(prod):
    reg, env = prod
    reg.promote("v1.0")
    reg.promote("v1.1")
    recorded, by_hand = switch_by_hand(reg, env)
    wait_answers(reg, env, by_hand)
    shown = cli("status", code=1)
    assert "drift: support-bot@v1.0 (revision 1" in shown.stdout and "--adopt" in shown.stdout
    (status,) = [s for s in reg.status() if s.env == env]
    assert any("support-bot@v1.0 (revision 1" in d and "runs, not recorded" in d for d in status.drift)

    with TestClient(create_app(lambda: Registry.open(reg.home.path)), base_url="http://127.0.0.1:8765") as web:
        assert "drift: support-bot@v1.0 (revision 1" in web.get(f"/envs/{env}").text
    watched = cli("watch", "--every", "0.01", "--max-runs", "1", code=1)
    assert "drift: support-bot@v1.0 (revision 1" in watched.stderr

    put_back = cli("recover")
    assert "drift: stopped support-bot@v1.0" in put_back.stdout and "restarted" in put_back.stdout
    assert cli("status").exit_code == 0
    assert [str(r.status) for r in reg.history(env)] == ["superseded", "deployed"]  # the record did not move
    wait_answers(reg, env, recorded)

    switch_by_hand(reg, env)
    wait_answers(reg, env, by_hand)
    adopted = as_json_cli("recover", "--adopt")
    assert [a["action"] for a in adopted["actions"]] == ["adopted"]
    rows = reg.history(env)
    assert [(r.revision, r.version, str(r.status), r.rollback_of) for r in rows] == [
        (1, "v1.0", "superseded", None), (2, "v1.1", "superseded", None), (3, "v1.0", "deployed", 1)]
    assert rows[2].container_id == rows[0].container_id and "recover --adopt" in rows[2].reason
    assert any(e.action == "recover" and "adopted" in str(e.detail) for e in reg.audit(env=env))
    assert cli("status").exit_code == 0


def as_json_cli(*args: str) -> dict:
    return json.loads(cli(*args, "--json").stdout)


def test_diff_of_an_environment_names_the_image_it_runs_after_a_retag(prod, docker_image, model_dir):
    reg, env = prod
    client = _docker_client()
    tag = f"cellar-test-retag-{os.urandom(3).hex()}"
    client.images.get(docker_image).tag(tag, "1")
    other = None
    try:
        model_dir.write_manifest(version="retag", image=f"{tag}:1")
        reg.push(model_dir.manifest)
        made = client.containers.create(docker_image)
        other = made.commit(repository=tag, tag="1", changes=["LABEL retagged=yes"])
        made.remove()
        reg.promote("retag", allow_retag=True)
        out = cli("diff", env, "retag")
        assert "image    unchanged" not in out.stdout and short_id(other.id) in out.stdout
        assert "runs image" in out.stderr and "--allow-retag" in out.stderr
    finally:
        for image in (f"{tag}:1", other.id if other else None):
            if image:
                try:
                    client.images.remove(image, force=True)
                except Exception:
                    pass
        client.close()


def short_id(image_id: str) -> str:
    return image_id.split(":", 1)[1][:12]


def test_a_restored_home_says_it_shares_the_identity_and_a_new_one_leaves_the_original_alone(
        prod, tmp_path, target, other_url, monkeypatch):
    reg, env = prod
    reg.promote("v1.0")
    reg.promote("v1.1")
    cli("backup", str(tmp_path / "bak"))
    path, url = target
    monkeypatch.setenv("REGISTRY_HOME", str(path))
    monkeypatch.setenv("REGISTRY_DB_URL", url)
    same = cli("restore", str(tmp_path / "bak"))
    assert "original's identity" in same.stderr and "--new-identity" in same.stderr
    with Registry.open(path) as copy:
        assert copy.cfg.registry_id == reg.cfg.registry_id  # a replacement: it acts on the same containers

    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path / "beside"))
    monkeypatch.setenv("REGISTRY_DB_URL", other_url)
    beside = json.loads(cli("restore", str(tmp_path / "bak"), "--new-identity", "--json").stdout)
    assert beside["identity_shared"] is False and beside["registry_id"] != reg.cfg.registry_id
    with Registry.open(tmp_path / "beside") as copy:
        assert copy.cfg.registry_id == beside["registry_id"]
        with pytest.raises(InvalidInput, match="belongs to another registry"):
            copy.rollback()
        assert [r.version for r in copy.history(env)] == ["v1.0", "v1.1"]  # nothing recorded
        assert any(e.action == "new-identity" for e in copy.audit())
        (mirror,) = [s for s in copy.status() if s.env == env]
        assert any("belongs to another registry" in d for d in mirror.drift)
    (status,) = [s for s in reg.status() if s.env == env]
    assert status.deployed.version == "v1.1" and status.container_state == "running" and status.healthy
