"""``Push``: hash and store a manifest's files, pin its image, build the record it pins, then
record the version and its audit event in one transaction.

``stage(write=False)`` is the same work without storing anything: diff uses it to describe
a manifest that is not pushed yet exactly as push would record it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from registry.action import Action
from registry.configuration import Configuration
from registry.errors import CellarError, InvalidInput, VersionConflict
from registry.faults import crashpoint
from registry.formats import canonical
from registry.models import (
    ImageRef,
    Provenance,
    PushResult,
    Resolved,
    SourceFile,
    VersionSummary,
)
from registry.store.files.blobs import Ingested, hash_file
from registry.store.sql import events, queue, run_all, versions
from registry.store.sql.versions import NewVersion
from registry.trust import audit

Progress = Callable[[str, int, int], None]  # (file name, bytes done in this call, file size)
# Files over this size are hashed side by side, at most PARALLEL at once (see _store_all).
PARALLEL_FROM, PARALLEL = 64 << 20, 4


class Push(Action):
    """``Push(cfg, actor=...).run(resolved)``: record a version; the same content again is a
    no-op, other content a VersionConflict.

    Whether the version exists is learnt under the write lock, in the round trip that takes
    it, not in one of its own before storing: a push of a new version (the usual one) spares a
    round trip, and a refused one removes the blobs it stored that nothing records."""

    def run(self, resolved: Resolved, *, progress: Progress | None = None) -> PushResult:
        cfg, actor = self.cfg, self.actor
        m = resolved.manifest
        new = stage(cfg, resolved, write=True, progress=progress)
        provenance = git_provenance(resolved)
        crashpoint("push:blobs-stored")
        with cfg.store.write(lazy=True) as conn:
            if not _record(cfg, conn, new, actor=actor, provenance=provenance):  # there already
                existing = versions.lookup(conn, m.model, m.version)
                assert existing is not None  # _record found it recorded, under this write lock
                if existing.manifest_digest != new.digest:
                    _remove_unrecorded(cfg, conn, new)
                return _same_or_conflict(existing, new)
            crashpoint("push:before-commit")
        new.warnings.extend(_dirty_warning(resolved, provenance))  # of what was recorded
        return PushResult(
            model=m.model, version=m.version, manifest_digest=new.digest, created=True,
            bytes_ingested=sum(s.size for s in new.stored.values() if s.written),
            files=len(new.stored), warnings=new.warnings,
        )


def _record(cfg: Configuration, conn, new: NewVersion, *, actor: str,
            provenance: Provenance | None) -> bool:
    """The version and its event; False (nothing written) if another writer recorded it first.

    Two round trips on PostgreSQL: what to know, with BEGIN and the write lock (``run_all``),
    then every row with the COMMIT (``queue``). A round trip costs more there than running a
    small statement, and a push used to make ten."""
    m = new.resolved.manifest
    rows = versions.of_push(new, actor=actor, provenance=provenance)
    *answers, last = run_all(conn, [*versions.lookups(rows), events.LAST])
    known = versions.known(answers)
    if known.recorded:
        return False
    _store_again_if_gone(cfg, new)
    event, _ = events.appending(
        conn, last[0] if last else None, actor=actor, action="push", object=f"{m.model}@{m.version}", model=m.model,
        detail={"manifest_digest": new.digest, "image": new.record["image"],
                "files": sorted(f"{k}:{n}" for k, n in new.stored), "message": m.message,
                "prompts_changed": audit.prompts_changed(known.newest_prompts, new.record["prompts"])},
        db_user=cfg.store.db_user(conn),
    )
    queue(conn, versions.inserting(conn, rows, known) + event)
    return True


def _store_again_if_gone(cfg: Configuration, new: NewVersion) -> None:
    """Under the write lock, so no gc runs meanwhile (registry.upkeep.gc): a blob this push
    reused without copying it (the stat cache vouched for it) may have been collected since."""
    for f in new.resolved.files:
        got = new.stored[(f.kind, f.name)]
        if not cfg.blobs.has(got.digest, size=got.size):
            again = cfg.blobs.ingest(f.path, tensors=f.tensors)
            if again.digest != got.digest:
                raise InvalidInput(f"{f.path} changed during the push; nothing was recorded")


def _remove_unrecorded(cfg: Configuration, conn, new: NewVersion) -> None:
    """The blobs a refused push wrote that no version records, removed under the write lock
    (as gc would). A push of the same bytes that has not recorded yet stores them again
    (``_store_again_if_gone``)."""
    written = {got.digest for got in new.stored.values() if got.written}
    for digest in written - versions.already_recorded(conn, written):
        cfg.blobs.path(digest).unlink(missing_ok=True)


def _same_or_conflict(existing: VersionSummary, new: NewVersion) -> PushResult:
    ref = f"{existing.model}@{existing.version}"
    if existing.manifest_digest != new.digest:
        raise VersionConflict(
            f"{ref} already exists with other content ({existing.manifest_digest[:19]}); "
            "versions are immutable: push under a new version"
        )
    message = new.resolved.manifest.message
    kept = ([f"{ref} keeps its recorded message {existing.message!r}, not {message!r}: versions are immutable"]
            if message and message != existing.message else [])
    return PushResult(model=existing.model, version=existing.version, manifest_digest=new.digest,
                      created=False, warnings=new.warnings + kept)


def _dirty_warning(resolved: Resolved, provenance: Provenance | None) -> list[str]:
    """A version pushed with uncommitted edits is not what its recorded commit holds: say so."""
    if provenance is None or not provenance.dirty:
        return []
    edited = [f.path.relative_to(resolved.root).as_posix() for f in _by_name(resolved.prompts)
              if (fp := provenance.files.get(f.name)) and fp.dirty]
    return ["pushed from a git work tree with uncommitted changes"
            + (f" ({', '.join(edited)})" if edited else "")]


def stage(cfg: Configuration, resolved: Resolved, *, write: bool,
          progress: Progress | None = None) -> NewVersion:
    """Hash (and, if ``write``, store) a manifest's files, pin its image, build its record."""
    image, warnings = _pin_image(cfg, resolved.manifest.image)
    stored = _store_files(cfg, resolved, write=write, progress=progress)
    warnings += [f"replaced the stored blob {got.digest} of {kind} {name}: its bytes no longer matched their "
                 "digest (damaged in place); run `registry verify` to check the others"
                 for (kind, name), got in stored.items() if got.replaced]
    record = build_record(resolved, stored, image)
    return NewVersion(resolved=resolved, stored=stored, record=record,
                      digest=canonical.digest(record), warnings=warnings)


