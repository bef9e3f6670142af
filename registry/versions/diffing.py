"""Pure diffs between two versions: image, runtime config, prompts, weights and tensors, probes,
changelog and provenance.

Input: two ``VersionInfo`` objects (a pushed version, or a manifest hashed but not stored) and
the prompt texts by digest; output: a ``Diff`` model, whose JSON is what ``registry diff --json``
prints. Tensors are compared by their recorded digests, so no weight byte is read. Values of
environment keys that look secret are masked (``***``); secrets are names only.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
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
    unified: str = ""


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
        out.append(item)
    return out


def unified(old: str, new: str, *, old_label: str, new_label: str) -> tuple[str, int, int]:
    """A unified diff of two texts, and how many lines it adds and removes."""
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label, lineterm=""))
    body = [ln for ln in lines[2:] if not ln.startswith("@@")]
    added = sum(1 for ln in body if ln.startswith("+"))
    removed = sum(1 for ln in body if ln.startswith("-"))
    return "\n".join(lines) + ("\n" if lines else ""), added, removed


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
