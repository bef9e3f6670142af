"""``registry watch``: when to alert and roll back (pure), and the loop that does it.

``WatchPolicy`` is the decision logic as a state machine: feed it each run's outcome, it
returns the actions to take. Its rules:

- N consecutive failing runs: one ``alert-failing`` per streak (no flapping), plus one
  ``rollback`` when auto-rollback is on and allowed for the version;
- the first run after a rollback probes the restored version: a pass gives ``alert-restored``,
  a fail gives ``alert-degraded`` once, after which the policy stops acting (no second rollback,
  no further alerts) until a pass;
- N consecutive ``error`` runs (nothing measured) give one ``alert-error`` and never a
  rollback; errors neither add to nor reset the failing streak;
- a pass resets both streaks (and says ``alert-restored`` when the streak had alerted).

``RestartLoop`` watches the deployed container's restart count beside the probes: Docker restarts
a crashed server by itself (its restart policy), so a server crashing in a loop may still pass
most probes; ``limit`` restarts within ``window_s`` give one ``alert-restarting``, again only
after a quiet window.

``Watcher`` runs the loop with the real pieces passed in as callables, so the CLI and the
tests plug in theirs: ``probe_once``, ``rollback``, ``notify``, ``sleep`` and ``should_stop``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from registry.errors import CellarError, OperationInProgress
from registry.health import alerting
from registry.models.probes import ProbeRun, ProbeStatus, RunOutcome, WatchAction, WatchSummary

log = logging.getLogger("registry.health.watching")


class WatchState(StrEnum):
    WATCHING = "watching"
    ROLLED_BACK = "rolled-back"  # waiting for the first run of the restored version
    DEGRADED = "degraded"  # the rollback target failed too: no more acting


@dataclass
class WatchPolicy:
    """The pure decision logic; ``observe`` one run outcome at a time."""

    failures: int = 3
    auto_rollback: bool = False
    state: WatchState = WatchState.WATCHING
    failing_streak: int = 0
    error_streak: int = 0
    alerted: bool = False  # this failing/error streak has had its alert
    rollback_spent: bool = False  # one automatic rollback per watch session

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("failures must be at least 1")

    def observe(self, outcome: RunOutcome, *, may_roll_back: bool = True) -> list[WatchAction]:
        """The actions for one more run; ``may_roll_back`` is False for ``no_auto_rollback`` versions."""
        if outcome == RunOutcome.PASS:
            return self._passed()
        if outcome == RunOutcome.ERROR:
            return self._errored()
        return self._failed(may_roll_back)

    def rollback_failed(self) -> list[WatchAction]:
        """The rollback itself could not be done (no healthy target, engine down): degraded."""
        self.state = WatchState.DEGRADED
        return [WatchAction.ALERT_DEGRADED]

    def _passed(self) -> list[WatchAction]:
        restored = self.alerted or self.state != WatchState.WATCHING
        self.state, self.failing_streak, self.error_streak, self.alerted = WatchState.WATCHING, 0, 0, False
        return [WatchAction.ALERT_RESTORED] if restored else []

    def _errored(self) -> list[WatchAction]:
        self.error_streak += 1
        if self.state == WatchState.DEGRADED or self.error_streak != self.failures:
            return []
        self.alerted = True
        return [WatchAction.ALERT_ERROR]

    def _failed(self, may_roll_back: bool) -> list[WatchAction]:
        self.error_streak = 0
        if self.state == WatchState.DEGRADED:
            return []
        if self.state == WatchState.ROLLED_BACK:
            self.state = WatchState.DEGRADED
            return [WatchAction.ALERT_DEGRADED]
        self.failing_streak += 1
        if self.failing_streak != self.failures:
            return []
        self.alerted = True
        if self.auto_rollback and may_roll_back and not self.rollback_spent:
            self.state, self.rollback_spent, self.failing_streak = WatchState.ROLLED_BACK, True, 0
            return [WatchAction.ALERT_FAILING, WatchAction.ROLLBACK]
        return [WatchAction.ALERT_FAILING]

    def next_step(self, may_roll_back: bool) -> str:
        """What the failing alert says happens next (before ``observe`` changed the state)."""
        if self.auto_rollback and may_roll_back and not self.rollback_spent:
            return "automatic rollback to the last healthy release"
        if self.auto_rollback and not may_roll_back:
            return "no automatic rollback (the version's manifest says no_auto_rollback); a person has to act"
        return "no automatic rollback; roll back by hand with `registry rollback`"


@dataclass(frozen=True)
class Restarts:
    """The deployed container's restart count as Docker reports it."""

    container: str
    version: str
    count: int
    last_exit: Callable[[], int | None] = lambda: None  # asked only when alerting (an event-log query)


@dataclass
class RestartLoop:
    """Pure: feed it the restart count now and then (``observe``); True once per loop, and again
    only after a whole window without a restart."""

    limit: int = 3
    window_s: float = 600.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    container: str = ""
    alerted: bool = False
    last_growth: float = 0.0

    def observe(self, container: str, count: int, at: float) -> bool:
        if container != self.container or (self.samples and count < self.samples[-1][1]):
            self.container, self.samples, self.alerted = container, [], False  # another container
        if self.samples and count > self.samples[-1][1]:
            self.last_growth = at
        self.samples = [s for s in self.samples if at - s[0] <= self.window_s] + [(at, count)]
        if self.alerted:
            self.alerted = at - self.last_growth < self.window_s
            return False
        # the first sample has no history: restarts counted before the watch started are not a loop yet
        if self.recent_restarts() >= self.limit:
            self.alerted = True
            return True
        return False

    def recent_restarts(self) -> int:
        return self.samples[-1][1] - self.samples[0][1] if self.samples else 0


