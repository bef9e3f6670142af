"""Seals: tamper evidence that someone with write access to the database alone cannot forge.

The audit chain (``hash = sha256(prev + event)``) proves order, not origin: whoever can write
the database can edit event 3 and re-hash everything after it. So every row that decides what
is served, or what ``history`` and ``audit`` report, also carries a *seal*: an HMAC-SHA256
under a key that lives in a file, never in the database.

The key: 32 random bytes in ``<home>/signing.key`` (or ``$REGISTRY_KEY_FILE``), created by
``registry init`` with mode 0600 and refused when group or others may read it. Every home that
writes one database (a team on PostgreSQL) needs a copy of the same key file.

What is sealed (``mac`` columns, migration 0004), each message tagged with its kind so a seal
cannot be moved to another kind of row, and naming its row so it cannot be moved to another row:

- event: ``event_mac(id, hash)``. The hash already covers the event's content and the previous
  hash, so a re-hashed chain, an edited event and a forged appended event all lack a valid seal.
- chain head: ``head_mac(count, head)`` in the one-row ``audit_head`` table, rewritten by every
  append; deleting the newest events leaves a head that no longer matches the log.
- version: model, version, manifest_digest, sha256 of the stored manifest text, message, actor,
  created_at, provenance. Also, with no key at all, ``manifest_matches``: the stored manifest
  must hash to its manifest_digest. Checked on every read that serves or reports a version
  (promote, rollback, diff, export) by ``check_version``, and by ``audit verify``.
- release and environment rows: every column but ``id`` and ``mac``, re-sealed on each write.
- bound to events: the event written with a ledger or environment change carries the digests
  of the rows it wrote (``detail["rows"] = bindings(...)``, a deleted row as None). A per-row
  seal alone cannot tell an old, once-valid copy of a row (status ``deployed``, another actor)
  from the current one; the newest event naming a row can: ``check_bindings``.

Threat model (for the README):
- Write access to the database alone (a leaked database password, a restored dump, SQL
  injection elsewhere): editing, inserting, re-hashing or replaying rows is detected by ``audit
  verify`` and refused by promote/rollback, naming the row. Cutting off the newest events is
  detected through the signed head, unless an older copy of the whole database is restored.
- The key file (the registry owner's account, or root): can forge anything. So can someone
  who restores an entire older database. What survives both is a checkpoint kept elsewhere:
  ``registry audit checkpoint`` (HASH:COUNT) in another system, checked with
  ``audit verify --checkpoint``, which also catches truncation and rollback to an old copy.
- Not a secret store: the key makes edits evident; it hides nothing.

All functions here are pure apart from the key file: rows come in as plain dicts from the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as _random
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from registry import clock
from registry.durable import fsync_dir
from registry.errors import AuditBroken, KeyFileError, NotInitialised
from registry.formats import canonical

KEY_FILE = "signing.key"
KEY_ENV = "REGISTRY_KEY_FILE"
_HEADER = "cellar-hmac-sha256"

# A row by column name: a dict, or SQLAlchemy's RowMapping (whose keys may also be Column
# objects, so it is no Mapping[str, Any]).
Row = Mapping[Any, Any]

# The columns that name a row, per kind (what a seal must not be moved away from).
ROW_KEYS = {"version": ("model", "version"), "release": ("env", "revision"), "environment": ("name",),
            "signing_key": ("name",), "trust": ("env",)}  # the last two: registry.signing (issue 25)
# Columns added after rows were sealed (environments.runtime, 0010; environments.hosts and
# releases.hosts, 0011): left out while empty, so the seals of rows written before them still hold.
LATE_COLUMNS = ("runtime", "hosts")
UNSEALED = ("id", "mac")  # surrogate ids are not known before the insert; the seal is not sealed


# --- the key ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """An HMAC-SHA256 key; ``id`` names it in seals so a wrong key is told from a forgery."""

    secret: bytes = field(repr=False)
    path: Path | None = None

    @property
    def id(self) -> str:
        return hmac.new(self.secret, b"cellar key id", hashlib.sha256).hexdigest()[:8]

    def sign(self, data: bytes) -> str:
        """``KEYID:HEX``: the HMAC-SHA256 of ``data``, prefixed by this key's id."""
        return f"{self.id}:{hmac.new(self.secret, data, hashlib.sha256).hexdigest()}"

    def matches(self, data: bytes, mac: str | None) -> bool:
        """True when ``mac`` is this key's seal of ``data`` (compared in constant time)."""
        return isinstance(mac, str) and hmac.compare_digest(self.sign(data).encode(), mac.encode())


