"""Shared by the benches: run the CLI as the console script does, through a warm process of the
bench's own or in-process (``REGISTRY_WARM=0``) for comparison; run it in a subprocess that
reports on itself; the start-up floor."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# -P: no working directory in sys.path, as the console script has none (a folder on the search
# path is part of the warm process's identity, so a changing one would start a new one each time)
CLI = [sys.executable, "-P", "-c", "import sys; sys.argv[0] = 'registry'\nfrom cli.launch import main\nmain()"]
IN_PROCESS = {"REGISTRY_WARM": "0"}


@dataclass
class Warm:
    env: dict  # run the CLI with this environment to use the warm process
    first_call_s: float  # the call that started it (that call ran in-process)
    ready_s: float  # from that call's start until the warm process served
    pid: int  # the warm process (it forks and reaps one child per command)

    def reaped(self) -> tuple[float, int]:
        """CPU seconds and bytes written to storage by the commands it has run so far: a child's
        are added to its parent's children-CPU time and I/O counters when reaped."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        io = dict(line.split(": ") for line in Path(f"/proc/{self.pid}/io").read_text().splitlines())
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK"), int(io["write_bytes"])

    def settle(self, timeout: float = 10) -> None:
        """Wait until every command it ran is reaped (a child answers its client before it exits)."""
        deadline = time.monotonic() + timeout
        while _children(self.pid) > 1 and time.monotonic() < deadline:  # beyond the spare one
            time.sleep(0.005)


@contextlib.contextmanager
def own_warm_process(env: dict) -> Iterator[Warm]:
    """A warm process of this bench's own, already started; stopped on exit."""
    run = tempfile.mkdtemp(prefix="cellar-bench-", dir="/tmp")
    env = {**env, "XDG_RUNTIME_DIR": run}
    env.pop("REGISTRY_WARM", None)
    t0 = time.perf_counter()
    subprocess.run([*CLI, "--help"], env=env, stdout=subprocess.DEVNULL, check=True)
    first = time.perf_counter() - t0
    folder = Path(run) / "cellar"
    deadline = time.monotonic() + 120
    while not list(folder.glob("*.sock")):
        if time.monotonic() > deadline:
            raise SystemExit("the warm process did not start")
        time.sleep(0.01)
    ready = time.perf_counter() - t0
    found = _processes_mentioning(run)  # the warm process and its spare child
    try:
        yield Warm(env, first, ready, pid=next(p for p in found if _parent(p) not in found))
    finally:
        for pid in _processes_mentioning(run):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run, ignore_errors=True)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                count += _parent(int(entry)) == pid
    return count


# Runs `registry ARGS` as the console script does in-process (cli.main.main), then prints one /proc
# figure of its own process on stderr.
_SHIM = """
import sys
sys.argv = ["registry"] + sys.argv[1:]
try:
    from cli.main import main
    main()
finally:
    lines = open("/proc/self/{file}").read().splitlines()
    value = dict(line.split("{sep}", 1) for line in lines)["{key}"]
    print("{key}", value.strip(), file=sys.stderr)
"""


def run_cli(env: dict, *args: str, file: str, key: str, sep: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``registry ARGS``; return the process and the integer /proc/self/FILE field KEY at its end."""
    shim = _SHIM.format(file=file, key=key, sep=sep)
    done = subprocess.run([sys.executable, "-c", shim, *args], env=env, capture_output=True, text=True, check=True)
    return done, int(done.stderr.split(key)[-1].split()[0])


def floor(runs: int = 5) -> float:
    """Best wall time of starting Python and importing the CLI and the library, doing nothing
    (with the collector off, as the console script runs)."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import gc; gc.disable(); import cli.main, registry.api"],
                       check=True)
        best = min(best, time.perf_counter() - t0)
    return best
