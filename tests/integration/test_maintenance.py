"""verify, gc, backup/restore, deprecate and delete through ``Registry``, on SQLite and PostgreSQL,
with the in-library fake engine standing in for Docker where a deploy is involved."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from registry.api import Registry
from registry.engines.engine import ContainerSpec, labels_for
from registry.engines.fake import FakeEngine
from registry.errors import CellarError, Conflict, InvalidInput
from registry.ledger import ReleaseStatus, keep_containers
from registry.models.upkeep import ProblemKind
from registry.versions import pushing
from tests import helpers
from tests.conftest import IMAGE, on_fake, push_versions

HOURS_AGO = time.time() - 3 * 3600


@pytest.fixture
def reg(home, fake):
    with on_fake(home, fake) as r:
        r.add_env("staging", port=18080, default=True, keep=1)
        yield r


@pytest.fixture
def pushed(reg, model_dir):
    """v1.0 .. v1.3: one weights file shared by all, a prompt of their own each."""
    push_versions(reg, model_dir, "v1.0", "v1.1", "v1.2", "v1.3", image=IMAGE)
    return reg


def _digests(reg: Registry, ref: str) -> tuple[str, str]:
    info = reg.show(ref)
    return info.weights[0].digest, info.prompts[0].digest


def _age(*paths: Path) -> None:
    """Older than gc's grace period (the files' mtimes; nothing else is faked)."""
    for p in paths:
        os.utime(p, (HOURS_AGO, HOURS_AGO), follow_symlinks=False)


def _age_store(reg: Registry) -> None:
    _age(*[p for p in (reg.home.blobs / "sha256").rglob("*") if p.is_file()])
    if reg.cfg.snapshots.is_dir():
        _age(*[p for p in reg.cfg.snapshots.iterdir()])


def _damage(path: Path, how: str) -> None:
    os.chmod(path, 0o644)
    if how == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncated":
        os.truncate(path, path.stat().st_size - 7)
    else:
        path.unlink()


def _events(reg: Registry, action: str) -> list:
    return reg.audit(action=action)


# --- verify, and promote/rollback refusing damage ----------------------------------------------


def test_verify_an_intact_registry(pushed):
    ticks = []
    report = pushed.verify(progress=lambda n, total: ticks.append((n, total)))
    assert report.ok and report.blobs_checked == 5 and report.problems == []
    assert sum(n for n, _ in ticks) == report.bytes_hashed == ticks[0][1]
    assert report.audit_events == len(pushed.audit()) and report.database_check


@pytest.mark.parametrize("how, kind", [("flipped", ProblemKind.CORRUPT), ("truncated", ProblemKind.TRUNCATED),
                                       ("missing", ProblemKind.MISSING)])
def test_damaged_blob_found_by_verify_and_refused_by_promote_and_rollback(pushed, how, kind):
    reg = pushed
    reg.promote("v1.0")
    reg.promote("v1.1")  # v1.0's container is kept, stopped: the rollback target
    weights, _ = _digests(reg, "v1.0")
    _damage(reg.blobs.path(weights), how)

    report = reg.verify()
    assert not report.ok
    [problem] = [p for p in report.problems if p.damage and p.digest == weights and p.kind == kind]
    assert problem.versions == [f"support-bot@v1.{i}" for i in range(4)]

    history = reg.history("staging")
    with pytest.raises(CellarError, match=weights):
        reg.promote("v1.2")
    with pytest.raises(CellarError, match=weights):
        reg.rollback(reason="bad answers")  # onto the kept container of v1.0
    assert reg.history("staging") == history  # nothing recorded


def test_verify_finds_a_damaged_snapshot_and_a_broken_audit_chain(pushed):
    reg = pushed
    reg.promote("v1.0")
    snap = next(reg.cfg.snapshots.iterdir())
    os.chmod(snap, 0o755)
    (snap / "extra").write_text("not part of the version")
    with reg.store.write() as conn:
        conn.execute(text("UPDATE events SET actor = 'mallory' WHERE id = 2"))
    kinds = {p.kind for p in reg.verify().problems}
    assert {ProblemKind.SNAPSHOT, ProblemKind.AUDIT} <= kinds


# --- gc --------------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _stray_container(reg: Registry, fake: FakeEngine, revision: int) -> str:
    labels = labels_for(model="support-bot", env="staging", version="v1.0", revision=revision,
                        manifest_digest="sha256:" + "0" * 64, registry=reg.cfg.registry_id)
    spec = ContainerSpec(name=f"stray-{revision}", image=IMAGE, labels=labels, env={}, snapshot="/nowhere",
                         container_port=8080, host_port=1)
    return fake.create(spec)


def test_gc_dry_run_equals_the_real_run_and_keeps_what_releases_need(pushed, fake, model_dir):
    reg = pushed
    for version in ("v1.0", "v1.1", "v1.2"):
        reg.promote(version)
    strays = {r: _stray_container(reg, fake, r) for r in (90, 91)}  # left by crashed promotes, say
    push_versions(reg, model_dir, "v1.4", image=IMAGE)
    doomed = reg.delete("v1.3", force=True)
    deleted_prompt = _digests(reg, "v1.4")[1]  # v1.4 keeps its own prompt
    extra = reg.cfg.snapshots / ("0" * 64)   # a snapshot no version has
    extra.mkdir(parents=True)
    (extra / "f").write_text("x")
    stale = reg.blobs.tmp / f"ingest-{_dead_pid()}-abcdef"
    stale.write_bytes(b"half a blob")
    _age_store(reg)
    _age(stale)

    dry = reg.gc(dry_run=True)
    real = reg.gc()
    assert dry.dry_run and not real.dry_run and real.skipped == []
    assert dry.model_dump(exclude={"dry_run"}) == real.model_dump(exclude={"dry_run"})
    assert [b.digest for b in real.blobs] == doomed.blobs_released and doomed.blobs_released
    assert deleted_prompt not in doomed.blobs_released
    assert [t.path for t in real.temp_files] == [str(stale)] and not stale.exists()
    assert str(extra) in [s.path for s in real.snapshots] and not extra.exists()
    assert real.bytes_freed > 0 and all(not Path(b.path).exists() for b in real.blobs)

    # keep=1: one stopped container stays, the one a default rollback needs; the rest go, strays too
    assert [c.revision for c in real.containers] == [90, 91]  # r1 went at the promote that superseded it
    assert strays[90] not in fake.containers and strays[91] not in fake.containers
    kept = keep_containers(reg.history("staging"), keep=1)
    assert len(kept) == 2 and kept == set(fake.containers)  # deployed, rollback target
    assert reg.verify().ok
    assert len(_events(reg, "gc")) == 1
    back = reg.rollback()  # onto the kept container
    assert back.release.version == "v1.1"
    assert reg.gc().blobs == []  # idempotent


def test_gc_keeps_young_unreferenced_blobs(pushed):
    reg = pushed
    reg.delete("v1.3", force=True)
    result = reg.gc()
    assert result.blobs == [] and len(result.kept_fresh) == 1


def _gc_during_the_next_push(home: Path, monkeypatch) -> dict:
    """Make the next push run a gc (another Registry) after it stored its blobs and before it
    records them; ``["gc"]`` of what this returns is that gc's result."""
    seen = {}
    real = pushing.git_provenance

    def gc_meanwhile(resolved):
        with Registry.open(home) as other:
            seen["gc"] = other.gc()
        return real(resolved)

    monkeypatch.setattr(pushing, "git_provenance", gc_meanwhile)
    return seen


