"""Versions in SQL: summaries, full descriptions, the record a version pins, prompt history.

Rows stay in here; callers get ``VersionSummary``/``VersionInfo``/``StoredRecord`` back and
hand in a ``NewVersion``. Functions take an open connection, so the caller decides the
transaction (``summaries`` alone takes the store, see there).

Vocabulary: a version's *record* is the canonical JSON it pins (image, weights, prompts,
runtime, probes; column ``versions.manifest``); its sha256 is the *manifest digest*.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select
from sqlalchemy.engine import Connection

from registry import clock
from registry.errors import InvalidInput, NotFound
from registry.formats import canonical
from registry.formats.safetensors_index import TensorRange, is_safetensors
from registry.models import (
    LogEntry,
    PromptRevision,
    Provenance,
    Resolved,
    SourceFile,
    Tensor,
    VersionInfo,
    VersionSummary,
    check_name,
)
from registry.store.files.blobs import Ingested
from registry.store.sql import Statement, Store, upsert
from registry.store.sql import schema as t
from registry.store.sql.sealing import require_version, seal_version, version_rows


@dataclass(frozen=True)
class NewVersion:
    """A version ready to record: its manifest, its files as stored (or only hashed), the
    record it pins and that record's digest (the manifest digest)."""

    resolved: Resolved
    stored: dict[tuple[str, str], Ingested]  # (kind, name) -> blob
    record: dict
    digest: str
    warnings: list[str] = field(default_factory=list)  # for the user; not recorded


@dataclass(frozen=True)
class StoredRecord:
    """The record a version pins, as stored, and the manifest digest recorded beside it."""

    record: dict
    digest: str


# --- reading ------------------------------------------------------------------------------


def summaries(store: Store, model: str | None = None, *, limit: int | None = None,
              offset: int = 0, include_deprecated: bool = True) -> list[VersionSummary]:
    """Versions, newest first; all models unless ``model`` is given (NotFound if it is unknown);
    ``offset`` skips that many first (a page of the web view); deprecated ones unless
    ``include_deprecated`` is False.

    Takes the store, not a connection: a malformed name is refused before connecting, so it
    reads as the user's mistake even when the database is down."""
    rows = _newest(store, model, limit=limit, offset=offset, include_deprecated=include_deprecated)
    return [_to_summary(r) for r in rows]


def count(conn: Connection, model: str | None = None, *, include_deprecated: bool = True) -> int:
    query = select(func.count()).select_from(t.versions)
    if model:
        query = query.where(t.versions.c.model_id == _id_of(model))
    if not include_deprecated:
        query = query.where(t.versions.c.deprecated_at.is_(None))
    return conn.execute(query).scalar_one()


def model_counts(conn: Connection) -> list[tuple[str, int]]:
    """(model name, its number of versions) for every model, sorted by name: one query."""
    query = (select(t.models.c.name, func.count(t.versions.c.id))
             .select_from(t.models.outerjoin(t.versions, t.versions.c.model_id == t.models.c.id))
             .group_by(t.models.c.name).order_by(t.models.c.name))
    return [(name, n) for name, n in conn.execute(query)]


def model_names(conn: Connection) -> list[str]:
    return list(conn.execute(select(t.models.c.name).order_by(t.models.c.name)).scalars())


def models_with(conn: Connection, version: str) -> list[str]:
    """Names of the models that have ``version``, sorted."""
    return list(conn.execute(select(t.models.c.name).select_from(t.versions.join(t.models))
                             .where(t.versions.c.version == version).order_by(t.models.c.name)).scalars())


def prompt_names(conn: Connection, model: str, version: str) -> list[str]:
    """The names of ``model@version``'s prompts, sorted."""
    return list(conn.execute(
        select(t.version_files.c.name).select_from(t.version_files.join(t.versions).join(t.models))
        .where(t.models.c.name == model, t.versions.c.version == version, t.version_files.c.kind == "prompt")
        .order_by(t.version_files.c.name)).scalars())


def lookup(conn: Connection, model: str, version: str) -> VersionSummary | None:
    row = conn.execute(_find_stmt(), {"model": model, "version": version}).first()
    return _to_summary(row) if row else None


def info(conn: Connection, model: str, version: str) -> VersionInfo:
    """Everything recorded about ``model@version``."""
    row = conn.execute(_summary_query(full=True).where(
        t.models.c.name == model, t.versions.c.version == version)).first()
    if row is None:
        if _model_id(conn, model) is None:
            raise NotFound(f"no model named {model!r}: see `registry list`")
        raise NotFound(f"no version {model}@{version}: see `registry list {model}`")
    require_version(conn, row._mapping)  # what show and diff report is what was pushed
    record = json.loads(row.manifest)
    tensors = tensors_of(conn, [w["digest"] for w in record["weights"]])
    provenance = Provenance.model_validate_json(row.provenance) if row.provenance else None
    return VersionInfo.from_record(_to_summary(row), record, tensors, provenance)


