"""Bench: CLI start-up. ``registry --help`` (target <= 0.10 s, issue 10) and ``registry list`` on a
10,000-version registry (target <= 0.30 s), wall time, min/median/max of several runs.

    python bench/startup.py [--versions 10000] [--runs 7] [--baseline DIR]

The CLI runs from this source tree (not whatever ``registry`` is installed). With
``--baseline DIR`` (another checkout, e.g. ``git archive main | tar -x -C DIR``) each command
also runs from DIR, interleaved run by run, and the ratio of medians is printed: > 1 means
this tree is slower. The registry is built fast: one real push, then its row copied with bulk
inserts. Also prints which heavy packages each command imports (sqlalchemy.orm, docker, git
must not be).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
# As the console script runs it (cli.main.main), from the tree on PYTHONPATH.
MAIN = "import sys; sys.argv[0] = 'registry'\nfrom cli.main import main\nmain()"
HEAVY = ("sqlalchemy.orm", "docker", "git", "alembic", "rich", "pydantic", "yaml", "sqlalchemy")


def build(home: Path, n: int) -> None:
    from sqlalchemy import insert, select

    from registry import Registry, clock
    from registry.store import schema as t
    from registry.store import seals
    from tests.helpers import ModelDir

    Registry.init(home)[0].close()
    md = ModelDir.create(home.parent / "model")
    with Registry.open(home) as reg:
        reg.push(md.manifest, version="v0", message="the one real push")
        with reg.store.write() as conn:
            row = dict(conn.execute(select(t.versions)).mappings().one())
            files = [dict(r) for r in conn.execute(select(t.version_files)).mappings()]
            start = row.pop("id")
            rows = [{**row, "version": f"v{i}", "message": f"bulk version {i}",
                     "created_at": clock.now()} for i in range(1, n)]
            for r in rows:  # sealed like a real push, or `show` refuses them as edited outside Cellar
                r["mac"] = seals.seal_version(conn, {**r, "model": "support-bot"})
            conn.execute(insert(t.versions), rows)
            ids = conn.execute(select(t.versions.c.id).where(t.versions.c.id != start)).scalars().all()
            conn.execute(insert(t.version_files), [{**f, "version_id": vid} for vid in ids for f in files])
        assert reg.count_versions() == n


def wall(args: list[str], env: dict, runs: int, trees: list[Path]) -> tuple[list[list[float]], list[list[float]]]:
    """Wall and CPU (user + system) seconds per run of ``registry ARGS`` from each tree, the trees
    interleaved run by run. CPU time barely moves with the machine's load; wall time does."""
    walls: list[list[float]] = [[] for _ in trees]
    cpus: list[list[float]] = [[] for _ in trees]
    for _ in range(runs):
        for i, tree in enumerate(trees):
            before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run([sys.executable, "-c", MAIN, *args], env={**env, "PYTHONPATH": str(tree)},
                           check=True, stdout=subprocess.DEVNULL)
            walls[i].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[i].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return walls, cpus


def spread(times: list[float]) -> str:
    return f"{min(times):.3f}/{statistics.median(times):.3f}/{max(times):.3f} s"


def imported(args: list[str], env: dict, tree: Path = ROOT) -> tuple[list[str], int]:
    """The heavy packages ``registry ARGS`` imports, and how many modules it loads in all."""
    code = ("import sys; sys.argv = ['registry', *sys.argv[1:]]\n"
            "from cli.main import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            f"print(len(sys.modules), ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], env={**env, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True)
    count, *heavy = done.stderr.strip().splitlines()[-1].split()
    return heavy, int(count)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--baseline", type=Path, help="another checkout to compare with, run interleaved")
    args = ap.parse_args()
    trees = [ROOT, *([args.baseline.resolve()] if args.baseline else [])]
    with tempfile.TemporaryDirectory(prefix="cellar-startup-") as tmp:
        home = Path(tmp) / "home"
        os.environ["REGISTRY_HOME"] = str(home)
        os.environ.pop("REGISTRY_DB_URL", None)
        build(home, args.versions)
        env = dict(os.environ)
        print(f"min/median/max of {args.runs} runs" + (f"; baseline {trees[1]}" if args.baseline else ""))
        for cmd, target in ((["--help"], 0.10), (["list"], 0.30), (["list", "--json"], None),
                            (["show", "v5000"], None), (["promote", "--help"], None)):
            times, cpu = wall(cmd, env, args.runs, trees)
            goal = f" (target <= {target} s)" if target else ""
            heavy, modules = imported(cmd, env)
            print(f"registry {' '.join(cmd):15s} wall {spread(times[0])}{goal}, cpu {spread(cpu[0])}, "
                  f"{modules} modules; imports: {', '.join(heavy) or '-'}")
            if args.baseline:
                ratio = statistics.median(times[0]) / statistics.median(times[1])
                cpu_ratio = statistics.median(cpu[0]) / statistics.median(cpu[1])
                print(f"  {'baseline':24s} wall {spread(times[1])}, cpu {spread(cpu[1])}, "
                      f"{imported(cmd, env, trees[1])[1]} modules; ratio wall {ratio:.2f}, cpu {cpu_ratio:.2f}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"(a bare `python -c pass` takes {time.perf_counter() - t0:.3f} s here; "
              f"{args.versions} versions; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
