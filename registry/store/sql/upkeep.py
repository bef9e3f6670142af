"""Maintenance in SQL: what verify, gc, export, import, deprecate and delete read and write.

Functions take the caller's connection, so gc's removal of blob rows and its audit event, or
an import's rows and its event, share one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from registry import clock
from registry.errors import InvalidInput, NotFound
from registry.formats import canonical
from registry.models.upkeep import Deprecation, ProblemKind, StorageProblem
from registry.store.sql import schema as t

# --- blobs and who uses them -----------------------------------------------------------------


def recorded_blobs(conn: Connection) -> dict[str, int]:
    """Every blob row: digest -> recorded size."""
    return dict(conn.execute(select(t.blobs.c.digest, t.blobs.c.size)).all())


def blob_users(conn: Connection) -> dict[str, list[str]]:
    """Digest -> the ``model@version`` refs whose files use it (every referenced digest)."""
    rows = conn.execute(select(t.version_files.c.digest, t.models.c.name, t.versions.c.version).distinct()
                        .select_from(t.version_files.join(t.versions).join(t.models))).all()
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r.digest, []).append(f"{r.name}@{r.version}")
    return out


def referenced_digests(conn: Connection) -> set[str]:
    """The blob digests some version uses."""
    return set(conn.execute(select(t.version_files.c.digest).distinct()).scalars())


def digests_of(conn: Connection, refs: Iterable[tuple[str, str]]) -> set[str]:
    """The blob digests the given (model, version) pairs use."""
    refs = set(refs)
    if not refs:
        return set()
    rows = conn.execute(select(t.models.c.name, t.versions.c.version, t.version_files.c.digest)
                        .select_from(t.version_files.join(t.versions).join(t.models))
                        .where(t.models.c.name.in_({m for m, _ in refs}))).all()
    return {r.digest for r in rows if (r.name, r.version) in refs}


def records_by_digest(conn: Connection) -> dict[str, tuple[dict, list[str]]]:
    """Manifest digest -> (the record it pins, the model@version refs that have it)."""
    out: dict[str, tuple[dict, list[str]]] = {}
    rows = conn.execute(select(t.models.c.name, t.versions.c.version, t.versions.c.manifest_digest,
                               t.versions.c.manifest).select_from(t.versions.join(t.models)))
    for r in rows:
        record, refs = out.setdefault(r.manifest_digest, (json.loads(r.manifest), []))
        refs.append(f"{r.name}@{r.version}")
    return out


def forget_blobs(conn: Connection, digests: Iterable[str]) -> list[str]:
    """Delete the rows (and tensor index) of the given blobs that no version uses now; return
    the digests forgotten. Called by gc under the write lock, right before it unlinks them."""
    wanted = sorted(set(digests))
    if not wanted:
        return []
    used = set(conn.execute(select(t.version_files.c.digest).where(t.version_files.c.digest.in_(wanted)))
               .scalars())
    gone = [d for d in wanted if d not in used]
    for start in range(0, len(gone), 500):  # bounded IN lists
        part = gone[start:start + 500]
        conn.execute(delete(t.tensors).where(t.tensors.c.blob_digest.in_(part)))
        conn.execute(delete(t.blobs).where(t.blobs.c.digest.in_(part)))
    return gone


# --- integrity -------------------------------------------------------------------------------


def reference_problems(conn: Connection) -> list[StorageProblem]:
    """Recorded references that do not resolve: a version's file without its blob row, a
    record pinning other files than the version's rows, a tensor index without its blob,
    a release naming a version that is not there (or has other content)."""
    problems = []
    for r in conn.execute(select(t.version_files.c.digest, t.models.c.name, t.versions.c.version)
                          .select_from(t.version_files.join(t.versions).join(t.models))
                          .where(~exists().where(t.blobs.c.digest == t.version_files.c.digest))):
        problems.append(StorageProblem(kind=ProblemKind.REFERENCE, digest=r.digest, versions=[f"{r.name}@{r.version}"],
                                detail="the version uses a blob the database has no row for"))
    problems += _record_mismatches(conn)
    for digest in conn.execute(select(t.tensors.c.blob_digest).distinct()
                               .where(~exists().where(t.blobs.c.digest == t.tensors.c.blob_digest))).scalars():
        problems.append(StorageProblem(kind=ProblemKind.REFERENCE, digest=digest,
                                detail="a tensor index names a blob the database has no row for"))
    problems += _release_mismatches(conn)
    return problems


def _record_mismatches(conn: Connection) -> list[StorageProblem]:
    files: dict[int, set[str]] = {}
    for vid, digest in conn.execute(select(t.version_files.c.version_id, t.version_files.c.digest)):
        files.setdefault(vid, set()).add(digest)
    out = []
    for r in conn.execute(select(t.versions.c.id, t.models.c.name, t.versions.c.version, t.versions.c.manifest,
                                 t.versions.c.manifest_digest).select_from(t.versions.join(t.models))):
        ref = f"{r.name}@{r.version}"
        record = json.loads(r.manifest)
        if canonical.digest(record) != r.manifest_digest:
            out.append(StorageProblem(kind=ProblemKind.REFERENCE, versions=[ref],
                               detail=f"its record does not hash to its manifest digest {r.manifest_digest}"))
        pinned = {f["digest"] for key in ("weights", "prompts") for f in record.get(key, [])}
        if pinned != files.get(r.id, set()):
            out.append(StorageProblem(kind=ProblemKind.REFERENCE, versions=[ref],
                               detail="its record pins other blobs than its file rows name"))
    return out


def _release_mismatches(conn: Connection) -> list[StorageProblem]:
    have = {(r.name, r.version): r.manifest_digest for r in conn.execute(
        select(t.models.c.name, t.versions.c.version, t.versions.c.manifest_digest)
        .select_from(t.versions.join(t.models)))}
    out = []
    for r in conn.execute(select(t.releases.c.env, t.releases.c.revision, t.releases.c.model,
                                 t.releases.c.version, t.releases.c.manifest_digest)):
        found = have.get((r.model, r.version))
        if found != r.manifest_digest:
            why = "names a version that is not recorded" if found is None else "names other content than recorded"
            out.append(StorageProblem(kind=ProblemKind.REFERENCE, versions=[f"{r.model}@{r.version}"],
                               detail=f"release {r.env} revision {r.revision} {why}"))
    return out


def integrity_check(conn: Connection) -> tuple[str, list[StorageProblem]]:
    """The database's own check: what was checked, and what it found."""
    if conn.dialect.name == "sqlite":
        found = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check").all()]
        problems = ([] if found == ["ok"]
                    else [StorageProblem(kind=ProblemKind.DATABASE, detail=line) for line in found[:20]])
        fk = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        problems += [StorageProblem(kind=ProblemKind.DATABASE, detail=f"a row of {r[0]} points at a missing {r[2]} row")
                     for r in fk[:20]]
        return "SQLite PRAGMA integrity_check and foreign_key_check", problems
    # PostgreSQL checks its pages itself (checksums, if enabled at initdb); a full check needs
    # the amcheck extension, which a registry's login may not install. Count every table's rows
    # to read each heap once: a damaged page raises here.
    problems = []
    for table in t.metadata.sorted_tables:
        try:
            conn.execute(select(func.count()).select_from(table)).scalar_one()
        except DBAPIError as exc:  # a damaged page: reported; the transaction is over, so stop here
            why = str(exc.orig or exc).splitlines()[0]
            problems.append(StorageProblem(kind=ProblemKind.DATABASE, detail=f"table {table.name}: {why}"))
            break
    return ("PostgreSQL: every table read in full and the references between them checked "
            "(page-level checks need the amcheck extension: run pg_amcheck)"), problems


