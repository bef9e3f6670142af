"""Bench: CLI start-up. ``registry --help`` (target <= 0.10 s, issue 10) and ``registry list`` on a
10,000-version registry (target <= 0.30 s), wall time, min/median/max of several runs.

    python bench/startup.py [--versions 10000] [--runs 7] [--pg ADMIN_URL]

The CLI runs from this source tree (not whatever ``registry`` is installed), as the console
script runs it: through a warm process (of this bench's own, started first; cli/launch.py),
and in-process (REGISTRY_WARM=0), interleaved run by run; the ratio of medians is printed.
The registry is built fast: one real push, then its row copied with bulk inserts. Also prints
which heavy packages each command imports in-process. SQLite by default; with ``--pg`` the
registry lives in a scratch PostgreSQL database on that server (dropped after).
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

from _startup import CLI, IN_PROCESS, own_warm_process  # noqa: E402
from api_push import scratch_db  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy.orm", "docker", "git", "alembic", "rich", "pydantic", "yaml", "sqlalchemy")


def build(home: Path, n: int) -> None:
    from sqlalchemy import insert, select

    from registry import Registry, clock
    from registry.store.sql import schema as t
    from registry.store.sql import sealing
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
                r["mac"] = sealing.seal_version(conn, {**r, "model": "support-bot"})
            conn.execute(insert(t.versions), rows)
            ids = conn.execute(select(t.versions.c.id).where(t.versions.c.id != start)).scalars().all()
            conn.execute(insert(t.version_files), [{**f, "version_id": vid} for vid in ids for f in files])
        assert reg.count_versions() == n


def wall(args: list[str], envs: list[dict], runs: int) -> tuple[list[list[float]], list[list[float]]]:
    """Wall and CPU (user + system, of the `registry` process itself) seconds per run of
    ``registry ARGS`` with each environment, interleaved run by run."""
    walls: list[list[float]] = [[] for _ in envs]
    cpus: list[list[float]] = [[] for _ in envs]
    for _ in range(runs):
        for i, env in enumerate(envs):
            before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run([*CLI, *args], env=env, check=True, stdout=subprocess.DEVNULL)
            walls[i].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[i].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return walls, cpus


def spread(times: list[float]) -> str:
    return f"{min(times):.3f}/{statistics.median(times):.3f}/{max(times):.3f} s"


def imported(args: list[str], env: dict) -> tuple[list[str], int]:
    """The heavy packages ``registry ARGS`` imports, and how many modules it loads in all."""
    code = ("import sys; sys.argv = ['registry', *sys.argv[1:]]\n"
            "from cli.main import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            f"print(len(sys.modules), ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    count, *heavy = done.stderr.strip().splitlines()[-1].split()
    return heavy, int(count)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--pg", metavar="ADMIN_URL", help="build the registry on PostgreSQL")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cellar-startup-") as tmp, scratch_db(args.pg) as db_url:
        home = Path(tmp) / "home"
        os.environ["REGISTRY_HOME"] = str(home)
        os.environ.pop("REGISTRY_DB_URL", None)
        if db_url:  # the home remembers its database (without the password)
            os.environ["REGISTRY_DB_URL"] = db_url
            os.environ.setdefault("PGPASSWORD", make_url(db_url).password or "")
        build(home, args.versions)
        os.environ.pop("REGISTRY_DB_URL", None)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with own_warm_process(env) as warm:
            print(f"min/median/max of {args.runs} runs, interleaved: through the warm process (the default) "
                  f"and in-process (REGISTRY_WARM=0). The first command took {warm.first_call_s:.3f} s "
                  f"(in-process) and the warm process served {warm.ready_s:.2f} s after it started.")
            for cmd, target in ((["--help"], 0.10), (["list"], 0.30), (["list", "--json"], None),
                                (["show", "v5000"], None), (["promote", "--help"], None)):
                times, cpu = wall(cmd, [warm.env, {**env, **IN_PROCESS}], args.runs)
                goal = f" (target <= {target} s)" if target else ""
                heavy, modules = imported(cmd, env)
                ratio = statistics.median(times[0]) / statistics.median(times[1])
                print(f"registry {' '.join(cmd):15s} warm       wall {spread(times[0])}{goal}, "
                      f"cpu of the client {spread(cpu[0])}")
                print(f"{'':24s} in-process wall {spread(times[1])}, cpu {spread(cpu[1])}, {modules} modules; "
                      f"imports: {', '.join(heavy) or '-'}; warm/in-process {ratio:.2f}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print(f"(a bare `python -c pass` takes {time.perf_counter() - t0:.3f} s here; "
              f"{args.versions} versions on {'PostgreSQL' if args.pg else 'SQLite'}; "
              f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
