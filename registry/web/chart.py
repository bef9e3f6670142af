"""Probe latency (p50/p95) and pass rate over time as inline SVG, one marker per release (pure).

Rendered on the server, so the page needs no JavaScript (and none from a CDN an air-gapped
site cannot reach). The SVG uses presentation attributes and CSS classes only, never a
``style`` attribute, so the page's Content-Security-Policy can forbid inline styles. Every
text that comes from a user (actor, reason) is escaped here, since templates insert the
result as markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from registry import ProbeRun, Release, visible_text


def escape(text: str) -> str:
    """User text for the SVG: invisible characters made visible (``\\u202e``), then escaped."""
    return html.escape(visible_text(text))


WIDTH, HEIGHT = 860, 330
LEFT, RIGHT, TOP = 56, 16, 44
LATENCY_H, GAP, RATE_H = 170, 26, 60
DOTS_UP_TO = 120  # runs: beyond this a dot (and its tooltip) per run costs more than it shows
Link = Callable[[Release, Release | None], str | None]


@dataclass(frozen=True)
class Point:
    """One run as plotted: when, p50 and p95 of its answers (None: nothing answered), pass rate."""

    at: datetime
    p50: float | None
    p95: float | None
    pass_rate: float | None


def run_points(runs: Sequence[ProbeRun]) -> list[Point]:
    """Each run's figures, oldest first. Pass rate ignores ``error`` results, like ``registry health``."""
    out = []
    for run in sorted(runs, key=lambda r: r.started_at):
        latencies = sorted(r.latency_ms for r in run.results if r.latency_ms is not None)
        judged = [r for r in run.results if r.status != "error"]
        rate = sum(r.status == "pass" for r in judged) / len(judged) if judged else None
        out.append(Point(run.started_at, _percentile(latencies, 50), _percentile(latencies, 95), rate))
    return out


def diff_link(release: Release, previous: Release | None) -> str | None:
    """The web view's diff from the release before to this one (None for a first release)."""
    if previous is None:
        return None
    return "/diff?" + urlencode({"a": previous.ref, "b": release.ref})


def latency_chart(runs: Sequence[ProbeRun], releases: Sequence[Release], *, link: Link = diff_link,
                  title: str = "probe latency and pass rate") -> str:
    """An SVG chart of ``runs`` (one environment's) with a marker per release in ``releases``
    naming its revision, version and actor, linking to ``link(release, previous)``."""
    points = run_points(runs)
    ordered = sorted(releases, key=lambda r: r.revision)
    scale = _Scale.of(points, ordered)
    parts = [_open(title), _frame(scale)]
    parts += _latency_lines(points, scale)
    parts += _rate_line(points, scale)
    parts += _markers(ordered, scale, link)
    if not points:
        parts.append(_text(WIDTH / 2, TOP + LATENCY_H / 2, "no probe runs in this window", "empty", anchor="middle"))
    parts.append(_legend())
    parts.append("</svg>")
    return "\n".join(parts)


# --- scales and frame ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Scale:
    start: datetime
    end: datetime
    top_ms: float

    @classmethod
    def of(cls, points: list[Point], releases: list[Release]) -> _Scale:
        times = [p.at for p in points] + [r.started_at for r in releases]
        start, end = (min(times), max(times)) if times else (datetime(1970, 1, 1), datetime(1970, 1, 2))
        if end - start < timedelta(minutes=1):
            start, end = start - timedelta(minutes=30), end + timedelta(minutes=30)
        pad = (end - start) * 0.03
        highest = max((v for p in points for v in (p.p50, p.p95) if v is not None), default=0.0)
        return cls(start - pad, end + pad, _nice_ceiling(highest))

    def x(self, at: datetime) -> float:
        span = (self.end - self.start).total_seconds()
        return LEFT + (at - self.start).total_seconds() / span * (WIDTH - LEFT - RIGHT)

    def y_ms(self, ms: float) -> float:
        return TOP + LATENCY_H - ms / self.top_ms * LATENCY_H

    @staticmethod
    def y_rate(rate: float) -> float:
        top = TOP + LATENCY_H + GAP
        return top + RATE_H - rate * RATE_H


