"""One flag per meaning: --env names an environment everywhere, flags are shown and parsed as
flags, tables stay narrow, and shell completion works without costing start-up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cli.main import app
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[2]


def _commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


COMMANDS = list(_commands())


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_shows_flags_bare(path, command):
    shown = cli(*path, "--help", env={"COLUMNS": "200"}).stdout
    assert "<bool>" not in shown
    for param in command.params:
        if getattr(param, "is_flag", False) and not param.hidden:
            line = next(x for x in shown.splitlines() if x.startswith("│") and f" {param.opts[0]} " in x)
            assert "<" not in line.split(param.opts[0], 1)[1].split()[0], line  # no value placeholder


def test_a_value_after_a_flag_is_a_usage_error(sqlite_home):
    out = cli("list", "--json", "true", code=2)
    assert "--json" in out.stderr and "takes no value" in out.stderr and "registry list" in out.stderr
    assert "takes no value" in cli("env", "list", "--json", "false", code=2).stderr
    assert "takes no value" in cli("audit", "--json", "TRUE", code=2).stderr
    assert json.loads(cli("list", "--json").stdout) == []
    assert "no model named 'true'" in cli("list", "true", "--json", code=1).stderr  # before the flag: a name


def test_every_environment_option_is_spelled_env():
    """--to names a version (rollback); an environment is always --env (promote --to: hidden alias)."""
    names_one = re.compile(r"^(only (events about )?this |target )?environment\b", re.IGNORECASE)
    found = []
    for path, command in COMMANDS:
        for param in command.params:
            if param.param_type_name == "option" and names_one.match(param.help or ""):
                found.append(" ".join(path))
                assert param.opts == ["--env"] or param.hidden, (path, param.opts)
    assert {"promote", "rollback", "history", "status", "recover", "audit"} <= set(found)


def test_promote_takes_env_and_the_old_to(sqlite_home):
    cli("env", "add", "staging", "--port", "18191")
    # No version yet: the error proves --env (and --to) parsed and reached the library.
    for flag in ("--env", "--to"):
        assert "no model" in cli("promote", "v1", flag, "staging", code=1).stderr.lower()
    clash = cli("promote", "v1", "--env", "staging", "--to", "prod", code=2, env={"COLUMNS": "200"})
    assert "different environments" in clash.stderr
    assert "--to" not in cli("promote", "--help").stdout  # the alias is not advertised


def test_status_env_filters_and_refuses_a_typo(sqlite_home):
    cli("env", "add", "staging", "--port", "18192")
    cli("env", "add", "production", "--port", "18193")
    assert [s["env"] for s in json.loads(cli("status", "--env", "staging", "--json").stdout)] == ["staging"]
    assert "no environment named 'stagign'" in cli("status", "--env", "stagign", code=1).stderr


def test_table_cells_are_cut_and_the_last_column_is_not_padded(sqlite_home, model_dir):
    long = "x" * 500
    cli("push", str(model_dir.manifest), "-m", long)
    cli("push", str(model_dir.manifest), "--version", "v2", "-m", "short")
    lines = cli("list").stdout.splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert max(len(line) for line in lines) < 200 and "x" * 79 + "…" in lines[-1]


def test_completion_scripts_for_each_shell():
    for shell, marker in (("bash", "complete -o default -F"), ("zsh", "#compdef registry"),
                          ("fish", "complete --command registry")):
        script = cli("completion", shell).stdout
        assert marker in script and "_REGISTRY_COMPLETE=complete_" in script
    assert cli("completion", "tcsh", code=2)


def _complete(env: dict) -> str:
    """Run the CLI the way the completion scripts call it back."""
    done = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'registry'\n"
                           "from cli.main import main\nmain()"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    return done.stdout


def test_completion_answers_the_shells():
    assert sorted(_complete({"_REGISTRY_COMPLETE": "complete_bash", "COMP_WORDS": "registry pro",
                             "COMP_CWORD": "1"}).split()) == ["probe", "promote"]
    options = _complete({"_REGISTRY_COMPLETE": "complete_bash", "COMP_WORDS": "registry promote --",
                         "COMP_CWORD": "2"}).split()
    assert "--env" in options and "--json" in options and "--to" not in options
    assert "--env" in _complete({"_REGISTRY_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "registry rollback --e"})
    assert _complete({"_REGISTRY_COMPLETE": "complete_fish", "_TYPER_FISH_ACTION": "get-args",
                      "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                      "_TYPER_COMPLETE_ARGS": "registry completion "}).split() == ["bash", "zsh", "fish"]


def test_bash_completes_through_the_printed_script(tmp_path):
    """The real bash sources the script and completes `registry hist` through a `registry` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "registry"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -c "
                   "'import sys; sys.argv[0] = \"registry\"\nfrom cli.main import main\nmain()' \"$@\"\n")
    exe.chmod(0o755)
    script = tmp_path / "registry.bash"
    script.write_text(cli("completion", "bash").stdout)
    shell = (f'source {script}; COMP_WORDS=(registry hist); COMP_CWORD=1; '
             '_registry_completion registry; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "--norc", "-c", shell], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.stdout.split() == ["history"], done.stderr


def test_completion_costs_nothing_at_start_up():
    """typer's completers register (and its two completion options are built) only when a shell
    asks for completions, never for an ordinary command."""
    code = ("import sys; sys.argv = ['registry', '--help']\nfrom cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "from typer._click.shell_completion import _available_shells\n"
            "print(sorted(_available_shells), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stderr.strip().splitlines()[-1] == "[]"
    assert "--install-completion" not in cli("--help").stdout


def test_the_table_renderer_bounds_every_column(capsys):
    from cli.output import table

    table(["ENV", "REASON / ERROR"], [["staging", "r" * 300], ["production", "short"], ["qa", "line\nbreak"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "staging     " + "r" * 79 + "…"
    assert lines[2] == "production  short"  # the last column is never padded
    assert lines[3] == "qa          line⏎break"


@pytest.mark.parametrize(("argv", "keeps"), [
    (["watch", "--every", "60"], True), (["--traceback", "ui"], True),
    (["metrics", "--listen", "127.0.0.1:9105"], True), (["metrics", "--listen=127.0.0.1:9105"], True),
    (["metrics"], False), (["list"], False), (["promote", "v1"], False), ([], False),
])
def test_only_commands_that_serve_for_days_keep_the_cyclic_collector(argv, keeps):
    """A short command turns the collector off for its start-up; watch, ui and metrics --listen
    run for days and keep it, or their memory grows without bound (issue 21, item 6)."""
    from cli.main import runs_for_days

    assert runs_for_days(argv) is keeps


def test_a_served_command_runs_with_the_collector_on(tmp_path):
    code = ("import gc, sys; import cli.main as m; seen = []\n"
            "m.app = lambda: seen.append(gc.isenabled())\n"
            "sys.argv = ['registry', 'ui']; m.main()\n"
            "sys.argv = ['registry', 'list']; m.main()\n"
            "print(seen)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[True, False]", done.stderr
