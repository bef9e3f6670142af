"""The health chart renderer on synthetic probe runs (pure: no server, no browser)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

from registry import Release
from registry.web.chart import latency_chart, run_points
from tests.web.demo import synthetic_runs

SVG = "{http://www.w3.org/2000/svg}"


def release(revision: int, at, *, version: str = "v1.0", actor: str = "alice", status: str = "superseded") -> Release:
    return Release(env="staging", revision=revision, operation="promote", model="support-bot", version=version,
                   manifest_digest="sha256:" + "0" * 64, status=status, actor=actor, started_at=at)


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # also proves the SVG is well-formed XML


def test_one_marker_per_release_naming_version_and_actor_linking_to_its_diff():
    runs = synthetic_runs(48)
    start = runs[0].started_at
    releases = [release(1, start, version="v1.0"), release(2, start + timedelta(hours=12), version="v1.1"),
                release(3, start + timedelta(hours=30), version="v1.2", actor="bob <bob@example.org>",
                        status="deployed")]
    root = parsed(latency_chart(runs, releases))
    markers = [el for el in root.iter() if "release-marker" in el.get("class", "")]
    assert [m.get("data-revision") for m in markers] == ["1", "2", "3"]
    labels = ["".join(m.find(f"{SVG}text").itertext()) for m in markers]
    assert labels == ["r1 v1.0 · alice", "r2 v1.1 · alice", "r3 v1.2 · bob"]
    assert markers[0].tag == f"{SVG}g"  # a first release has nothing to diff against
    assert markers[2].get("href") == "/diff?a=support-bot%40v1.1&b=support-bot%40v1.2"


def test_p50_and_p95_lines_and_pass_rate_follow_the_runs():
    runs = synthetic_runs(10)
    points = run_points(runs)
    assert [p.p50 for p in points[:2]] == [150, 151]
    assert [p.p95 for p in points[:2]] == [200, 200]
    assert points[0].pass_rate == 2 / 3 and points[1].pass_rate == 1.0
    root = parsed(latency_chart(runs, []))
    lines = {el.get("class"): el.get("points") for el in root.iter(f"{SVG}polyline")}
    assert set(lines) == {"line p50", "line p95", "line rate"}
    assert all(len(pts.split()) == 10 for pts in lines.values())


def test_a_run_without_answers_breaks_the_line_instead_of_plotting_zero():
    runs = synthetic_runs(6)
    for r in runs[3].results:
        r.latency_ms, r.status = None, "error"
    root = parsed(latency_chart(runs, []))
    p50 = [el.get("points") for el in root.iter(f"{SVG}polyline") if el.get("class") == "line p50"]
    assert [len(pts.split()) for pts in p50] == [3, 2]


def test_user_text_is_escaped_and_no_inline_style_or_script_is_emitted():
    runs = synthetic_runs(3)
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    svg = latency_chart(runs, [release(1, runs[0].started_at), release(2, runs[1].started_at, actor=hostile)],
                        title=hostile)
    assert "<script" not in svg and "<img" not in svg
    assert "&lt;script&gt;" in svg
    assert not re.search(r"\sstyle=", svg)  # the CSP forbids inline styles: classes and attributes only
    parsed(svg)


def test_no_runs_still_draws_the_releases_and_says_so():
    at = synthetic_runs(1)[0].started_at
    svg = latency_chart([], [release(1, at), release(2, at + timedelta(hours=1))])
    assert "no probe runs in this window" in svg
    assert svg.count('class="release-marker') == 2
    parsed(svg)


def test_invisible_characters_in_a_release_are_shown_visibly():
    runs = synthetic_runs(12)
    svg = latency_chart(runs, [release(1, runs[0].started_at, actor="mallory\u202e\x1b[2J")], title="staging\u2066")
    parsed(svg)
    assert "\u202e" not in svg and "\x1b" not in svg and "\u2066" not in svg
    assert "mallory\\u202e" in svg and "staging\\u2066" in svg