# --- deprecate, delete -----------------------------------------------------------------------


def deprecation(conn: Connection, model: str, version: str) -> Deprecation | None:
    """When and why ``model@version`` was deprecated; None when it is not."""
    row = conn.execute(_version_row(model, version)).first()
    if row is None:
        raise NotFound(f"no version {model}@{version}: see `registry list {model} --all`")
    if row.deprecated_at is None:
        return None
    return Deprecation(model=model, version=version, deprecated_at=clock.utc(row.deprecated_at),
                       reason=row.deprecated_reason)


def deprecations(conn: Connection, model: str | None = None) -> list[Deprecation]:
    """Every deprecated version (of ``model``), oldest deprecation first."""
    query = (select(t.models.c.name, t.versions.c.version, t.versions.c.deprecated_at, t.versions.c.deprecated_reason)
             .select_from(t.versions.join(t.models)).where(t.versions.c.deprecated_at.is_not(None))
             .order_by(t.versions.c.deprecated_at))
    if model:
        query = query.where(t.models.c.name == model)
    return [Deprecation(model=r.name, version=r.version, deprecated_at=clock.utc(r.deprecated_at),
                        reason=r.deprecated_reason) for r in conn.execute(query)]


def refuse_deprecated(conn: Connection, model: str, version: str) -> None:
    """InvalidInput when ``model@version`` is deprecated (promote calls this first)."""
    if (d := deprecation(conn, model, version)) is not None:
        why = f" ({d.reason})" if d.reason else ""
        raise InvalidInput(f"{model}@{version} is deprecated{why}: promote another version "
                           "(`registry list --all` shows which are deprecated)")


