"""``registry completion SHELL``: print the shell's completion script.

The script calls ``registry`` back with ``_REGISTRY_COMPLETE`` set whenever Tab is pressed;
only then does the CLI load typer's completers (``CellarGroup._main_shell_completion``), so an
ordinary command pays nothing for completion at start-up.
"""

from __future__ import annotations

from enum import StrEnum

import typer

from cli.app import COMPLETE_VAR, PROG, app


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command()
def completion(shell: Shell = typer.Argument(..., help="bash, zsh or fish.")) -> None:
    """Print the shell completion script for bash, zsh or fish (commands, options, their values).

    Load it in the shell's start-up file, e.g. in ~/.bashrc: eval "$(registry completion bash)";
    for zsh, in ~/.zshrc after compinit: eval "$(registry completion zsh)"; for fish:
    registry completion fish > ~/.config/fish/completions/registry.fish

    Example:  registry completion bash >> ~/.bashrc
    """
    print(script(shell.value))


def script(shell: str) -> str:
    """The completion script for ``shell`` (bash, zsh or fish), as typer writes it."""
    from typer.completion import completion_init, get_completion_script

    completion_init()
    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell).strip()
