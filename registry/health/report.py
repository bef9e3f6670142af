"""``registry health``: per-version figures and the releases after which things moved (pure).

Input: stored probe runs and the environments' ledgers. A run belongs to the release it ran
against (``run.revision``). Latency figures use every measured answer (``error`` results have
none); ``pass_rate`` is passed / (passed + failed): an error says nothing about the model.

A *change point* is a release whose runs differ from those of the release before it (by
revision, in the same environment) by more than ``Thresholds``: p95 latency up or down by a
factor and an absolute amount, or pass rate by an absolute amount. Both sides need
``min_runs`` runs, so one slow run does not name a culprit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

from registry.ledger import Release, short_host
from registry.models.probes import (
    ChangePoint,
    HealthReport,
    ProbeRun,
    ProbeStatus,
    VersionHealth,
)
from registry.versions.diffing import ChangeKind, Diff

BARS = "▁▂▃▄▅▆▇█"
ASCII_BARS = "_.-=+*#@"


@dataclass(frozen=True)
class Thresholds:
    p95_factor: float = 1.5  # after / before (or before / after) of at least this ...
    p95_min_ms: float = 20.0  # ... and at least this many ms apart (a 2 ms -> 4 ms blip is no news)
    pass_rate: float = 0.2  # absolute move in pass rate
    min_runs: int = 3


def build(runs: Iterable[ProbeRun], releases: Iterable[Release], *, since: datetime | None = None,
          summaries: Mapping[tuple[str, int], str] | None = None, thresholds: Thresholds = Thresholds(),
          ascii_only: bool = False, width: int = 60) -> HealthReport:
    """The report for ``runs`` (already filtered by env and time); ``summaries`` maps
    (env, revision) to a one-line diff from the release before, e.g. "prompt system +3 lines"."""
    ordered = sorted(runs, key=lambda r: (r.env, r.started_at))
    ledger = {(r.env, r.revision): r for r in releases}
    report = HealthReport(since=since)
    for env, group in groupby(ordered, key=lambda r: r.env):
        env_runs = list(group)
        report.versions += version_health(env_runs)
        report.change_points += change_points(env_runs, ledger, summaries or {}, thresholds)
        report.sparklines[env] = sparkline(env_runs, ascii_only=ascii_only, width=width)
    return report


def version_health(runs: list[ProbeRun]) -> list[VersionHealth]:
    """One entry per version of one environment's runs, in the order first seen."""
    by_version: dict[str, list[ProbeRun]] = {}
    for run in runs:
        by_version.setdefault(run.version, []).append(run)
    return [_figures(version, group) for version, group in by_version.items()]


def _figures(version: str, runs: list[ProbeRun]) -> VersionHealth:
    latencies = sorted(_latencies(runs))
    return VersionHealth(
        env=runs[0].env, version=version, runs=len(runs),
        revisions=sorted({r.revision for r in runs if r.revision is not None}),
        pass_rate=_pass_rate(runs), p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
        first=min(r.started_at for r in runs), last=max(r.started_at for r in runs), hosts=_by_host(runs))


def _by_host(runs: list[ProbeRun]) -> dict[str, float | None] | None:
    """A fleet's pass rate on each host (None when no result names a host)."""
    hosts = list(dict.fromkeys(r.host for run in runs for r in run.results if r.host))
    if not hosts:
        return None
    return {short_host(h): _pass_rate(run.model_copy(update={"results": [r for r in run.results if r.host == h]})
                                      for run in runs) for h in hosts}


def change_points(runs: list[ProbeRun], ledger: Mapping[tuple[str, int], Release],
                  summaries: Mapping[tuple[str, int], str], thresholds: Thresholds) -> list[ChangePoint]:
    """Releases of one environment after which p95 or pass rate moved beyond ``thresholds``."""
    segments = [(rev, list(group)) for rev, group in groupby(runs, key=lambda r: r.revision)]
    points = []
    for (_, before), (rev, after) in zip(segments, segments[1:]):
        if rev is None or min(len(before), len(after)) < thresholds.min_runs:
            continue
        for metric, old, new in _moves(before, after, thresholds):
            points.append(_point(after, ledger.get((after[0].env, rev)), before[0].version,
                                 metric, old, new, summaries.get((after[0].env, rev), "")))
    return points


