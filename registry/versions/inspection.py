"""Looking at recorded versions: show one, diff two sides, blame a prompt, the changelog.

A diff side is a version ref, an environment (the version deployed there), or a manifest not
pushed yet, described as push would record it. Prompt texts come from the blob store, checked
against their digests; weight bytes are never read.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

from registry import actor as actor_mod
from registry import clock
from registry.configuration import Configuration
from registry.errors import CorruptBlob, InvalidInput, NotFound
from registry.formats import tensor_digests
from registry.ledger import Release
from registry.models import ImageRef, LogEntry, Tensor, VersionInfo, VersionSummary
from registry.store.files.blobs import BlobStore, digest_of_bytes
from registry.store.sql import Store, versions
from registry.store.sql.versions import NewVersion
from registry.versions import asof, diffing, pushing, refs
from registry.versions import blame as blame_mod
from registry.versions import manifest as manifest_mod
from registry.versions.blame import BlameLine
from registry.versions.diffing import Diff


class DiffInput(NamedTuple):
    """One side of a diff: the version, the texts of its unstored prompts (by digest), warnings."""

    info: VersionInfo
    texts: dict[str, str]
    warnings: list[str]


def show(store: Store, ref: str) -> VersionInfo:
    """Everything recorded about one version."""
    model, version = refs.resolve(store, ref)
    with store.read() as conn:
        return versions.info(conn, model, version)


def diff(cfg: Configuration, a: str, b: str) -> Diff:
    """What changed from ``a`` to ``b``; prompt texts are read only where their digests differ."""
    old, new = diff_input(cfg, a), diff_input(cfg, b)
    if _mixed_tensor_digests(old.info, new.info):
        old, new = (d._replace(info=_current_tensor_digests(d.info, cfg.blobs)) for d in (old, new))
    local = {**old.texts, **new.texts}
    texts = {d: local[d] if d in local else prompt_text(cfg.blobs, d)
             for d in _changed_prompts(old.info, new.info)}
    result = diffing.diff(old.info, new.info, texts=texts, refs=(a, b))
    result.warnings = old.warnings + new.warnings
    return result


def _as_of(cfg: Configuration, release: Release) -> DiffInput:
    """The side of a diff that served in an environment then: its version, with the image its
    release pinned (after ``promote --allow-retag``, not the one its version recorded)."""
    info = show(cfg.store, release.ref)
    if release.image_digest and release.image_digest != info.image.digest:
        info = info.model_copy(update={"image": ImageRef(ref=info.image.ref, digest=release.image_digest)})
    return DiffInput(info, {}, [])


def _mixed_tensor_digests(*infos: VersionInfo) -> bool:
    """True when the two sides index tensors with different algorithms (an older Cellar used
    sha256, this one blake3: registry.formats.tensor_digests), so their digests cannot be compared."""
    algorithms = {tensor_digests.algorithm(t.digest) for i in infos for w in i.weights for t in w.tensors}
    return len(algorithms) > 1


def _current_tensor_digests(info: VersionInfo, blobs: BlobStore) -> VersionInfo:
    """``info`` with every weight's tensors in the current algorithm: read once from the blob
    for a weight indexed by an older Cellar (weights bytes are otherwise never read by a diff)."""
    weights = []
    for w in info.weights:
        digests = {t.name: t.digest for t in w.tensors}
        if w.tensors and not tensor_digests.is_current(digests):
            try:
                digests = tensor_digests.upgraded(digests, partial(blobs.rehash_tensors, w.digest))
            except NotFound:  # the blob is gone: the diff says "changed" rather than fail
                pass
            w = w.model_copy(update={"tensors": [t.model_copy(update={"digest": digests.get(t.name, t.digest)})
                                                 for t in w.tensors]})
        weights.append(w)
    return info.model_copy(update={"weights": weights})


def _changed_prompts(old: VersionInfo, new: VersionInfo) -> set[str]:
    """Digests of the prompts that differ; equal digests need no text."""
    before, after = ({p.name: p.digest for p in v.prompts} for v in (old, new))
    return ({d for n, d in before.items() if after.get(n) != d}
            | {d for n, d in after.items() if before.get(n) != d})


def diff_input(cfg: Configuration, ref: str) -> DiffInput:
    """A manifest path, else ``ENV@TIME`` (what served there then), else a version ref, else an
    environment's deployed version."""
    if _is_manifest_path(ref):
        return _unpushed(cfg, ref)
    if "@" in ref and (then := asof.split_ref(ref, asof.env_names(cfg))) is not None:
        return _as_of(cfg, asof.served(cfg, *then))
    try:
        info = show(cfg.store, ref)
    except (NotFound, InvalidInput):
        target = refs.deployed(cfg.store, ref)
        if not target:
            raise
        info = show(cfg.store, target)
        ran = refs.deployed_image(cfg.store, ref)
        if ran and ran != info.image.digest:  # an environment's side is what it runs, not only what was pushed
            note = (f"{ref} runs image {ran[:19]}, not {str(info.image.digest)[:19]} that {target} recorded "
                    "(promoted with --allow-retag)")
            return DiffInput(info.model_copy(update={"image": ImageRef(ref=info.image.ref, digest=ran)}), {}, [note])
    return DiffInput(info, {}, [])