class StopFlag:
    """Set by SIGTERM/SIGINT (or a test); ``wait`` is a sleep that ends early when set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> None:
        self._event.wait(seconds)


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """While inside, SIGTERM and Ctrl-C set ``flag`` instead of killing: the loop ends between runs."""
    def handler(_signum, _frame):
        flag.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class Watcher:
    """The watch loop. ``probe_once`` returns a stored run, or None when the run was skipped
    (e.g. the environment's lock is held; raising OperationInProgress means the same).
    ``rollback`` returns the version now deployed or raises CellarError; ``notify`` sends one
    message (``alerting.Webhook.send``); ``may_roll_back(run)`` says whether the run's version
    allows an automatic rollback."""

    probe_once: Callable[[], ProbeRun | None]
    notify: Callable[[str], object]
    every_s: float
    policy: WatchPolicy = field(default_factory=WatchPolicy)
    rollback: Callable[[], str] | None = None
    sleep: Callable[[float], None] = field(default_factory=lambda: StopFlag().wait)
    should_stop: Callable[[], bool] = lambda: False
    max_runs: int | None = None
    may_roll_back: Callable[[ProbeRun], bool] = lambda run: True
    summary: WatchSummary = field(default_factory=WatchSummary)
    restarts: Callable[[], Restarts | None] | None = None  # the deployed container's, or None
    restart_loop: RestartLoop = field(default_factory=RestartLoop)
    env_name: str = ""
    clock: Callable[[], float] = time.monotonic

    def run(self) -> WatchSummary:
        """Probe every ``every_s`` seconds until ``should_stop`` or ``max_runs`` runs."""
        while not self._done():
            self.step()
            if self._done():
                break
            self.sleep(self.every_s)
        self.summary.state = self.policy.state.value
        self.summary.stopped_by = "max-runs" if self._ran_out() else "signal"
        return self.summary

    def step(self) -> list[WatchAction]:
        """One run and whatever it calls for."""
        looping = self._check_restarts()
        try:
            run = self.probe_once()
        except OperationInProgress:
            run = None
        if run is None:
            self.summary.skipped += 1
            return looping
        self.summary.runs += 1
        allowed = self.may_roll_back(run)
        next_step = self.policy.next_step(allowed)
        was_rolled_back = self.policy.state == WatchState.ROLLED_BACK
        actions = self.policy.observe(run.outcome, may_roll_back=allowed and self.rollback is not None)
        for action in actions:
            if action == WatchAction.ROLLBACK:
                self._roll_back(run)
            else:
                self._alert(action, _text(action, run, self.policy, next_step, was_rolled_back))
        return looping + actions

    def _check_restarts(self) -> list[WatchAction]:
        if self.restarts is None:
            return []
        try:
            now = self.restarts()
        except CellarError:  # the engine is down: the probes' own error alert says so
            return []
        if now is None or not self.restart_loop.observe(now.container, now.count, self.clock()):
            return []
        loop = self.restart_loop
        self._alert(WatchAction.ALERT_RESTARTING, alerting.restarting_text(
            env=self.env_name, version=now.version, restarts=loop.recent_restarts(),
            minutes=round(loop.window_s / 60, 1), last_exit=now.last_exit()))
        return [WatchAction.ALERT_RESTARTING]

    def _roll_back(self, run: ProbeRun) -> None:
        assert self.rollback is not None  # observe() rolls back only when there is a rollback
        try:
            restored = self.rollback()
            self.summary.rollbacks += 1
            log.info("%s: rolled back from %s to %s", run.env, run.version, restored)
        except CellarError as exc:
            for action in self.policy.rollback_failed():
                self._alert(action, alerting.degraded_text(env=run.env, version=run.version,
                                                           detail=f"the rollback failed: {exc}"))

    def _alert(self, action: WatchAction, text: str) -> None:
        self.summary.alerts.append(action)
        try:
            self.notify(text)
        except Exception as exc:  # an alert channel must never end the watch
            log.warning("alert not delivered (%s)", type(exc).__name__)

    def _ran_out(self) -> bool:
        return self.max_runs is not None and self.summary.runs + self.summary.skipped >= self.max_runs

    def _done(self) -> bool:
        return self._ran_out() or self.should_stop()


def _text(action: WatchAction, run: ProbeRun, policy: WatchPolicy, next_step: str, rolled_back: bool) -> str:
    if action == WatchAction.ALERT_FAILING:
        return alerting.failing_text(env=run.env, version=run.version, failures=policy.failures,
                                     probes=run.failing(), next_step=next_step)
    if action == WatchAction.ALERT_ERROR:
        fleet = any(r.host for r in run.results)  # name the host whose results measured nothing
        detail = next((f"{r.where}: {r.detail}" if fleet else r.detail for r in run.results
                       if r.detail and (not fleet or r.status != ProbeStatus.PASS)), "no detail")
        return alerting.error_text(env=run.env, version=run.version, runs=policy.failures, detail=detail)
    if action == WatchAction.ALERT_RESTORED:
        return alerting.restored_text(env=run.env, version=run.version, rolled_back=rolled_back)
    return alerting.degraded_text(env=run.env, version=run.version,
                                  detail="failing: " + ", ".join(run.failing()))
