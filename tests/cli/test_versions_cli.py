"""The CLI for init, push, list, show, log, db upgrade: options, --json keys, errors, exit codes."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests import helpers
from tests.conftest import as_json, cli

REGISTRY = str(Path(sys.executable).with_name("registry"))
SUMMARY_KEYS = {"model", "version", "manifest_digest", "created_at", "actor", "message", "deprecated_at"}


# --- init -------------------------------------------------------------------------------


def test_init_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "Created" in cli("init").stdout
    assert "already up to date" in cli("init").stdout
    data = as_json("init")
    assert data == {"home": str(tmp_path / ".cellar"), "db_url": f"sqlite:///{tmp_path / '.cellar/registry.db'}",
                    "created": False}
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)  # commands find the nearest .cellar/ walking up
    assert cli("list").stdout.startswith("No versions yet")


def test_init_at_registry_home(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path / "elsewhere"))
    assert as_json("init")["home"] == str(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "blobs").is_dir()


def test_init_hides_the_database_password(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_DB_URL", "postgresql+psycopg://u:hunter2@127.0.0.1:1/none")
    result = cli("init", str(tmp_path / "h"), code=1)
    assert "hunter2" not in result.stdout + result.stderr
    assert result.stderr.startswith("error: cannot connect to the database")


def test_init_names_a_folder_it_cannot_create(monkeypatch):
    monkeypatch.setenv("REGISTRY_HOME", "/proc/cellar")  # /proc refuses new folders, even for root
    err = cli("init", code=1).stderr
    assert err.startswith("error: cannot create the registry folder /proc/cellar (") and "REGISTRY_HOME" in err


@pytest.mark.parametrize("url", ["postgres://u:hunter2@127.0.0.1/db", "sqlite//x", "nonsense"])
def test_a_malformed_database_url_says_what_to_write(tmp_path, monkeypatch, url):
    monkeypatch.setenv("REGISTRY_DB_URL", url)
    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path / "h"))
    errors = [cli("init", code=1).stderr]
    assert not (tmp_path / "h").exists()  # init refused the URL before creating anything
    (tmp_path / "h").mkdir()  # what `list` needs to reach the database URL
    errors.append(cli("list", code=1).stderr)
    for err in errors:
        assert err.startswith("error: REGISTRY_DB_URL ") and "is not a database URL" in err, err
        assert "postgresql+psycopg://user@host/db" in err and "hunter2" not in err


# --- push -------------------------------------------------------------------------------


def test_push_manifest_then_again(home, model_dir):
    out = cli("push", str(model_dir.manifest)).stdout
    assert out.startswith("Pushed support-bot@v1.0 (") and "2 files" in out
    assert "identical content" in cli("push", str(model_dir.root)).stdout


def test_push_json_and_overrides(home, model_dir):
    data = as_json("push", str(model_dir.manifest), "--version", "v2.0", "-m", "override message")
    assert data["version"] == "v2.0" and data["created"] is True and data["files"] == 2
    assert data["manifest_digest"].startswith("sha256:")
    assert as_json("show", "v2.0")["message"] == "override message"


def test_push_defaults_to_cellar_yaml_here(home, model_dir, monkeypatch):
    monkeypatch.chdir(model_dir.root)
    assert as_json("push")["model"] == "support-bot"


@pytest.mark.parametrize("flags", [["--weights", "w.bin"], ["--prompt", "system=p.txt"], ["--image", "other:1"]])
def test_push_refuses_content_flags_it_would_not_use(home, model_dir, monkeypatch, flags):
    """Beside a cellar.yaml, --weights/--prompt/--image without --model are refused (exit 2),
    never dropped while the YAML's files are pushed (issue 21, item 2)."""
    monkeypatch.chdir(model_dir.root)
    (model_dir.root / "w.bin").write_bytes(b"other weights")
    result = cli("push", *flags, "--version", "v2", "-m", "flags", code=2)
    assert "--model" in result.stderr and "nothing was pushed" in result.stderr
    assert as_json("list") == []


def test_api_push_refuses_overrides_on_a_loaded_manifest(home, model_dir):
    import registry
    from registry.api import Registry

    with Registry.open(home) as reg:
        with pytest.raises(registry.InvalidInput, match="nothing was pushed"):
            reg.push(registry.load_manifest(model_dir.manifest), version="v9")
        assert reg.versions() == []


def test_push_conflict_is_exit_1(home, model_dir):
    cli("push", str(model_dir.manifest))
    model_dir.set_prompt("changed\n")
    result = cli("push", str(model_dir.manifest), code=1)
    assert "versions are immutable" in result.stderr and result.stderr.count("\n") == 1


def test_push_with_flags_and_an_unknown_image(home, model_dir, monkeypatch):
    monkeypatch.chdir(model_dir.root)
    result = cli("push", "--model", "flagged", "--version", "v1", "--weights", "weights",
                 "--prompt", "system=prompts/system", "--image", "cellar-test/none:404", "-m", "via flags")
    assert "Pushed flagged@v1" in result.stdout
    assert "warning: image cellar-test/none:404 recorded unresolved" in result.stderr
    info = as_json("show", "flagged@v1")
    assert info["image"] == {"ref": "cellar-test/none:404", "digest": None}
    assert [w["path"] for w in info["weights"]] == ["weights/model.safetensors"]
    assert info["message"] == "via flags"