def key_path(home_path: str | Path) -> Path:
    """Where the key is: ``$REGISTRY_KEY_FILE``, else ``<home>/signing.key``."""
    return Path(os.environ.get(KEY_ENV) or Path(home_path) / KEY_FILE)


def load_or_create_key(home_path: str | Path, *, create: bool = True) -> Key:
    """The registry's key; created (mode 0600, atomically) when missing and ``create`` is set."""
    path = key_path(home_path)
    if not path.exists():
        if not create:
            raise NotInitialised(f"no signing key at {path}: run `registry init` (it keeps existing data) "
                                 f"or set {KEY_ENV} to this registry's key file")
        _create(path)
    return _load(path)


def _create(path: Path) -> None:
    """Write a new key to a private temp file, then link it into place: a racing init keeps
    the first key, and nobody ever reads a half-written one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{_HEADER} {_random.token_hex(32)}\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)



def _load(path: Path) -> Key:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read(200).decode("ascii", errors="replace").split()
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key {path} ({exc.strerror}): it must belong to the "
                           "registry's owner") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"the signing key {path} is open to others (mode {stat.S_IMODE(mode):04o}): "
                           f"run `chmod 600 {path}`, and replace the key if others may have read it")
    if len(text) != 2 or text[0] != _HEADER or len(text[1]) != 64:
        raise KeyFileError(f"{path} is not a Cellar signing key: restore it from a backup, or set {KEY_ENV}")
    try:
        return Key(bytes.fromhex(text[1]), path)
    except ValueError:
        raise KeyFileError(f"{path} is not a Cellar signing key: restore it from a backup") from None


# --- what is sealed ---------------------------------------------------------------------


def _normal(value: Any) -> Any:
    """One spelling per value, whatever the database hands back (naive or aware datetimes)."""
    if isinstance(value, datetime):
        return clock.utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, Enum):
        return value.value
    return value


def canonical_row_digest(kind: str, fields: Row) -> str:
    """``sha256:HEX`` of a row's content (every field but ``id`` and ``mac``), tagged with its kind."""
    body = {k: _normal(v) for k, v in fields.items()
            if k not in UNSEALED and not (k in LATE_COLUMNS and v is None)}
    return canonical.digest({"kind": kind, "fields": body})


def row_key(kind: str, fields: Row) -> str:
    """The row's name in messages and bindings: ``release:prod#7``, ``environment:prod``, ``version:bot@v1``."""
    names = [str(fields[k]) for k in ROW_KEYS[kind]]
    return f"{kind}:" + ("#" if kind == "release" else "@").join(names)


def version_fields(row: Row) -> dict[str, Any]:
    """A version row as sealed: the manifest text replaced by its sha256, the model by its name
    (``row`` has ``model`` (name), version, manifest_digest, manifest, message, actor, created_at,
    provenance; other columns such as ``model_id`` are ignored)."""
    return {"model": row["model"], "version": row["version"], "manifest_digest": row["manifest_digest"],
            "manifest_sha256": hashlib.sha256(row["manifest"].encode()).hexdigest(),
            "message": row["message"], "actor": row["actor"], "created_at": row["created_at"],
            "provenance": row.get("provenance")}


def _row_message(kind: str, fields: Row) -> bytes:
    return f"cellar {kind}\0{canonical_row_digest(kind, fields)}".encode()


def row_mac(key: Key, kind: str, fields: Row) -> str:
    """The ``mac`` for a release or environment row (``fields``: its columns), or a version
    (``fields``: ``version_fields(row)``)."""
    return key.sign(_row_message(kind, fields))


def version_mac(key: Key, row: Row) -> str:
    """The ``mac`` for a versions row; see ``version_fields`` for what ``row`` holds."""
    return row_mac(key, "version", version_fields(row))


def event_mac(key: Key, event_id: int, event_hash: str) -> str:
    """The ``mac`` for an event: its hash covers its content and the chain before it."""
    return key.sign(f"cellar event\0{event_id}\0{event_hash}".encode())


def head_mac(key: Key, count: int, head: str) -> str:
    """The ``mac`` of the audit_head row: the log has ``count`` events and ends at ``head``."""
    return key.sign(f"cellar head\0{count}\0{head}".encode())


