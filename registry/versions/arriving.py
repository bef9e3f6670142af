"""Recording a version that arrived whole from elsewhere (an export file, a remote), through
the same statements a push records with (``versions.inserting``), with its own audit event.

The caller has stored and verified every blob first; this checks under the write lock that
they are still there (a gc may have run meanwhile), then writes the rows and the event in one
transaction.
"""

from __future__ import annotations

from datetime import datetime

from registry import clock
from registry.configuration import Configuration
from registry.errors import InvalidInput, StorageError, VersionConflict
from registry.formats.safetensors_index import SafetensorsError, is_safetensors, read_index
from registry.store.files.blobs import hash_file
from registry.store.sql import events, queue, run_all, versions
from registry.trust import audit


def recorded_already(cfg: Configuration, model: str, version: str, manifest_digest: str, *, source: str,
                     verb: str) -> bool:
    """True when this exact version is recorded here already (an import or pull is then a
    no-op); VersionConflict naming ``source`` when other content holds its name."""
    with cfg.store.read() as conn:
        found = versions.lookup(conn, model, version)
    if found is None:
        return False
    if found.manifest_digest != manifest_digest:
        raise VersionConflict(f"{model}@{version} already exists here with other content "
                              f"({found.manifest_digest[:19]}; {source} holds {manifest_digest[:19]}): "
                              f"versions are immutable; nothing was {verb}")
    return True


def record_arrived(cfg: Configuration, rows: versions.VersionRows, *, actor: str, action: str,
                   detail: dict) -> bool:
    """The version and its ``action`` event (``detail`` plus the manifest digest and what changed
    in the prompts); False when this exact version is recorded already, VersionConflict when
    other content holds its name."""
    ref = f"{rows.model}@{rows.version}"
    with cfg.store.write() as conn:
        *answers, last = run_all(conn, [*versions.lookups(rows), events.LAST])
        known = versions.known(answers)
        if known.recorded:  # recorded by someone else meanwhile
            existing = versions.lookup(conn, rows.model, rows.version)
            assert existing is not None  # known.recorded, under this write lock
            if existing.manifest_digest != rows.manifest_digest:
                raise VersionConflict(f"{ref} was recorded with other content meanwhile")
            return False
        require_blobs(cfg, rows.record)
        event, _ = events.appending(
            conn, last[0] if last else None, actor=actor, action=action, object=ref, model=rows.model,
            db_user=cfg.store.db_user(conn), detail={
                **detail, "manifest_digest": rows.manifest_digest,
                "prompts_changed": audit.prompts_changed(known.newest_prompts, rows.record.get("prompts", []))})
        queue(conn, versions.inserting(conn, rows, known) + event)
    return True


def tensor_index(cfg: Configuration, record: dict, *, known: dict) -> dict:
    """Blob digest -> (tensor ranges, tensor digests) of each safetensors weight: hashed on the
    way in (``known``), else from the stored blob unless it is indexed already."""
    out = dict(known)
    for w in record.get("weights", []):
        digest = w["digest"]
        if not is_safetensors(w["path"]) or digest in out:
            continue
        with cfg.store.read() as conn:
            if versions.tensor_digests(conn, digest):
                continue
        blob = cfg.blobs.path(digest)
        try:
            ranges = read_index(blob)
        except SafetensorsError as exc:
            raise InvalidInput(f"refusing to record it: {w['path']} is not a valid safetensors file ({exc}); "
                               "nothing was recorded") from None
        out[digest] = (ranges, hash_file(blob, ranges).tensor_digests)
    return out


def require_blobs(cfg: Configuration, record: dict) -> None:
    """Under the write lock: every blob the version pins is in the store (a gc between
    storing them and now would have removed an old unreferenced one)."""
    for f in [*record.get("weights", []), *record.get("prompts", [])]:
        if not cfg.blobs.has(f["digest"], size=f["size"]):
            raise StorageError(f"blob {f['digest']} went missing while the version arrived (a concurrent gc?): "
                               "run the command again")


def when(value) -> datetime | None:
    """A recorded ISO time, or None."""
    try:
        return clock.utc(datetime.fromisoformat(value)) if value else None
    except (TypeError, ValueError):
        return None
