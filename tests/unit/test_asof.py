"""The pure part of "what ran when" (registry.versions.asof): which release served at a moment,
from ledger rows and what each failure's event wrote; and the time grammar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry.errors import InvalidInput
from registry.ledger import Operation, Release, ReleaseStatus
from registry.versions import asof

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def rel(revision: int, version: str, status: str, minute: float, *, healthy: bool = True, finished: bool = True,
        operation: str = "promote") -> Release:
    return Release(env="prod", revision=revision, operation=Operation(operation), model="bot", version=version,
                   manifest_digest="sha256:" + "0" * 64, status=ReleaseStatus(status), actor="a",
                   started_at=T0 + timedelta(minutes=minute - 0.5),
                   finished_at=T0 + timedelta(minutes=minute) if finished else None, healthy=healthy)


def served(ledger, wrote, minute):
    answer = asof.serving_at(ledger, wrote, T0 + timedelta(minutes=minute), env="prod")
    return answer.release.revision if answer.release else ("dark" if answer.dark else None)


def test_a_failure_that_never_stopped_the_old_release_changes_nothing():
    ledger = [rel(1, "v1", "deployed", 1), rel(2, "v2", "failed", 2, healthy=False)]
    wrote = {2: {"release:prod#2"}}  # settle(previous="untouched"): only the failed row
    assert [served(ledger, wrote, m) for m in (0.9, 1, 1.5, 2, 3)] == [None, 1, 1, 1, 1]


def test_a_failure_whose_old_release_did_not_come_back_is_dark_until_the_next_healthy_one():
    ledger = [rel(1, "v1", "superseded", 1), rel(2, "v2", "failed", 2, healthy=False),
              rel(3, "v1", "deployed", 4, operation="rollback")]
    wrote = {2: {"release:prod#2", "release:prod#1"}}
    assert [served(ledger, wrote, m) for m in (1.5, 2, 3.9, 4)] == [1, "dark", "dark", 3]
    answer = asof.serving_at(ledger, wrote, T0 + timedelta(minutes=3), env="prod")
    assert answer.since == T0 + timedelta(minutes=2) and answer.until == T0 + timedelta(minutes=4)


def test_an_automatic_rollback_at_the_same_moment_serves_again():
    ledger = [rel(1, "v1", "superseded", 1), rel(2, "v2", "failed", 2, healthy=False),
              rel(3, "v1", "deployed", 2, operation="auto-rollback")]
    wrote = {2: {"release:prod#1", "release:prod#2", "release:prod#3"}}
    assert [served(ledger, wrote, m) for m in (1.9, 2, 5)] == [1, 3, 3]


def test_a_switch_under_way_is_reported_beside_what_served():
    ledger = [rel(1, "v1", "deployed", 1), rel(2, "v2", "pending-deploy", 3, finished=False, healthy=False)]
    answer = asof.serving_at(ledger, {}, T0 + timedelta(minutes=2.7), env="prod")
    assert answer.release.revision == 1 and answer.pending.revision == 2


def test_times_are_read_with_their_zone_and_utc_without_one():
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert asof.parse_time("2026-11-20T03:12", now=now) == datetime(2026, 11, 20, 3, 12, tzinfo=UTC)
    assert asof.parse_time("2026-11-20T04:12+01:00", now=now) == datetime(2026, 11, 20, 3, 12, tzinfo=UTC)
    assert asof.parse_time("2h", now=now) == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    for bad in ("", "soon", "2026-11-20T25:00", "99999999d"):
        with pytest.raises(InvalidInput, match="--at"):
            asof.parse_time(bad, now=now)
    with pytest.raises(InvalidInput, match="future"):
        asof.parse_time("2026-11-20T12:01", now=now)


def test_env_at_time_is_told_from_model_at_version():
    assert asof.split_ref("support-bot@v1.2", ["prod"]) is None
    assert asof.split_ref("prod@v1.2", ["prod"]) is None  # a version, not a time
    assert asof.split_ref("prod@2026-11-01T12:00Z", ["prod"]) == ("prod", datetime(2026, 11, 1, 12, 0, tzinfo=UTC))
    with pytest.raises(InvalidInput, match="prod@"):
        asof.split_ref("prod@lunchtime", ["prod"])
