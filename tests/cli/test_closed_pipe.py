"""A reader that goes away (``registry history --json | head -c 1``) is a normal end of a
command, as for ``git log | head``: exit 0 or 141, never "internal error" (70) nor Python's
"Exception ignored" at exit (120). Real processes and real pipes: the reading end is closed
before the command writes, so every write meets the closed pipe, whatever the timing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from cli.main import app
from registry import Registry
from tests import helpers
from tests.conftest import init_home

REGISTRY = str(Path(sys.executable).with_name("registry"))
READS = [  # every command whose --json output is a listing or report, with the arguments it needs
    ["status"], ["history"], ["audit"], ["list"], ["log"], ["show", "v1.1"], ["diff", "v1.0", "v1.1"],
    ["env", "list"], ["env", "show", "staging"], ["health"], ["probe"], ["metrics"], ["verify"], ["gc"],
    ["audit", "verify"], ["recover"], ["blame", "system"], ["hook", "list"], ["hook", "deliver"], ["key", "list"],
    ["remote", "list"], ["env", "set", "staging"], ["audit", "approvals"],
]


@pytest.fixture(scope="module")
def _seeded_once(tmp_path_factory) -> Path:
    """A SQLite home holding v1.0 and v1.1 (400-line prompts) and env staging, made once per module."""
    root = tmp_path_factory.mktemp("seeded")
    model_dir = helpers.ModelDir.create(root / "model")
    init_home(root / "home")
    with Registry.open(root / "home") as reg:
        for version in ("v1.0", "v1.1"):
            model_dir.set_prompt("".join(f"line {i} of {version}\n" for i in range(400)))
            model_dir.write_manifest(version=version, image="busybox:1")
            reg.push(model_dir.manifest)
        reg.add_env("staging", port=18299, default=True)
    return root / "home"


@pytest.fixture
def seeded(_seeded_once, tmp_path, monkeypatch) -> Path:
    """A copy of that home of this test's own (a command may write to it); REGISTRY_HOME points at it."""
    home = tmp_path / "home"
    shutil.copytree(_seeded_once, home, symlinks=True)
    monkeypatch.setenv("REGISTRY_HOME", str(home))
    return home


def closed_pipe_run(args: list[str]) -> subprocess.CompletedProcess:
    """``registry ARGS`` as a user runs it (through the warm process: the command's child writes
    to this very pipe); the table test below runs commands in-process."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    try:
        return subprocess.run([REGISTRY, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_closed_pipe_ends_a_json_command_quietly(seeded, args):
    out = closed_pipe_run([*args, "--json"])
    assert out.returncode in (0, 141), out.stderr
    assert "internal error" not in out.stderr and "Exception ignored" not in out.stderr


def test_a_table_into_head_ends_quietly_too(seeded):
    """In this process (the table) and through the warm process, into a reader that stops early."""
    shell = f"{sys.executable} -m cli.main audit | head -c 1; exit ${{PIPESTATUS[0]}}"
    warm = shell.replace(f"{sys.executable} -m cli.main", REGISTRY)
    for command in (shell, warm.replace("audit", "history --json"), warm.replace("audit", "status --json")):
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert out.returncode in (0, 141) and "internal error" not in out.stderr, (command, out.stderr)


def test_every_json_command_is_covered_by_the_one_funnel():
    """The fix lives at the entry (``CellarGroup.invoke`` and ``cli.main``), so a new command is
    covered without a line of its own: this lists the commands the reads above leave to it."""
    def walk(group, prefix=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, (*prefix, name))
            elif any("--json" in p.opts for p in command.params):
                yield " ".join((*prefix, name))
    covered = {" ".join(a for a in args if a[0].isalpha() and a not in ("v1.0", "v1.1", "staging", "system"))
               for args in READS}
    mutating = {"promote", "rollback", "watch", "backup", "restore", "export", "import", "deprecate", "delete",
                "init", "push", "env add", "env host add", "env host remove", "audit checkpoint", "hook add", "key add",
                "key remove", "remote add",
                "sign", "approve", "pull", "checkout", "signature",
                "hook deliveries", "remote verify"}  # these two read what a hook or remote added
    assert set(walk(get_command(app))) <= covered | mutating
