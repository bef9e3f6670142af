"""A unified diff (as ``registry diff`` stores it in ``PromptDiff.unified``) as side-by-side rows (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass(frozen=True)
class Row:
    """One line of the side-by-side view. ``kind``: same, changed, removed, added or hunk (a gap)."""

    kind: str
    old_no: int | None = None
    old: str | None = None
    new_no: int | None = None
    new: str | None = None


def side_by_side(unified: str) -> list[Row]:
    """Rows pairing each removed line with the added line at the same place in its block."""
    rows: list[Row] = []
    removed: list[tuple[int, str]] = []
    added: list[tuple[int, str]] = []
    old_no = new_no = 0
    for line in unified.splitlines():
        if old_no == new_no == 0 and line.startswith(("--- ", "+++ ")):
            continue  # the file header: before the first hunk (which sets a line number above 0)
        if match := _HUNK.match(line):
            rows += _pair(removed, added)
            removed, added = [], []
            old_no, new_no = int(match[1]), int(match[2])
            rows.append(Row("hunk", old=line, new=line))
        elif line.startswith("-"):
            removed.append((old_no, line[1:]))
            old_no += 1
        elif line.startswith("+"):
            added.append((new_no, line[1:]))
            new_no += 1
        else:
            rows += _pair(removed, added)
            removed, added = [], []
            rows.append(Row("same", old_no, line[1:], new_no, line[1:]))
            old_no, new_no = old_no + 1, new_no + 1
    return rows + _pair(removed, added)


def _pair(removed: list[tuple[int, str]], added: list[tuple[int, str]]) -> list[Row]:
    out = []
    for i in range(max(len(removed), len(added))):
        old = removed[i] if i < len(removed) else (None, None)
        new = added[i] if i < len(added) else (None, None)
        kind = "changed" if old[0] is not None and new[0] is not None else ("removed" if new[0] is None else "added")
        out.append(Row(kind, old[0], old[1], new[0], new[1]))
    return out
