"""An ssh:// Docker host (issue 22): the second engine behind a real sshd in its own network
namespace, reached through the system ssh client with a key made in the test and its host key
strictly checked. Weights travel through the Engine API over that connection, exactly as over
tcp://; an unknown host key is refused; no ssh process outlives the command."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import as_json, cli, free_port
from tests.integration.test_remote_hosts import TOKEN, _expected, _model_files, _push


def _ssh_processes(config: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", config], capture_output=True, text=True, timeout=10).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_promote_and_rollback_over_ssh(second_engine, second_engine_ssh, sqlite_home, model_dir, monkeypatch):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    monkeypatch.setenv("PATH", f"{second_engine_ssh.bin_dir}:{os.environ['PATH']}")
    reg = Registry.open(sqlite_home)
    try:
        _push(reg, model_dir, "v1.0", second_engine.image)
        _push(reg, model_dir, "v1.2", second_engine.image, seed=7)
        added = cli("env", "add", "gpu", "--port", str(free_port()), "--docker-host", second_engine_ssh.url)
        assert "0.0.0.0" in added.stdout  # a remote host publishes on its own address
        first = as_json("promote", "support-bot@v1.0", "--env", "gpu")
        sent = next(s["detail"] for s in first["steps"] if s["name"] == "send weights")
        assert "sent 2 blobs" in sent and second_engine_ssh.url.split("@")[1] in sent
        assert _model_files(second_engine, first["release"]["container_id"]) == _expected(reg, "support-bot@v1.0")
        as_json("promote", "support-bot@v1.2", "--env", "gpu")
        back = as_json("rollback", "--env", "gpu")
        assert back["release"]["version"] == "v1.0"
        assert back["release"]["container_id"] == first["release"]["container_id"]  # the kept container
        status = next(s for s in as_json("status") if s["env"] == "gpu")
        assert status["healthy"] is True
    finally:
        second_engine.cleanup(reg.cfg.registry_id)
        reg.close()
    # every connection's ssh process ended with the command (they carry this shell's environment)
    assert _ssh_processes(second_engine_ssh.config) == []


def test_an_unknown_host_key_is_refused_before_anything_is_recorded(second_engine, second_engine_ssh, sqlite_home,
                                                                   model_dir, monkeypatch, tmp_path):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", TOKEN)
    # the same ssh client and key, but a known_hosts that does not know this host
    config = tmp_path / "ssh_config"
    text = open(second_engine_ssh.config).read()
    config.write_text("\n".join(line if "UserKnownHostsFile" not in line else f"  UserKnownHostsFile {tmp_path}/none"
                                for line in text.splitlines()) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = open(os.path.join(second_engine_ssh.bin_dir, "ssh")).read().replace(second_engine_ssh.config,
                                                                                   str(config))
    (bin_dir / "ssh").write_text(wrapper)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with Registry.open(sqlite_home) as reg:
        _push(reg, model_dir, "v1.0", second_engine.image)
    cli("env", "add", "gpu", "--port", str(free_port()), "--docker-host", second_engine_ssh.url)
    failed = cli("promote", "support-bot@v1.0", "--env", "gpu", code=1)
    assert f"cannot reach the Docker engine at {second_engine_ssh.url} (Host key verification failed." in failed.stderr
    assert as_json("history", "--env", "gpu") == []