def _moves(before: list[ProbeRun], after: list[ProbeRun], t: Thresholds):
    old_p95, new_p95 = (percentile(sorted(_latencies(s)), 95) for s in (before, after))
    if old_p95 is not None and new_p95 is not None:
        ratio = max(new_p95, old_p95) / max(min(new_p95, old_p95), 1e-9)
        if ratio >= t.p95_factor and abs(new_p95 - old_p95) >= t.p95_min_ms:
            yield "p95_ms", old_p95, new_p95
    old_rate, new_rate = _pass_rate(before), _pass_rate(after)
    if old_rate is not None and new_rate is not None and abs(new_rate - old_rate) >= t.pass_rate:
        yield "pass_rate", old_rate, new_rate


def _point(runs: list[ProbeRun], release: Release | None, previous_version: str, metric: str,
           before: float, after: float, summary: str) -> ChangePoint:
    first = runs[0]
    assert first.revision is not None  # change_points skips the runs of no release
    return ChangePoint(
        env=first.env, revision=first.revision, version=first.version, previous_version=previous_version,
        at=release.started_at if release else first.started_at,
        actor=release.actor if release else first.actor, reason=release.reason if release else None,
        metric=metric, before=round(before, 3), after=round(after, 3), summary=summary)


def sparkline(runs: list[ProbeRun], *, ascii_only: bool = False, width: int = 60) -> str:
    """One character per run (the run's median latency; ``x`` for a run with no answer), a ``│``
    before each run of a new release, then the releases named in order: ``r4 v1.1 → r5 v1.2``."""
    runs = runs[-width:]
    bars, mark = (ASCII_BARS, "|") if ascii_only else (BARS, "│")
    values = [percentile(sorted(_latencies([r])), 50) for r in runs]
    known = [v for v in values if v is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    line: list[str] = []
    legend: list[str] = []
    previous: object = object()
    for run, value in zip(runs, values):
        if run.revision != previous:
            if line:
                line.append(mark)
            legend.append(f"r{run.revision} {run.version}" if run.revision is not None else run.version)
            previous = run.revision
        line.append("x" if value is None else bars[_level(value, low, high, len(bars))])
    arrow = " -> " if ascii_only else " → "
    span = f"  {low:.0f}-{high:.0f} ms" if known else ""
    return "".join(line) + span + "\n" + arrow.join(legend)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of sorted ``values`` (nearest rank), None when empty."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


def _level(value: float, low: float, high: float, levels: int) -> int:
    if high <= low:
        return 0
    return min(levels - 1, int((value - low) / (high - low) * levels))


def _latencies(runs: Iterable[ProbeRun]) -> list[float]:
    return [r.latency_ms for run in runs for r in run.results if r.latency_ms is not None]


def _pass_rate(runs: Iterable[ProbeRun]) -> float | None:
    results = [r for run in runs for r in run.results if r.status != ProbeStatus.ERROR]
    if not results:
        return None
    return sum(r.status == ProbeStatus.PASS for r in results) / len(results)


def diff_summary(diff: Diff) -> str:
    """What a diff changed, on one line, values never shown (secrets): ``prompt system +3 lines,
    2 tensors changed, image changed, env MAX_TOKENS changed``."""
    parts = [_prompt_part(p) for p in diff.prompts if p.changed]
    parts += _weight_parts(diff)
    if diff.image.changed:
        parts.append("image changed")
    parts += [f"env {k.key} {k.status.value}" for k in diff.runtime.env]
    parts += [f"secret {name} added" for name in diff.runtime.secrets_added]
    parts += [f"secret {name} removed" for name in diff.runtime.secrets_removed]
    parts += [f"runtime {c.field} changed" for c in diff.runtime.settings]
    parts += [f"probe {p.name} {p.status.value}" for p in diff.probes]
    return ", ".join(parts) or "no content change"


def _prompt_part(p) -> str:
    if p.status != ChangeKind.changed:
        return f"prompt {p.name} {p.status.value}"
    counts = " ".join(c for c in (f"+{p.lines_added}" if p.lines_added else "",
                                  f"-{p.lines_removed}" if p.lines_removed else "") if c)
    return f"prompt {p.name} {counts or '±0'} lines"


def _weight_parts(diff: Diff) -> list[str]:
    parts, tensors = [], 0
    for w in diff.weights:
        if w.status == ChangeKind.unchanged:
            continue
        if w.tensors is not None:
            tensors += len(w.tensors.changed) + len(w.tensors.added) + len(w.tensors.removed)
        else:
            parts.append(f"weights {w.path} {w.status.value}")
    if tensors:
        parts.insert(0, f"{tensors} tensor{'s' if tensors != 1 else ''} changed")
    return parts
