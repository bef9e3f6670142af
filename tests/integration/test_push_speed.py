"""Push at speed, against real SQLite/PostgreSQL and real files: shards stored side by side,
a copied folder re-pushed without writing, a damaged blob repaired, a bad shard refused."""

from __future__ import annotations

import hashlib
import shutil

import blake3
import pytest
from sqlalchemy import event

from registry.api import Registry
from registry.errors import ManifestError, VersionConflict
from registry.store import sql
from registry.store.files import blobs as blobs_mod
from registry.store.files import streams
from registry.versions import pushing
from tests import helpers


def small_chunks(monkeypatch, size: int = 1024) -> None:
    monkeypatch.setattr(blobs_mod, "CHUNK", size)
    monkeypatch.setattr(streams, "CHUNK", size)


@pytest.fixture
def sharded(model_dir, monkeypatch):
    """A model of four safetensors shards, all "large" (hashed side by side)."""
    monkeypatch.setattr(pushing, "PARALLEL_FROM", 0)
    (model_dir.root / "weights/model.safetensors").unlink()
    for i in range(4):
        helpers.write_safetensors(model_dir.root / f"weights/model-{i}-of-4.safetensors", helpers.tensors(seed=i))
    return model_dir


def test_shards_are_stored_side_by_side_with_their_tensor_digests(reg, sharded, monkeypatch):
    seen = []
    result = reg.push(sharded.manifest, progress=lambda name, n, total: seen.append((name, n)))
    assert result.files == 5 and result.bytes_ingested > 0
    weights = reg.show("v1.0").weights
    assert [w.path for w in weights] == [f"weights/model-{i}-of-4.safetensors" for i in range(4)]
    for i, w in enumerate(weights):
        data = (sharded.root / w.path).read_bytes()
        assert w.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert reg.blobs.path(w.digest).read_bytes() == data
        expected = {name: "blake3:" + blake3.blake3(arr.tobytes()).hexdigest()
                    for name, arr in helpers.tensors(seed=i).items()}
        assert {t.name: t.digest for t in w.tensors} == expected
    assert {name for name, _ in seen} >= {w.path for w in weights}


def test_a_copied_folder_is_re_pushed_without_writing_a_byte(reg, model_dir, tmp_path, monkeypatch):
    small_chunks(monkeypatch)  # the weights count as large: stamped, then hashed before writing
    reg.push(model_dir.manifest)
    blob = reg.blobs.path(reg.show("v1.0").weights[0].digest)
    before = blob.stat()
    copy = tmp_path / "copy"
    shutil.copytree(model_dir.root, copy)  # new inodes: the stat cache knows none of them
    again = reg.push(copy / "cellar.yaml", version="v1.1")
    assert again.created and again.bytes_ingested == 0
    after = blob.stat()
    assert (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns)
    assert list(reg.blobs.tmp.iterdir()) == []
    # Only SHA-256 is computed for bytes already stored: their tensors come from the index.
    assert [(t.name, t.digest) for t in reg.show("v1.1").weights[0].tensors] == \
        [(t.name, t.digest) for t in reg.show("v1.0").weights[0].tensors]


def test_a_copied_re_push_hashes_no_tensor_again(reg, model_dir, tmp_path, monkeypatch):
    small_chunks(monkeypatch)
    reg.push(model_dir.manifest)
    copy = tmp_path / "copy"
    shutil.copytree(model_dir.root, copy)
    fed = []
    real = streams._TensorHasher.feed
    monkeypatch.setattr(streams._TensorHasher, "feed", lambda self, *a: fed.append(1) or real(self, *a))
    reg.push(copy / "cellar.yaml", version="v1.1")
    assert fed == []  # issue 21: a re-push of copied weights is one SHA-256 pass, nothing more


def test_a_damaged_blob_is_repaired_by_pushing_a_copy(reg, model_dir, tmp_path, monkeypatch):
    small_chunks(monkeypatch)
    reg.push(model_dir.manifest)
    digest = reg.show("v1.0").weights[0].digest
    blob = reg.blobs.path(digest)
    good = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(good[:-4] + b"evil")  # same size: only the bytes tell
    blob.chmod(0o444)
    copy = tmp_path / "copy"
    shutil.copytree(model_dir.root, copy)
    reg.push(copy / "cellar.yaml", version="v1.1")
    assert blob.read_bytes() == good
    reg.blobs.check(digest)


def test_a_malformed_shard_is_refused_naming_the_file(reg, sharded):
    bad = sharded.root / "weights/model-2-of-4.safetensors"
    bad.write_bytes(bad.read_bytes() + b"trailing")
    with pytest.raises(ManifestError, match=r"model-2-of-4\.safetensors is not a valid safetensors file "
                                            r"\(8 bytes after the last tensor"):
        reg.push(sharded.manifest)
    assert not reg.versions()


@pytest.fixture
def pg_reg(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("REGISTRY_DB_URL", pg_url)
    Registry.init(tmp_path / "home")[0].close()
    with Registry.open(tmp_path / "home") as reg:
        yield reg


def test_a_push_makes_two_round_trips_on_postgresql(pg_reg, model_dir, monkeypatch):
    """What to know with BEGIN and the lock, then every row with the COMMIT: a round trip
    costs more there than running a small statement (bench/api_push.py --parity)."""
    pg_reg.push(model_dir.manifest)  # the first asks the server for its user, once
    trips = []
    flush = sql._flush
    monkeypatch.setattr(sql, "_flush", lambda conn, **kw: trips.append("batch") or flush(conn, **kw))
    event.listen(pg_reg.store.engine, "before_cursor_execute", lambda *args: trips.append(args[2]))
    model_dir.set_prompt("A new prompt.\n")
    assert pg_reg.push(model_dir.manifest, version="v1.1").created
    assert trips == ["batch", "batch"]
    model_dir.set_prompt("Another prompt.\n")
    with pytest.raises(VersionConflict, match="immutable"):  # refused: a third trip reads what is recorded
        pg_reg.push(model_dir.manifest, version="v1.1")
    assert [e.action for e in pg_reg.audit()].count("push") == 2


def test_no_statement_of_a_push_scans_a_whole_table_on_postgresql(pg_reg, model_dir, monkeypatch):
    """Push costs what it did at 100,000 versions because every statement it sends can go
    through an index: with sequential scans disabled, the planner picks none (it would only
    where no index serves; tables this small would otherwise be scanned anyway)."""
    pg_reg.push(model_dir.manifest)
    sent = []
    flush = sql._flush
    monkeypatch.setattr(sql, "_flush", lambda conn, *, then=(): sent.extend([*conn.info.get(sql._QUEUE, ()), *then])
                        or flush(conn, then=then))
    model_dir.set_prompt("A new prompt.\n")
    pg_reg.push(model_dir.manifest, version="v1.1")
    statements = [q for q in sent if q.params is not None]
    assert len(statements) >= 8
    raw = pg_reg.store.engine.raw_connection()
    try:
        with raw.driver_connection.transaction(force_rollback=True), raw.driver_connection.cursor() as cur:
            cur.execute("SET LOCAL enable_seqscan = off")
            for q in statements:
                cur.execute(f"EXPLAIN {q.sql}", q.params[0] if isinstance(q.params, list) else q.params)
                plan = "\n".join(row[0] for row in cur.fetchall())
                assert "Seq Scan" not in plan, f"{q.sql}\n{plan}"
    finally:
        raw.close()
