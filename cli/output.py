"""Rendering helpers: JSON for scripts, plain aligned tables and lines for people.

User text (messages, actors, reasons, errors, paths, prompt lines) is data, never markup or
terminal control: ``esc`` makes it safe inside rich markup, ``plain`` inside plain output.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

MAX_CELL = 80  # a table cell longer than this is cut with "…" (--json has the whole value)


def print_json(value: Any) -> None:
    """Print pydantic models (or lists of them) as JSON on stdout; a list is written item by
    item, so a long listing never sits in memory twice."""
    if not isinstance(value, list | tuple):
        sys.stdout.write(json.dumps(_plain(value), indent=2, ensure_ascii=False) + "\n")
        return
    write = sys.stdout.write
    write("[")
    for i, item in enumerate(value):
        text = json.dumps(_plain(item), indent=2, ensure_ascii=False)
        write(("," if i else "") + "\n  " + text.replace("\n", "\n  "))
    write("\n]\n" if value else "]\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def plain(value: object) -> str:
    """User text made safe for a terminal: control characters made visible (newline as ⏎)."""
    from registry import safe_for_terminal

    return safe_for_terminal(value)


def esc(value: object) -> str:
    """User text made safe to embed in rich markup: ``fix [/bold] thing`` prints as typed instead
    of raising MarkupError, and control characters cannot reach the terminal."""
    from rich.markup import escape  # rich is already loaded by whoever renders markup

    return escape(plain(value))


def console(stderr: bool = False):
    """A rich console; when piped it does not wrap at 80 columns, so lines stay greppable."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() else 1000
    # emoji=False: a message saying ":warning:" is user text, not a request for an emoji
    return Console(file=stream, highlight=False, soft_wrap=not stream.isatty(), width=wide, emoji=False)


def warn(message: str) -> None:
    """One warning line on stderr, secrets scrubbed (a warning may quote a URL or an answer)."""
    from registry import scrub_for_display

    print(f"warning: {plain(scrub_for_display(message))}", file=sys.stderr)


def when(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def local_zone() -> str:
    """The terminal's time zone as ``when`` shows times in it: ``UTC``, ``CET``."""
    return datetime.now().astimezone().strftime("%Z")


def stated(at: datetime) -> str:
    """Local time with its zone stated, e.g. ``2026-11-20 04:12:00 CET (UTC+0100)``."""
    local = at.astimezone()
    zone = local.strftime("%Z")
    return f"{local:%Y-%m-%d %H:%M:%S} {zone}" + ("" if zone == "UTC" else f" (UTC{local:%z})")


def short(digest: str | None, n: int = 12) -> str:
    return digest.split(":", 1)[-1][:n] if digest else "-"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def first_line(text: str | None) -> str:
    return text.splitlines()[0] if text and text.strip() else ""


def table(headers: list[str], rows: list[list[object]]) -> None:
    """Aligned columns on stdout, like ``docker ps``: plain text, so a long list renders in
    milliseconds (rich's Table takes ~50 ms for 100 rows) and stays greppable. Every cell is
    made terminal-safe and cut at ``MAX_CELL`` characters; the last column is not padded."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [headers, *cells]]
    sys.stdout.write("\n".join(lines) + "\n")


def _cell(value: object) -> str:
    text = plain("" if value is None else value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


class StepLines:
    """Deploy steps on stderr, as ``on_step`` of promote and rollback: one line per finished
    step, with what it decided (``✓ health check  812 ms  (timeout 2.5 s from environment
    staging)``), and on a terminal only a spinner with the elapsed time while a step runs (a
    health wait, warm-up), erased when it ends."""

    def __init__(self, out=None):
        self.out = out or console(stderr=True)
        self.detail: str | None = None
        self._live = None
        self._running: _Running | None = None

    def started(self, name: str, detail: str | None) -> None:
        """A step started, or noted its detail while running (the timer keeps going)."""
        self.detail = detail
        label = name + (f" ({detail})" if detail else "")
        if self._running is not None:
            self._running.label = label
        elif self.out.is_terminal:
            from rich.live import Live  # only on a terminal: a pipe never pays for it

            self._running = _Running(label)
            self._live = Live(self._running, console=self.out, transient=True, refresh_per_second=10)
            self._live.start()

    def __call__(self, name: str, seconds: float, ok: bool) -> None:
        if self._live is not None:
            self._live.stop()
            self._live, self._running = None, None
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        note = f"  ({esc(self.detail)})" if self.detail else ""
        self.out.print(f"  {mark} {esc(name):<23} {seconds * 1000:7.0f} ms{note}")
        self.detail = None


class _Running:
    """A spinner, the running step and the seconds since it started, redrawn by rich's Live."""

    def __init__(self, label: str):
        from rich.spinner import Spinner

        self.label, self.since, self.spinner = label, time.monotonic(), Spinner("dots")

    QUIET_S = 0.25  # a step done sooner shows no spinner at all: no flicker for the quick ones

    def __rich_console__(self, console, options):
        from rich.text import Text  # loaded with rich.live already

        if time.monotonic() - self.since < self.QUIET_S:
            return
        self.spinner.update(text=Text(f"{plain(self.label)}  {time.monotonic() - self.since:.1f} s"))
        yield self.spinner
