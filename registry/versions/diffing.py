"""Pure diffs between two versions: image, runtime config, prompts, weights and tensors, probes,
changelog and provenance.

Input: two ``VersionInfo`` objects (a pushed version, or a manifest hashed but not stored) and
the prompt texts by digest; output: a ``Diff`` model, whose JSON is what ``registry diff --json``
prints. Tensors are compared by their recorded digests, so no weight byte is read. Values of
environment keys that look secret are masked (``***``); secrets are names only.

Prompt texts are aligned line by line within a fixed budget (``align``): common head and tail
first, then difflib on gaps small enough, anchored on lines unique to both sides (patience
diff) where they are not. Any two prompts, 1 MiB each, are compared in well under a second;
a diff too long to show (``SHOWN_LINES``, ``SHOWN_BYTES``) is a summary, ``too_large``.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from registry.models import (
    ImageRef,
    Provenance,
    Tensor,
    VersionInfo,
    WeightFile,
    is_secret_key,
)

MASK = "***"
ALIGN_CELLS = 4_000_000  # old x new lines that difflib may compare, over all gaps of one alignment
SHOWN_LINES = 5_000  # a unified diff longer than this is too large to show line by line
SHOWN_BYTES = 512 << 10
CONTEXT = 3


class ChangeKind(StrEnum):
    added = "added"
    removed = "removed"
    changed = "changed"
    unchanged = "unchanged"


class Side(BaseModel):
    """One end of a diff: what the user named, and what it resolved to."""

    ref: str
    model: str
    version: str
    manifest_digest: str


class ValueChange(BaseModel):
    field: str
    old: Any = None
    new: Any = None


class ImageDiff(BaseModel):
    changed: bool
    old: ImageRef
    new: ImageRef


class KeyChange(BaseModel):
    key: str
    status: ChangeKind
    old: str | None = None
    new: str | None = None


class RuntimeDiff(BaseModel):
    changed: bool
    env: list[KeyChange] = Field(default_factory=list)
    secrets_added: list[str] = Field(default_factory=list)
    secrets_removed: list[str] = Field(default_factory=list)
    settings: list[ValueChange] = Field(default_factory=list)


class PromptDiff(BaseModel):
    name: str
    status: ChangeKind
    changed: bool
    old_digest: str | None = None
    new_digest: str | None = None
    lines_added: int = 0
    lines_removed: int = 0
    unified: str = ""  # empty when too_large
    too_large: bool = False  # the line-by-line diff is over SHOWN_LINES or SHOWN_BYTES: counts only
    old_lines: int = 0
    new_lines: int = 0


class TensorChanges(BaseModel):
    """Tensor names per change; ``kinds`` says how each changed tensor changed (dtype, shape, bytes)."""

    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    kinds: dict[str, list[str]] = Field(default_factory=dict)
    unchanged: int = 0


class WeightDiff(BaseModel):
    path: str
    status: ChangeKind
    old_size: int | None = None
    new_size: int | None = None
    old_digest: str | None = None
    new_digest: str | None = None
    tensors: TensorChanges | None = None


class ProbeDiff(BaseModel):
    name: str
    status: ChangeKind
    fields: list[str] = Field(default_factory=list)


class ProvenanceDiff(BaseModel):
    changed: bool
    old: Provenance | None = None
    new: Provenance | None = None


class Diff(BaseModel):
    """What changed from ``a`` to ``b``. ``differs`` is about content (the manifest digest);
    changelog and provenance are shown but do not count, like commit metadata in ``git diff``."""

    a: Side
    b: Side
    differs: bool
    image: ImageDiff
    runtime: RuntimeDiff
    prompts: list[PromptDiff]
    weights: list[WeightDiff]
    probes: list[ProbeDiff]
    changelog: ValueChange
    provenance: ProvenanceDiff
    warnings: list[str] = Field(default_factory=list)  # e.g. an unpushed manifest's image not resolvable


def side(info: VersionInfo, ref: str) -> Side:
    return Side(ref=ref, model=info.model, version=info.version, manifest_digest=info.manifest_digest)


def diff(a: VersionInfo, b: VersionInfo, *, texts: Mapping[str, str], refs: tuple[str, str]) -> Diff:
    """Compare two versions; ``texts`` maps a prompt digest to its text (for changed prompts)."""
    return Diff(
        a=side(a, refs[0]), b=side(b, refs[1]),
        differs=a.manifest_digest != b.manifest_digest,
        image=ImageDiff(changed=a.image != b.image, old=a.image, new=b.image),
        runtime=runtime_diff(a.runtime.model_dump(mode="json", by_alias=True),
                             b.runtime.model_dump(mode="json", by_alias=True)),
        prompts=prompt_diffs(a, b, texts=texts),
        weights=weight_diffs(a.weights, b.weights),
        probes=probe_diffs([p.model_dump(mode="json", by_alias=True) for p in a.probes],
                           [p.model_dump(mode="json", by_alias=True) for p in b.probes]),
        changelog=ValueChange(field="message", old=a.message, new=b.message),
        provenance=ProvenanceDiff(changed=a.provenance != b.provenance, old=a.provenance, new=b.provenance),
    )


# --- runtime -----------------------------------------------------------------------------


def runtime_diff(old: dict[str, Any], new: dict[str, Any]) -> RuntimeDiff:
    """Env keys added/removed/changed (secret-looking values masked), secret names, other settings."""
    env = env_changes(old.get("env", {}), new.get("env", {}))
    before, after = set(old.get("secrets", [])), set(new.get("secrets", []))
    settings = [ValueChange(field=k, old=old.get(k), new=new.get(k))
                for k in sorted((set(old) | set(new)) - {"env", "secrets"}) if old.get(k) != new.get(k)]
    out = RuntimeDiff(changed=False, env=env, secrets_added=sorted(after - before),
                      secrets_removed=sorted(before - after), settings=settings)
    out.changed = bool(out.env or out.secrets_added or out.secrets_removed or out.settings)
    return out


def env_changes(old: dict[str, str], new: dict[str, str]) -> list[KeyChange]:
    out = []
    for key in sorted(set(old) | set(new)):
        status = _status(old.get(key), new.get(key), key in old, key in new)
        if status is ChangeKind.unchanged:
            continue
        shown = (lambda v: None if v is None else MASK) if is_secret_key(key) else (lambda v: v)
        out.append(KeyChange(key=key, status=status, old=shown(old.get(key)), new=shown(new.get(key))))
    return out


def _status(old: Any, new: Any, in_old: bool, in_new: bool) -> ChangeKind:
    if not in_old:
        return ChangeKind.added
    if not in_new:
        return ChangeKind.removed
    return ChangeKind.unchanged if old == new else ChangeKind.changed


# --- prompts -----------------------------------------------------------------------------


def prompt_diffs(a: VersionInfo, b: VersionInfo, *, texts: Mapping[str, str]) -> list[PromptDiff]:
    old = {p.name: p.digest for p in a.prompts}
    new = {p.name: p.digest for p in b.prompts}
    out = []
    for name in sorted(set(old) | set(new)):
        status = _status(old.get(name), new.get(name), name in old, name in new)
        item = PromptDiff(name=name, status=status, changed=status is not ChangeKind.unchanged,
                          old_digest=old.get(name), new_digest=new.get(name))
        if item.changed:
            before = texts.get(old[name], "") if name in old else ""
            after = texts.get(new[name], "") if name in new else ""
            item.unified, item.lines_added, item.lines_removed = unified(
                before, after, old_label=f"a/{name}", new_label=f"b/{name}")
            item.old_lines, item.new_lines = _count_lines(before), _count_lines(after)
            item.too_large = too_large(item)
        out.append(item)
    return out


def unified(old: str, new: str, *, old_label: str, new_label: str) -> tuple[str, int, int]:
    """A unified diff of two texts, and how many lines it adds and removes (bounded: ``align``).
    The text is empty when the diff is over ``SHOWN_LINES`` or ``SHOWN_BYTES``."""
    a, b = old.splitlines(), new.splitlines()
    ops = opcodes(a, b)
    added = sum(j2 - j1 for tag, _, _, j1, j2 in ops if tag != "equal")
    removed = sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag != "equal")
    if not added and not removed:
        return "", 0, 0
    size = 0
    lines = [f"--- {old_label}", f"+++ {new_label}"]
    for group in _grouped(ops):
        first, last = group[0], group[-1]
        hunk = [f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@"]
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                hunk += (" " + x for x in a[i1:i2])
            else:
                hunk += ("-" + x for x in a[i1:i2])
                hunk += ("+" + x for x in b[j1:j2])
        lines += hunk
        size += sum(len(x) + 1 for x in hunk)
        if len(lines) > SHOWN_LINES or size > SHOWN_BYTES:
            return "", added, removed
    return "\n".join(lines) + "\n", added, removed


def too_large(p: PromptDiff) -> bool:
    return p.changed and not p.unified and bool(p.lines_added or p.lines_removed)


def _count_lines(text: str) -> int:
    return len(text.splitlines())


def _range(start: int, stop: int) -> str:
    """A hunk's range as ``diff -u`` writes it: ``start,length`` counted from 1 (``start`` alone for 1)."""
    length = stop - start
    first = start + 1 if length else start
    return str(first) if length == 1 else f"{first},{length}"


