"""Weights that reach a Docker host sharing no disk with the registry (issue 22), against the
real second engine (scripts/second-engine.sh): it cannot see the registry's folders, so a bind
mount of the snapshot folder would be an empty /model there. Promote, promote again (only new
blobs travel: counted), roll back, a damaged cached blob, a transfer killed (-9) or cut off,
a host down, TLS. Both databases where the ledger is involved."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import as_json, cli, free_port
from tests.second_engine import NETNS, ROOT, SOCKET

TOKEN = "canary-" + os.urandom(6).hex()


def _push(reg, model_dir, version: str, image: str, *, seed: int | None = None, **env) -> None:
    if seed is not None:
        helpers.write_safetensors(model_dir.root / "weights" / "model.safetensors", helpers.tensors(seed=seed))
    model_dir.set_prompt(f"prompt-{version}")
    model_dir.write_manifest(version=version, image=image, runtime={
        "port": 8080, "env": {"MAX_TOKENS": "64", **env}, "secrets": ["SUPPORT_API_TOKEN"],
        "health": {"path": "/cgi-bin/health", "timeout_s": 5}})
    reg.push(model_dir.manifest)


def _remote_env(reg, second_engine, model_dir, *, url: str | None = None) -> str:
    """v1.0 and v1.1 (same weights, another prompt), v1.2 (new weights), v1.3 unhealthy; an
    environment on the second engine, the default bind address chosen for a remote host."""
    for version, seed, env in (("v1.0", None, {}), ("v1.1", None, {}), ("v1.2", 7, {}),
                               ("v1.3", None, {"MAX_TOKENS": "lots"})):
        _push(reg, model_dir, version, second_engine.image, seed=seed, **env)
    name = "r" + os.urandom(4).hex()
    reg.add_env(name, port=free_port(), docker_host=url or second_engine.url, health_timeout_s=10, default=True)
    return name


@pytest.fixture
def remote(second_engine, home, model_dir, monkeypatch):
    """A registry (SQLite or PostgreSQL) with an environment on the second engine over tcp://."""
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    reg = Registry.open(home)
    name = _remote_env(reg, second_engine, model_dir)
    yield reg, name
    second_engine.cleanup(reg.cfg.registry_id)
    reg.close()


def _sent(result) -> tuple[int, int]:
    """(blobs sent, of blobs needed) from the promote's "send weights" step."""
    detail = next(s.detail for s in result.steps if s.name == "send weights")
    sent, there = re.search(r"sent (\d+) blobs? .*?, (\d+) already there", detail).groups()
    return int(sent), int(sent) + int(there)


def _model_files(second_engine, container_id: str) -> dict[str, str]:
    """What the container sees at /model: path -> sha256, listed inside it."""
    client = second_engine.client()
    try:
        c = client.containers.get(container_id)
        listing = c.exec_run(["sh", "-c", "for f in /model/* /model/*/* /model/*/*/*; do "
                                          "[ -f \"$f\" ] && sha256sum \"$f\"; done; true"]).output.decode()
        write = c.exec_run(["sh", "-c", "echo x > /model/new || echo x >> /model/prompts/system"]).exit_code
    finally:
        client.close()
    assert write != 0, "/model must be read-only"
    return {path: digest for digest, path in (line.split("  ", 1) for line in listing.splitlines())}


def _expected(reg, ref: str) -> dict[str, str]:
    info = reg.show(ref)
    files = {f"/model/{w.path}": w.digest for w in info.weights}
    files.update({f"/model/prompts/{p.name}": p.digest for p in info.prompts})
    return {k: v.split(":", 1)[1] for k, v in files.items()}