def test_push_warnings_reach_stderr_and_json(home, git_repo):
    md = helpers.ModelDir.create(git_repo / "bot")
    helpers.git(git_repo, "add", ".")
    helpers.git(git_repo, "commit", "-qm", "first")
    md.set_prompt("edited, not committed\n")
    dirty = "pushed from a git work tree with uncommitted changes (prompts/system)"
    assert f"warning: {dirty}" in cli("push", str(md.manifest)).stderr
    again = json.loads(cli("push", str(md.manifest), "-m", "other words", "--json").stdout)
    assert again["warnings"] == ["support-bot@v1.0 keeps its recorded message 'test version', "
                                 "not 'other words': versions are immutable"]
    assert as_json("push", str(md.manifest), "--version", "v2")["warnings"] == [dirty]


def test_push_naming_nothing_is_refused_in_one_line(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("push", "--model", "y", "--version", "v1", code=1)
    assert result.stderr.count("\n") == 1
    assert "names no weights, prompts or image" in result.stderr and "unexpected" not in result.stderr


def test_push_of_an_image_only_version(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # weights baked into the image: a legitimate version
    result = cli("push", "--model", "baked", "--version", "v1", "--image", "cellar-test/none:404")
    assert "Pushed baked@v1" in result.stdout and "recorded unresolved" in result.stderr
    info = as_json("show", "baked@v1")
    assert info["weights"] == [] and info["prompts"] == [] and info["image"]["ref"] == "cellar-test/none:404"


@pytest.mark.parametrize("image", ["Bad Image!!", "Upper/case:1", "name:", "x@sha256:short"])
def test_a_malformed_image_reference_is_refused(home, model_dir, monkeypatch, image):
    monkeypatch.chdir(model_dir.root)
    result = cli("push", "--model", "x", "--version", "v1", "--weights", "weights", "--image", image, code=1)
    assert result.stderr.startswith("error: command line: image: ") and "not an image reference" in result.stderr
    assert as_json("list") == []


def test_push_with_manifest_and_model_is_a_usage_error(home, model_dir):
    result = cli("push", str(model_dir.manifest), "--model", "x", "--version", "v1", code=2)
    assert "not both" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--model", "../x", "--version", "v1"], "command line: model: name '../x' is not allowed"),
    (["--model", "x", "--version", "V1/.."], "command line: version: version 'V1/..' is not allowed"),
    (["--model", "x"], "--version is required"),
    (["--model", "x", "--version", "v1", "--prompt", "nameless"], "must be NAME=PATH"),
])
def test_push_flag_errors(home, model_dir, monkeypatch, args, message):
    monkeypatch.chdir(model_dir.root)
    result = cli("push", *args, code=1)
    assert message in result.stderr and result.stderr.startswith("error: ")


def test_unknown_option_is_exit_2(home):
    assert CliRunner().invoke(app, ["list", "--no-such-flag"]).exit_code == 2


@pytest.mark.parametrize("args", [["--traceback", "show", "nope@v1"], ["show", "nope@v1", "--traceback"],
                                  ["show", "--traceback", "nope@v1"], ["show", "nope@v1", "--json", "--traceback"]])
def test_traceback_flag_shows_the_trace_wherever_it_is(home, args):
    plain = CliRunner().invoke(app, ["show", "nope@v1"])
    traced = CliRunner().invoke(app, args)
    assert plain.exit_code == traced.exit_code == 1
    assert "Traceback" not in plain.stderr and "Traceback" in traced.stderr
    assert plain.stderr == "error: no model named 'nope': see `registry list`\n"


# --- list, show, log --------------------------------------------------------------------


@pytest.fixture
def pushed(home, model_dir, frozen_clock):
    for i, version in enumerate(["v1.0", "v1.1", "v1.2"]):
        model_dir.set_prompt(f"prompt {i}\n")
        cli("push", str(model_dir.manifest), "--version", version, "-m", f"change {i}")
        frozen_clock.tick(60)
    return model_dir


def test_list_json(pushed):
    rows = as_json("list")
    assert [r["version"] for r in rows] == ["v1.2", "v1.1", "v1.0"]
    assert all(set(r) == SUMMARY_KEYS for r in rows)
    assert rows[0]["actor"] == "tester" and rows[0]["message"] == "change 2"
    assert [r["version"] for r in as_json("list", "support-bot", "--limit", "1")] == ["v1.2"]


def test_list_table_and_limit(pushed):
    out = cli("list", "--limit", "2").stdout
    assert "MODEL" in out and "v1.2" in out and "v1.0" not in out
    assert "1 more" in out


def test_list_unknown_or_bad_model(pushed):
    assert "no model named 'other'" in cli("list", "other", code=1).stderr
    bad = cli("list", "../Other", code=1)
    assert bad.stderr.startswith("error: model '../Other' is not allowed")


