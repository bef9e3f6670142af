"""Rendering helpers: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any


def print_json(value: Any) -> None:
    """Print pydantic models (or lists of them) as JSON on stdout."""
    sys.stdout.write(json.dumps(_plain(value), indent=2, ensure_ascii=False) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def esc(value: object) -> str:
    """User-supplied text (messages, actors, reasons, errors, paths, prompt lines) made safe to
    embed in rich markup: ``fix [/bold] thing`` prints as typed instead of raising MarkupError."""
    from rich.markup import escape  # rich is already loaded by whoever renders markup

    return escape(str(value))


def console(stderr: bool = False):
    """A rich console; when piped it does not wrap at 80 columns, so lines stay greppable."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() else 1000
    # emoji=False: a message saying ":warning:" is user text, not a request for an emoji
    return Console(file=stream, highlight=False, soft_wrap=not stream.isatty(), width=wide, emoji=False)


def when(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def short(digest: str | None, n: int = 12) -> str:
    return digest.split(":", 1)[-1][:n] if digest else "-"


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Aligned columns on stdout, like ``docker ps``: plain text, so a long list renders in
    milliseconds (rich's Table takes ~50 ms for 100 rows) and stays greppable."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    sys.stdout.write("\n".join(lines) + "\n")