def _grouped(ops: list[tuple[str, int, int, int, int]]) -> list[list[tuple[str, int, int, int, int]]]:
    """The opcodes in hunks with ``CONTEXT`` lines around each change (``SequenceMatcher.get_grouped_opcodes``)."""
    codes = list(ops) or [("equal", 0, 1, 0, 1)]
    n = CONTEXT
    if codes[0][0] == "equal":
        _, i1, i2, j1, j2 = codes[0]
        codes[0] = ("equal", max(i1, i2 - n), i2, max(j1, j2 - n), j2)
    if codes[-1][0] == "equal":
        _, i1, i2, j1, j2 = codes[-1]
        codes[-1] = ("equal", i1, min(i2, i1 + n), j1, min(j2, j1 + n))
    groups, group = [], []
    for tag, i1, i2, j1, j2 in codes:
        if tag == "equal" and i2 - i1 > 2 * n:
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            groups.append(group)
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        groups.append(group)
    return groups


# --- line alignment, bounded -----------------------------------------------------------------


def opcodes(a: Sequence[str], b: Sequence[str], *, cells: int = ALIGN_CELLS) -> list[tuple[str, int, int, int, int]]:
    """``SequenceMatcher.get_opcodes()`` for ``a`` -> ``b``, from ``align``'s matching blocks."""
    out: list[tuple[str, int, int, int, int]] = []
    i = j = 0
    for ai, bj, size in align(a, b, cells=cells):
        if i < ai or j < bj:
            tag = "replace" if i < ai and j < bj else "delete" if i < ai else "insert"
            out.append((tag, i, ai, j, bj))
        if size:
            out.append(("equal", ai, ai + size, bj, bj + size))
        i, j = ai + size, bj + size
    return out


