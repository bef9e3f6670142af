"""Deploy steps as people see them: a line per step naming the health timeout and where it came
from, and a spinner with the elapsed time on a terminal only (the in-library fake engine)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from cli.output import StepLines
from tests.conftest import IMAGE, on_fake

RUNTIME = {"port": 8080, "health": {"path": "/health", "timeout_s": 7},
           "warmup": [{"method": "POST", "path": "/v1/completions", "json": {"prompt": "hi"}}]}


@pytest.fixture
def reg(sqlite_home, fake, model_dir):
    with on_fake(sqlite_home, fake) as r:
        model_dir.write_manifest(version="v1", image=IMAGE, runtime=RUNTIME)
        r.push(model_dir.manifest)
        r.add_env("staging", port=18280, default=True)
        r.add_env("production", port=18281, health_timeout_s=2.5)
        yield r


def lines(**console) -> tuple[StepLines, io.StringIO]:
    out = io.StringIO()
    return StepLines(Console(file=out, width=200, **console)), out


def test_the_health_step_names_its_timeout_and_its_source(reg):
    steps, out = lines()
    result = reg.promote("v1", on_step=steps)
    assert re.search(r"✓ health check +\d+ ms  \(timeout 7 s from the version's runtime\.health\)\n",
                     out.getvalue())
    assert {s.name: s.detail for s in result.steps}["health check"] == "timeout 7 s from the version's runtime.health"
    assert {s.name: s.detail for s in result.steps}["warm-up"] is None
    steps, out = lines()
    reg.promote("v1", env="production", on_step=steps)  # the environment's setting wins
    assert "health check" in out.getvalue() and "(timeout 2.5 s from environment production)" in out.getvalue()


def test_watchers_hear_each_start_and_the_detail_plain_callables_still_work(reg):
    events = []

    class Watcher:
        def started(self, name, detail):
            events.append(("started", name, detail))

        def __call__(self, name, seconds, ok):
            events.append(("ended", name, ok))

    reg.promote("v1", on_step=Watcher())
    health = [e for e in events if e[1] == "health check"]
    assert health == [("started", "health check", None),
                      ("started", "health check", "timeout 7 s from the version's runtime.health"),
                      ("ended", "health check", True)]
    assert events[0] == ("started", "verify blobs", None) and len(events) > 10
    plain = []
    reg.promote("v1", env="production", on_step=lambda name, seconds, ok: plain.append(name))
    assert "health check" in plain and "warm-up" in plain


def test_a_failed_health_check_keeps_its_detail(reg, fake):
    fake.unhealthy["v1"] = "HTTP 503 not ready"
    steps, out = lines()
    with pytest.raises(Exception, match="HTTP 503"):
        reg.promote("v1", on_step=steps)
    assert re.search(r"✗ health check +\d+ ms  \(timeout 7 s from", out.getvalue())


def test_a_spinner_with_elapsed_time_runs_on_a_terminal_only(reg, fake):
    fake.slow["v1"] = 0.6
    steps, out = lines(force_terminal=True)
    reg.promote("v1", on_step=steps)
    shown = out.getvalue()
    assert re.search(r"health check \(timeout 7 s from the version's runtime\.health\)  0\.[1-9] s", shown)
    assert "\x1b[?25l" in shown  # the cursor hidden while the spinner runs, shown again after
    steps, out = lines(force_terminal=False)  # piped: step lines only
    reg.promote("v1", on_step=steps)
    assert "\x1b" not in out.getvalue() and " s\n" not in out.getvalue() and "health check" in out.getvalue()
