"""Every command documents itself with an example; the README (when present) mentions each one."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, path)
        else:
            yield path, command


COMMANDS = list(_commands())


def test_there_are_commands():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"init", "push", "list", "show", "log", "db upgrade"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_with_an_example(path, command):
    assert command.help and command.help.strip(), f"registry {' '.join(path)} has no help text"
    example = [line for line in command.help.splitlines() if line.strip().startswith("Example:")]
    assert example, f"registry {' '.join(path)}: add an `Example:` line to its help"
    assert f"registry {' '.join(path)}" in example[0]
    shown = CliRunner().invoke(app, [*path, "--help"])
    assert shown.exit_code == 0 and "Example:" in shown.stdout


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help(path, command):
    for param in command.params:
        if param.param_type_name == "option":
            assert getattr(param, "help", None), f"registry {' '.join(path)} {param.opts[0]} needs help text"


@pytest.mark.skipif(not README.exists(), reason="README.md is not written yet")
@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_readme_mentions_every_command(path):
    command = f"registry {' '.join(path)}"
    assert command in README.read_text(), f"README.md does not show `{command}`"