def test_promote_sends_what_the_host_lacks_and_the_container_sees_exactly_the_version(remote, second_engine):
    reg, env = remote
    first = reg.promote("support-bot@v1.0", env=env)
    assert first.release.status == "deployed"
    sent, needed = _sent(first)
    assert (sent, needed) == (2, 2)  # weights and prompt: the host had nothing
    assert _model_files(second_engine, first.release.container_id) == _expected(reg, "support-bot@v1.0")
    # v1.1 shares v1.0's weights: only its new prompt travels
    second = reg.promote("support-bot@v1.1", env=env)
    assert _sent(second) == (1, 2)
    assert _model_files(second_engine, second.release.container_id) == _expected(reg, "support-bot@v1.1")
    # a version whose blobs the host holds sends nothing
    again = reg.promote("support-bot@v1.0", env=env)
    assert _sent(again) == (0, 2)
    # each copy's stat is what was stamped when it was sent: none is hashed on the host again
    assert "(0 hashed there)" in next(s.detail for s in again.steps if s.name == "send weights")
    # and the environment publishes on the host's address (bind 0.0.0.0 chosen for a remote host)
    assert reg.environments()[0].bind_addr == "0.0.0.0"


def test_rollback_returns_to_the_kept_container_with_its_files_checked(remote, second_engine):
    reg, env = remote
    reg.promote("support-bot@v1.0", env=env)
    reg.promote("support-bot@v1.2", env=env)
    back = reg.rollback(env=env)
    assert back.release.version == "v1.0" and back.release.status == "deployed"
    assert any(s.name == "send weights" for s in back.steps)  # the host's copy was checked again
    assert _model_files(second_engine, back.release.container_id) == _expected(reg, "support-bot@v1.0")


def test_a_failed_health_check_rolls_back_on_the_host(remote, second_engine):
    reg, env = remote
    reg.promote("support-bot@v1.0", env=env)
    out = cli("promote", "support-bot@v1.3", "--env", env, code=4)
    assert "rolled back" in (out.stdout + out.stderr).lower()
    assert [r.version for r in reg.history(env) if r.status == "deployed"] == ["v1.0"]


def _cache_path(reg, digest: str) -> str:
    return f"/cellar-cache/blobs/sha256/{digest.split(':', 1)[1]}"


def _damage(second_engine, reg, digest: str) -> None:
    """Replace the host's copy of ``digest`` with bytes of the same size."""
    from registry.hosts.cache import VOLUME_PREFIX

    client = second_engine.client()
    try:
        volume = VOLUME_PREFIX + reg.cfg.registry_id[:24]
        c = client.containers.create(second_engine.image, volumes={volume: {"bind": "/cellar-cache", "mode": "rw"}},
                                     labels={"cellar.registry": reg.cfg.registry_id})
        stream, stat = c.get_archive(_cache_path(reg, digest))
        size = stat["size"]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(digest.split(":", 1)[1])
            info.size = size
            tar.addfile(info, io.BytesIO(b"X" * size))
        c.put_archive("/cellar-cache/blobs/sha256", buf.getvalue())
        c.remove(force=True)
    finally:
        client.close()


def test_a_damaged_cached_blob_is_sent_again_never_served(remote, second_engine):
    reg, env = remote
    reg.promote("support-bot@v1.0", env=env)
    weights = _expected(reg, "support-bot@v1.0")["/model/weights/model.safetensors"]
    _damage(second_engine, reg, "sha256:" + weights)
    result = reg.promote("support-bot@v1.1", env=env)
    detail = next(s.detail for s in result.steps if s.name == "send weights")
    assert "1 damaged there and sent again" in detail
    assert _model_files(second_engine, result.release.container_id) == _expected(reg, "support-bot@v1.1")


def test_verify_hosts_finds_a_damaged_cached_blob(remote, second_engine):
    reg, env = remote
    reg.promote("support-bot@v1.0", env=env)
    assert as_json("verify", "--hosts")["ok"]
    weights = _expected(reg, "support-bot@v1.0")["/model/weights/model.safetensors"]
    _damage(second_engine, reg, "sha256:" + weights)
    report = as_json("verify", "--hosts", code=1)
    assert any(weights[:12] in p["digest"] and p["kind"] == "host-cache" for p in report["problems"])


