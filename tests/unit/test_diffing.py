"""Pure diffs, blame attribution and audit parsing, on hand-built inputs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from registry.errors import InvalidInput, NotFound
from registry.models import ImageRef, PromptFile, Runtime, Tensor, VersionInfo, WeightFile
from registry.trust import audit
from registry.versions import blame, diffing

AT = datetime(2026, 11, 1, tzinfo=UTC)


def tensor(name: str, dtype: str = "F32", shape=(4,), digest: str | None = None) -> Tensor:
    return Tensor(name=name, dtype=dtype, shape=list(shape), digest=digest or f"sha256:{name}")


def version(*, digest: str = "sha256:a", weights=(), prompts=(), runtime=None, image=None, message="m",
            probes=()) -> VersionInfo:
    return VersionInfo(model="bot", version="v1", manifest_digest=digest, created_at=AT, actor="t",
                       message=message, image=image or ImageRef(), weights=list(weights),
                       prompts=list(prompts), runtime=runtime or Runtime(), probes=list(probes))


def test_tensor_changes_name_exactly_what_changed():
    old = [tensor("same"), tensor("bytes"), tensor("shape"), tensor("dtype"), tensor("gone")]
    new = [tensor("same"), tensor("bytes", digest="sha256:other"),
           tensor("shape", shape=(2, 2), digest="sha256:shape"), tensor("dtype", dtype="F16"), tensor("new")]
    got = diffing.tensor_changes(old, new)
    assert got.added == ["new"] and got.removed == ["gone"]
    assert sorted(got.changed) == ["bytes", "dtype", "shape"]
    assert got.kinds == {"bytes": ["bytes"], "shape": ["shape"], "dtype": ["dtype"]}
    assert got.unchanged == 1


def test_weight_files_added_removed_changed_unchanged():
    a = [WeightFile(path="keep.bin", digest="sha256:1", size=1), WeightFile(path="old.bin", digest="sha256:2", size=2),
         WeightFile(path="m.safetensors", digest="sha256:3", size=3, tensors=[tensor("x")])]
    b = [WeightFile(path="keep.bin", digest="sha256:1", size=1), WeightFile(path="new.bin", digest="sha256:4", size=4),
         WeightFile(path="m.safetensors", digest="sha256:5", size=5, tensors=[tensor("x", digest="sha256:y")])]
    got = {w.path: w for w in diffing.weight_diffs(a, b)}
    assert {p: w.status for p, w in got.items()} == {
        "keep.bin": "unchanged", "old.bin": "removed", "new.bin": "added", "m.safetensors": "changed"}
    assert got["m.safetensors"].tensors.changed == ["x"]
    assert (got["m.safetensors"].old_size, got["m.safetensors"].new_size) == (3, 5)
    assert got["keep.bin"].tensors is None


def test_runtime_diff_masks_secret_looking_values_and_names_secrets_only():
    old = {"port": 8080, "env": {"A": "1", "DB_PASSWORD": "canary-old"}, "secrets": ["X_TOKEN"]}
    new = {"port": 9090, "env": {"A": "2", "B": "3", "DB_PASSWORD": "canary-new"}, "secrets": ["Y_TOKEN"]}
    got = diffing.runtime_diff(old, new)
    assert "canary" not in got.model_dump_json()
    env = {k.key: k for k in got.env}
    assert (env["A"].old, env["A"].new) == ("1", "2") and env["B"].status == "added"
    assert (env["DB_PASSWORD"].status, env["DB_PASSWORD"].old, env["DB_PASSWORD"].new) == ("changed", "***", "***")
    assert got.secrets_added == ["Y_TOKEN"] and got.secrets_removed == ["X_TOKEN"]
    assert [(s.field, s.old, s.new) for s in got.settings] == [("port", 8080, 9090)]


def test_prompt_diff_is_unified_and_counts_lines():
    a = version(prompts=[PromptFile(name="system", digest="sha256:p1", size=1),
                         PromptFile(name="same", digest="sha256:s", size=1)])
    b = version(digest="sha256:b", prompts=[PromptFile(name="system", digest="sha256:p2", size=1),
                                            PromptFile(name="same", digest="sha256:s", size=1)])
    texts = {"sha256:p1": "Hello.\nBe kind.\n", "sha256:p2": "Hello.\nBe brief.\nBe kind.\n"}
    d = diffing.diff(a, b, texts=texts, refs=("v1", "v2"))
    system, same = (next(p for p in d.prompts if p.name == n) for n in ("system", "same"))
    assert system.changed and (system.lines_added, system.lines_removed) == (1, 0)
    assert "+Be brief.\n" in system.unified and system.unified.startswith("--- a/system\n+++ b/system\n")
    assert not same.changed and same.unified == ""
    assert d.differs


def test_equal_digests_do_not_differ_even_with_other_messages():
    d = diffing.diff(version(message="one"), version(message="two"), texts={}, refs=("a", "b"))
    assert not d.differs and d.changelog.old == "one" and d.changelog.new == "two"


def step(version: str, digest: str | None, actor: str = "ann") -> blame.PromptRevision:
    return blame.PromptRevision(version=version, actor=actor, time=AT, digest=digest, origin=None)


def test_blame_keeps_the_origin_of_surviving_lines():
    texts = {"d1": "a\nb\nc\n", "d2": "a\nB\nc\n", "d3": "x\na\nB\n"}
    walk = [step("v1", "d1"), step("v2", "d2", "bob"), step("v2.1", "d2"), step("v3", "d3", "cy")]
    got = [(x.text, x.version, x.actor) for x in blame.attribute(walk, texts, prompt="p")]
    assert got == [("x", "v3", "cy"), ("a", "v1", "ann"), ("B", "v2", "bob")]


def test_blame_restarts_after_a_prompt_was_removed():
    walk = [step("v1", "d1"), step("v2", None), step("v3", "d1")]
    assert [x.version for x in blame.attribute(walk, {"d1": "a\n"}, prompt="p")] == ["v3"]
    with pytest.raises(NotFound):
        blame.attribute([step("v1", "d1"), step("v2", None)], {"d1": "a\n"}, prompt="p")


def test_since_accepts_ages_and_iso_dates():
    now = datetime(2026, 11, 8, 12, tzinfo=UTC)
    assert audit.parse_since("7d", now=now) == datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert audit.parse_since("12h", now=now) == datetime(2026, 11, 8, 0, tzinfo=UTC)
    assert audit.parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert audit.parse_since("2026-11-01T10:00:00Z") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="7d"):
        audit.parse_since("last tuesday")


def test_checkpoint_parses_text_json_and_files(tmp_path):
    cp = audit.Checkpoint(head="a" * 64, count=12)
    assert audit.parse_checkpoint(str(cp)) == cp
    assert audit.parse_checkpoint(cp.model_dump_json()) == cp
    (tmp_path / "cp").write_text(f"{cp}\n")
    assert audit.parse_checkpoint(str(tmp_path / "cp")) == cp
    with pytest.raises(InvalidInput, match="HASH:COUNT"):
        audit.parse_checkpoint("abc:12")


# --- bounded line alignment (issue 28) --------------------------------------------------------


def _apply(a: list[str], b: list[str], ops) -> list[str]:
    out = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
            out += a[i1:i2]
        else:
            out += b[j1:j2]
    return out


def _edited(rng, lines: list[str], edits: int) -> list[str]:
    out = list(lines)
    for _ in range(edits):
        k = rng.randrange(len(out) + 1)
        choice = rng.random()
        if choice < 0.4:
            out.insert(k, rng.choice("abcxyz"))
        elif out and choice < 0.8:
            del out[min(k, len(out) - 1)]
        elif out:
            out[min(k, len(out) - 1)] = "q"
    return out


@pytest.mark.parametrize("cells", [0, 50, diffing.ALIGN_CELLS])
def test_opcodes_always_turn_a_into_b_whatever_the_budget(cells):
    import random

    rng = random.Random(28)
    for _ in range(300):
        a = [rng.choice("abcdefg ") for _ in range(rng.randint(0, 40))]
        b = _edited(rng, a, rng.randint(0, 8))
        assert _apply(a, b, diffing.opcodes(a, b, cells=cells)) == b


def test_difflib_is_never_asked_for_more_than_the_budget(monkeypatch):
    import difflib
    import random

    asked = []

    class Counting(difflib.SequenceMatcher):
        def __init__(self, isjunk, a, b, **kw):
            asked.append(len(a) * len(b))
            super().__init__(isjunk, a, b, **kw)

    monkeypatch.setattr(diffing.difflib, "SequenceMatcher", Counting)
    rng = random.Random(1)
    unrelated = tuple([f"{rng.getrandbits(64):x}" for _ in range(30_000)] for _ in range(2))
    repetitive = tuple([rng.choice(["", "x", "{{" + side + "}}"]) for _ in range(30_000)] for side in "ab")
    base = [f"line {i}" for i in range(30_000)]
    edited = _edited(rng, base, 50)
    for a, b in (unrelated, repetitive, (base, edited)):
        asked.clear()
        ops = diffing.opcodes(a, b)
        assert sum(asked) <= diffing.ALIGN_CELLS and _apply(a, b, ops) == b


def test_a_large_diff_is_a_summary_and_a_small_edit_of_a_large_text_is_not():
    old = "".join(f"line {i}\n" for i in range(30_000))
    new = old.replace("line 15000\n", "line fifteen thousand\n")
    text, added, removed = diffing.unified(old, new, old_label="a/p", new_label="b/p")
    assert (added, removed) == (1, 1) and "-line 15000\n+line fifteen thousand\n" in text
    text, added, removed = diffing.unified(old, old.replace("line", "LINE"), old_label="a/p", new_label="b/p")
    assert text == "" and added == removed == 30_000


def test_blame_of_many_versions_of_a_large_prompt_stays_within_the_budget(monkeypatch):
    import difflib

    asked = []

    class Counting(difflib.SequenceMatcher):
        def __init__(self, isjunk, a, b, **kw):
            asked.append(len(a) * len(b))
            super().__init__(isjunk, a, b, **kw)

    monkeypatch.setattr(diffing.difflib, "SequenceMatcher", Counting)
    texts, walk = {}, []
    for n in range(6):
        text = "".join(f"{(i * 7919 + n * 104729) % 100_003}\n" for i in range(5_000))
        texts[f"sha256:{n}"] = text
        walk.append(step(f"v{n}", f"sha256:{n}"))
    lines = blame.attribute(walk, texts, prompt="p")
    assert len(lines) == 5_000 and sum(asked) <= diffing.ALIGN_CELLS