def test_gc_during_a_push_keeps_the_new_blob(reg, model_dir, monkeypatch, home):
    """A gc that runs after a push stored its blobs and before it records them."""
    model_dir.set_prompt("a brand new prompt\n")
    model_dir.write_manifest(version="v2.0", image=IMAGE)
    seen = _gc_during_the_next_push(home, monkeypatch)
    reg.push(model_dir.manifest)
    weights, prompt = _digests(reg, "v2.0")
    assert {weights, prompt} <= set(seen["gc"].kept_fresh) and seen["gc"].blobs == []
    assert reg.verify().ok


def test_gc_during_a_push_that_reuses_an_old_blob(reg, model_dir, monkeypatch, home):
    """The stat cache vouches for a blob gc then removes; the push stores it again."""
    _age(model_dir.root / "weights" / "model.safetensors")  # old enough for the stat cache to trust
    push_versions(reg, model_dir, "v1.0", image=IMAGE)
    weights, _ = _digests(reg, "v1.0")
    reg.delete("v1.0", force=True)
    _age_store(reg)
    seen = _gc_during_the_next_push(home, monkeypatch)
    push_versions(reg, model_dir, "v1.1", image=IMAGE)
    assert weights in [b.digest for b in seen["gc"].blobs]  # gc did remove it ...
    assert reg.blobs.has(weights)                            # ... and the push stored it again
    report = reg.verify()
    assert report.ok, report.problems


# --- backup and restore ------------------------------------------------------------------------