def test_gc_reclaims_host_blobs_no_kept_release_needs(remote, second_engine):
    from datetime import timedelta

    from registry.hosts.cache import HostCache

    reg, _ = remote
    env = "lean"  # keeps no stopped container: only the deployed release and the rollback target
    reg.add_env(env, port=free_port(), docker_host=second_engine.url, health_timeout_s=10, keep=0)
    for version in ("v1.2", "v1.0"):
        reg.promote(f"support-bot@{version}", env=env)
    # v1.0 runs and v1.2 is the rollback target: nothing to reclaim
    assert reg.gc(dry_run=True, grace=timedelta(0)).host_blobs == []
    reg.promote("support-bot@v1.1", env=env)  # now v1.0 is the target; v1.2 is needed by nothing
    only_v12 = set(_expected(reg, "support-bot@v1.2").values()) - set(_expected(reg, "support-bot@v1.0").values()) \
        - set(_expected(reg, "support-bot@v1.1").values())
    planned = reg.gc(dry_run=True, grace=timedelta(0)).host_blobs
    assert {b.digest.split(":", 1)[1] for b in planned} == only_v12
    done = reg.gc(grace=timedelta(0))
    assert {b.digest.split(":", 1)[1] for b in done.host_blobs} == only_v12
    engine = reg.cfg.engine(second_engine.url)
    held = HostCache(engine, registry_id=reg.cfg.registry_id, image=reg.history(env)[0].image_digest).listing()
    assert not {d.split(":", 1)[1] for d in held} & only_v12
    back = reg.rollback(env=env)  # the rollback target's blobs were kept
    assert back.release.version == "v1.0" and _sent(back)[0] == 0


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def _live_and_unchanged(reg, env: str, second_engine, before) -> None:
    """The previous release is still the deployed one, recorded once, its container running."""
    history = reg.history(env)
    assert [(r.revision, r.status) for r in history] == [(r.revision, r.status) for r in before]
    client = second_engine.client()
    try:
        assert client.containers.get(before[0].container_id).status == "running"
    finally:
        client.close()


def test_a_transfer_killed_mid_way_leaves_the_old_release_serving(remote, second_engine):
    reg, env = remote
    reg.promote("support-bot@v1.0", env=env)
    before = reg.history(env)
    done = _run_cli("promote", "support-bot@v1.2", "--env", env, env={"CELLAR_CRASH_AT": "transfer:sending"})
    assert done.returncode == -9
    _live_and_unchanged(reg, env, second_engine, before)
    # the next promote sends the blob that was cut short again, and sweeps the dead helper away
    result = reg.promote("support-bot@v1.2", env=env)
    assert _sent(result)[0] >= 1
    assert _model_files(second_engine, result.release.container_id) == _expected(reg, "support-bot@v1.2")
    client = second_engine.client()
    try:
        helpers_left = client.containers.list(all=True, filters={"label": [
            f"cellar.registry={reg.cfg.registry_id}", "cellar.role"]})
        assert helpers_left == []
    finally:
        client.close()


