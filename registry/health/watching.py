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

``Watcher`` runs the loop with the real pieces passed in as callables, so the CLI and the
tests plug in theirs: ``probe_once``, ``rollback``, ``notify``, ``sleep`` and ``should_stop``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from registry.errors import CellarError, OperationInProgress
from registry.health import alerting
from registry.models.probes import ProbeRun, RunOutcome, WatchAction, WatchSummary

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
        try:
            run = self.probe_once()
        except OperationInProgress:
            run = None
        if run is None:
            self.summary.skipped += 1
            return []
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
        return actions

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
        detail = next((r.detail for r in run.results if r.detail), "no detail")
        return alerting.error_text(env=run.env, version=run.version, runs=policy.failures, detail=detail)
    if action == WatchAction.ALERT_RESTORED:
        return alerting.restored_text(env=run.env, version=run.version, rolled_back=rolled_back)
    return alerting.degraded_text(env=run.env, version=run.version,
                                  detail="failing: " + ", ".join(run.failing()))