def record_of(conn: Connection, model: str, version: str) -> StoredRecord:
    """The record ``model@version`` pins and its manifest digest; AuditBroken when the stored row
    is not what was pushed (an edited manifest, digest, message or actor): nothing is served
    that the record does not prove."""
    row = conn.execute(_RECORD, {"model": model, "version": version}).mappings().first()
    if row is None:
        raise NotFound(f"no version {model}@{version}: see `registry list {model}`")
    require_version(conn, row)
    return StoredRecord(record=json.loads(row["manifest"]), digest=row["manifest_digest"])


def prompt_history(conn: Connection, *, model: str, prompt: str, upto: str) -> list[PromptRevision]:
    """The model's versions oldest to newest up to ``upto`` (inclusive), with the prompt's digest:
    only those where the digest changes, and ``upto`` itself (the rest attribute no line, and
    parsing each one's provenance made blame cost a millisecond per thousand versions)."""
    joined = t.versions.join(t.models).outerjoin(t.version_files, and_(
        t.version_files.c.version_id == t.versions.c.id, t.version_files.c.kind == "prompt",
        t.version_files.c.name == prompt))
    target = (select(t.versions.c.id, t.versions.c.created_at).select_from(t.versions.join(t.models))
              .where(t.models.c.name == model, t.versions.c.version == upto).subquery())
    order = (t.versions.c.created_at, t.versions.c.id)
    # Only the index of (model, created_at, id) and the prompt's file row are read per version; the
    # database drops the versions that left the prompt as it was, so only changes reach Python.
    walk = (select(t.versions.c.id, t.version_files.c.digest,
                   func.lag(t.version_files.c.digest).over(order_by=order).label("previous"),
                   func.row_number().over(order_by=order).label("n"))
            .select_from(joined.join(target, t.versions.c.created_at <= target.c.created_at))
            .where(t.versions.c.model_id == _id_of(model)).subquery())
    rows = conn.execute(
        select(t.versions.c.version, walk.c.digest, t.versions.c.actor, t.versions.c.created_at,
               t.versions.c.provenance)
        .select_from(walk.join(t.versions, t.versions.c.id == walk.c.id))
        .where(or_(walk.c.n == 1, walk.c.digest.is_distinct_from(walk.c.previous),
                   walk.c.id == select(target.c.id).scalar_subquery()))
        .order_by(walk.c.n)).all()
    out = []
    for r in rows:
        out.append(PromptRevision(version=r.version, actor=r.actor, time=clock.utc(r.created_at), digest=r.digest,
                                  origin=_origin(r.provenance, prompt)))
        if r.version == upto:
            return out
    raise NotFound(f"no version {model}@{upto}: see `registry list {model}`")


def _origin(provenance: str | None, prompt: str):
    return Provenance.model_validate_json(provenance).files.get(prompt) if provenance else None


def changelog(store: Store, model: str | None = None, *, limit: int | None = None) -> list[LogEntry]:
    """Versions newest first with their git provenance, in one bounded query (no parameter per
    row: PostgreSQL allows at most 65,535 of them)."""
    rows = _newest(store, model, limit=limit, extra=[t.versions.c.provenance])
    return [LogEntry(**_to_summary(r).model_dump(),
                     provenance=Provenance.model_validate_json(r.provenance) if r.provenance else None)
            for r in rows]


def _newest(store: Store, model: str | None, *, limit: int | None, offset: int = 0,
            include_deprecated: bool = True, extra: Sequence[Any] = ()) -> Sequence[Any]:
    """Summary rows (plus ``extra`` columns), newest first, in one bounded query through the
    (model_id, created_at, id) / (created_at, id) indexes; NotFound for an unknown model."""
    query = (select(*_summary_query().selected_columns, *extra).select_from(t.versions.join(t.models))
             .order_by(t.versions.c.created_at.desc(), t.versions.c.id.desc()))
    if model:
        query = query.where(t.versions.c.model_id == _id_of(_valid_model(model)))
    if not include_deprecated:
        query = query.where(t.versions.c.deprecated_at.is_(None))
    if limit:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    with store.read() as conn:
        rows = conn.execute(query).all()
        if model and not rows and not _model_id(conn, model):
            raise NotFound(f"no model named {model!r}: see `registry list`")
    return rows


def tensors_of(conn: Connection, digests: list[str]) -> dict[str, list[Tensor]]:
    """The indexed tensors of the given weight blobs, by blob digest, in file order."""
    if not digests:
        return {}
    rows = conn.execute(select(t.tensors).where(t.tensors.c.blob_digest.in_(digests))
                        .order_by(t.tensors.c.blob_digest, t.tensors.c.position)).all()
    out: dict[str, list[Tensor]] = {}
    for r in rows:
        out.setdefault(r.blob_digest, []).append(
            Tensor(name=r.name, dtype=r.dtype, shape=json.loads(r.shape), digest=r.digest))
    return out


