"""Line-by-line history of a prompt template: which version introduced each line, who pushed it,
when, and the git commit and author where the version's provenance knows them.

The walk goes through the model's versions oldest to newest; a line keeps its origin as long
as it survives (``difflib.SequenceMatcher``), like ``git blame`` across versions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from registry import clock
from registry.errors import NotFound
from registry.models import FileProvenance, Provenance, VersionSummary
from registry.store.schema import models, version_files, versions


class BlameLine(BaseModel):
    """One line of a prompt at some version, and where it came from."""

    line: int
    text: str
    version: str
    actor: str
    time: datetime
    commit: str | None = None  # None when unknown, or when the file had uncommitted edits
    author: str | None = None
    dirty: bool = False


class LogEntry(VersionSummary):
    """A changelog entry: a version summary with its git provenance, when it was pushed from git."""

    provenance: Provenance | None = None


@dataclass(frozen=True)
class Step:
    """One version in the walk, with the prompt's digest there (None when the prompt is absent)."""

    version: str
    actor: str
    time: datetime
    digest: str | None
    origin: FileProvenance | None


def steps(conn: Connection, *, model: str, prompt: str, upto: str) -> list[Step]:
    """The model's versions oldest to newest up to ``upto`` (inclusive), with the prompt's digest."""
    joined = versions.join(models).outerjoin(version_files, and_(
        version_files.c.version_id == versions.c.id, version_files.c.kind == "prompt",
        version_files.c.name == prompt))
    rows = conn.execute(
        select(versions.c.version, versions.c.actor, versions.c.created_at, versions.c.provenance,
               version_files.c.digest)
        .select_from(joined).where(models.c.name == model)
        .order_by(versions.c.created_at, versions.c.id)).all()
    out = []
    for r in rows:
        out.append(Step(version=r.version, actor=r.actor, time=clock.utc(r.created_at), digest=r.digest,
                        origin=_file_origin(r.provenance, prompt)))
        if r.version == upto:
            return out
    raise NotFound(f"no version {model}@{upto}: see `registry list {model}`")


def _file_origin(provenance: str | None, prompt: str) -> FileProvenance | None:
    return Provenance.model_validate_json(provenance).files.get(prompt) if provenance else None


def attribute(walk: list[Step], texts: Mapping[str, str], *, prompt: str) -> list[BlameLine]:
    """Blame the prompt's lines at the last step of ``walk``; ``texts`` maps digests to text."""
    lines: list[str] = []
    origins: list[Step] = []
    last: str | None = None
    for step in walk:
        if step.digest is None:  # removed here: a later re-add starts afresh
            lines, origins, last = [], [], None
        elif step.digest != last:
            new = texts[step.digest].splitlines()
            origins = _carry(lines, origins, new, step)
            lines, last = new, step.digest
    if last is None:
        raise NotFound(f"prompt {prompt!r} is not in version {walk[-1].version}: see `registry show`")
    return [_line(i, text, origin) for i, (text, origin) in enumerate(zip(lines, origins), start=1)]


def _carry(old: list[str], origins: list[Step], new: list[str], step: Step) -> list[Step]:
    """Origins for ``new``: surviving lines keep theirs, the rest belong to ``step``."""
    fresh = [step] * len(new)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            fresh[j1:j2] = origins[i1:i2]
    return fresh


def _line(number: int, text: str, step: Step) -> BlameLine:
    fp = step.origin
    known = fp is not None and fp.commit is not None and not fp.dirty
    return BlameLine(line=number, text=text, version=step.version, actor=step.actor, time=step.time,
                     commit=fp.commit if known else None, author=fp.author if known else None,
                     dirty=bool(fp and fp.dirty))


def provenance_of(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Provenance]:
    """Provenance of the given (model, version) pairs, those that have one."""
    keys = set(keys)
    if not keys:
        return {}
    rows = conn.execute(
        select(models.c.name, versions.c.version, versions.c.provenance).select_from(versions.join(models))
        .where(models.c.name.in_({m for m, _ in keys}), versions.c.version.in_({v for _, v in keys}),
               versions.c.provenance.is_not(None))).all()
    return {(r.name, r.version): Provenance.model_validate_json(r.provenance)
            for r in rows if (r.name, r.version) in keys}
