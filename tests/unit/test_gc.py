"""The gc planner (pure) and its executor (real files)."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from registry.store.files import scan
from registry.store.files.blobs import BlobStore
from registry.upkeep import gc_plan

NOW = 1_800_000_000.0
HOUR = 3600.0


def _blob(n: int, age: float, root: Path = Path("/b")) -> scan.StoredBlob:
    return scan.StoredBlob(f"sha256:{n:064x}", 100 * n, NOW - age, root / f"{n:064x}")


def test_grace_period_keeps_fresh_unreferenced_blobs():
    old, fresh = _blob(1, 2 * HOUR), _blob(2, 59 * 60)
    plan = gc_plan.plan(gc_plan.Inputs(now=NOW, blobs=[old, fresh]))
    assert [b.digest for b in plan.blobs] == [old.digest]
    assert plan.kept_fresh == [fresh.digest]
    assert plan.bytes_freed == old.size


def test_referenced_and_needed_blobs_are_never_collected_however_old():
    used, needed, garbage = _blob(1, 1e6), _blob(2, 1e6), _blob(3, 1e6)
    plan = gc_plan.plan(gc_plan.Inputs(now=NOW, blobs=[used, needed, garbage], referenced={used.digest},
                             needed_by_releases={needed.digest}))
    assert [b.digest for b in plan.blobs] == [garbage.digest]


def test_temp_files_of_live_writers_and_fresh_ones_stay():
    temps = [scan.TempFile(Path("/t/ingest-1-a"), 5, NOW - 2 * HOUR, owner_alive=True),
             scan.TempFile(Path("/t/ingest-2-b"), 7, NOW - 2 * HOUR, owner_alive=False),
             scan.TempFile(Path("/t/ingest-3-c"), 9, NOW - 60, owner_alive=False)]
    plan = gc_plan.plan(gc_plan.Inputs(now=NOW, temp_files=temps))
    assert [t.path for t in plan.temp_files] == ["/t/ingest-2-b"]


def test_snapshots_no_release_needs():
    keep = gc_plan.Snapshot("sha256:" + "a" * 64, Path("/s/" + "a" * 64), 0, NOW - 2 * HOUR)
    drop = gc_plan.Snapshot("sha256:" + "b" * 64, Path("/s/" + "b" * 64), 10, NOW - 2 * HOUR)
    young = gc_plan.Snapshot("sha256:" + "c" * 64, Path("/s/" + "c" * 64), 10, NOW - 10)
    plan = gc_plan.plan(gc_plan.Inputs(now=NOW, snapshots=[keep, drop, young], needed_snapshots={keep.manifest_digest}))
    assert [s.path for s in plan.snapshots] == [str(drop.path)]


def test_containers_retention_does_not_keep():
    cs = [gc_plan.Container("prod", f"p{r}", revision=r, running=(r == 6)) for r in range(1, 7)]
    cs += [gc_plan.Container("staging", f"s{r}", revision=r) for r in range(1, 3)]
    cs += [gc_plan.Container("prod", "rollback-target", revision=1), gc_plan.Container("gone", "g1", revision=1)]
    # kept_containers is retention's whole answer (ledger.keep_containers: the rollback target and
    # the newest others, ``keep`` in all): gc removes every other stopped one, and counts nothing again
    plan = gc_plan.plan(gc_plan.Inputs(now=NOW, containers=cs, keep={"prod": 2, "staging": 3},
                                       kept_containers={"rollback-target", "p5", "s1", "s2"}))
    assert [c.id for c in plan.containers] == ["g1", "p1", "p2", "p3", "p4"]  # "gone": a removed environment's


def test_plan_is_deterministic_whatever_the_input_order():
    blobs = [_blob(n, 2 * HOUR) for n in range(1, 6)]
    a = gc_plan.plan(gc_plan.Inputs(now=NOW, blobs=blobs))
    b = gc_plan.plan(gc_plan.Inputs(now=NOW, blobs=list(reversed(blobs))))
    assert a == b


def _age(path: Path, seconds: float) -> None:
    t = os.stat(path).st_mtime - seconds
    os.utime(path, (t, t))


def _inputs(store: BlobStore, **kw) -> gc_plan.Inputs:
    stored, _ = scan.list_blobs(store)
    return gc_plan.Inputs(now=time.time(), blobs=stored, temp_files=scan.list_temp_files(store), **kw)


def test_dry_run_plan_equals_the_executed_plan(store, tmp_path):
    digests = []
    for i in range(4):
        src = tmp_path / f"f{i}"
        src.write_bytes(os.urandom(1000 + i))
        digests.append(store.ingest(src).digest)
    for d in digests[:3]:
        _age(store.path(d), 2 * HOUR)
    dead_tmp = store.tmp / "ingest-999999999-x"
    dead_tmp.write_text("half")
    _age(dead_tmp, 2 * HOUR)

    inputs = _inputs(store, referenced={digests[0]})
    dry = gc_plan.dry_run(gc_plan.plan(inputs))
    assert not any(not p.exists() for p in [store.path(d) for d in digests])  # the dry run removed nothing
    real = gc_plan.execute(gc_plan.plan(_inputs(store, referenced={digests[0]})), now=inputs.now)
    assert dry.model_dump(exclude={"dry_run"}) == real.model_dump(exclude={"dry_run"})
    assert (dry.dry_run, real.dry_run, real.skipped) == (True, False, [])
    assert sorted(b.digest for b in real.blobs) == sorted(digests[1:3])
    assert store.path(digests[0]).exists() and store.path(digests[3]).exists()  # referenced, fresh
    assert not store.path(digests[1]).exists() and not dead_tmp.exists()


def test_executor_skips_a_blob_a_push_reused_since_the_plan(store, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"old weights")
    digest = store.ingest(src).digest
    _age(store.path(digest), 2 * HOUR)
    inputs = _inputs(store)
    the_plan = gc_plan.plan(inputs)
    assert [b.digest for b in the_plan.blobs] == [digest]
    os.utime(store.path(digest))  # a push reuses it (and refreshes its mtime) before recording
    result = gc_plan.execute(the_plan, now=inputs.now)
    assert store.path(digest).exists()
    assert [s.path for s in result.skipped] == [str(store.path(digest))]


def test_executor_removes_sealed_snapshots_and_keeps_newly_needed_ones(tmp_path):
    root = tmp_path / "snapshots"
    for name in ("a" * 64, "b" * 64):
        (root / name / "prompts").mkdir(parents=True)
        (root / name / "prompts" / "system").write_text("hi")
        for d in (root / name / "prompts", root / name):
            os.chmod(d, 0o555)
            _age(d, 2 * HOUR)
    snaps = gc_plan.list_snapshots(root)
    assert {s.size for s in snaps} == {2}  # copies, not links: they hold their bytes
    now = time.time()
    the_plan = gc_plan.plan(gc_plan.Inputs(now=now, snapshots=snaps))
    assert len(the_plan.snapshots) == 2
    result = gc_plan.execute(the_plan, now=now, needed_snapshots_now=lambda: {"sha256:" + "b" * 64})
    assert not (root / ("a" * 64)).exists() and (root / ("b" * 64)).exists()
    assert len(result.skipped) == 1


def test_grace_is_configurable():
    blob = _blob(1, 10 * 60)
    assert gc_plan.plan(gc_plan.Inputs(now=NOW, blobs=[blob], grace=timedelta(minutes=5))).blobs
    assert not gc_plan.plan(gc_plan.Inputs(now=NOW, blobs=[blob])).blobs