def test_backup_wipe_restore_verify_promote(pushed, fake, tmp_path, target, monkeypatch, model_dir):
    reg = pushed
    reg.promote("v1.0")
    dest = tmp_path / "backup"
    first = reg.backup(dest)
    assert first.problems == [] and first.blobs_total == 5
    push_versions(reg, model_dir, "v1.4", image=IMAGE)
    second = reg.backup(dest)
    assert second.blobs_copied == 1  # incremental: only v1.4's prompt is new
    assert len(_events(reg, "backup")) == 2
    versions = [v.model_dump() for v in reg.versions()]
    reg.close()
    shutil.rmtree(reg.home.path)  # the disk died

    path, url = target
    monkeypatch.setenv("REGISTRY_DB_URL", url)
    restored = Registry.restore(dest, path, engine_factory=lambda host: fake, checks=fake.checks)
    assert restored.ok and restored.verify.ok and restored.blobs_restored == 6
    with on_fake(path, fake) as again:
        assert [v.model_dump() for v in again.versions()] == versions
        assert [e.action for e in again.audit(limit=2)] == ["restore", "push"]  # the backup event came after
        assert again.promote("v1.4").release.status is ReleaseStatus.DEPLOYED


def test_backup_during_concurrent_pushes_restores_consistently(reg, home, tmp_path, target, monkeypatch):
    stop = threading.Event()
    pushed: list[str] = []

    def pusher():
        with Registry.open(home) as other:
            i = 0
            while not stop.is_set() and i < 40:
                md = helpers.ModelDir.create(tmp_path / f"m{i}", version=f"v0.{i}", prompt=f"p{i}\n")
                other.push(md.manifest)
                pushed.append(f"v0.{i}")
                i += 1

    thread = threading.Thread(target=pusher)
    thread.start()
    try:
        while len(pushed) < 3:
            time.sleep(0.05)
        reg.backup(tmp_path / "backup")
    finally:
        stop.set()
        thread.join()
    path, url = target
    monkeypatch.setenv("REGISTRY_DB_URL", url)
    restored = Registry.restore(tmp_path / "backup", path)
    assert restored.ok, (restored.problems, restored.verify.problems)
    with Registry.open(path) as again:
        got = [v.version for v in again.versions()]
    assert 3 <= len(got) <= len(pushed) and set(got) <= set(pushed)


def test_restore_refuses_a_home_in_use(reg, tmp_path):
    reg.backup(tmp_path / "backup")
    with pytest.raises(InvalidInput, match="not empty"):
        Registry.restore(tmp_path / "backup", reg.home.path)


# --- deprecate and delete ----------------------------------------------------------------------


def test_deprecate_hides_refuses_promote_keeps_diff_and_audit(pushed):
    reg = pushed
    done = reg.deprecate("v1.1", reason="answers refunds wrongly")
    assert done.changed and done.reason == "answers refunds wrongly"
    assert not reg.deprecate("v1.1").changed  # twice: nothing more recorded
    assert "v1.1" not in [v.version for v in reg.versions()]
    assert "v1.1" in [v.version for v in reg.versions(include_deprecated=True)]
    assert reg.count_versions() == 3 and reg.count_versions(include_deprecated=True) == 4
    assert [(d.model, d.version) for d in reg.deprecations()] == [("support-bot", "v1.1")]
    with pytest.raises(InvalidInput, match="deprecated"):
        reg.promote("v1.1")
    assert reg.history("staging") == []
    assert reg.diff("v1.0", "v1.1").model_dump()  # still diffable
    assert reg.show("v1.1").version == "v1.1"
    [event] = _events(reg, "deprecate")
    assert event.object == "support-bot@v1.1" and event.reason == "answers refunds wrongly"


def test_delete_needs_force_and_a_version_never_deployed(pushed):
    reg = pushed
    with pytest.raises(InvalidInput, match="--force"):
        reg.delete("v1.2")
    reg.promote("v1.0")
    with pytest.raises(Conflict, match="deployed"):
        reg.delete("v1.0", force=True)
    result = reg.delete("v1.2", force=True, reason="pushed by mistake")
    assert len(result.blobs_released) == 1  # its prompt; the weights are shared
    assert "v1.2" not in [v.version for v in reg.versions(include_deprecated=True)]
    assert [e.object for e in _events(reg, "delete")] == ["support-bot@v1.2"]
    assert reg.verify().ok
    _age_store(reg)
    assert [b.digest for b in reg.gc().blobs] == result.blobs_released
    assert reg.verify().ok


def test_a_version_deprecated_while_a_promote_prepares_is_not_deployed(pushed, monkeypatch):
    """The deprecation lands after promote's first look, before its revision: the check in the
    revision's own write refuses it, nothing is recorded and the lock is free (issue 21, item 6)."""
    from registry.deploy.promote import Promote

    reg = pushed
    real = Promote.make_ready

    def deprecated_meanwhile(self, model, version, **kw):
        ready = real(self, model, version, **kw)
        reg.deprecate(version, reason="found bad meanwhile")
        return ready

    monkeypatch.setattr(Promote, "make_ready", deprecated_meanwhile)
    with pytest.raises(InvalidInput, match="deprecated"):
        reg.promote("v1.1")
    assert reg.history("staging") == []
    assert [s.pending for s in reg.status()] == [None]
    monkeypatch.setattr(Promote, "make_ready", real)
    assert reg.promote("v1.0").release.version == "v1.0"