def deprecate(conn: Connection, model: str, version: str, *, at: datetime, reason: str | None) -> None:
    conn.execute(update(t.versions).values(deprecated_at=at, deprecated_reason=reason)
                 .where(t.versions.c.id == _version_id(conn, model, version)))


def releases_naming(conn: Connection, model: str, version: str) -> list[tuple[str, int]]:
    """(env, revision) of every release of ``model@version``, in any status."""
    return [(r.env, r.revision) for r in conn.execute(
        select(t.releases.c.env, t.releases.c.revision)
        .where(t.releases.c.model == model, t.releases.c.version == version)
        .order_by(t.releases.c.env, t.releases.c.revision))]


def delete_version(conn: Connection, model: str, version: str) -> list[str]:
    """Remove the version's rows (and its model's when it was the last); its blob rows stay
    for gc. Returns the blob digests it used."""
    vid = _version_id(conn, model, version)
    digests = sorted(set(conn.execute(select(t.version_files.c.digest)
                                      .where(t.version_files.c.version_id == vid)).scalars()))
    conn.execute(delete(t.version_files).where(t.version_files.c.version_id == vid))
    # its signatures vouch for content that is gone (the audit log keeps who signed)
    conn.execute(delete(t.signatures).where(t.signatures.c.model == model, t.signatures.c.version == version))
    model_id = conn.execute(select(t.versions.c.model_id).where(t.versions.c.id == vid)).scalar_one()
    conn.execute(delete(t.versions).where(t.versions.c.id == vid))
    if not conn.execute(select(t.versions.c.id).where(t.versions.c.model_id == model_id).limit(1)).first():
        conn.execute(delete(t.models).where(t.models.c.id == model_id))
    return digests


def _version_row(model: str, version: str):
    return (select(t.versions.c.id, t.versions.c.deprecated_at, t.versions.c.deprecated_reason)
            .select_from(t.versions.join(t.models))
            .where(t.models.c.name == model, t.versions.c.version == version))


def _version_id(conn: Connection, model: str, version: str) -> int:
    vid = conn.execute(_version_row(model, version)).scalar()
    if vid is None:
        raise NotFound(f"no version {model}@{version}: see `registry list {model} --all`")
    return vid
