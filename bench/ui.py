"""Bench: every page of the web view (`registry ui`) rendered server-side on 10,000 versions and
100,000 audit events. Target: each page < 100 ms (median).

Builds the demo registry of tests/web/demo.py (needs the test extra), clones one version's rows
10,000 times and appends 100,000 audit events through the store (fast, bench only), then times
each page through Starlette's TestClient (routing, the Registry calls, templates; no network),
interleaved with its baseline: the Registry call(s) the page makes, alone. Prints min/median/max
over --runs rounds and the page/baseline ratio (what the web layer adds).

    python bench/ui.py [--versions 10000] [--events 100000] [--runs 9] [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def clone_versions(reg, count: int, batch: int = 2000) -> None:
    """``count`` copies of support-bot@v1.1's rows (same files), one minute apart, as v2.0.N."""
    from sqlalchemy import insert, select

    from registry.store.sql import schema as t
    from registry.store.sql import sealing

    with reg.store.read() as conn:
        row = conn.execute(select(t.versions).join(t.models).where(
            t.models.c.name == "support-bot", t.versions.c.version == "v1.1")).mappings().one()
        files = conn.execute(select(t.version_files).where(t.version_files.c.version_id == row["id"])).mappings().all()
    base = dict(row)
    base.pop("id")
    for start in range(0, count, batch):
        with reg.store.write() as conn:
            for i in range(start, min(count, start + batch)):
                new = {**base, "version": f"v2.0.{i}", "created_at": row["created_at"] + timedelta(minutes=i + 1),
                       "message": f"bench copy {i}"}
                new["mac"] = sealing.seal_version(conn, {**new, "model": "support-bot"})  # as a push seals it
                vid = conn.execute(insert(t.versions).values(**new)).inserted_primary_key[0]
                conn.execute(insert(t.version_files), [{**dict(f), "version_id": vid} for f in files])


def append_events(reg, count: int, batch: int = 10_000) -> None:
    """Push-like events, as bench/audit.py appends them (the real hash chain)."""
    from registry.store.sql import events

    for start in range(0, count, batch):
        with reg.store.write() as conn:
            for i in range(start, min(count, start + batch)):
                events.append(conn, actor=f"user{i % 7} <u{i % 7}@example.org>", action="push",
                              object=f"bot-{i % 20}@v{i}", model=f"bot-{i % 20}", db_user=reg.store.db_user(conn),
                              detail={"manifest_digest": f"sha256:{i:064x}", "files": ["prompt:system"],
                                      "message": f"change {i}", "prompts_changed": ["system"] if i % 100 == 0 else []})


def cases(reg, verifier):
    """(page path, its baseline: the Registry calls behind it)."""
    newest = reg.versions("support-bot", limit=1)[0].version
    return [
        ("/versions", lambda: (reg.models(), reg.count_versions("support-bot"), reg.versions(None, limit=50))),
        ("/versions?model=support-bot&page=100",
         lambda: (reg.models(), reg.count_versions("support-bot"), reg.versions("support-bot", limit=50, offset=4950))),
        (f"/v/support-bot/{newest}",
         lambda: (reg.show(f"support-bot@{newest}"), reg.changelog("support-bot", limit=12))),
        ("/v/support-bot/v1.1/prompts/system", lambda: reg.blame("system", at="support-bot@v1.1", model="support-bot")),
        (f"/v/support-bot/{newest}/prompts/system",  # blame walks all 10,000 versions
         lambda: reg.blame("system", at=f"support-bot@{newest}", model="support-bot")),
        ("/diff?a=v1.0&b=v1.2", lambda: reg.diff("support-bot@v1.0", "support-bot@v1.2")),
        ("/diff?a=production&b=v1.2",
         lambda: (reg.history("production"), reg.diff("support-bot@v1.1", "support-bot@v1.2"))),
        ("/envs", lambda: (reg.environments(), reg.status())),
        ("/envs/staging", lambda: (reg.environment("staging"), reg.status(), reg.history("staging"),
                                   reg.health("staging", runs=reg.probe_runs("staging", limit=500)))),
        ("/audit", lambda: (reg.audit(limit=101), reg.audit_checkpoint())),
        ("/audit?actor=user3&before=50000&page=2", lambda: (reg.audit(actor="user3", before=50000, limit=101),
                                                            reg.audit_checkpoint())),
        ("/audit?prompt=system", lambda: (reg.audit(prompt="system", limit=101), reg.audit_checkpoint())),
        ("/api/envs/staging", None),
        ("/api/audit", None),
    ]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--db-url", help="A fresh, empty database (default: SQLite in a temp home).")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-ui-"))
    os.environ.pop("REGISTRY_DB_URL", None)
    if opts.db_url:
        os.environ["REGISTRY_DB_URL"] = opts.db_url
    os.environ.update(REGISTRY_HOME=str(root / "home"), REGISTRY_ACTOR="bench",
                      SUPPORT_API_TOKEN="bench-secret-never-shown")
    try:
        run(root, opts)
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(root: Path, opts) -> None:
    from starlette.testclient import TestClient

    from registry.api import Registry
    from registry.web import create_app
    from tests.web import demo

    reg, _ = Registry.init(root / "home")
    reg.close()
    fake = demo.fake_engine()
    t0 = time.perf_counter()
    demo.build(root / "home", root / "work", fake)
    with demo.opener(root / "home", fake)() as reg:
        clone_versions(reg, opts.versions)
        append_events(reg, opts.events)
        demo.record_runs(reg, per_release=100)
        print(f"built {reg.count_versions()} versions, {reg.audit_checkpoint().count} audit events, "
              f"{len(reg.probe_runs())} probe runs in {time.perf_counter() - t0:.1f} s "
              f"({reg.store.dialect})")
    app = create_app(demo.opener(root / "home", fake))
    with TestClient(app, base_url="http://127.0.0.1:8765") as client, demo.opener(root / "home", fake)() as reg:
        t0 = time.perf_counter()
        client.get("/audit")  # starts verifying the whole chain in the background
        first = time.perf_counter() - t0
        while client.get("/api/audit").json()["verified"] is None:  # timed pages run without it
            time.sleep(0.2)
        print(f"first /audit: {first * 1000:.0f} ms; the chain of {opts.events} events verified in the background "
              f"in {time.perf_counter() - t0:.1f} s, then renewed when the log changes or after 5 minutes")
        print(f"{'page':44} {'min':>7} {'median':>7} {'max':>7}   {'API alone (median)':>18}  ratio")
        worst = 0.0
        for path, baseline in cases(reg, None):
            assert client.get(path).status_code == 200, path
            pages, bases = [], []
            for _ in range(opts.runs):  # interleaved: page, then its baseline, in each round
                pages.append(timed(partial(client.get, path)))
                if baseline:
                    bases.append(timed(baseline))
            med = statistics.median(pages)
            worst = max(worst, med)
            base = f"{statistics.median(bases):15.1f} ms  {med / statistics.median(bases):5.2f}" if bases else ""
            print(f"{path:44} {min(pages):6.1f} {med:7.1f} {max(pages):7.1f}   {base}")
        print(f"slowest page median: {worst:.1f} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
