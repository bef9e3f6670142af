"""Bench: CLI start-up. ``registry --help`` (target <= 0.25 s) and ``registry list`` on a
10,000-version registry (target <= 0.4 s), wall time, median of several runs.

    python bench/startup.py [--versions 10000] [--runs 7]

The registry is built fast: one real push, then its row copied with bulk inserts. Also
prints which heavy packages each command imports (sqlalchemy.orm, docker, git must not be).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REGISTRY = str(Path(sys.executable).with_name("registry"))
HEAVY = ("sqlalchemy.orm", "docker", "git", "alembic", "rich", "pydantic", "yaml", "sqlalchemy")


def build(home: Path, n: int) -> None:
    from sqlalchemy import insert, select

    from registry import Registry, clock
    from registry.store import schema as t
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
            conn.execute(insert(t.versions), rows)
            ids = conn.execute(select(t.versions.c.id).where(t.versions.c.id != start)).scalars().all()
            conn.execute(insert(t.version_files), [{**f, "version_id": vid} for vid in ids for f in files])
        assert reg.count_versions() == n


def wall(args: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([REGISTRY, *args], env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def imported(args: list[str], env: dict) -> list[str]:
    code = ("import sys; sys.argv = ['registry', *sys.argv[1:]]\n"
            "from cli.main import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    return done.stderr.strip().splitlines()[-1].split() if done.stderr.strip() else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cellar-startup-") as tmp:
        home = Path(tmp) / "home"
        os.environ["REGISTRY_HOME"] = str(home)
        os.environ.pop("REGISTRY_DB_URL", None)
        build(home, args.versions)
        env = dict(os.environ)
        for cmd, target in ((["--help"], 0.25), (["list"], 0.4), (["list", "--json"], None),
                            (["show", "v5000"], None)):
            t = wall(cmd, env, args.runs)
            goal = f" (target <= {target} s)" if target else ""
            print(f"registry {' '.join(cmd):12s} {t:.3f} s median of {args.runs}{goal}; "
                  f"imports: {', '.join(imported(cmd, env)) or '-'}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"(a bare `python -c pass` takes {time.perf_counter() - t0:.3f} s here; "
              f"{args.versions} versions; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