def manifest_matches(manifest: str, manifest_digest: str) -> bool:
    """True when the stored manifest text is the one its digest names (no key needed)."""
    return manifest_digest == "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def bindings(kind: str, rows: Iterable[Row], *, deleted: Iterable[Row] = ()) -> dict:
    """``{row_key: digest}`` for the rows a change wrote (None for rows it deleted): put it in
    the change's event as ``detail["rows"]`` (merge the dicts of several kinds)."""
    out: dict[str, str | None] = {row_key(kind, r): canonical_row_digest(kind, r) for r in rows}
    out.update({row_key(kind, r): None for r in deleted})
    return out


# --- checking ---------------------------------------------------------------------------


class SealProblem(BaseModel):
    """One row that is not what was sealed; ``object`` names it (``event:12``, ``release:prod#7``)."""

    kind: str  # unsealed, other-key, forged, digest, appended, truncated, stale, deleted, index
    object: str
    message: str


def _seal_problem(key: Key, obj: str, mac: str | None, what: str) -> SealProblem:
    if not mac:
        return SealProblem(kind="unsealed", object=obj, message=(
            f"{obj} has no seal: it was written without the signing key (before `registry init` sealed "
            f"the record, or by hand); run `registry audit verify` on a copy you trust"))
    if mac.split(":", 1)[0] != key.id:
        return SealProblem(kind="other-key", object=obj, message=(
            f"{obj} was sealed with another key (id {mac.split(':', 1)[0][:8]}, this home's key is {key.id}): "
            f"set {KEY_ENV} to the key this registry was created with, or the row was forged"))
    return SealProblem(kind="forged", object=obj,
                   message=f"{obj} was edited outside Cellar: {what} no longer match its seal")


def event_problem(key: Key, row: Row) -> SealProblem | None:
    """The problem with one event row (``id``, ``hash``, ``mac``), or None: call it inside
    ``audit.check_chain``'s streaming loop, after the chain check."""
    if key.matches(f"cellar event\0{row['id']}\0{row['hash']}".encode(), row.get("mac")):
        return None
    return _seal_problem(key, f"event:{row['id']}", row.get("mac"), "its hash and content")


def check_events(key: Key, rows: Iterable[Row], *, limit: int = 50) -> list[SealProblem]:
    """Problems of the event rows, in order, at most ``limit``."""
    out = []
    for row in rows:
        if (problem := event_problem(key, row)) is not None:
            out.append(problem)
            if len(out) >= limit:
                break
    return out


def check_head(key: Key, head_row: Row | None, *, count: int, last_hash: str | None) -> list[SealProblem]:
    """The signed head (``count``, ``head``, ``mac``) against the log as it is now."""
    if head_row is None:
        if count == 0:
            return []
        return [SealProblem(kind="unsealed", object="audit:head", message=(
            "the audit log has no signed head: run `registry init` to seal it, on a copy you trust"))]
    if not key.matches(f"cellar head\0{head_row['count']}\0{head_row['head']}".encode(), head_row.get("mac")):
        return [_seal_problem(key, "audit:head", head_row.get("mac"), "the event count and head hash")]
    sealed = f"the signed head records {head_row['count']} events ending at {str(head_row['head'])[:12]}"
    if head_row["count"] < count:
        return [SealProblem(kind="appended", object=f"event:{head_row['count'] + 1}", message=(
            f"{sealed}, the log has {count}: events {head_row['count'] + 1}..{count} were added without the key"))]
    if head_row["count"] > count:
        return [SealProblem(kind="truncated", object=f"event:{count + 1}", message=(
            f"{sealed}, the log has {count}: events {count + 1}..{head_row['count']} were deleted"))]
    if head_row["head"] != (last_hash or "0" * 64):
        return [SealProblem(kind="truncated", object="audit:head", message=(
            f"{sealed}, the log ends elsewhere: the log was cut and written again"))]
    return []


def version_problems(key: Key, row: Row) -> list[SealProblem]:
    """A version row's problems: its manifest against its digest, and its seal."""
    obj = row_key("version", row)
    out = []
    if not manifest_matches(row["manifest"], row["manifest_digest"]):
        out.append(SealProblem(kind="digest", object=obj, message=(
            f"{obj}: the stored manifest does not hash to its manifest_digest {row['manifest_digest'][:19]}: "
            "it was edited in the database")))
    if not key.matches(_row_message("version", version_fields(row)), row.get("mac")):
        out.append(_seal_problem(key, obj, row.get("mac"), "its manifest, digest, message or actor"))
    return out


