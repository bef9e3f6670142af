"""What ran when (issue 26): ``ENV@TIME``, ``status --at``, ``history``/``health --since/--until``,
on both databases with the in-library fake engine (the real engine: test_asof_docker). Only the
clock is mocked: every ledger row and event is written by real promotes and rollbacks."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import delete, select, update

from registry.errors import AuditBroken, HealthGateFailed, InvalidInput, NotFound
from registry.models.probes import ProbeResult, ProbeRun, ProbeStatus
from registry.store.sql import probes
from registry.store.sql import schema as t
from tests.conftest import IMAGE, as_json, cli, on_fake, push_versions
from tests.helpers import tensors, write_safetensors

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # the frozen clock's start


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def story(home, fake, model_dir, frozen_clock):
    """One change a minute: promote v1.0 (12:01), promote v1.1 (12:02), promote v1.2 that fails
    and rolls back to v1.1 automatically (12:03), rollback to v1.0 (12:04), then promote v1.3 that
    fails while v1.0 does not come back: dark (12:05). Returns (registry, clock)."""
    with on_fake(home, fake) as reg:
        reg.add_env("prod", port=18080, default=True)
        push_versions(reg, model_dir, "v1.0", "v1.1", "v1.2", image=IMAGE)
        write_safetensors(model_dir.root / "weights" / "model.safetensors",  # v1.3: a retrained head, more tokens
                          tensors(head__weight=np.ones((8, 4), dtype=np.float16)))
        push_versions(reg, model_dir, "v1.3", image=IMAGE, runtime={
            "port": 8080, "env": {"MAX_TOKENS": "128"}, "secrets": ["SUPPORT_API_TOKEN"]})
        frozen_clock.tick(60)
        reg.promote("v1.0")
        frozen_clock.tick(60)
        reg.promote("v1.1")
        frozen_clock.tick(60)
        fake.unhealthy["v1.2"] = "health check timed out"
        with pytest.raises(HealthGateFailed):
            reg.promote("v1.2")
        frozen_clock.tick(60)
        reg.rollback(reason="v1.1 answers slowly")
        frozen_clock.tick(60)
        fake.unhealthy.update({"v1.3": "health check timed out", "v1.0": "port taken"})
        with pytest.raises(HealthGateFailed):
            reg.promote("v1.3")
        frozen_clock.tick(60)
        yield reg, frozen_clock


def test_status_at_each_moment_between_the_changes(story):
    reg, _ = story
    assert [(r.revision, r.version, str(r.status)) for r in reg.history("prod")] == [
        (1, "v1.0", "superseded"), (2, "v1.1", "superseded"), (3, "v1.2", "failed"),
        (4, "v1.1", "superseded"), (5, "v1.0", "superseded"), (6, "v1.3", "failed")]
    expected = {0.5: None, 1: 1, 1.5: 1, 2.5: 2, 3.5: 4, 4.5: 5}
    for minute, revision in expected.items():
        answer = reg.status_at(at(minute), env="prod")
        got = answer.release.revision if answer.release else None
        assert got == revision, (minute, answer)
    first = reg.status_at(at(0.5))
    assert not first.dark and first.until == T0 + timedelta(minutes=1)
    auto = reg.status_at(at(3.5))
    assert str(auto.release.operation) == "auto-rollback" and auto.since == T0 + timedelta(minutes=3)
    assert auto.until == T0 + timedelta(minutes=4)
    dark = reg.status_at(at(5.5))
    assert dark.dark and dark.release is None and dark.since == T0 + timedelta(minutes=5)
    assert "revision 6" in dark.dark_reason and "did not come back" in dark.dark_reason and dark.until is None
    # a zone in the input counts: 13:00:30+01:00 is 12:00:30 UTC
    assert reg.status_at("2026-11-01T13:00:30+01:00").release is None
    assert reg.status_at("2026-11-01T14:03:30+02:00").release.revision == 4
    assert reg.status_at("2m").release.revision == 5  # an age: 2 minutes before 12:06


def test_status_at_on_the_cli_is_utc_in_json_and_local_with_its_zone_on_a_terminal(story):
    (answer,) = as_json("status", "--env", "prod", "--at", "2026-11-01T12:02:30")
    assert answer["release"]["version"] == "v1.1" and answer["release"]["revision"] == 2
    assert answer["at"] == "2026-11-01T12:02:30Z" or answer["at"].endswith("+00:00")
    shown = cli("status", "--env", "prod", "--at", "2026-11-01T12:04:30").stdout
    assert "support-bot@v1.0 (revision 5, rollback" in shown and "v1.1 answers slowly" in shown
    assert "UTC" in shown or "(UTC" in shown
    dark = cli("status", "--at", "2026-11-01T12:05:30").stdout
    assert "DARK" in dark and "did not come back" in dark
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:  # a terminal in Berlin: 12:02:30 UTC is 13:02:30 CET, and says so
        berlin = cli("status", "--env", "prod", "--at", "2026-11-01T12:02:30Z").stdout
        assert "prod at 2026-11-01 13:02:30 CET (UTC+0100): support-bot@v1.1" in berlin
        assert "STARTED (CET)" in cli("history", "--env", "prod").stdout
    finally:
        os.environ.pop("TZ") if before is None else os.environ.update(TZ=before)
        time.tzset()


def test_show_and_diff_an_environment_as_of_a_time(story):
    reg, _ = story
    assert reg.show("prod@2026-11-01T12:02:30").version == "v1.1"
    assert as_json("show", "prod@2026-11-01T12:01:30")["version"] == "v1.0"
    changed = reg.diff("prod@2026-11-01T12:01:30", "prod@2026-11-01T12:02:30")
    assert changed.differs
    text = cli("diff", "prod@2026-11-01T12:01:30", "v1.3").stdout
    assert "-prompt v1.0" in text and "+prompt v1.3" in text  # the prompt lines, old and new
    assert "head.weight" in text and "MAX_TOKENS: 64 -> 128" in text  # the tensor and the env var
    assert "embed.weight" not in text
    with pytest.raises(NotFound, match="dark"):
        reg.diff("prod@2026-11-01T12:05:30", "v1.0")
    with pytest.raises(NotFound, match="nothing had been deployed in prod"):
        reg.show("prod@2026-11-01T12:00:30")
    assert reg.show("support-bot@v1.2").version == "v1.2"  # model@version is still a version


def test_history_and_health_take_a_window(story):
    reg, _ = story
    window = reg.history("prod", since=at(2), until=at(4))
    assert [r.revision for r in window] == [2, 3, 4, 5]
    rows = as_json("history", "--env", "prod", "--since", at(4.5))
    assert [r["revision"] for r in rows] == [6]
    for minute, revision, version in ((1.5, 1, "v1.0"), (2.5, 2, "v1.1"), (4.5, 5, "v1.0")):
        run = ProbeRun(env="prod", model="support-bot", version=version, revision=revision, actor="cron",
                       started_at=T0 + timedelta(minutes=minute),
                       results=[ProbeResult(probe="greets", status=ProbeStatus.PASS, latency_ms=100.0)])
        with reg.store.write() as conn:
            probes.record_run(conn, run)
    report = reg.health("prod", since=at(2), until=at(3))
    assert [(v.version, v.runs) for v in report.versions] == [("v1.1", 1)]
    shown = as_json("health", "--env", "prod", "--until", at(2))
    assert [(v["version"], v["runs"]) for v in shown["versions"]] == [("v1.0", 1)]
    assert "swap them" in cli("health", "--since", at(3), "--until", at(1), code=1).stderr


@pytest.mark.parametrize("args, says", [
    (["status", "--at", "yesterday"], "--at 'yesterday' is not a time"),
    (["status", "--at", "2026-13-01"], "is not a time"),
    (["status", "--at", "2099-01-01T00:00"], "is in the future"),
    (["show", "prod@03:12-last-tuesday"], "is not a time"),
    (["history", "--since", "2026-11-01T12:05", "--until", "2026-11-01T12:01"], "swap them"),
])
def test_bad_times_are_one_line_errors(story, args, says):
    result = cli(*args, code=1)
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_tampered_release_row_refuses_the_answer(story):
    reg, _ = story
    with reg.store.write() as conn:  # someone with the database's password rewrites the past
        conn.execute(update(t.releases).where(t.releases.c.env == "prod", t.releases.c.revision == 2)
                     .values(version="v1.3"))
    with pytest.raises(AuditBroken, match="release:prod#2 was edited outside Cellar"):
        reg.status_at(at(2.5))
    result = cli("status", "--at", at(2.5), code=1)
    assert "refusing" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_deleted_release_row_refuses_the_answer(story):
    reg, _ = story
    with reg.store.write() as conn:  # hide the failed promote that left prod dark: each left row's seal holds
        conn.execute(delete(t.releases).where(t.releases.c.env == "prod", t.releases.c.revision == 6))
    with pytest.raises(AuditBroken, match="release:prod#6 was deleted outside Cellar"):
        reg.status_at(at(5.5))


def test_an_edited_event_refuses_the_answer(story):
    reg, _ = story
    with reg.store.write() as conn:  # hide that revision 6 stopped revision 5: the past would not be dark
        row = conn.execute(select(t.events.c.id, t.events.c.detail).where(t.events.c.env == "prod")
                           .order_by(t.events.c.id.desc()).limit(1)).one()
        conn.execute(update(t.events).where(t.events.c.id == row.id)
                     .values(detail=row.detail.replace('"release:prod#5"', '"release:prod#50"')))
    with pytest.raises(AuditBroken, match="event"):
        reg.status_at(at(5.5))


def test_a_bad_time_in_the_api_is_invalid_input(story):
    reg, _ = story
    with pytest.raises(InvalidInput, match="is not a time"):
        reg.status_at("soon")
    with pytest.raises(InvalidInput, match="future"):
        reg.history(since="1w") and reg.status_at("2999-01-01")


def test_an_environment_removed_and_added_again_keeps_its_past(home, fake, model_dir, frozen_clock):
    with on_fake(home, fake) as reg:
        reg.add_env("prod", port=18080, default=True)
        push_versions(reg, model_dir, "v1.0", "v1.1", image=IMAGE)
        frozen_clock.tick(60)
        reg.promote("v1.0")
        frozen_clock.tick(60)
        reg.remove_env("prod", force=True, reason="moving hosts")
        frozen_clock.tick(60)
        reg.add_env("prod", port=18080, default=True)
        frozen_clock.tick(60)
        reg.promote("v1.1")
        frozen_clock.tick(60)
        assert reg.status_at(at(1.5)).release.version == "v1.0"
        gone = reg.status_at(at(2.5))
        assert gone.dark and "removed" in gone.dark_reason and gone.until == T0 + timedelta(minutes=4)
        assert reg.status_at(at(4.5)).release.version == "v1.1"