def test_show_json(pushed):
    info = as_json("show", "support-bot@v1.1")
    assert SUMMARY_KEYS | {"image", "weights", "prompts", "provenance"} <= set(info)
    assert set(info["image"]) == {"ref", "digest"}
    (weight,) = info["weights"]
    assert {"path", "digest", "size", "tensors"} <= set(weight)
    assert set(weight["tensors"][0]) == {"name", "dtype", "shape", "digest"}
    assert {"name", "digest"} <= set(info["prompts"][0])
    assert info["message"] == "change 1"


def test_show_text(pushed):
    out = cli("show", "v1.0").stdout
    assert out.startswith("support-bot@v1.0  sha256:")
    assert "weight  weights/model.safetensors" in out and "4 tensors" in out
    assert "prompt  system" in out and "secrets SUPPORT_API_TOKEN" in out


def test_log_newest_first(pushed):
    rows = as_json("log", "support-bot")
    assert [r["message"] for r in rows] == ["change 2", "change 1", "change 0"]
    assert all(SUMMARY_KEYS <= set(r) for r in rows)
    out = cli("log").stdout
    assert out.index("v1.2") < out.index("v1.0") and "    change 1" in out


MARKUP = "fix [/bold] thing [red]"


def test_show_and_log_print_user_text_as_typed(home, model_dir):
    helpers.write_safetensors(model_dir.root / "weights" / "odd[/b].safetensors",
                              {"t[/i]": np.zeros(2, dtype=np.float32)})
    model_dir.write_manifest(runtime={"env": {"NOTE": "[/x]"}})
    cli("push", str(model_dir.root), "-m", MARKUP, "--actor", "eve [/u]")
    out = cli("show", "v1.0").stdout
    assert f"message {MARKUP}" in out and "by eve [/u]" in out and "NOTE=[/x]" in out
    assert "weight  weights/odd[/b].safetensors" in out and "t[/i]  F32[2]" in out
    log = cli("log").stdout
    assert f"    {MARKUP}" in log and "by eve [/u]" in log


def test_ref_without_model(pushed, tmp_path, monkeypatch):
    assert as_json("show", "v1.0")["model"] == "support-bot"
    other = helpers.ModelDir.create(tmp_path / "other", model="classifier")
    cli("push", str(other.manifest))
    assert "which model? write MODEL@v1.0" in cli("show", "v1.0", code=1).stderr
    monkeypatch.chdir(other.root)  # its cellar.yaml names the model
    assert as_json("show", "v1.0")["model"] == "classifier"


@pytest.mark.parametrize("ref", ["../x@v1", "x@../v1", "x@", "Bad@v1", "x@v1\\y"])
def test_bad_refs_are_exit_1(pushed, ref):
    result = cli("show", ref, code=1)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


# --- actor ------------------------------------------------------------------------------


def _actor(model_dir, version: str, *extra: str) -> str:
    cli("push", str(model_dir.manifest), "--version", version, *extra)
    return as_json("show", version)["actor"]


def test_actor_precedence(home, model_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # outside any repository: its local config would count too
    gitconfig = Path(os.environ["GIT_CONFIG_GLOBAL"])
    subprocess.run(["git", "config", "--file", str(gitconfig), "user.name", "Ada Lovelace"], check=True)
    subprocess.run(["git", "config", "--file", str(gitconfig), "user.email", "ada@example.org"], check=True)
    assert _actor(model_dir, "a1", "--actor", "release-bot") == "release-bot"
    assert _actor(model_dir, "a2") == "tester"  # $REGISTRY_ACTOR
    monkeypatch.delenv("REGISTRY_ACTOR")
    assert _actor(model_dir, "a3") == "Ada Lovelace <ada@example.org>"
    gitconfig.unlink()
    assert _actor(model_dir, "a4") == getpass.getuser()


# --- db upgrade, help -------------------------------------------------------------------


def test_db_upgrade_when_current(home):
    assert "schema already at" in cli("db", "upgrade").stdout


def test_missing_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("list", code=1)
    assert "run `registry init`" in result.stderr


# --- the real console script ------------------------------------------------------------


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([REGISTRY, *args], cwd=cwd, capture_output=True, text=True, env=dict(os.environ))


def test_console_script_end_to_end(tmp_path, model_dir):
    work = tmp_path / "work"
    work.mkdir()
    assert run("init", cwd=work).returncode == 0
    pushed = run("push", str(model_dir.manifest), "--json", cwd=work)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["created"] is True
    listed = json.loads(run("list", "--json", cwd=work).stdout)
    assert [(r["model"], r["version"]) for r in listed] == [("support-bot", "v1.0")]
    shown = run("show", "v1.0", cwd=work)
    assert shown.returncode == 0 and "support-bot@v1.0" in shown.stdout
    traced = run("show", "v9", "--traceback", cwd=work)  # through cli.main.main(), flag last
    assert traced.returncode == 1 and "Traceback" in traced.stderr
    missing = run("show", "v9", cwd=work)
    assert missing.returncode == 1
    assert missing.stderr == "error: no version v9 in any model: see `registry list`\n"
    usage = run("show", cwd=work)
    assert usage.returncode == 2
