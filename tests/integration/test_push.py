"""Push, list, show, log against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import blake3
import numpy as np
import pytest
from sqlalchemy import func, select

from registry.errors import CorruptBlob, InvalidInput, NotFound, VersionConflict
from registry.store.sql import schema as t
from registry.versions import pushing
from tests import helpers


def test_push_records_version_blobs_and_tensors(reg, model_dir):
    result = reg.push(model_dir.manifest)
    assert result.created and result.files == 2
    info = reg.show("support-bot@v1.0")
    assert info.message == "test version" and info.actor == "tester"
    (weight,) = info.weights
    data = (model_dir.root / "weights/model.safetensors").read_bytes()
    assert weight.path == "weights/model.safetensors"
    assert weight.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert weight.size == len(data)
    names = [tensor.name for tensor in weight.tensors]
    assert sorted(names) == sorted(helpers.tensors())
    bias = next(x for x in weight.tensors if x.name == "layer0.bias")
    assert bias.dtype == "F32" and bias.shape == [8]
    # tensors: BLAKE3, computed in the same read as the blob's SHA-256 (registry.formats.tensor_digests)
    assert bias.digest == "blake3:" + blake3.blake3(helpers.tensors()["layer0.bias"].tobytes()).hexdigest()
    blob = reg.blobs.path(weight.digest)
    assert blob.read_bytes() == data
    assert not blob.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_identical_push_is_a_noop_and_other_content_is_refused(reg, model_dir):
    first = reg.push(model_dir.manifest)
    again = reg.push(model_dir.manifest)
    assert not again.created and again.manifest_digest == first.manifest_digest
    model_dir.set_prompt("Something else entirely.\n")
    with pytest.raises(VersionConflict, match="immutable"):
        reg.push(model_dir.manifest)
    assert reg.count_versions() == 1


@pytest.mark.parametrize("same", [True, False], ids=["same-content", "other-content"])
def test_a_version_recorded_while_this_push_staged_is_compared_not_duplicated(reg, model_dir, monkeypatch, same):
    """Another writer records the same version between push's first look and its write
    transaction: the insert refuses the duplicate itself, and push answers as for a version that
    existed (same content: not created; other content: VersionConflict), recording nothing."""
    racer = model_dir if same else helpers.ModelDir.create(model_dir.root.parent / "other", prompt="Other.\n")
    real_stage = pushing.stage

    def stage_while_another_pushes(cfg, resolved, *, write, progress=None):
        monkeypatch.setattr(pushing, "stage", real_stage)
        reg.push(racer.manifest)  # the other writer, between the look and the write
        return real_stage(cfg, resolved, write=write, progress=progress)

    monkeypatch.setattr(pushing, "stage", stage_while_another_pushes)
    if same:
        assert reg.push(model_dir.manifest).created is False
    else:
        with pytest.raises(VersionConflict, match="immutable"):
            reg.push(model_dir.manifest)
    assert [e.action for e in reg.audit()].count("push") == 1  # the racer's alone
    assert [v.version for v in reg.versions("support-bot")] == ["v1.0"]
    assert reg.show("support-bot@v1.0").message == "test version"
    assert (reg.show("support-bot@v1.0").prompts[0].digest
            == "sha256:" + hashlib.sha256((racer.root / "prompts/system").read_bytes()).hexdigest())


def _blob_files(reg) -> set[str]:
    return {p.name for p in (reg.blobs.root / "sha256").rglob("*") if p.is_file()}


def test_a_refused_push_leaves_no_blob_behind_and_a_repeated_one_repairs_a_lost_blob(reg, model_dir, tmp_path):
    """Whether the version exists is learnt under the write lock, after storing: the blobs a
    refused push wrote are removed then, unless a version records them."""
    reg.push(model_dir.manifest)
    before = _blob_files(reg)
    model_dir.set_prompt("Something else entirely.\n")
    helpers.write_safetensors(model_dir.root / "weights/model.safetensors", helpers.tensors(seed=7))
    other = helpers.ModelDir.create(tmp_path / "other", model="classifier")
    other.set_prompt("Something else entirely.\n")  # the same bytes, recorded by another model
    reg.push(other.manifest)
    recorded = _blob_files(reg)
    with pytest.raises(VersionConflict, match="immutable"):
        reg.push(model_dir.manifest)
    assert _blob_files(reg) == recorded  # the new weights are gone again; the shared prompt stays
    assert recorded - before  # (the other model did add blobs)

    lost = reg.show("classifier@v1.0").prompts[0].digest
    reg.blobs.path(lost).unlink()
    again = reg.push(other.manifest)
    assert not again.created and reg.blobs.has(lost)


def test_equal_content_has_equal_digest_across_versions(reg, model_dir):
    a = reg.push(model_dir.manifest)
    b = reg.push(model_dir.manifest, version="v1.1", message="same bytes, new name")
    assert a.manifest_digest == b.manifest_digest
    assert b.bytes_ingested == 0


def test_list_and_log_newest_first(reg, model_dir, frozen_clock):
    for i, version in enumerate(["v1.0", "v1.1", "v1.2"]):
        model_dir.set_prompt(f"prompt {i}\n")
        reg.push(model_dir.manifest, version=version, message=f"change {i}")
        frozen_clock.tick(60)
    rows = reg.versions("support-bot")
    assert [r.version for r in rows] == ["v1.2", "v1.1", "v1.0"]
    assert rows[0].message == "change 2"
    assert [r.version for r in reg.versions(limit=2)] == ["v1.2", "v1.1"]
    with pytest.raises(NotFound):
        reg.versions("no-such-model")


def test_ref_without_model_needs_a_unique_model(reg, model_dir, tmp_path):
    reg.push(model_dir.manifest)
    assert reg.show("v1.0").model == "support-bot"
    other = helpers.ModelDir.create(tmp_path / "other", model="classifier")
    reg.push(other.manifest)
    with pytest.raises(InvalidInput, match="which model"):
        reg.show("v1.0")
    assert reg.show("classifier@v1.0").model == "classifier"


def test_bare_version_resolves_when_one_model_has_it(reg, model_dir, tmp_path, monkeypatch):
    reg.push(model_dir.manifest)
    other = helpers.ModelDir.create(tmp_path / "other", model="classifier", version="v3")
    reg.push(other.manifest)
    reg.push(other.manifest, version="v1.0")
    monkeypatch.chdir(tmp_path)
    assert reg.show("v3").model == "classifier"
    with pytest.raises(NotFound, match=r"^no version v9 in any model: see `registry list`$"):
        reg.show("v9")
    with pytest.raises(InvalidInput, match=r"models having v1.0: classifier, support-bot\)"):
        reg.show("v1.0")
    monkeypatch.chdir(other.root)  # ./cellar.yaml names classifier: the tie-breaker
    assert reg.show("v1.0").model == "classifier"


def test_an_unknown_model_is_named_as_such(reg, model_dir):
    reg.push(model_dir.manifest)
    with pytest.raises(NotFound, match=r"^no model named 'supprt-bot': see `registry list`$"):
        reg.show("supprt-bot@v1.0")
    with pytest.raises(NotFound, match="see `registry list support-bot`"):
        reg.show("support-bot@v9")


def test_push_without_manifest(reg, model_dir, monkeypatch):
    from registry.versions import manifest

    monkeypatch.chdir(model_dir.root)
    resolved = manifest.from_flags(model="flags", version="v2", message="from flags",
                                   weights=["weights"], prompts=["system=prompts/system"],
                                   image=None, root=model_dir.root)
    reg.push(resolved)
    info = reg.show("flags@v2")
    assert [p.name for p in info.prompts] == ["system"] and info.message == "from flags"


def test_push_event_is_recorded_in_the_same_transaction(reg, model_dir):
    reg.push(model_dir.manifest)
    with reg.store.read() as conn:
        actions = list(conn.execute(select(t.events.c.action).order_by(t.events.c.id)).scalars())
    assert actions == ["init", "push"]


def test_changed_tensor_changes_only_its_digest(reg, model_dir):
    reg.push(model_dir.manifest)
    changed = helpers.tensors(layer0__bias=np.zeros(8, dtype=np.float32))
    helpers.write_safetensors(model_dir.root / "weights/model.safetensors", changed)
    reg.push(model_dir.manifest, version="v1.1")
    old = {x.name: x.digest for x in reg.show("v1.0").weights[0].tensors}
    new = {x.name: x.digest for x in reg.show("v1.1").weights[0].tensors}
    assert [n for n in old if old[n] != new[n]] == ["layer0.bias"]


def test_provenance_from_a_git_work_tree(reg, git_repo):
    md = helpers.ModelDir.create(git_repo / "bot")
    helpers.git(git_repo, "add", ".")
    helpers.git(git_repo, "commit", "-qm", "first", author="Grace Hopper <grace@example.org>")
    helpers.git(git_repo, "remote", "add", "origin", "https://user:hunter2@git.example.org/bot.git")
    reg.push(md.manifest)
    pv = reg.show("v1.0").provenance
    assert pv.branch == "main" and not pv.dirty and len(pv.commit) == 40
    assert pv.remote == "https://git.example.org/bot.git"  # credentials stripped
    assert pv.files["system"].author == "Grace Hopper <grace@example.org>"
    md.set_prompt("edited, not committed\n")
    reg.push(md.manifest, version="v1.1")
    pv = reg.show("v1.1").provenance
    assert pv.dirty and pv.files["system"].dirty


def test_a_push_from_a_dirty_work_tree_warns(reg, git_repo):
    md = helpers.ModelDir.create(git_repo / "bot")
    helpers.git(git_repo, "add", ".")
    helpers.git(git_repo, "commit", "-qm", "first")
    assert reg.push(md.manifest).warnings == []
    md.set_prompt("edited, not committed\n")
    result = reg.push(md.manifest, version="v1.1")
    assert result.warnings == ["pushed from a git work tree with uncommitted changes (prompts/system)"]
    md.set_prompt("edited, not committed\n")
    (git_repo / "notes.txt").write_text("untracked, outside the version\n")
    helpers.git(git_repo, "add", "bot")
    helpers.git(git_repo, "commit", "-qm", "second")
    assert reg.push(md.manifest, version="v1.2").warnings == [
        "pushed from a git work tree with uncommitted changes"]


def test_an_identical_re_push_with_another_message_keeps_the_recorded_one(reg, model_dir):
    reg.push(model_dir.manifest, message="first words")
    again = reg.push(model_dir.manifest, message="second thoughts")
    assert not again.created and again.warnings == [
        "support-bot@v1.0 keeps its recorded message 'first words', not 'second thoughts': versions are immutable"]
    assert reg.show("v1.0").message == "first words"
    assert reg.push(model_dir.manifest, message="first words").warnings == []


def test_outside_git_there_is_no_provenance(reg, model_dir):
    reg.push(model_dir.manifest)
    assert reg.show("v1.0").provenance is None


def test_unchanged_weights_are_not_read_again(reg, model_dir, monkeypatch):
    weights = model_dir.root / "weights/model.safetensors"
    reg.push(model_dir.manifest)
    # Age the file past the racy window, as if it had been written long ago.
    old = weights.stat().st_mtime_ns - 10_000_000_000
    os.utime(weights, ns=(old, old))
    reg.push(model_dir.manifest, version="v1.1")  # records a trusted stat entry
    read = []
    real = pushing._store_file

    def spy(ctx, f, **kw):
        if ctx.stat_cache.lookup(f.path) is None:
            read.append(f.name)
        return real(ctx, f, **kw)

    monkeypatch.setattr(pushing, "_store_file", spy)
    model_dir.set_prompt("only the prompt changed\n")
    reg.push(model_dir.manifest, version="v1.2")
    assert read == ["system"]
    assert reg.show("v1.2").weights[0].tensors  # tensors still known


def test_a_re_push_repairs_a_truncated_blob(reg, model_dir):
    weights = model_dir.root / "weights/model.safetensors"
    old = weights.stat().st_mtime_ns - 10_000_000_000
    os.utime(weights, ns=(old, old))  # trusted by the stat cache from the first push on
    reg.push(model_dir.manifest)
    blob = reg.blobs.path(reg.show("v1.0").weights[0].digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(weights.read_bytes()[:10])
    again = reg.push(model_dir.manifest, version="v1.1")
    assert again.bytes_ingested == weights.stat().st_size
    assert blob.read_bytes() == weights.read_bytes()


def test_stat_cache_distrusts_a_file_changed_in_place(reg, model_dir):
    weights = model_dir.root / "weights/model.safetensors"
    reg.push(model_dir.manifest)
    changed = helpers.tensors(head__weight=np.zeros((8, 4), dtype=np.float16))
    st = weights.stat()
    helpers.write_safetensors(weights, changed)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only ctime moved
    reg.push(model_dir.manifest, version="v1.1")
    assert reg.show("v1.1").weights[0].digest != reg.show("v1.0").weights[0].digest


def test_show_json_has_the_documented_keys(reg, model_dir):
    reg.push(model_dir.manifest)
    data = json.loads(reg.show("v1.0").model_dump_json())
    for key in ("model", "version", "manifest_digest", "created_at", "actor", "message",
                "image", "weights", "prompts", "provenance"):
        assert key in data
    assert set(data["image"]) == {"ref", "digest"}
    assert set(data["weights"][0]) == {"path", "digest", "size", "tensors"}
    assert set(data["weights"][0]["tensors"][0]) == {"name", "dtype", "shape", "digest"}


def test_secret_values_never_reach_the_database(reg, model_dir, monkeypatch):
    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-7f3a91")
    reg.push(model_dir.manifest)
    with reg.store.read() as conn:
        dump = [str(tuple(r)) for table in t.metadata.sorted_tables for r in conn.execute(select(table))]
    assert not any("canary-7f3a91" in row for row in dump)
    with reg.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(t.versions)).scalar_one() == 1


def _flip_first_byte(path) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))


@pytest.mark.parametrize("size", [4096, (8 << 20) + 4096])  # a small blob, and one proved by its stamp
def test_a_re_push_replaces_a_blob_damaged_in_place_and_says_so(reg, model_dir, size):
    """Same size, same stat entry for the source: only the blob changed. The next push of the
    unchanged file must not reuse it (issue 21, item 4)."""
    weights = model_dir.root / "weights" / "extra.bin"
    weights.write_bytes(os.urandom(size))
    old = weights.stat().st_mtime_ns - 10_000_000_000
    os.utime(weights, ns=(old, old))  # trusted by the stat cache from the first push on
    reg.push(model_dir.manifest)
    digest = next(w.digest for w in reg.show("v1.0").weights if w.path.endswith("extra.bin"))
    _flip_first_byte(reg.blobs.path(digest))
    with pytest.raises(CorruptBlob):
        reg.blobs.check(digest)
    result = reg.push(model_dir.manifest, version="v1.1")
    assert any("replaced the stored blob " + digest in w for w in result.warnings), result.warnings
    reg.blobs.check(digest)  # intact again
