"""Health figures and change points on synthetic runs and ledgers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from registry.health.report import Thresholds, build, percentile, sparkline
from registry.ledger import Operation, Release, ReleaseStatus
from registry.models.probes import ProbeResult, ProbeRun

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def release(revision: int, version: str, actor: str, reason: str | None = None) -> Release:
    return Release(env="prod", revision=revision, operation=Operation.PROMOTE, model="bot", version=version,
                   manifest_digest="sha256:" + "0" * 64, status=ReleaseStatus.SUPERSEDED, actor=actor,
                   reason=reason, started_at=T0 + timedelta(hours=revision))


def runs(revision: int, version: str, latencies: list[float], *, fail_every: int = 0, start: int = 0):
    out = []
    for i, ms in enumerate(latencies):
        status = "fail" if fail_every and i % fail_every == 0 else "pass"
        out.append(ProbeRun(env="prod", model="bot", version=version, revision=revision, actor="cron",
                            started_at=T0 + timedelta(hours=revision, minutes=start + i),
                            results=[ProbeResult(probe="a", status=status, latency_ms=ms),
                                     ProbeResult(probe="b", status="error")]))
    return out


LEDGER = [release(1, "v1.0", "ada"), release(2, "v1.1", "grace", "friendlier persona"),
          release(3, "v1.2", "linus", "new GPU driver")]


def test_figures_per_version():
    report = build(runs(1, "v1.0", [10, 20, 30, 40]) + runs(2, "v1.1", [10] * 5, fail_every=5), LEDGER)
    v10, v11 = report.versions
    assert (v10.version, v10.runs, v10.revisions, v10.pass_rate) == ("v1.0", 4, [1], 1.0)
    assert (v10.p50_ms, v10.p95_ms) == (20, 40)
    assert v11.pass_rate == 0.8  # errors are left out: they measured nothing
    assert v10.first == T0 + timedelta(hours=1) and v10.last == T0 + timedelta(hours=1, minutes=3)


def test_the_release_that_made_latency_rise_is_named_with_actor_reason_and_summary():
    data = runs(1, "v1.0", [10] * 5) + runs(2, "v1.1", [11] * 5) + runs(3, "v1.2", [90] * 5)
    report = build(data, LEDGER, summaries={("prod", 3): "image changed, env MAX_TOKENS changed"})
    [point] = report.change_points
    assert (point.revision, point.version, point.previous_version) == (3, "v1.2", "v1.1")
    assert (point.metric, point.before, point.after) == ("p95_ms", 11, 90)
    assert (point.actor, point.reason, point.summary) == ("linus", "new GPU driver",
                                                          "image changed, env MAX_TOKENS changed")
    assert point.at == LEDGER[2].started_at


def test_a_pass_rate_drop_is_a_change_point_and_small_moves_are_not():
    data = runs(1, "v1.0", [10] * 5) + runs(2, "v1.1", [12] * 5, fail_every=2)
    [point] = build(data, LEDGER).change_points
    assert (point.metric, point.before, point.after, point.actor) == ("pass_rate", 1.0, 0.4, "grace")
    assert build(runs(1, "v1.0", [10] * 5) + runs(2, "v1.1", [14] * 5), LEDGER).change_points == []


def test_too_few_runs_name_no_culprit():
    data = runs(1, "v1.0", [10] * 5) + runs(2, "v1.1", [500, 500])
    assert build(data, LEDGER, thresholds=Thresholds(min_runs=3)).change_points == []
    assert len(build(data, LEDGER, thresholds=Thresholds(min_runs=2)).change_points) == 1


def test_sparkline_marks_each_release():
    data = runs(1, "v1.0", [10, 10, 10]) + runs(2, "v1.1", [50, 90])
    line, legend = sparkline(data).split("\n")
    assert line.startswith("▁▁▁│▅█") and legend == "r1 v1.0 → r2 v1.1"
    line, legend = sparkline(data, ascii_only=True).split("\n")
    assert line.startswith("___|") and line.isascii() and legend == "r1 v1.0 -> r2 v1.1"
    assert build(data, LEDGER).sparklines["prod"] == sparkline(data)


def test_a_run_with_no_answer_shows_as_x():
    [run] = runs(1, "v1.0", [10])
    run.results = [ProbeResult(probe="a", status="error")]
    assert sparkline([run]).startswith("x")


def test_percentile_nearest_rank():
    assert percentile([], 95) is None
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50) == 5