def check_version(key: Key, row: Row) -> None:
    """AuditBroken unless the version row is what was sealed: call before serving or reporting it
    (promote, rollback, diff, export)."""
    problems = version_problems(key, row)
    if problems:
        raise AuditBroken(f"{problems[0].message}; refusing to use it (run `registry audit verify`)")


def row_problem(key: Key, kind: str, row: Row) -> SealProblem | None:
    """A release or environment row's problem with its seal, or None."""
    if key.matches(_row_message(kind, row), row.get("mac")):
        return None
    return _seal_problem(key, row_key(kind, row), row.get("mac"), "its columns")


def check_rows(key: Key, kind: str, rows: Iterable[Row]) -> list[SealProblem]:
    """Problems of the rows of one kind: ``version`` (see ``version_fields``), ``release`` or
    ``environment`` (every column, ``mac`` included)."""
    out: list[SealProblem] = []
    for row in rows:
        if kind == "version":
            out += version_problems(key, row)
        elif (problem := row_problem(key, kind, row)) is not None:
            out.append(problem)
    return out


def check_bindings(current: Mapping[str, str], events: Iterable[tuple[int, Row]],
                   *, kinds: Iterable[str] = ("release", "environment")) -> list[SealProblem]:
    """Each row against the newest event that names it in ``detail["rows"]``.

    ``current``: ``{row_key: canonical_row_digest}`` of every row of ``kinds`` now in the
    database; ``events``: ``(event id, detail)`` in id order, from events whose seal was checked.
    Finds a replayed older copy of a row, a deleted row, and a row an event says was deleted.
    Rows no event names (a pending release, rows from before sealing) rest on their seal alone.
    """
    kinds = tuple(f"{k}:" for k in kinds)
    last: dict[str, tuple[int, str | None]] = {}
    for event_id, detail in events:
        for name, digest in (detail.get("rows") or {}).items():
            if name.startswith(kinds):
                last[name] = (event_id, digest)
    out = []
    for name, (event_id, digest) in last.items():
        now = current.get(name)
        if digest is None and now is not None:
            out.append(SealProblem(kind="stale", object=name, message=(
                f"{name} exists but event {event_id} deleted it, and no later event wrote it again")))
        elif digest is not None and now is None:
            out.append(SealProblem(kind="deleted", object=name, message=(
                f"{name} was deleted outside Cellar: event {event_id} wrote it and no event removed it")))
        elif digest is not None and now != digest:
            out.append(SealProblem(kind="stale", object=name, message=(
                f"{name} is not the row event {event_id} wrote: it was edited, or replaced by an older copy")))
    return out


def check_record(key: Key, *, events: Iterable[Row], head: Row | None,
                 versions: Iterable[Row] = (), releases: Iterable[Row] = (),
                 environments: Iterable[Row] = (), others: Mapping[str, Iterable[Row]] | None = None
                 ) -> list[SealProblem]:
    """Everything ``audit verify`` adds to the chain check, one problem per object at most.

    ``events``: rows with id, hash, mac and detail (a dict or its JSON text), in id order;
    ``others``: rows of further sealed kinds (``signing_key``, ``trust``), checked like environments.
    """
    problems: list[SealProblem] = []
    bound: list[tuple[int, Row]] = []
    count, last_hash = 0, None
    for row in events:
        count, last_hash = count + 1, row["hash"]
        if (problem := event_problem(key, row)) is not None:
            problems.append(problem)
            continue  # an unproven event binds nothing
        detail = row.get("detail") or {}
        bound.append((row["id"], json.loads(detail) if isinstance(detail, str) else detail))
    problems += check_head(key, head, count=count, last_hash=last_hash)
    problems += check_rows(key, "version", versions)
    current: dict[str, str] = {}
    kinds = {"release": releases, "environment": environments, **(others or {})}
    for kind, rows in kinds.items():
        rows = list(rows)
        problems += check_rows(key, kind, rows)
        current.update((row_key(kind, r), canonical_row_digest(kind, r)) for r in rows)
    seen = {p.object for p in problems}
    problems += [p for p in check_bindings(current, bound, kinds=kinds) if p.object not in seen]
    return problems
