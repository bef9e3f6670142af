"""Bench: 1,000 versions pushed through the Python API (``Registry.push``); target <= 3 s in all.

    python bench/api_push.py [--n 1000] [--pg ADMIN_URL] [--git] [--same-files] [--profile]
    python bench/api_push.py --parity ADMIN_URL [--n 1000] [--pairs 7]

``--parity`` times the same pushes on SQLite and on a scratch PostgreSQL database, interleaved
pair by pair (the order alternating), and prints PostgreSQL/SQLite as min/median/max (issue 10:
median <= 1.3x).

Each version changes the prompt (a new small blob) and keeps the weights (stat cache hit),
which is what a prompt-tuning loop does; ``--same-files`` pushes metadata only. ``--git``
pushes from a git work tree (provenance is collected each time); ``--profile`` prints the
top functions (``SORT=tottime TOP=40`` to change the listing).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry import Registry  # noqa: E402
from tests.helpers import ModelDir  # noqa: E402


def setup(work: Path, *, db_url: str | None, git: bool) -> tuple[Path, ModelDir]:
    os.environ.pop("REGISTRY_DB_URL", None)
    if db_url:
        os.environ["REGISTRY_DB_URL"] = db_url
    home = work / "home"
    Registry.init(home)[0].close()
    md = ModelDir.create(work / "model")
    old = time.time_ns() - 3600 * 10**9  # weights written long ago (not "racy" for the stat cache)
    os.utime(md.root / "weights" / "model.safetensors", ns=(old, old))
    if git:
        commit = ["-c", "user.name=B", "-c", "user.email=b@x", "commit", "-qm", "m"]
        for args in (["init", "-q"], ["add", "."], commit):
            subprocess.run(["git", "-C", str(md.root), *args], check=True)
    return home, md


def push_many(home: Path, md: ModelDir, n: int, *, same_files: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds for ``n`` pushes (CPU time is steadier on a shared machine)."""
    prompt = md.root / "prompts" / "system"
    with Registry.open(home) as reg:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            if not same_files:
                prompt.write_text(f"You are a helpful assistant, revision {i}.\n")
            reg.push(md.manifest, version=f"v0.{i}", message=f"prompt revision {i}")
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert reg.count_versions() == n
    return elapsed, cpu


@contextmanager
def scratch_db(admin_url: str | None):
    """A fresh PostgreSQL database on ``admin_url``'s server (None: SQLite in the home)."""
    if not admin_url:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cellar_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pg", metavar="ADMIN_URL", help="PostgreSQL: a scratch database is created there and dropped")
    ap.add_argument("--git", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--same-files", action="store_true", help="metadata only: every version has the same files")
    ap.add_argument("--parity", metavar="ADMIN_URL", help="PostgreSQL against SQLite, interleaved pairs")
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    if args.parity:
        return parity(args.parity, n=args.n, pairs=args.pairs, same_files=args.same_files)
    with tempfile.TemporaryDirectory(prefix="cellar-api-bench-") as tmp, scratch_db(args.pg) as db_url:
        home, md = setup(Path(tmp), db_url=db_url, git=args.git)
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            elapsed, cpu = prof.runcall(push_many, home, md, args.n, same_files=args.same_files)
            stats = pstats.Stats(prof).sort_stats(os.environ.get("SORT", "cumulative"))
            stats.print_stats(int(os.environ.get("TOP", 35)))
        else:
            elapsed, cpu = push_many(home, md, args.n, same_files=args.same_files)
    where = "PostgreSQL" if args.pg else "SQLite"
    print(f"{args.n} versions through Registry.push on {where}{' from a git work tree' if args.git else ''}"
          f"{', same files (metadata only)' if args.same_files else ', a new prompt each'}: "
          f"{elapsed:.2f} s wall ({cpu:.2f} s CPU) in all, {elapsed / args.n * 1000:.2f} ms per push "
          f"(target <= 3 s per 1,000); load average {os.getloadavg()[0]:.1f}")


def parity(admin_url: str, *, n: int, pairs: int, same_files: bool) -> None:
    def one(pg: bool) -> float:
        with (tempfile.TemporaryDirectory(prefix="cellar-api-bench-") as tmp,
              scratch_db(admin_url if pg else None) as url):
            home, md = setup(Path(tmp), db_url=url, git=False)
            return push_many(home, md, n, same_files=same_files)[0]

    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(pairs):
        for pg in ((False, True) if i % 2 == 0 else (True, False)):
            times[pg].append(one(pg))
    ratios = sorted(p / s for s, p in zip(times[False], times[True]))

    def ms(xs: list[float]) -> str:
        return f"{min(xs) / n * 1000:.2f}/{statistics.median(xs) / n * 1000:.2f}/{max(xs) / n * 1000:.2f} ms"

    print(f"{n} pushes through Registry.push, {pairs} interleaved pairs, min/median/max per push:")
    print(f"  SQLite      {ms(times[False])}")
    print(f"  PostgreSQL  {ms(times[True])}")
    print(f"  PostgreSQL/SQLite {ratios[0]:.2f}/{statistics.median(ratios):.2f}/{ratios[-1]:.2f}x "
          f"(target median <= 1.3x); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
