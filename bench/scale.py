"""Bench: listings and deploy decisions at scale. Each command on a registry of 100,000 versions
and 10,000 releases against the same command on 1,000 versions and 100 releases, interleaved
pair by pair; prints min/median/max of each and of the ratio large/small (target <= 1.2x).

    python bench/scale.py [--pairs 7] [--pg ADMIN_URL]

SQLite by default; with ``--pg`` each registry lives in a scratch PostgreSQL database created
on that server (and dropped after).

`list`, `log`, `history --env production` and `status` run as CLI processes (start-up included:
it is the same on both sides); `rollback` runs through ``Registry.rollback`` on the fake engine,
so what is timed is the registry's own work (ledger reads, decision, record), not Docker's;
`push` is 20 pushes of a new prompt each through ``Registry.push`` (the time per push).
The registries are built fast: real pushes and promotes, then rows copied with bulk inserts.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAIN = "import sys; sys.argv[0] = 'registry'\nfrom cli.main import main\nmain()"
SIZES = {"small": (1_000, 100), "large": (100_000, 10_000)}


def build(home: Path, work: Path, versions: int, releases: int):
    """A registry of ``versions`` versions and ``releases`` releases in production."""
    from sqlalchemy import insert, select

    from registry import clock
    from registry.api import Registry
    from registry.ledger import Operation, Release, ReleaseStatus
    from registry.store.sql import releases as release_store
    from registry.store.sql import schema as t
    from registry.store.sql import sealing
    from tests.helpers import ModelDir
    from tests.web import demo

    Registry.init(home)[0].close()
    fake = demo.fake_engine()
    opener = demo.opener(home, fake)
    model = ModelDir.create(work / "bot")
    with opener() as reg:
        for v in ("v1.0", "v1.1"):
            model.set_prompt(f"prompt of {v}\n")
            model.write_manifest(version=v, image=demo.IMAGE)
            reg.push(model.manifest)
        with reg.store.write() as conn:  # copies of v1.0's rows, older than the two real pushes
            row = dict(conn.execute(select(t.versions).where(t.versions.c.version == "v1.0")).mappings().one())
            files = [dict(f) for f in conn.execute(
                select(t.version_files).where(t.version_files.c.version_id == row["id"])).mappings()]
            row.pop("id")
            start = row["created_at"] - timedelta(days=30)
            for first in range(0, versions - 2, 5_000):
                batch = []
                for i in range(first, min(versions - 2, first + 5_000)):
                    new = {**row, "version": f"v0.{i}", "created_at": start + timedelta(seconds=i),
                           "message": f"copy {i}"}
                    new["mac"] = sealing.seal_version(conn, {**new, "model": "support-bot"})
                    batch.append(new)
                conn.execute(insert(t.versions), batch)
            ids = conn.execute(select(t.versions.c.id).where(t.versions.c.version.like("v0.%"))).scalars().all()
            for first in range(0, len(ids), 5_000):
                conn.execute(insert(t.version_files), [{**f, "version_id": vid} for vid in ids[first:first + 5_000]
                                                       for f in files])
        reg.add_env("production", port=18099)
        with reg.store.write() as conn:  # the ledger's past: superseded releases of v1.0 and v1.1
            at = clock.now() - timedelta(days=30)
            digests = {v.version: v.manifest_digest for v in reg.versions("support-bot")}
            for revision in range(1, releases - 1):
                version = "v1.0" if revision % 2 else "v1.1"
                release_store.insert_(conn, Release(
                    env="production", revision=revision, operation=Operation.PROMOTE, model="support-bot",
                    version=version, manifest_digest=digests[version], image_digest=demo.IMAGE_DIGEST,
                    status=ReleaseStatus.SUPERSEDED, actor="bench", started_at=at + timedelta(minutes=revision),
                    healthy=True, container_id=f"gone-{revision}"))
        for v in ("v1.0", "v1.1"):  # the last two for real
            reg.promote(f"support-bot@{v}", env="production")
        assert reg.count_versions() == versions and reg.count_releases("production") == releases
    return opener, model


def cli_time(home: Path, args: list[str]) -> float:
    env = {**os.environ, "REGISTRY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MAIN, *args], env=env, capture_output=True, text=True)
    # status exits 1 (and says why on stdout): the fake engine's containers are not in Docker
    status_says_why = args[0] == "status" and done.returncode == 1 and "error:" not in done.stderr
    assert done.returncode == 0 or status_says_why, done.stderr
    return time.perf_counter() - t0


def api_rollback(opener) -> float:
    with opener() as reg:
        t0 = time.perf_counter()
        reg.rollback(env="production", reason="bench")
        return time.perf_counter() - t0


def api_pushes(opener, model, n: int = 20) -> float:
    """Seconds per push of a new version (a new prompt each) through the API."""
    from tests.web import demo

    with opener() as reg:
        t0 = time.perf_counter()
        for _ in range(n):
            version = f"v2.{next(_PUSHED)}"
            model.set_prompt(f"prompt of {version}\n")
            model.write_manifest(version=version, image=demo.IMAGE)
            reg.push(model.manifest)
        return (time.perf_counter() - t0) / n


_PUSHED = itertools.count()


def spread(values: list[float], unit: str = "s") -> str:
    return f"min {min(values):.3f} median {statistics.median(values):.3f} max {max(values):.3f} {unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--pg", metavar="ADMIN_URL", help="build both registries on PostgreSQL")
    opts = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-scale-"))
    databases = contextlib.ExitStack()
    os.environ.pop("REGISTRY_DB_URL", None)
    os.environ.setdefault("REGISTRY_ACTOR", "bench")
    os.environ.setdefault("SUPPORT_API_TOKEN", "bench-secret")  # the test model declares it
    sys.path.insert(0, str(ROOT / "bench"))
    from api_push import scratch_db
    from sqlalchemy.engine import make_url

    if opts.pg and make_url(opts.pg).password:  # a home records its URL without the password
        os.environ.setdefault("PGPASSWORD", make_url(opts.pg).password)

    try:
        openers, models, homes = {}, {}, {}
        for name, (versions, releases) in SIZES.items():
            t0 = time.perf_counter()
            homes[name] = root / name / "home"
            if opts.pg:  # the home remembers its database: the CLI runs below find it
                os.environ["REGISTRY_DB_URL"] = databases.enter_context(scratch_db(opts.pg))
            openers[name], models[name] = build(homes[name], root / name / "work", versions, releases)
            os.environ.pop("REGISTRY_DB_URL", None)
            print(f"{name}: {versions} versions, {releases} releases on {'PostgreSQL' if opts.pg else 'SQLite'}, "
                  f"built in {time.perf_counter() - t0:.0f} s")
        cases = [("list", lambda n: cli_time(homes[n], ["list"])), ("log", lambda n: cli_time(homes[n], ["log"])),
                 ("history --env production", lambda n: cli_time(homes[n], ["history", "--env", "production"])),
                 ("status", lambda n: cli_time(homes[n], ["status"])),
                 ("rollback (API, fake engine)", lambda n: api_rollback(openers[n])),
                 ("push (API, per push)", lambda n: api_pushes(openers[n], models[n]))]
        print(f"{'command':30} {'1k versions / 100 releases':>36} {'100k / 10k':>36}   ratio large/small")
        for label, run in cases:
            small, large, ratios = [], [], []
            for _ in range(opts.pairs):  # interleaved: small then large, pair by pair
                small.append(run("small"))
                large.append(run("large"))
                ratios.append(large[-1] / small[-1])
            print(f"{label:30} {spread(small):>36} {spread(large):>36}   "
                  f"{spread(ratios, 'x')} (target <= 1.2x)")
    finally:
        databases.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