def _is_manifest_path(ref: str) -> bool:
    """A manifest file, or a folder holding one (a folder named like a version without one is not)."""
    path = Path(ref)
    return path.is_file() or (path / manifest_mod.DEFAULT_NAME).is_file()


def _unpushed(cfg: Configuration, path: str) -> DiffInput:
    """A manifest not pushed yet, described as push would record it, without storing anything."""
    new = pushing.stage(cfg, manifest_mod.load(path), write=False)
    m = new.resolved.manifest
    summary = VersionSummary(model=m.model, version=m.version, manifest_digest=new.digest,
                             created_at=clock.now(), actor=actor_mod.identify(), message=m.message)
    info = VersionInfo.from_record(summary, new.record, _tensors(new), pushing.git_provenance(new.resolved))
    texts = {new.stored[("prompt", f.name)].digest: f.path.read_text(encoding="utf-8")
             for f in new.resolved.prompts}
    return DiffInput(info, texts, new.warnings)


def _tensors(new: NewVersion) -> dict[str, list[Tensor]]:
    """The tensors of a manifest's weights, by blob digest, as they were hashed."""
    out = {}
    for f in new.resolved.weights:
        if f.tensors:
            got = new.stored[("weight", f.name)]
            out[got.digest] = [Tensor(name=tr.name, dtype=tr.dtype, shape=list(tr.shape),
                                      digest=got.tensor_digests[tr.name]) for tr in f.tensors]
    return out


def prompt_text(blobs: BlobStore, digest: str) -> str:
    """A stored prompt's text, checked against its digest (prompt blobs are small)."""
    try:
        data = blobs.path(digest).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"blob {digest} is missing from {blobs.root}; restore it from a backup") from None
    if digest_of_bytes(data) != digest:
        raise CorruptBlob(f"blob {digest} is corrupt (its bytes no longer match its digest); "
                          "restore it from a backup")
    return data.decode("utf-8")


def _blamed(store: Store, at: str | None, model: str | None) -> tuple[str, str]:
    if at:
        return refs.resolve(store, at if "@" in at or not model else f"{model}@{at}")
    model = model or refs.default_model(store, "VERSION")
    return model, versions.summaries(store, model, limit=1)[0].version


def prompt_at(store: Store, blobs: BlobStore, prompt: str, *, at: str | None = None,
              model: str | None = None) -> str:
    """The text of ``prompt`` at ``at`` (default: the model's newest version)."""
    model, version = _blamed(store, at, model)
    info = show(store, f"{model}@{version}")
    found = next((p for p in info.prompts if p.name == prompt), None)
    if found is None:
        has = [p.name for p in info.prompts]
        raise NotFound(f"prompt {prompt!r} is not in {model}@{version}: "
                       + (f"it has {', '.join(has)}" if has else "it has no prompts"))
    return prompt_text(blobs, found.digest)


def blame(store: Store, blobs: BlobStore, prompt: str, *, at: str | None = None,
          model: str | None = None) -> list[BlameLine]:
    """Each line of ``prompt`` at ``at`` (default: the model's newest version) and its origin."""
    model, version = _blamed(store, at, model)
    with store.read() as conn:
        walk = versions.prompt_history(conn, model=model, prompt=prompt, upto=version)
        if walk[-1].digest is None:
            has = versions.prompt_names(conn, model, version)
            raise NotFound(f"prompt {prompt!r} is not in {model}@{version}: "
                           + (f"it has {', '.join(has)}" if has else "it has no prompts"))
    texts = {d: prompt_text(blobs, d) for d in {s.digest for s in walk if s.digest}}
    return blame_mod.attribute(walk, texts, prompt=prompt)


def changelog(store: Store, model: str | None = None, *, limit: int | None = None) -> list[LogEntry]:
    """Versions newest first, each with its git provenance."""
    return versions.changelog(store, model, limit=limit)