def already_recorded(conn: Connection, digests: set[str]) -> set[str]:
    """Those of ``digests`` that the record knows (a version stored them)."""
    if not digests:
        return set()
    return set(conn.execute(select(t.blobs.c.digest).where(t.blobs.c.digest.in_(sorted(digests)))).scalars())


def models_holding(conn: Connection, digests: list[str]) -> dict[str, list[str]]:
    """Blob digest -> the models (by name) with a version that holds it."""
    if not digests:
        return {}
    rows = conn.execute(select(t.version_files.c.digest, t.models.c.name).distinct()
                        .select_from(t.version_files.join(t.versions).join(t.models))
                        .where(t.version_files.c.digest.in_(sorted(set(digests)))).order_by(t.models.c.name))
    out: dict[str, list[str]] = {}
    for digest, name in rows:
        out.setdefault(digest, []).append(name)
    return out


def tensor_digests(conn: Connection, blob_digest: str) -> dict[str, str]:
    """Tensor name -> digest for one indexed blob; empty when the blob has no index."""
    return dict(conn.execute(_TENSOR_DIGESTS, {"blob": blob_digest}).all())


# --- writing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """What recording a version needs to know, read under the write lock (``lookups``)."""

    recorded: bool  # the model has this version already
    model_known: bool
    newest_prompts: dict[str, str]  # prompt name -> digest in the model's newest version
    indexed: frozenset[str]  # weight blobs whose tensors are indexed already


@dataclass(frozen=True)
class VersionRows:
    """Everything recording one version writes, however it arrived (``of_push`` or an import)."""

    model: str
    version: str
    manifest_digest: str
    record: dict
    message: str
    actor: str
    created_at: datetime
    provenance: Provenance | None
    files: list[tuple[str, str, str, int]]  # (kind, name, blob digest, size)
    tensors: dict[str, tuple[list[TensorRange], dict[str, str]]]  # weight blob -> (ranges, tensor -> digest)


def of_push(new: NewVersion, *, actor: str, provenance: Provenance | None) -> VersionRows:
    """The rows of a version being pushed now."""
    m = new.resolved.manifest
    return VersionRows(
        model=m.model, version=m.version, manifest_digest=new.digest, record=new.record, message=m.message,
        actor=actor, created_at=clock.now(), provenance=provenance,
        files=[(kind, name, got.digest, got.size) for (kind, name), got in new.stored.items()],
        tensors={digest: (f.tensors, new.stored[("weight", f.name)].tensor_digests)
                 for digest, f in _indexable(new).items()})


def lookups(rows: VersionRows) -> list[Statement]:
    """What ``known`` reads, as statements for the caller's ``run_all`` (which may send others
    in the same round trip)."""
    return [(_MODEL_AND_VERSION, {"model": rows.model, "version": rows.version}),
            (_NEWEST_PROMPTS, {"model": rows.model}), *((_INDEXED, {"blob": digest}) for digest in rows.tensors)]


def known(answers: list[list[tuple]]) -> Known:
    """``lookups``' answers."""
    ids, prompts, *indexed = answers
    return Known(recorded=bool(ids) and ids[0][1] is not None, model_known=bool(ids), newest_prompts=dict(prompts),
                 indexed=frozenset(digest for found in indexed for (digest,) in found))


def inserting(conn: Connection, rows: VersionRows, known: Known) -> list[Statement]:
    """The statements that record a version (the model's row first if it is new), its blobs not
    known yet, its files and its weights' tensor index, for the caller's ``run_all``: on
    PostgreSQL one round trip, so the version's id is found by name rather than returned. The
    one path by which a version enters the database, pushed or imported."""
    now = clock.now()
    row = dict(version=rows.version, manifest_digest=rows.manifest_digest, manifest=canonical.dumps(rows.record),
               message=rows.message, actor=rows.actor, created_at=rows.created_at,
               provenance=rows.provenance.model_dump_json() if rows.provenance else None)
    sizes = {digest: size for _kind, _name, digest, size in rows.files}
    return [
        *([(_INSERT["models"], {"name": rows.model, "created_at": now})] if not known.model_known else []),
        (_INSERT_VERSION, {**row, "model": rows.model, "mac": seal_version(conn, {**row, "model": rows.model})}),
        (_new_blobs(conn.dialect.name), [{"digest": d, "size": n, "created_at": now} for d, n in sizes.items()]),
        (_INSERT_FILES, [{"model": rows.model, "version": rows.version, "kind": kind, "name": name, "digest": digest}
                         for kind, name, digest, _size in rows.files]),
        (_INSERT["tensors"], [
            {"blob_digest": digest, "name": tr.name, "position": i, "dtype": tr.dtype,
             "shape": json.dumps(list(tr.shape)), "digest": tensor_digests[tr.name]}
            for digest, (ranges, tensor_digests) in rows.tensors.items() if digest not in known.indexed
            for i, tr in enumerate(ranges)]),
    ]


