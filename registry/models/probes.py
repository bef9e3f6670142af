"""Results of probe runs, health reports, watch decisions and metrics (pydantic models).

They are what the Python API returns and what ``--json`` prints, so field names are public.
``ProbeRun.model_dump(mode="json")`` is exactly the ``registry probe --json`` document.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from registry.ledger import short_host

DETAIL_MAX = 200  # characters: a detail is one line for a table or a CSV cell, not a body dump


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True)


class ProbeStatus(StrEnum):
    """``fail``: answered wrong or too slowly. ``error``: nothing could be measured."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


class RunOutcome(StrEnum):
    """A whole run, as the watch loop sees it: any fail makes it ``fail``; errors alone ``error``."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


def bounded(text: str, limit: int = DETAIL_MAX) -> str:
    """``text`` on one line, cut to ``limit`` characters (with an ellipsis when cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ProbeResult(_Model):
    probe: str
    status: ProbeStatus
    latency_ms: float | None = None  # None when nothing answered
    http_status: int | None = None
    detail: str = ""
    host: str | None = None  # in a fleet: the Docker host whose published port answered (or not)

    @property
    def where(self) -> str:
        """The probe's name, and in a fleet the host: "answers on gpu-2"."""
        return f"{self.probe} on {short_host(self.host)}" if self.host else self.probe


class ProbeRun(_Model):
    """One execution of a suite against one environment."""

    env: str
    model: str
    version: str
    revision: int | None = None
    started_at: datetime
    actor: str = ""
    results: list[ProbeResult] = Field(default_factory=list)
    id: int | None = Field(default=None, exclude=True)  # the stored row, once recorded

    def count(self, status: ProbeStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def outcome(self) -> RunOutcome:
        if any(r.status == ProbeStatus.FAIL for r in self.results):
            return RunOutcome.FAIL
        if any(r.status == ProbeStatus.ERROR for r in self.results):
            return RunOutcome.ERROR
        # An empty run asked nothing: nothing was measured, so it is no pass (a gate or a cron
        # check that checks nothing must not read as green).
        return RunOutcome.PASS if self.results else RunOutcome.ERROR

    @property
    def ok(self) -> bool:
        return self.outcome == RunOutcome.PASS

    def failing(self) -> list[str]:
        """Names of the probes that did not pass, in suite order ("answers on gpu-2" in a fleet)."""
        return [r.where for r in self.results if r.status != ProbeStatus.PASS]


# --- health report ------------------------------------------------------------------------


class VersionHealth(_Model):
    env: str
    version: str
    revisions: list[int]
    runs: int
    pass_rate: float | None  # passed / (passed + failed); None when every result was an error
    p50_ms: float | None
    p95_ms: float | None
    first: datetime
    last: datetime
    hosts: dict[str, float | None] | None = None  # a fleet: pass rate per host (short name)


class ChangePoint(_Model):
    """A release after which p95 latency or pass rate moved beyond the report's thresholds."""

    env: str
    revision: int
    version: str
    previous_version: str
    at: datetime
    actor: str
    reason: str | None = None
    metric: str  # "p95_ms" or "pass_rate"
    before: float
    after: float
    summary: str = ""  # one line: what changed from the release before (filled by the caller)


class HealthReport(_Model):
    since: datetime | None = None
    versions: list[VersionHealth] = Field(default_factory=list)
    change_points: list[ChangePoint] = Field(default_factory=list)
    sparklines: dict[str, str] = Field(default_factory=dict)  # env -> latency sparkline, with markers


# --- watch --------------------------------------------------------------------------------


class WatchAction(StrEnum):
    ALERT_FAILING = "alert-failing"
    ROLLBACK = "rollback"
    ALERT_RESTORED = "alert-restored"
    ALERT_DEGRADED = "alert-degraded"
    ALERT_ERROR = "alert-error"
    ALERT_RESTARTING = "alert-restarting"  # Docker keeps restarting the deployed container


class WatchSummary(_Model):
    """What a watch session did, for ``--json`` and tests."""

    runs: int = 0
    skipped: int = 0
    alerts: list[WatchAction] = Field(default_factory=list)
    rollbacks: int = 0
    state: str = "watching"
    stopped_by: str = ""  # "max-runs" or "signal"
    dark_since: datetime | None = None  # the environment had a release and serves nothing (at the end)
    drift: list[str] = Field(default_factory=list)  # what runs but is not recorded (at the end)


# --- metrics ------------------------------------------------------------------------------


class DeployedInfo(_Model):
    env: str
    model: str
    version: str
    revision: int
    deployed_at: datetime | None = None
    hosts: dict[str, str] | None = None  # a fleet: host (short name) -> its state on the deployed release


class MetricsSnapshot(_Model):
    """What one scrape shows; built from the database by the caller on every scrape."""

    deployed: list[DeployedInfo] = Field(default_factory=list)
    runs: list[ProbeRun] = Field(default_factory=list)
    last_deploy: dict[str, datetime] = Field(default_factory=dict)
    last_rollback: dict[str, datetime] = Field(default_factory=dict)
    dark_since: dict[str, datetime] = Field(default_factory=dict)  # had a release, now nothing serves
