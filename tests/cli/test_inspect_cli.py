"""The diff, blame and audit commands through typer's CliRunner, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import text

from tests import helpers
from tests.conftest import cli

CANARY = "canary-7f3a91"


@pytest.fixture
def two_versions(home, model_dir):
    cli("push", str(model_dir.root))
    helpers.write_safetensors(model_dir.root / "weights/model.safetensors",
                              helpers.tensors(layer0__bias=np.zeros(8, dtype=np.float32)))
    model_dir.set_prompt("You are a helpful support assistant.\nBe brief.\n")
    cli("push", str(model_dir.root), "--version", "v1.1", "--actor", "bob")
    return model_dir


def test_diff_text_json_stat_and_exit_code(two_versions):
    out = cli("diff", "v1.0", "v1.1").stdout
    assert "~ layer0.bias (bytes)" in out and "+Be brief." in out
    stat = cli("diff", "v1.0", "v1.1", "--stat").stdout
    assert "tensors: 0 added, 0 removed, 1 changed, 3 unchanged" in stat and "+Be brief." not in stat
    data = json.loads(cli("diff", "v1.0", "v1.1", "--json").stdout)
    assert data["weights"][0]["tensors"]["changed"] == ["layer0.bias"]
    assert data["prompts"][0]["changed"] is True and "+Be brief." in data["prompts"][0]["unified"]
    cli("diff", "v1.0", "v1.1", "--exit-code", code=1)
    cli("diff", "v1.1", str(two_versions.root), "--exit-code", code=0)
    assert "no version" in cli("diff", "v1.0", "v7", code=1).stderr


def test_blame_text_and_json(two_versions):
    lines = json.loads(cli("blame", "system", "--json").stdout)
    assert [(x["line"], x["version"], x["actor"]) for x in lines] == [(1, "v1.0", "tester"), (2, "v1.1", "bob")]
    assert set(lines[0]) >= {"line", "text", "version", "actor", "time", "commit", "author"}
    out = cli("blame", "system", "--at", "support-bot@v1.1").stdout
    assert "v1.1 bob" in out and "Be brief." in out


def test_blame_of_a_missing_prompt_names_the_version_and_its_prompts(two_versions):
    result = cli("blame", "sytem", code=1)
    assert result.stderr == "error: prompt 'sytem' is not in support-bot@v1.1: it has system\n"
    assert "support-bot@v1.0: it has system" in cli("blame", "sytem", "--at", "v1.0", code=1).stderr


def test_diff_and_blame_print_user_text_as_typed(home, model_dir):
    markup = "fix [/bold] thing [red]"
    model_dir.set_prompt(f"line {markup}\n")
    cli("push", str(model_dir.root), "-m", markup, "--actor", "eve [/u]")
    model_dir.set_prompt(f"line {markup}\nmore [/i]\n")
    model_dir.write_manifest(runtime={"env": {"NOTE": "[/x]"}})
    cli("push", str(model_dir.root), "--version", "v1.1", "-m", "next [/b]")
    out = cli("diff", "v1.0", "v1.1").stdout
    assert f"message  '{markup}' -> 'next [/b]'" in out and "+more [/i]" in out and "NOTE=[/x]" in out
    blame = cli("blame", "system").stdout
    assert "eve [/u]" in blame and f"  1| line {markup}" in blame and "  2| more [/i]" in blame


def test_audit_query_verify_and_checkpoint(two_versions, tmp_path):
    events = json.loads(cli("audit", "--prompt", "system", "--json").stdout)
    assert [e["object"] for e in events] == ["support-bot@v1.1", "support-bot@v1.0"]
    assert "support-bot@v1.1" in cli("audit", "--actor", "bob").stdout
    assert "7d" in cli("audit", "--since", "someday", code=1).stderr
    checkpoint = cli("audit", "checkpoint").stdout.strip()
    assert checkpoint.endswith(":3") and json.loads(cli("audit", "checkpoint", "--json").stdout)["count"] == 3
    (tmp_path / "cp.txt").write_text(checkpoint)
    assert "intact: 3 events" in cli("audit", "verify", "--checkpoint", str(tmp_path / "cp.txt")).stdout


@pytest.mark.parametrize("since", ["99999999d", "9999999999w", "9" * 5000 + "d"])
def test_audit_since_too_far_back_is_one_line(two_versions, since):
    result = cli("audit", "--since", since, code=1)
    assert result.stderr.count("\n") == 1 and "reaches back before year 1" in result.stderr
    assert "unexpected" not in result.stderr


def test_audit_pages_on_with_before(two_versions):
    newest, older = json.loads(cli("audit", "--json").stdout)[:2]
    first = cli("audit", "--limit", "1").stdout
    assert f"... older events: --before {newest['id']}" in first
    assert [e["id"] for e in json.loads(cli("audit", "--before", str(newest["id"]), "--limit", "1", "--json").stdout)] \
        == [older["id"]]


def test_audit_since_accepts_weeks(two_versions):
    assert "2w" in cli("audit", "--help").stdout
    assert len(json.loads(cli("audit", "--since", "2w", "--json").stdout)) == 3


def _deploy_events(home):
    """A failed promote and its automatic rollback, with the detail deploy records for them."""
    from registry.api import Registry
    from registry.store.sql import events

    with Registry.open(home) as reg, reg.store.write() as conn:
        for action, detail in (("promote", {"status": "failed", "error": "health check timed out\nlast: 503"}),
                               ("rollback", {"status": "deployed", "automatic": True})):
            events.append(conn, actor="ops", action=action, object="support-bot@v1.1", model="support-bot",
                         env="prod", reason="release", detail={"revision": 2, **detail})


def test_audit_table_shows_a_failed_promote_and_an_automatic_rollback(two_versions, home):
    _deploy_events(home)
    lines = cli("audit", "--env", "prod").stdout.splitlines()
    assert lines[1].endswith("automatic; status deployed; reason: release") and "rollback" in lines[1]
    assert lines[2].endswith("status failed; error: health check timed out; reason: release")


def test_audit_refuses_an_unknown_action_and_notes_unknown_names(two_versions):
    result = cli("audit", "--action", "rolback", code=1)
    assert result.stderr == ("error: audit filter action: unknown action 'rolback': use one of init, db-upgrade, "
                             "push, promote, rollback, recover, env-add, env-remove, gc, backup, restore, export, "
                             "import, deprecate, delete, seal, new-identity\n")
    assert "No events for model 'supprt-bot'" in cli("audit", "--model", "supprt-bot").stdout
    assert "No events for environment 'prdo'" in cli("audit", "--env", "prdo").stdout
    assert cli("audit", "--model", "support-bot", "--action", "init").stdout == "No matching events.\n"
    assert cli("audit", "--model", "supprt-bot", "--json").stdout.strip() == "[]"


def test_audit_verify_exits_1_and_names_the_event(two_versions):
    from registry.api import Registry

    with Registry.open() as reg, reg.store.engine.begin() as conn:
        conn.execute(text("UPDATE events SET reason = 'edited' WHERE id = 2"))
    result = cli("audit", "verify", "--json", code=1)
    assert json.loads(result.stdout)["problem"]["event"] == 2
    assert "audit log broken at event 2" in result.stderr


def test_secret_canary_appears_in_no_output(home, git_repo, monkeypatch):
    monkeypatch.setenv("SUPPORT_API_TOKEN", CANARY)
    md = helpers.ModelDir.create(git_repo / "bot")
    helpers.git(git_repo, "remote", "add", "origin", f"https://deploy:{CANARY}@git.example.org/bot.git")
    helpers.git(git_repo, "add", "-A")
    helpers.git(git_repo, "commit", "-qm", "first")
    cli("push", str(md.root))
    md.set_prompt("Changed.\n")
    md.write_manifest(runtime={"env": {"MAX_TOKENS": "1"}, "secrets": ["SUPPORT_API_TOKEN", "OTHER_KEY"]})
    cli("push", str(md.root), "--version", "v1.1")
    outputs = []
    for args in (["diff", "v1.0", "v1.1"], ["diff", "v1.0", str(md.root)], ["blame", "system"],
                 ["audit"], ["log"], ["show", "v1.1"]):
        outputs += [cli(*args).stdout, cli(*args, "--json").stdout]
    assert all(CANARY not in out for out in outputs)
    assert "OTHER_KEY" in outputs[0]


def test_every_new_command_has_an_example():
    for args in (["diff"], ["blame"], ["audit"], ["audit", "verify"], ["audit", "checkpoint"]):
        assert "Example:" in cli(*args, "--help").stdout


def test_show_log_and_blame_display_git_provenance(home, git_repo):
    md = helpers.ModelDir.create(git_repo / "bot")
    helpers.git(git_repo, "add", "-A")
    helpers.git(git_repo, "commit", "-qm", "first", author="Grace Hopper <grace@example.org>")
    commit = helpers.git(git_repo, "rev-parse", "HEAD")
    cli("push", str(md.root))
    assert f"Git:    {commit} on main" in cli("log").stdout
    assert f"git     {commit} on main" in cli("show", "v1.0").stdout
    assert f"{commit[:8]} Grace Hopper <grace@example.org>" in cli("blame", "system").stdout
    assert json.loads(cli("log", "--json").stdout)[0]["provenance"]["commit"] == commit


def test_audit_verify_names_an_altered_prompt_index_in_one_line(two_versions, home):
    from sqlalchemy import text

    from registry.api import Registry

    with Registry.open(home) as reg, reg.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM event_prompts"))
    result = cli("audit", "verify", code=1)
    assert result.stderr.count("\n") == 1 and "error: audit record altered: event:" in result.stderr
    assert "the prompt index lacks event" in result.stderr and "(and 1 more: see --json)" in result.stderr
