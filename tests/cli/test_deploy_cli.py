"""The deploy commands end to end through typer (the real Docker engine for promote/rollback)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import cli

COMMANDS = [["env", "add"], ["env", "list"], ["env", "show"], ["env", "remove"], ["promote"], ["rollback"],
            ["history"], ["status"], ["recover"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    assert "Example:" in cli(*command, "--help").stdout


def test_env_commands(sqlite_home):
    cli("env", "add", "staging", "--port", "18181", "--default", "--keep", "2")
    cli("env", "add", "production", "--port", "18182", "--protected", "--health-timeout", "5")
    listed = json.loads(cli("env", "list", "--json").stdout)
    assert [(e["name"], e["port"], e["is_default"], e["protected"]) for e in listed] == [
        ("production", 18182, False, True), ("staging", 18181, True, False)]
    assert "keep" in cli("env", "show", "staging").stdout
    assert json.loads(cli("env", "show", "production", "--json").stdout)["health_timeout_s"] == 5
    assert "protected" in cli("env", "remove", "production", code=1).stderr
    cli("env", "remove", "production", "--reason", "decommissioned")
    assert "no environment named 'production'" in cli("env", "show", "production", code=1).stderr
    assert "already exists" in cli("env", "add", "staging", "--port", "18183", code=1).stderr
    assert "not allowed" in cli("env", "add", "Bad/Name", "--port", "18184", code=1).stderr
    assert "use one of them" in cli("env", "add", "fleet", "--port", "18185", "--docker-host", "tcp://a:2375",
                                    "--host", "tcp://b:2375", code=1).stderr
    assert "named twice" in cli("env", "add", "fleet", "--port", "18185", "--host", "tcp://a:2375",
                                "--host", "TCP://A:2375/", code=1).stderr
    assert "--batch" in cli("promote", "v1", "--batch", "0", code=2).stderr  # at least one host a batch
    status = json.loads(cli("status", "--json").stdout)
    assert status[0]["env"] == "staging" and status[0]["deployed"] is None
    assert json.loads(cli("history", "--json").stdout) == []


@pytest.mark.docker  # recover asks the engine, even with nothing deployed
def test_recover_with_nothing_deployed(sqlite_home):
    cli("env", "add", "staging", "--port", "18181", "--default", "--keep", "2")
    assert "Nothing to recover" in cli("recover").stdout


@pytest.mark.docker
def test_promote_rollback_history_status(docker_env):
    reg, env = docker_env
    promoted = cli("promote", "v1.0", "--reason", "first [/bold] try", "--actor", "ops [red]team")
    assert f"Deployed support-bot@v1.0 to {env} (revision 1" in promoted.stdout
    assert "health check" in promoted.stderr and " ms" in promoted.stderr  # steps with elapsed time
    as_json = json.loads(cli("promote", "v1.1", "--json").stdout)
    assert as_json["release"]["status"] == "deployed" and as_json["previous"]["version"] == "v1.0"
    failed = cli("promote", "v1.2", "--json", code=4)
    assert "rolled back automatically to support-bot@v1.1" in failed.stderr
    report = json.loads(failed.stdout)  # --json still reports what was recorded when the gate fails
    assert (report["failed"]["revision"], report["failed"]["status"]) == (3, "failed") and report["error"]
    assert (report["rollback"]["revision"], report["rollback"]["version"]) == (4, "v1.1")
    assert "Rolled back" in cli("rollback", "--reason", "back to v1.0").stdout
    rows = json.loads(cli("history", "--env", env, "--json").stdout)
    columns = {"revision", "version", "status", "actor", "reason", "started_at", "finished_at", "rollback_of"}
    assert columns <= set(rows[0])
    assert [(r["revision"], r["version"], r["status"]) for r in rows] == [
        (1, "v1.0", "superseded"), (2, "v1.1", "superseded"), (3, "v1.2", "failed"),
        (4, "v1.1", "superseded"), (5, "v1.0", "deployed")]
    history = cli("history").stdout
    assert "automatic rollback" in history
    assert "first [/bold] try" in history and "ops [red]team" in history  # user text printed as typed
    (state,) = json.loads(cli("status", "--json").stdout)
    assert state["deployed"]["version"] == "v1.0" and state["container_state"] == "running" and state["healthy"]
    shown = cli("status").stdout
    assert "support-bot@v1.0 (revision 5)" in shown and shown.split()[:3] == ["ENV", "PORT", "DEPLOYED"]
    assert "--to or --revision" in cli("rollback", "--to", "v1.1", "--revision", "1", code=2).stderr


def test_env_add_refuses_a_docker_host_with_credentials(sqlite_home):
    out = cli("env", "add", "remote", "--port", "18185", "--docker-host", "tcp://admin:hunter2@10.0.0.9:2376", code=1)
    assert "TLS certificates" in out.stderr and "hunter2" not in out.stdout + out.stderr
    assert "hunter2" not in cli("env", "list", "--json").stdout


@pytest.mark.docker
def test_status_exit_code_for_monitoring_and_recover_of_a_removed_container(docker_env, tmp_path):
    import docker

    reg, env = docker_env
    cli("promote", "v1.0")
    client = docker.from_env()
    for c in client.containers.list(all=True, filters={"label": f"cellar.env={env}"}):
        c.remove(force=True)  # docker rm -f of the deployed container
    client.close()
    missing = cli("status", code=1)
    assert missing.stderr.strip() == f"1 of 1 environment needs attention: {env} (container missing)"
    assert json.loads(cli("status", "--json", code=1).stdout)[0]["container_state"] == "missing"
    assert f"{env}: recreated:" in cli("recover", "--env", env).stdout
    cli("status")
    dead = f"unix://{tmp_path}/no-dockerd.sock"
    out = CliRunner().invoke(app, ["status"], env={"DOCKER_HOST": dead})
    assert out.exit_code == 1 and "no such socket" in out.stdout and "Connection aborted" not in out.stdout
    assert f"{env} (Docker engine unreachable)" in out.stderr
