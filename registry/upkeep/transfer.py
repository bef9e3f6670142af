"""Export and import: carry one version (and its container image) to an air-gapped site as
one verified tar file. The format and its hostile-archive checks are ``registry.upkeep.archive``;
this module gathers what an export needs and records what an import verified.

Import order: check every member, copy and verify the blobs into temp files, load the image
(when the engine lacks it), rename the blobs into the store, then record the version, its
blobs, files, tensor index and an audit event naming the file, in one transaction. A failure
before that transaction records nothing; the temp files are always removed.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from registry import clock
from registry.action import Action
from registry.configuration import Configuration
from registry.errors import InvalidInput, NotFound
from registry.models import ImageRef, Provenance, Runtime
from registry.models.upkeep import ExportResult, ImportResult
from registry.store.sql import events, versions
from registry.upkeep import archive
from registry.versions import arriving

Progress = archive.Progress


# --- export ----------------------------------------------------------------------------------


class Export(Action):
    """``Export(cfg, actor=...).run(...)``: Write ``model@version`` (and, ``with_image``, its
    pinned image) to the tar file ``out``."""

    def run(self, model: str, version: str, out: Path, *, with_image: bool = False,
            progress: Progress | None = None) -> ExportResult:
        cfg = self.cfg
        actor = self.actor
        started = time.monotonic()
        src = _source(cfg, model, version)
        out = Path(out).absolute()
        if with_image:
            src.image = _save_image(cfg, src)
        try:
            archive.write_archive(out, src, progress=progress)
        finally:
            if src.image is not None:
                src.image.unlink(missing_ok=True)
        size = sum(p.stat().st_size for p in src.blob_paths.values())
        with cfg.store.write() as conn:
            events.append(conn, actor=actor, action="export", object=f"{model}@{version}", model=model,
                          db_user=cfg.store.db_user(conn),
                          detail={"file": str(out), "manifest_digest": src.manifest_digest, "with_image": with_image})
        return ExportResult(file=str(out), model=model, version=version, manifest_digest=src.manifest_digest,
                            blobs=len(src.blob_paths), bytes=size, with_image=with_image,
                            seconds=round(time.monotonic() - started, 3))


def _source(cfg: Configuration, model: str, version: str) -> archive.ExportSource:
    with cfg.store.read() as conn:
        stored = versions.record_of(conn, model, version)  # refuses a record that is not what was pushed
        info = versions.info(conn, model, version)
        summary, provenance = info, info.provenance
    record = stored.record
    paths = {f["digest"]: cfg.blobs.path(f["digest"]) for key in ("weights", "prompts") for f in record[key]}
    for digest, path in paths.items():
        if not path.is_file():
            raise NotFound(f"blob {digest} of {model}@{version} is missing from the store: run `registry verify`; "
                           "nothing was exported")
    changelog = {"message": summary.message, "actor": summary.actor, "created_at": summary.created_at.isoformat()}
    return archive.ExportSource(model=model, version=version, manifest_digest=stored.digest, record=record,
                                changelog=changelog, blob_paths=paths,
                                provenance=provenance.model_dump(mode="json") if provenance else None)


def _save_image(cfg: Configuration, src: archive.ExportSource) -> Path:
    """``docker save`` of the pinned image into the blob store's temp folder."""
    image = src.record.get("image") or {}
    digest = image.get("digest")
    if not digest:
        what = f"its image {image['ref']} was never pinned" if image.get("ref") else "it has no image"
        raise InvalidInput(f"cannot export {src.model}@{src.version} --with-image: {what}; export without --with-image")
    tmp = cfg.blobs.tmp / f"export-{os.getpid()}-{secrets.token_hex(6)}"
    try:
        cfg.engine().save_image(digest, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


# --- import ----------------------------------------------------------------------------------


class Import(Action):
    """``Import(cfg, actor=...).run(...)``: Verify and record the version in the export file
    ``path``; the same version again is a no-op, other content under its model@version a
    VersionConflict."""

    def run(self, path: Path, *, progress: Progress | None = None) -> ImportResult:
        cfg = self.cfg
        actor = self.actor
        started = time.monotonic()
        path = Path(path).absolute()
        bundle = archive.read_archive(path, tmp_dir=cfg.blobs.tmp, progress=progress,
                                      have=lambda digest, size: cfg.blobs.has(digest, size=size))
        try:
            index = bundle.index
            provenance = _check_record(path, index)
            existing = arriving.recorded_already(cfg, index.model, index.version, index.manifest_digest,
                                                 source="the file", verb="imported")
            image_loaded = _load_image(cfg, bundle)
            blobs, size = (0, 0) if existing else bundle.install_blobs(cfg.blobs)
            created = not existing and _record(cfg, bundle, provenance, path=path, actor=actor,
                                               image_loaded=image_loaded)
        finally:
            bundle.cleanup()
        return ImportResult(file=str(path), model=index.model, version=index.version,
                            manifest_digest=index.manifest_digest, created=created, blobs_stored=blobs,
                            bytes_stored=size, image_loaded=image_loaded, seconds=round(time.monotonic() - started, 3))


def _check_record(path: Path, index: archive.ArchiveIndex) -> Provenance | None:
    """What promote and show will read from the record must parse; paths must stay relative."""
    record = index.record
    try:
        Runtime.model_validate(record.get("runtime"))
        ImageRef.model_validate(record.get("image") or {})
        provenance = Provenance.model_validate(index.provenance) if index.provenance else None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"refusing to import {path}: its record is not valid "
                           f"({'.'.join(map(str, first['loc']))}: {first['msg']}); nothing was recorded") from None
    for w in record.get("weights", []):
        rel = PurePosixPath(str(w.get("path", "")))
        if not rel.parts or rel.is_absolute() or ".." in rel.parts or "\\" in str(rel):
            raise InvalidInput(f"refusing to import {path}: weight path {str(rel)!r} is not a relative path "
                               "inside the version; nothing was recorded")
    return provenance