def _indexable(new: NewVersion) -> dict[str, SourceFile]:
    """Weight blobs with a tensor index (safetensors), each once, with a file that has it."""
    out: dict[str, SourceFile] = {}
    for f in new.resolved.weights:
        if f.tensors and is_safetensors(f.name):
            out.setdefault(new.stored[("weight", f.name)].digest, f)
    return out


# --- rows in, domain objects out ------------------------------------------------------------


def _valid_model(name: str) -> str:
    try:
        return check_name(name, "model")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _model_id(conn: Connection, name: str) -> int | None:
    return conn.execute(_MODEL_ID, {"name": name}).scalar()


# The push path's statements, built once: building a statement costs several times more
# than running it on SQLite (bench/api_push.py).
_MODEL_ID = select(t.models.c.id).where(t.models.c.name == bindparam("name"))
_TENSOR_DIGESTS = select(t.tensors.c.name, t.tensors.c.digest).where(t.tensors.c.blob_digest == bindparam("blob"))
_INDEXED = select(t.tensors.c.blob_digest).where(t.tensors.c.blob_digest == bindparam("blob")).limit(1)
_INSERT = {table.name: insert(table) for table in (t.models, t.tensors)}
_MODEL_AND_VERSION = (  # no row: a new model; a row without a version id: a new version
    select(t.models.c.id, t.versions.c.id).select_from(t.models.outerjoin(t.versions, and_(
        t.versions.c.model_id == t.models.c.id, t.versions.c.version == bindparam("version"))))
    .where(t.models.c.name == bindparam("model")))
_VERSION_COLUMNS = ("version", "manifest_digest", "manifest", "message", "actor", "created_at", "provenance", "mac")
_INSERT_VERSION = insert(t.versions).from_select(  # the model's id from its name
    ["model_id", *_VERSION_COLUMNS],
    select(t.models.c.id, *(bindparam(c, type_=t.versions.c[c].type) for c in _VERSION_COLUMNS))
    .where(t.models.c.name == bindparam("model")))
_INSERT_FILES = insert(t.version_files).from_select(  # the version's id from the model's name and its version
    ["version_id", "kind", "name", "digest"],
    select(t.versions.c.id, *(bindparam(c, type_=t.version_files.c[c].type) for c in ("kind", "name", "digest")))
    .where(t.versions.c.model_id
           == select(t.models.c.id).where(t.models.c.name == bindparam("model")).scalar_subquery(),
           t.versions.c.version == bindparam("version")))


@functools.cache
def _new_blobs(dialect: str):
    """Blob rows, the known ones skipped."""
    return upsert(dialect)(t.blobs).on_conflict_do_nothing(index_elements=["digest"])


_RECORD = version_rows().where(t.models.c.name == bindparam("model"), t.versions.c.version == bindparam("version"))
_NEWEST_PROMPTS = select(t.version_files.c.name, t.version_files.c.digest).where(
    t.version_files.c.kind == "prompt",
    t.version_files.c.version_id == (
        select(t.versions.c.id).join(t.models).where(t.models.c.name == bindparam("model"))
        .order_by(t.versions.c.created_at.desc(), t.versions.c.id.desc()).limit(1).scalar_subquery()))


@functools.cache
def _find_stmt():
    return _summary_query().where(t.models.c.name == bindparam("model"), t.versions.c.version == bindparam("version"))


@functools.cache  # built once: a statement is immutable, and building it costs more than running it
def _summary_query(full: bool = False):
    cols = [t.models.c.name.label("model"), t.versions.c.version, t.versions.c.manifest_digest,
            t.versions.c.created_at, t.versions.c.actor, t.versions.c.message, t.versions.c.deprecated_at]
    if full:
        cols += [t.versions.c.manifest, t.versions.c.provenance, t.versions.c.mac]
    return select(*cols).select_from(t.versions.join(t.models))


def _id_of(model: str):
    """The model's id as a scalar subquery: filtering versions by it (not by a join on the name)
    lets PostgreSQL walk the (model_id, created_at, id) index instead of scanning every version."""
    return select(t.models.c.id).where(t.models.c.name == model).scalar_subquery()


def _to_summary(row) -> VersionSummary:
    return VersionSummary(model=row.model, version=row.version, manifest_digest=row.manifest_digest,
                          created_at=clock.utc(row.created_at), actor=row.actor, message=row.message,
                          deprecated_at=clock.utc(row.deprecated_at) if row.deprecated_at else None)
