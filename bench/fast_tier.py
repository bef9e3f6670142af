"""The fast test tier's wall time (`scripts/test.sh --fast`), against an earlier revision's.

Interleaved pairs in the same run: the tier of an earlier revision (``--against``, default
93a533c, the last commit before issue 20's second round of changes), run the way its
scripts/test.sh ran it then (``pytest -n 4``, temporary files on disk), then this checkout's
``scripts/test.sh --fast``. Both use this checkout's .venv; the earlier revision's code comes first
on the import path. CPU is everything each run started, double-forked warm processes included,
from a cpuacct cgroup when this machine has one (root, cgroup v1), else the children's rusage.

Usage: python bench/fast_tier.py [--pairs 3] [--against REV]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELECT = "not docker and not postgres and not browser and not oci"
CGROUP = Path("/sys/fs/cgroup/cpuacct")


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s, pytest's last line) of one run."""
    group = CGROUP / f"cellar-bench-{os.getpid()}"
    try:
        group.mkdir(exist_ok=True)
        (group / "cpuacct.usage").write_text("0")
        argv = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *argv]
    except OSError:
        group = None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    if group is not None:
        time.sleep(0.5)  # the warm processes killed at the end are accounted
        cpu = int((group / "cpuacct.usage").read_text()) / 1e9
        try:
            group.rmdir()
        except OSError:  # something the run started still lives: left for the next run to reuse
            pass
    else:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return wall, cpu, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--against", default="93a533c")
    args = ap.parse_args()
    python = str(ROOT / ".venv" / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="cellar-bench-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(old)], check=True)
        subprocess.run(["git", "-C", str(old), "checkout", "-q", args.against], check=True)
        old_env = {**os.environ, "PYTHONPATH": str(old)}
        old_argv = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "4", "-m", SELECT]
        rows: dict[str, list[tuple[float, float]]] = {"baseline": [], "now": []}
        for i in range(args.pairs):
            for name, argv, cwd, env in (("baseline", old_argv, old, old_env),
                                         ("now", ["scripts/test.sh", "--fast"], ROOT, dict(os.environ))):
                wall, cpu, last = run(argv, cwd, env)
                rows[name].append((wall, cpu))
                print(f"pair {i + 1} {name:8} {wall:6.1f} s wall {cpu:6.1f} s CPU   {last}", flush=True)
    for name, values in rows.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        print(f"{name:8} wall min/median/max {min(walls):.1f}/{statistics.median(walls):.1f}/{max(walls):.1f} s, "
              f"CPU median {statistics.median(cpus):.1f} s")
    ratios = [now[0] / base[0] for now, base in zip(rows["now"], rows["baseline"], strict=True)]
    print(f"now/baseline wall, per pair: min/median/max {min(ratios):.2f}/{statistics.median(ratios):.2f}/"
          f"{max(ratios):.2f}x")


if __name__ == "__main__":
    main()