def _load_image(cfg: Configuration, bundle: archive.ImportBundle) -> bool:
    """``docker load`` the archive's image unless the engine has the pinned one; True if loaded."""
    if bundle.image is None:
        return False
    pinned = (bundle.index.record.get("image") or {}).get("digest")
    engine = cfg.engine()
    if pinned:
        try:
            engine.image_digest(pinned)
            return False
        except NotFound:
            pass
    loaded = engine.load_image(bundle.image)
    if pinned and loaded != pinned:
        raise InvalidInput(f"the image in the file is {loaded[:19]}, not {pinned[:19]} that the version pins; "
                           "nothing was recorded")
    return True


def _record(cfg: Configuration, bundle: archive.ImportBundle, provenance: Provenance | None, *, path: Path,
            actor: str, image_loaded: bool) -> bool:
    """The version (as its pusher recorded it: the changelog's actor and time) and the import's
    event, through the same statements a push records with; False when it is there already."""
    index = bundle.index
    rows = versions.VersionRows(
        model=index.model, version=index.version, manifest_digest=index.manifest_digest, record=index.record,
        message=str(index.changelog.get("message") or ""), actor=str(index.changelog.get("actor") or "unknown"),
        created_at=arriving.when(index.changelog.get("created_at")) or clock.now(), provenance=provenance,
        files=[("weight", w["path"], w["digest"], w["size"]) for w in index.record.get("weights", [])]
        + [("prompt", p["name"], p["digest"], p["size"]) for p in index.record.get("prompts", [])],
        tensors=arriving.tensor_index(cfg, index.record, known=bundle.tensors))
    return arriving.record_arrived(cfg, rows, actor=actor, action="import", detail={
        "from": str(path), "pushed_by": index.changelog.get("actor"), "pushed_at": index.changelog.get("created_at"),
        "image_loaded": image_loaded})
