"""diff and blame against real databases (SQLite and PostgreSQL), real safetensors, real git."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from registry.errors import NotFound
from registry.store.sql import schema as t
from tests import helpers
from tests.conftest import IMAGE, on_fake


def _push_changed_weights(reg, model_dir):
    """v1.0, then v1.1 where exactly known tensors change in bytes, shape, dtype, or come and go."""
    reg.push(model_dir.manifest)
    changed = helpers.tensors(
        layer0__bias=np.zeros(8, dtype=np.float32),                 # bytes
        embed__weight=np.zeros((16, 16), dtype=np.float32),         # shape
        head__weight=np.zeros((8, 4), dtype=np.float32),            # dtype (was F16)
        layer0__weight=None,                                        # removed
        layer1__weight=np.ones((8, 8), dtype=np.float32),           # added
    )
    helpers.write_safetensors(model_dir.root / "weights/model.safetensors", changed)
    reg.push(model_dir.manifest, version="v1.1")


def test_diff_names_exactly_the_changed_tensors(reg, model_dir):
    _push_changed_weights(reg, model_dir)
    d = reg.diff("v1.0", "support-bot@v1.1")
    assert d.differs
    (w,) = d.weights
    assert w.path == "weights/model.safetensors" and w.status == "changed"
    assert w.tensors.added == ["layer1.weight"] and w.tensors.removed == ["layer0.weight"]
    assert sorted(w.tensors.changed) == ["embed.weight", "head.weight", "layer0.bias"]
    assert w.tensors.kinds["layer0.bias"] == ["bytes"]
    assert "shape" in w.tensors.kinds["embed.weight"] and "dtype" not in w.tensors.kinds["embed.weight"]
    assert "dtype" in w.tensors.kinds["head.weight"] and "shape" not in w.tensors.kinds["head.weight"]
    assert w.tensors.unchanged == 0


def test_diff_reads_no_weight_bytes(reg, model_dir):
    _push_changed_weights(reg, model_dir)
    for v in ("v1.0", "v1.1"):
        reg.blobs.path(reg.show(v).weights[0].digest).unlink()  # gone: a read would fail
    assert reg.diff("v1.0", "v1.1").weights[0].tensors.added == ["layer1.weight"]


def test_prompt_diff_and_identical_versions(reg, model_dir):
    reg.push(model_dir.manifest)
    reg.push(model_dir.manifest, version="v1.1", message="same content")
    same = reg.diff("v1.0", "v1.1")
    assert not same.differs and all(not p.changed for p in same.prompts)
    assert same.weights[0].status == "unchanged" and same.changelog.new == "same content"
    model_dir.set_prompt("You are a helpful support assistant.\nAnswer in French.\n")
    reg.push(model_dir.manifest, version="v1.2")
    (p,) = reg.diff("v1.1", "v1.2").prompts
    assert p.changed and p.status == "changed" and (p.lines_added, p.lines_removed) == (1, 0)
    assert "+Answer in French." in p.unified.splitlines()


def test_diff_against_an_unpushed_manifest_stores_nothing(reg, model_dir):
    reg.push(model_dir.manifest)
    with reg.store.read() as conn:
        blobs_before = conn.execute(select(func.count()).select_from(t.blobs)).scalar_one()
    model_dir.set_prompt("A new prompt, not pushed.\n")
    helpers.write_safetensors(model_dir.root / "weights/model.safetensors",
                              helpers.tensors(layer0__bias=np.ones(8, dtype=np.float32)))
    model_dir.write_manifest(version="v2.0", runtime={"port": 8080, "env": {"MAX_TOKENS": "256"}})
    d = reg.diff("v1.0", str(model_dir.root))
    assert d.b.version == "v2.0" and d.differs
    assert d.weights[0].tensors.changed == ["layer0.bias"]
    assert d.prompts[0].changed and "+A new prompt, not pushed." in d.prompts[0].unified
    assert [(k.key, k.old, k.new) for k in d.runtime.env] == [("MAX_TOKENS", "64", "256")]
    assert d.runtime.secrets_removed == ["SUPPORT_API_TOKEN"]
    assert reg.count_versions() == 1
    with reg.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(t.blobs)).scalar_one() == blobs_before
    assert not reg.blobs.has(d.prompts[0].new_digest)


def test_diff_an_environment_against_an_unpushed_manifest(reg, model_dir, fake):
    """An environment name stands for the version it runs (here on the in-library fake engine)."""
    reg = on_fake(reg.home.path, fake)
    model_dir.write_manifest(image=IMAGE)
    reg.push(model_dir.manifest)
    reg.add_env("production", port=18080)
    reg.add_env("staging", port=18081)
    reg.promote("v1.0", env="production")
    model_dir.set_prompt("Edited locally.\n")
    d = reg.diff("production", str(model_dir.manifest))
    assert d.a.ref == "production" and d.a.version == "v1.0"
    assert [p.name for p in d.prompts if p.changed] == ["system"]
    assert d.weights[0].status == "unchanged"
    with pytest.raises(NotFound, match="nothing is deployed in staging"):
        reg.diff("staging", str(model_dir.manifest))


def test_diff_of_an_unknown_ref_says_so(reg, model_dir):
    reg.push(model_dir.manifest)
    with pytest.raises(NotFound, match="no version"):
        reg.diff("v1.0", "v9.9")


def _commit(repo, message: str, author: str) -> str:
    helpers.git(repo, "add", "-A")
    helpers.git(repo, "commit", "-qm", message, author=author)
    return helpers.git(repo, "rev-parse", "HEAD")


def test_blame_across_four_versions_and_three_actors(reg, git_repo, frozen_clock):
    md = helpers.ModelDir.create(git_repo / "bot", prompt="A\nB\nC\n")
    c1 = _commit(git_repo, "first", "Ada Lovelace <ada@example.org>")
    reg.push(md.manifest, actor="alice")
    frozen_clock.tick(3600)
    md.set_prompt("A\nB2\nC\n")
    c2 = _commit(git_repo, "second", "Grace Hopper <grace@example.org>")
    reg.push(md.manifest, version="v1.1", actor="bob")
    frozen_clock.tick(3600)
    md.set_prompt("A\nB2\nC\nD\n")  # pushed without committing: no commit to name
    reg.push(md.manifest, version="v1.2", actor="carol")
    frozen_clock.tick(3600)
    md.set_prompt("X\nA\nB2\nD\n")
    c4 = _commit(git_repo, "fourth", "Ada Lovelace <ada@example.org>")
    reg.push(md.manifest, version="v1.3", actor="alice")

    lines = reg.blame("system")
    got = [(x.line, x.text, x.version, x.actor, x.commit, x.author) for x in lines]
    assert got == [
        (1, "X", "v1.3", "alice", c4, "Ada Lovelace <ada@example.org>"),
        (2, "A", "v1.0", "alice", c1, "Ada Lovelace <ada@example.org>"),
        (3, "B2", "v1.1", "bob", c2, "Grace Hopper <grace@example.org>"),
        (4, "D", "v1.2", "carol", None, None),
    ]
    assert lines[3].dirty and lines[0].time.hour == 15 and lines[1].time.hour == 12
    old = reg.blame("system", at="v1.1")
    assert [(x.text, x.version) for x in old] == [("A", "v1.0"), ("B2", "v1.1"), ("C", "v1.0")]
    with pytest.raises(NotFound):
        reg.blame("no-such-prompt")


def test_log_and_changelog_carry_git_provenance(reg, git_repo):
    md = helpers.ModelDir.create(git_repo / "bot")
    commit = _commit(git_repo, "first", "Ada Lovelace <ada@example.org>")
    reg.push(md.manifest)
    (entry,) = reg.changelog("support-bot")
    assert entry.provenance.commit == commit and entry.provenance.branch == "main"


def test_a_folder_named_like_a_version_is_not_taken_for_a_manifest(reg, model_dir, tmp_path, monkeypatch):
    reg.push(model_dir.manifest)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v1.0").mkdir()
    assert reg.diff("v1.0", "v1.0").a.version == "v1.0"


def test_an_unresolvable_image_in_an_unpushed_manifest_is_a_warning(reg, model_dir):
    reg.push(model_dir.manifest)
    model_dir.write_manifest(image="cellar-test-no-such-image:1")
    d = reg.diff("v1.0", str(model_dir.manifest))
    assert d.image.changed and d.image.new.ref == "cellar-test-no-such-image:1" and d.image.new.digest is None
    assert any("cellar-test-no-such-image:1" in w for w in d.warnings)


def test_a_renamed_prompt_shows_its_text_on_both_sides(reg, model_dir):
    reg.push(model_dir.manifest)
    model_dir.write_manifest(version="v1.1", prompts={"greeting": "prompts/system"})
    reg.push(model_dir.manifest)
    got = {p.name: p for p in reg.diff("v1.0", "v1.1").prompts}
    assert got["system"].status == "removed" and "-You are a helpful" in got["system"].unified
    assert got["greeting"].status == "added" and "+You are a helpful" in got["greeting"].unified
