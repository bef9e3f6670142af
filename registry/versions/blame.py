"""Line-by-line history of a prompt template: which version introduced each line, who pushed it,
when, and the git commit and author where the version's provenance knows them. No I/O: the
store hands in the prompt's history (``PromptRevision`` per version) and the texts.

The walk goes through the model's versions oldest to newest; a line keeps its origin as long
as it survives (``diffing.align``: bounded work whatever the prompts' size), like ``git blame``
across versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel

from registry.errors import NotFound
from registry.models import PromptRevision
from registry.versions.diffing import ALIGN_CELLS, align


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


def attribute(walk: list[PromptRevision], texts: Mapping[str, str], *, prompt: str) -> list[BlameLine]:
    """Blame the prompt's lines at the last step of ``walk``; ``texts`` maps digests to text."""
    lines: list[str] = []
    origins: list[PromptRevision] = []
    last: str | None = None
    cells = max(ALIGN_CELLS // max(1, len({s.digest for s in walk})), 50_000)  # the whole walk within budget
    for step in walk:
        if step.digest is None:  # removed here: a later re-add starts afresh
            lines, origins, last = [], [], None
        elif step.digest != last:
            new = texts[step.digest].splitlines()
            origins = _carry(lines, origins, new, step, cells)
            lines, last = new, step.digest
    if last is None:
        raise NotFound(f"prompt {prompt!r} is not in version {walk[-1].version}: see `registry show`")
    return [_line(i, text, origin) for i, (text, origin) in enumerate(zip(lines, origins), start=1)]


def _carry(old: list[str], origins: list[PromptRevision], new: list[str], step: PromptRevision,
           cells: int) -> list[PromptRevision]:
    """Origins for ``new``: surviving lines keep theirs, the rest belong to ``step``."""
    fresh = [step] * len(new)
    for i, j, n in align(old, new, cells=cells):
        fresh[j:j + n] = origins[i:i + n]
    return fresh


def _line(number: int, text: str, step: PromptRevision) -> BlameLine:
    fp = step.origin
    known = fp if fp is not None and fp.commit is not None and not fp.dirty else None
    return BlameLine(line=number, text=text, version=step.version, actor=step.actor, time=step.time,
                     commit=known.commit if known else None, author=known.author if known else None,
                     dirty=bool(fp and fp.dirty))