def _nice_ceiling(value: float) -> float:
    """The next 1, 2 or 5 times a power of ten at or above ``value`` (at least 1 ms)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _open(title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>")


def _frame(s: _Scale) -> str:
    rate_top = TOP + LATENCY_H + GAP
    out = [f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{LATENCY_H}"/>',
           f'<rect class="plot" x="{LEFT}" y="{rate_top}" width="{WIDTH - LEFT - RIGHT}" height="{RATE_H}"/>']
    for ms in (0, s.top_ms / 2, s.top_ms):
        y = s.y_ms(ms)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        out.append(_text(LEFT - 6, y + 4, f"{ms:g} ms", "axis", anchor="end"))
    for rate in (0, 1):
        out.append(_text(LEFT - 6, s.y_rate(rate) + 4, f"{rate:.0%}", "axis", anchor="end"))
    out.append(_text(LEFT, rate_top - 6, "pass rate", "axis"))
    for frac in (0.0, 0.5, 1.0):
        at = s.start + (s.end - s.start) * frac
        anchor = ("start", "middle", "end")[int(frac * 2)]
        out.append(_text(s.x(at), HEIGHT - 8, at.strftime("%Y-%m-%d %H:%M"), "axis", anchor=anchor))
    return "\n".join(out)


# --- series --------------------------------------------------------------------------------


def _latency_lines(points: list[Point], s: _Scale) -> list[str]:
    out = []
    for name in ("p95", "p50"):
        for segment in _segments([(p.at, getattr(p, name)) for p in points]):
            coords = " ".join(f"{s.x(at):.1f},{s.y_ms(v):.1f}" for at, v in segment)
            out.append(f'<polyline class="line {name}" fill="none" points="{coords}"/>')
        if len(points) > DOTS_UP_TO:
            continue
        out += [f'<circle class="dot {name}" cx="{s.x(p.at):.1f}" cy="{s.y_ms(getattr(p, name)):.1f}" r="2">'
                f"<title>{_when(p.at)} {name} {getattr(p, name):.0f} ms</title></circle>"
                for p in points if getattr(p, name) is not None]
    return out


def _rate_line(points: list[Point], s: _Scale) -> list[str]:
    out = []
    for segment in _segments([(p.at, p.pass_rate) for p in points]):
        coords = " ".join(f"{s.x(at):.1f},{s.y_rate(v):.1f}" for at, v in segment)
        out.append(f'<polyline class="line rate" fill="none" points="{coords}"/>')
    return out


def _segments(values: list[tuple[datetime, float | None]]) -> list[list[tuple[datetime, float]]]:
    """Runs of known values: a run where nothing answered breaks the line instead of faking 0 ms."""
    out: list[list[tuple[datetime, float]]] = []
    current: list[tuple[datetime, float]] = []
    for at, value in values:
        if value is None:
            if current:
                out.append(current)
            current = []
        else:
            current.append((at, value))
    return out + ([current] if current else [])


def _markers(releases: list[Release], s: _Scale, link: Link) -> list[str]:
    out, previous = [], None
    bottom = TOP + LATENCY_H + GAP + RATE_H
    for i, rel in enumerate(releases):
        x = s.x(rel.started_at)
        label = f"r{rel.revision} {rel.version} · {_short_actor(rel.actor)}"
        tip = (f"revision {rel.revision}: {rel.ref} ({rel.operation}, {rel.status}) by {rel.actor} "
               f"at {_when(rel.started_at)}" + (f" — {rel.reason}" if rel.reason else ""))
        body = (f'<line class="marker-line" x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{bottom}"/>'
                f'<line class="marker-hit" x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{bottom}" '
                'stroke="transparent" stroke-width="10"/>'  # a dashed 1 px line is hard to click
                + _label(x, TOP - 8 - 12 * (i % 2), label)
                + f"<title>{escape(tip)}</title>")
        classes = f"release-marker status-{escape(str(rel.status))}"
        target = link(rel, previous)
        attrs = f'class="{classes}" data-revision="{rel.revision}" data-version="{escape(rel.version)}"'
        out.append(f'<a href="{escape(target)}" {attrs}>{body}</a>' if target else f"<g {attrs}>{body}</g>")
        previous = rel
    return out


def _legend() -> str:
    y = 14
    items = [("p50", "p50 latency"), ("p95", "p95 latency"), ("rate", "pass rate")]
    out = []
    for i, (cls, name) in enumerate(items):
        x = LEFT + i * 120
        out.append(f'<line class="line {cls}" x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}"/>')
        out.append(_text(x + 22, y + 4, name, "axis"))
    return "".join(out)


# --- small helpers -------------------------------------------------------------------------


def _text(x: float, y: float, text: str, cls: str, *, anchor: str = "start") -> str:
    return f'<text class="{cls}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _label(x: float, y: float, label: str) -> str:
    """A marker's label right of its line, or left of it near the right edge (so it is not cut off)."""
    if x > WIDTH - RIGHT - 7 * len(label):
        return _text(x - 3, y, label, "marker-label", anchor="end")
    return _text(x + 3, y, label, "marker-label")


def _short_actor(actor: str) -> str:
    """``alice <alice@example.org>`` -> ``alice``: the marker label has room for a name only."""
    name = actor.split("<", 1)[0].strip() or actor
    return name if len(name) <= 24 else name[:23] + "…"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _percentile(values: list[float], q: float) -> float | None:
    # nearest rank, as registry.health.report computes it, so the chart and `registry health` agree
    if not values:
        return None
    return values[max(1, math.ceil(q / 100 * len(values))) - 1]
