"""Shared by the benches: run the CLI in a subprocess that reports on itself, and the start-up floor."""

from __future__ import annotations

import subprocess
import sys
import time

# Runs `registry ARGS` as the console script does (cli.main.main), then prints one /proc
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