def align(a: Sequence[str], b: Sequence[str], *, cells: int = ALIGN_CELLS) -> list[tuple[int, int, int]]:
    """Matching blocks ``(i, j, n)`` (``a[i:i+n] == b[j:j+n]``) in order, ending with ``(len(a), len(b), 0)``.

    Linear work plus at most ``cells`` of difflib's: equal head and tail are matched first; a gap
    whose size (old lines x new lines) fits what is left of ``cells`` goes to difflib; a larger
    one is split at the lines that occur once on each side (the longest run of them in order,
    as patience diff does), and a gap that can be neither compared nor split stays unmatched (its
    lines count as removed and added: the diff is correct, if not minimal)."""
    blocks: list[tuple[int, int, int]] = []
    budget = [cells]
    stack = [(0, len(a), 0, len(b))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        head = 0
        while alo + head < ahi and blo + head < bhi and a[alo + head] == b[blo + head]:
            head += 1
        if head:
            blocks.append((alo, blo, head))
        alo, blo = alo + head, blo + head
        tail = 0
        while alo < ahi - tail and blo < bhi - tail and a[ahi - tail - 1] == b[bhi - tail - 1]:
            tail += 1
        if tail:
            blocks.append((ahi - tail, bhi - tail, tail))
        ahi, bhi = ahi - tail, bhi - tail
        if alo == ahi or blo == bhi:
            continue
        if (ahi - alo) * (bhi - blo) <= budget[0]:
            budget[0] -= (ahi - alo) * (bhi - blo)
            matcher = difflib.SequenceMatcher(None, a[alo:ahi], b[blo:bhi], autojunk=False)
            blocks += [(alo + i, blo + j, n) for i, j, n in matcher.get_matching_blocks() if n]
            continue
        anchors = _unique_in_order(a, alo, ahi, b, blo, bhi)
        i, j = alo, blo
        for ai, bj in anchors:
            stack.append((i, ai, j, bj))
            blocks.append((ai, bj, 1))
            i, j = ai + 1, bj + 1
        if anchors:
            stack.append((i, ahi, j, bhi))
    return _merged(blocks) + [(len(a), len(b), 0)]


def _unique_in_order(a: Sequence[str], alo: int, ahi: int,
                     b: Sequence[str], blo: int, bhi: int) -> list[tuple[int, int]]:
    """Pairs (i, j) of lines occurring once in ``a[alo:ahi]`` and once in ``b[blo:bhi]``, the longest
    run of them increasing on both sides (patience sorting: O(k log k))."""
    count_a = Counter(a[alo:ahi])
    count_b = Counter(b[blo:bhi])
    where_b = {b[j]: j for j in range(blo, bhi) if count_b[b[j]] == 1}
    pairs = [(i, where_b[a[i]]) for i in range(alo, ahi) if count_a[a[i]] == 1 and a[i] in where_b]
    tails: list[int] = []  # tails[k]: smallest j ending an increasing run of length k + 1
    tail_at: list[int] = []  # index in pairs of that end
    back = [-1] * len(pairs)
    for n, (_, j) in enumerate(pairs):
        k = bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            tail_at.append(n)
        else:
            tails[k], tail_at[k] = j, n
        back[n] = tail_at[k - 1] if k else -1
    run, n = [], tail_at[-1] if tail_at else -1
    while n >= 0:
        run.append(pairs[n])
        n = back[n]
    return run[::-1]


def _merged(blocks: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for i, j, n in sorted(blocks):
        if out and out[-1][0] + out[-1][2] == i and out[-1][1] + out[-1][2] == j:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + n)
        else:
            out.append((i, j, n))
    return out


# --- weights and tensors -----------------------------------------------------------------


def weight_diffs(old: list[WeightFile], new: list[WeightFile]) -> list[WeightDiff]:
    """Every weight file with its status; for changed safetensors files, the tensors that changed."""
    a = {w.path: w for w in old}
    b = {w.path: w for w in new}
    out = []
    for path in sorted(set(a) | set(b)):
        wa, wb = a.get(path), b.get(path)
        status = _status(wa and wa.digest, wb and wb.digest, wa is not None, wb is not None)
        item = WeightDiff(path=path, status=status,
                          old_size=wa.size if wa else None, new_size=wb.size if wb else None,
                          old_digest=wa.digest if wa else None, new_digest=wb.digest if wb else None)
        if status is ChangeKind.changed and wa and wb and (wa.tensors or wb.tensors):
            item.tensors = tensor_changes(wa.tensors, wb.tensors)
        out.append(item)
    return out


def tensor_changes(old: list[Tensor], new: list[Tensor]) -> TensorChanges:
    """Tensors added, removed, and changed in dtype, shape or bytes (by recorded digest)."""
    a = {t.name: t for t in old}
    b = {t.name: t for t in new}
    out = TensorChanges(added=[n for n in b if n not in a], removed=[n for n in a if n not in b])
    for name in (n for n in b if n in a):
        kinds = [k for k, x, y in (("dtype", a[name].dtype, b[name].dtype),
                                   ("shape", a[name].shape, b[name].shape),
                                   ("bytes", a[name].digest, b[name].digest)) if x != y]
        if kinds:
            out.changed.append(name)
            out.kinds[name] = kinds
        else:
            out.unchanged += 1
    return out


# --- probes ------------------------------------------------------------------------------


def probe_diffs(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[ProbeDiff]:
    """Probes added, removed or changed (naming the fields that changed); unchanged ones omitted."""
    a = {p["name"]: p for p in old}
    b = {p["name"]: p for p in new}
    out = []
    for name in sorted(set(a) | set(b)):
        status = _status(a.get(name), b.get(name), name in a, name in b)
        if status is ChangeKind.unchanged:
            continue
        fields = (sorted(k for k in set(a[name]) | set(b[name]) if a[name].get(k) != b[name].get(k))
                  if status is ChangeKind.changed else [])
        out.append(ProbeDiff(name=name, status=status, fields=fields))
    return out
