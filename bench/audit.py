"""Bench: `registry audit --prompt NAME` on 100,000 events, and `registry audit verify`.

Appends the events through ``registry.store.sql.events.append`` (the chain the real commands write) in
big transactions, then times the commands as subprocesses. Target: `audit --prompt` <= 0.5 s.
Verify streams rows, so its peak memory is printed too.

    python bench/audit.py [--events 100000] [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _startup import floor, run_cli

PROMPTS = ["greeting", "refusal", "tools", "style"]


def fill(home: Path, count: int, batch: int = 10_000) -> None:
    """``count`` push-like events; one in a hundred changes the ``system`` prompt."""
    from registry.api import Registry
    from registry.store.sql import events

    with Registry.open(home) as reg:
        for start in range(0, count, batch):
            with reg.store.write() as conn:
                for i in range(start, min(count, start + batch)):
                    changed = ["system"] if i % 100 == 0 else [PROMPTS[i % len(PROMPTS)]]
                    events.append(conn, actor=f"user{i % 7}", action="push", object=f"bot-{i % 20}@v{i}",
                                 model=f"bot-{i % 20}", db_user=reg.store.db_user(conn),
                                 detail={"manifest_digest": f"sha256:{i:064x}", "files": ["prompt:system"],
                                         "message": f"change {i}", "prompts_changed": changed})


def timed(env: dict, *args: str, runs: int = 5) -> tuple[float, float, str]:
    """Best wall time, peak memory (MiB) and output of ``registry ARGS``."""
    best, peak, out = float("inf"), 0.0, ""
    for _ in range(runs):
        t0 = time.perf_counter()
        done, hwm_kib = run_cli(env, *args, file="status", key="VmHWM", sep=":")
        best = min(best, time.perf_counter() - t0)
        peak = max(peak, hwm_kib / 1024)
        out = done.stdout
    return best, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--db-url", help="A fresh, empty database (default: SQLite in a temp home).")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-audit-"))
    env = {**os.environ, "REGISTRY_HOME": str(root / "home"), "REGISTRY_ACTOR": "bench"}
    env.pop("REGISTRY_DB_URL", None)
    if opts.db_url:
        env["REGISTRY_DB_URL"] = opts.db_url
    os.environ.update(env)
    try:
        subprocess.run([sys.executable, "-m", "cli.main", "init"], env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        fill(root / "home", opts.events)
        print(f"appended {opts.events} events in {time.perf_counter() - t0:.1f} s "
              f"({os.environ.get('REGISTRY_DB_URL', 'sqlite').split(':')[0]})")
        for args in (["audit", "--prompt", "system"], ["audit", "--prompt", "system", "--json"],
                     ["audit", "--prompt", "system", "--limit", "10"], ["audit", "--actor", "user3", "--limit", "20"]):
            best, peak, out = timed(env, *args)
            rows = out.count('"id"') if "--json" in args else max(0, len(out.splitlines()) - 1)
            print(f"registry {' '.join(args)}: {best * 1000:.0f} ms wall, {rows} events shown "
                  f"(target <= 500 ms)")
        print(f"start-up floor (python + import cli.main, registry.api): {floor() * 1000:.0f} ms wall")
        best, peak, out = timed(env, "audit", "verify", runs=1)
        print(f"registry audit verify: {best:.2f} s wall, peak RSS {peak:.0f} MiB; {out.strip()}")
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


if __name__ == "__main__":
    main()