def _store_files(cfg: Configuration, resolved: Resolved, *, write: bool,
                 progress: Progress | None) -> dict[tuple[str, str], Ingested]:
    out: dict[tuple[str, str], Ingested] = {}
    try:
        todo = []
        for f in resolved.files:
            if known := _unchanged(cfg, f):
                out[(f.kind, f.name)] = known
            else:
                todo.append(f)
        for f, got in zip(todo, _store_all(cfg, todo, write=write, progress=progress)):
            out[(f.kind, f.name)] = got
    finally:
        cfg.stat_cache.save(unless_within=1.0)  # Registry.close() saves the rest
    return {(f.kind, f.name): out[(f.kind, f.name)] for f in resolved.files}


def _unchanged(cfg: Configuration, f: SourceFile) -> Ingested | None:
    """The stored blob of a file the stat cache proves unchanged, when the blob's own stamp
    proves it intact too (None otherwise: the file is read again, and a damaged blob replaced)."""
    known = cfg.stat_cache.lookup(f.path)
    size = os.stat(f.path).st_size
    if known and cfg.blobs.vouched(known, size):
        return Ingested(digest=known, size=size, tensor_digests=_known_tensors(cfg, known, f))
    return None


def _store_all(cfg: Configuration, files: list[SourceFile], *, write: bool,
               progress: Progress | None) -> list[Ingested]:
    """Hash (and store) files; the shards of a large model side by side, a few at a time.

    A file in flight keeps about two cores busy (SHA-256 on one; BLAKE3 and the kernel's copy
    on another: hashlib and blake3 release the GIL) and holds at most 128 MiB of dirty page
    cache, so one file per two cores, PARALLEL at most, bounds CPU and memory; at least two,
    so that one file's final fsync overlaps the next one's copy (8 shards stored one after
    another waited 1.1 s in fsync against 0.15 s for one file of their size)."""
    large = sum(1 for f in files if os.stat(f.path).st_size > PARALLEL_FROM)
    workers = min(large, max(2, (os.cpu_count() or 1) // 2), PARALLEL)
    if workers < 2:
        return [_store_file(cfg, f, write=write, progress=progress) for f in files]
    from concurrent.futures import ThreadPoolExecutor  # only for sharded models

    lock = threading.Lock()
    shared = (lambda *a: _locked(lock, progress, *a)) if progress else None  # the bar is not thread-safe
    with ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(_store_file, cfg, f, write=write, progress=shared) for f in files]
        return [job.result() for job in jobs]


def _locked(lock: threading.Lock, progress: Progress, *args) -> None:
    with lock:
        progress(*args)


def _store_file(cfg: Configuration, f: SourceFile, *, write: bool, progress: Progress | None) -> Ingested:
    """Hash (and, if ``write``, store) a file the stat cache does not vouch for."""
    try:
        before = os.stat(f.path)
        tick = (lambda n: progress(f.name, n, before.st_size)) if progress else None
        got = (cfg.blobs.ingest(f.path, tensors=f.tensors, progress=tick) if write
               else hash_file(f.path, f.tensors))
    except FileNotFoundError:
        raise InvalidInput(f"{f.path} disappeared during the push; nothing was recorded") from None
    if f.tensors and not got.tensor_digests:  # bytes already stored: their tensors are indexed
        got.tensor_digests = _known_tensors(cfg, got.digest, f)
    cfg.stat_cache.record(f.path, before, got.digest)
    return got


def _known_tensors(cfg: Configuration, digest: str, f: SourceFile) -> dict[str, str]:
    """Tensor digests of a stored blob: from the index, else hashed from the blob itself."""
    if not f.tensors:
        return {}
    if digest in cfg.tensor_index:
        return cfg.tensor_index[digest]
    with cfg.store.read() as conn:
        indexed = versions.tensor_digests(conn, digest)
    if indexed:
        cfg.tensor_index[digest] = indexed
        return indexed
    return cfg.blobs.rehash_tensors(digest)


def _pin_image(cfg: Configuration, ref: str | None) -> tuple[ImageRef, list[str]]:
    if not ref:
        return ImageRef(), []
    try:
        return ImageRef(ref=ref, digest=cfg.engine().image_digest(ref)), []
    except CellarError as exc:
        return ImageRef(ref=ref), [f"image {ref} recorded unresolved, not pinned to a digest ({exc}); fine for "
                                   f"an image built later: check with `docker image inspect {ref}` on the "
                                   "environment's Docker host, and push again once it exists to pin it"]


def build_record(resolved: Resolved, stored: dict[tuple[str, str], Ingested], image: ImageRef) -> dict:
    """The record a version pins; the sha256 of its canonical JSON is the manifest digest."""
    m = resolved.manifest
    return {
        "image": image.model_dump(),
        "weights": [_pinned("path", "weight", f.name, stored) for f in _by_name(resolved.weights)],
        "prompts": [_pinned("name", "prompt", f.name, stored) for f in _by_name(resolved.prompts)],
        "runtime": m.runtime.model_dump(mode="json", by_alias=True),
        "probes": [p.model_dump(mode="json", by_alias=True) for p in m.probes],
        # only when set: the digests of versions that do not use it stay what they were
        **({"no_auto_rollback": True} if m.no_auto_rollback else {}),
    }


def _by_name(files: list[SourceFile]) -> list[SourceFile]:
    return sorted(files, key=lambda f: f.name)


def _pinned(key: str, kind: str, name: str, stored: dict[tuple[str, str], Ingested]) -> dict:
    got = stored[(kind, name)]
    return {key: name, "digest": got.digest, "size": got.size}


def git_provenance(resolved: Resolved) -> Provenance | None:
    """Git provenance of the manifest's folder; None outside git."""
    if not _maybe_in_git(resolved.root):
        return None  # and GitPython (~70 ms to import) is never loaded
    from registry.versions import provenance

    return provenance.collect(resolved.root, {f.name: f.path for f in resolved.prompts})


def _maybe_in_git(root: Path) -> bool:
    """A cheap look for ``.git`` walking up, as git does (or a $GIT_DIR)."""
    return bool(os.environ.get("GIT_DIR")) or any((p / ".git").exists() for p in (root, *root.parents))