@pytest.fixture
def cutting_front(second_engine, tmp_path):
    """A front to the second engine, on its address, that drops the connection once more than
    1 MB went up while the file ``arm`` exists."""
    arm = tmp_path / "arm"
    port = free_port()
    proc = subprocess.Popen(["nsenter", f"--net={NETNS}", sys.executable, str(ROOT / "tests" / "tls_proxy.py"),
                             second_engine.address, str(port), SOCKET, "-", str(arm), str(1 << 20)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield f"tcp://{second_engine.address}:{port}", arm
    proc.kill()
    proc.wait(timeout=10)


def test_a_dropped_connection_mid_transfer_leaves_the_old_release_serving(second_engine, sqlite_home, model_dir,
                                                                          monkeypatch, cutting_front):
    from registry.api import Registry
    from registry.errors import EngineError

    url, arm = cutting_front
    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    big = model_dir.root / "weights" / "big.bin"
    with Registry.open(sqlite_home) as reg:
        try:
            env = _remote_env(reg, second_engine, model_dir, url=url)
            reg.promote("support-bot@v1.0", env=env)
            before = reg.history(env)
            big.write_bytes(os.urandom(8 << 20))
            _push(reg, model_dir, "v2.0", second_engine.image)
            arm.touch()
            with pytest.raises(EngineError, match="broke off after .* bytes"):
                reg.promote("support-bot@v2.0", env=env)
            _live_and_unchanged(reg, env, second_engine, before)
            arm.unlink()
            result = reg.promote("support-bot@v2.0", env=env)
            assert _model_files(second_engine, result.release.container_id) == _expected(reg, "support-bot@v2.0")
        finally:
            second_engine.cleanup(reg.cfg.registry_id)


def test_a_host_that_is_down_fails_before_anything_is_recorded(sqlite_home, model_dir, docker_image, monkeypatch):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    with Registry.open(sqlite_home) as reg:
        _push(reg, model_dir, "v1.0", docker_image)
    out = cli("env", "add", "gpu", "--port", str(free_port()), "--docker-host", "tcp://10.231.0.2:1")
    assert "0.0.0.0" in out.stdout
    failed = cli("promote", "support-bot@v1.0", "--env", "gpu", code=1)
    assert "cannot reach the Docker engine at tcp://10.231.0.2:1" in failed.stderr
    assert as_json("history", "--env", "gpu") == []


def test_tls_host_with_the_docker_cert_path(second_engine_tls, sqlite_home, model_dir, monkeypatch):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    monkeypatch.setenv("DOCKER_CERT_PATH", second_engine_tls.cert_path)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    with Registry.open(sqlite_home) as reg:
        try:
            env = _remote_env(reg, second_engine_tls, model_dir)
            result = reg.promote("support-bot@v1.0", env=env)
            assert _sent(result)[1] == 2
            assert _model_files(second_engine_tls, result.release.container_id) == _expected(reg, "support-bot@v1.0")
        finally:
            second_engine_tls.cleanup(reg.cfg.registry_id)


def test_sharing_is_probed_not_read_from_the_url(sqlite_home, second_engine):
    """The second engine's unix socket is a local URL for a host with another disk; the local
    engine shares it."""
    from registry.engines.docker import DockerEngine
    from registry.hosts import sharing

    folder = sqlite_home / "snapshots"
    local, other = DockerEngine(None), DockerEngine(f"unix://{SOCKET}")
    try:
        assert sharing.shares_disk(local, folder, image=second_engine.image, registry_id="probe-test")
        assert not sharing.shares_disk(other, folder, image=second_engine.image, registry_id="probe-test")
    finally:
        local.close()
        other.close()
    assert not list(Path(folder).glob(".probe-*"))


def test_a_proof_of_sharing_is_remembered_for_that_engine(sqlite_home, second_engine, docker_client):
    """The second run asks the engine its ID instead of creating a probe container (counted in
    the engine's own event stream); another engine gets no credit for it."""
    import time

    from registry.engines.docker import DockerEngine
    from registry.hosts import sharing

    folder, proofs = sqlite_home / "snapshots", sqlite_home / "host-stamps" / "shared-disk.json"
    since = int(time.time())
    local, other = DockerEngine(None), DockerEngine(f"unix://{SOCKET}")
    try:
        for _ in range(2):
            sharing._known.clear()  # a new command: nothing known in this process
            assert sharing.shares_disk(local, folder, image=second_engine.image, registry_id="proof", proofs=proofs)
        sharing._known.clear()
        assert not sharing.shares_disk(other, folder, image=second_engine.image, registry_id="proof", proofs=proofs)
    finally:
        local.close()
        other.close()
    events = docker_client.api.events(since=since, until=int(time.time()) + 1, decode=True,
                                      filters={"label": ["cellar.registry=proof"], "event": ["create"]})
    assert len(list(events)) == 1



def test_a_pruned_cache_is_filled_again_before_a_rollback_serves(remote, second_engine):
    """Someone ran `docker volume prune` on the host: the kept container's files are gone there;
    the rollback sends them again before starting it."""
    from registry.hosts.cache import VOLUME_PREFIX

    reg, env = remote
    reg.promote("support-bot@v1.0", env=env)
    reg.promote("support-bot@v1.2", env=env)
    client = second_engine.client()
    try:
        client.volumes.get(VOLUME_PREFIX + reg.cfg.registry_id[:24]).remove(force=True)
    finally:
        client.close()
    back = reg.rollback(env=env)
    assert back.release.version == "v1.0" and _sent(back) == (2, 2)
    assert _model_files(second_engine, back.release.container_id) == _expected(reg, "support-bot@v1.0")


@pytest.fixture
def image_without_tools(second_engine, docker_client):
    """The test server image without sha256sum and stat, on both engines (committed here, loaded there)."""
    c = docker_client.containers.run(second_engine.image, entrypoint=["sh", "-c", "rm /bin/sha256sum /bin/stat"],
                                     detach=True)
    c.wait(timeout=30)
    image = c.commit(repository="cellar-test-notools", tag=os.urandom(4).hex(), changes=['ENTRYPOINT ["/serve"]'])
    c.remove(force=True)
    there = second_engine.client()
    try:
        there.images.load(b"".join(image.save(named=True)))
        yield image.tags[0]
    finally:
        there.images.remove(image.id, force=True)
        there.close()
        docker_client.images.remove(image.id, force=True)


def test_an_image_without_sha256sum_or_stat_is_checked_by_reading_back(second_engine, sqlite_home, model_dir,
                                                                         monkeypatch, image_without_tools):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    with Registry.open(sqlite_home) as reg:
        try:
            _push(reg, model_dir, "v1.0", image_without_tools)
            reg.add_env("gpu", port=free_port(), docker_host=second_engine.url, health_timeout_s=10)
            assert _sent(reg.promote("support-bot@v1.0", env="gpu")) == (2, 2)
            again = reg.promote("support-bot@v1.0", env="gpu")  # no stamps without stat: hashed (read back)
            assert "2 already there (2 hashed there)" in next(s.detail for s in again.steps if s.name == "send weights")
            weights = _expected(reg, "support-bot@v1.0")["/model/weights/model.safetensors"]
            _damage(second_engine, reg, "sha256:" + weights)
            repaired = reg.promote("support-bot@v1.0", env="gpu")
            assert "1 damaged there and sent again" in next(s.detail for s in repaired.steps
                                                            if s.name == "send weights")
        finally:
            second_engine.cleanup(reg.cfg.registry_id)


def test_a_health_check_that_gets_no_answer_says_where_it_was_sent(second_engine, sqlite_home, model_dir, monkeypatch):
    """Bound to the remote host's own loopback, the container runs but this machine cannot reach
    it: the promote's health check says where the requests went (a probe says the same)."""
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    with Registry.open(sqlite_home) as reg:
        try:
            _push(reg, model_dir, "v1.0", second_engine.image)
            reg.add_env("gpu", port=free_port(), docker_host=second_engine.url, bind_addr="127.0.0.1",
                        health_timeout_s=2)
            out = cli("promote", "support-bot@v1.0", "--env", "gpu", code=4)
            assert "there is that host's own loopback" in out.stderr
            assert "health and probe requests go from this machine to http://10.231.0.2:" in out.stderr
        finally:
            second_engine.cleanup(reg.cfg.registry_id)


def test_recover_recreates_a_removed_container_with_its_files_on_the_host(remote, second_engine):
    reg, env = remote
    first = reg.promote("support-bot@v1.0", env=env)
    client = second_engine.client()
    try:
        client.containers.get(first.release.container_id).remove(force=True)
    finally:
        client.close()
    result = reg.recover(env=env)
    assert [a.action for a in result.actions] == ["recreated"]
    (now,) = [r for r in reg.history(env) if r.status == "deployed"]
    assert _model_files(second_engine, now.container_id) == _expected(reg, "support-bot@v1.0")


class _Watcher:
    """An on_step that also hears the running step's details (what the CLI's spinner shows)."""

    def __init__(self):
        self.details: list[str] = []

    def __call__(self, name, seconds, ok):
        pass

    def started(self, name, detail):
        if name == "send weights" and detail:
            self.details.append(detail)


def test_progress_shows_bytes_and_rate_while_weights_travel(remote):
    reg, env = remote
    watcher = _Watcher()
    reg.promote("support-bot@v1.0", env=env, on_step=watcher)
    assert any(re.fullmatch(r"[\d.]+ of [\d.]+ MB, \d+ MB/s", d) for d in watcher.details), watcher.details
