"""The watch policy (pure) and the watch loop with a real webhook listener."""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime

import pytest

from registry.errors import CellarError, OperationInProgress
from registry.health import alerting
from registry.health.watching import StopFlag, Watcher, WatchPolicy, WatchState, stop_on_signals
from registry.models.probes import ProbeResult, ProbeRun, RunOutcome, WatchAction
from tests.listener import Listener

P, F, E = RunOutcome.PASS, RunOutcome.FAIL, RunOutcome.ERROR
A = WatchAction


def feed(policy: WatchPolicy, outcomes) -> list[WatchAction]:
    return [a for o in outcomes for a in policy.observe(o)]


def test_n_minus_one_failing_runs_say_nothing_n_say_it_once():
    policy = WatchPolicy(failures=3)
    assert feed(policy, [F, F]) == []
    assert feed(policy, [F]) == [A.ALERT_FAILING]
    assert feed(policy, [F, F, F, F, F]) == []  # one alert per streak, however long


def test_a_pass_resets_the_streak():
    assert feed(WatchPolicy(failures=3), [F, F, P, F]) == []
    assert feed(WatchPolicy(failures=3), [F, F, P, F, F, F]) == [A.ALERT_FAILING]


def test_a_recovery_after_an_alert_is_announced_and_a_new_streak_alerts_again():
    policy = WatchPolicy(failures=2)
    assert feed(policy, [F, F, P, P, F, F]) == [A.ALERT_FAILING, A.ALERT_RESTORED, A.ALERT_FAILING]


def test_auto_rollback_happens_once_and_the_restored_version_is_announced():
    policy = WatchPolicy(failures=3, auto_rollback=True)
    assert feed(policy, [F, F, F]) == [A.ALERT_FAILING, A.ROLLBACK]
    assert policy.state == WatchState.ROLLED_BACK
    assert feed(policy, [P]) == [A.ALERT_RESTORED]
    assert feed(policy, [F, F, F]) == [A.ALERT_FAILING]  # the one rollback is spent


def test_a_failing_rollback_target_degrades_once_and_stops_acting():
    policy = WatchPolicy(failures=2, auto_rollback=True)
    assert feed(policy, [F, F, F]) == [A.ALERT_FAILING, A.ROLLBACK, A.ALERT_DEGRADED]
    assert feed(policy, [F] * 10 + [E] * 10) == []
    assert policy.state == WatchState.DEGRADED


def test_error_runs_alert_separately_and_never_roll_back():
    policy = WatchPolicy(failures=3, auto_rollback=True)
    assert feed(policy, [E, E, E, E, E]) == [A.ALERT_ERROR]
    assert feed(policy, [P]) == [A.ALERT_RESTORED]
    # errors neither count as failing runs nor reset them
    assert feed(policy, [F, E, F, E, F]) == [A.ALERT_FAILING, A.ROLLBACK]


def test_a_version_that_forbids_auto_rollback_only_alerts():
    policy = WatchPolicy(failures=1, auto_rollback=True)
    assert policy.observe(F, may_roll_back=False) == [A.ALERT_FAILING]


def run(outcome: RunOutcome, version: str = "v1.2") -> ProbeRun:
    status = {P: "pass", F: "fail", E: "error"}[outcome]
    detail = "no answer (connection refused)" if outcome == E else ""
    return ProbeRun(env="prod", model="bot", version=version, revision=1, actor="watch",
                    started_at=datetime(2026, 11, 1, tzinfo=UTC),
                    results=[ProbeResult(probe="greets", status="pass", latency_ms=5),
                             ProbeResult(probe="answers-json", status=status, latency_ms=5, detail=detail)])


def watcher(hook: Listener, outcomes, **kw) -> Watcher:
    queue = list(outcomes)
    return Watcher(probe_once=lambda: run(queue.pop(0)), notify=alerting.Webhook(hook.url).send,
                   every_s=0, sleep=lambda _: None, max_runs=len(outcomes), **kw)


def test_n_failing_runs_deliver_exactly_one_alert_to_the_listener():
    with Listener() as hook:
        summary = watcher(hook, [F, F, F, F]).run()
    assert summary.runs == 4 and summary.stopped_by == "max-runs"
    [text] = hook.texts
    assert "prod" in text and "v1.2" in text and "answers-json" in text and "greets" not in text
    assert "roll back by hand" in text


def test_n_minus_one_and_interrupted_streaks_deliver_nothing():
    with Listener() as hook:
        watcher(hook, [F, F]).run()
        watcher(hook, [F, F, P, F]).run()
    assert hook.messages == []


def test_auto_rollback_calls_the_rollback_once_and_says_restored():
    calls = []
    outcomes = [F, F, F, P, P]
    with Listener() as hook:
        summary = watcher(hook, outcomes, policy=WatchPolicy(auto_rollback=True),
                          rollback=lambda: calls.append(1) or "v1.1").run()
    assert calls == [1] and summary.rollbacks == 1
    assert len(hook.texts) == 2
    assert "automatic rollback" in hook.texts[0] and "restored" in hook.texts[1]


def test_a_failing_rollback_target_degrades_without_a_loop():
    calls = []
    with Listener() as hook:
        summary = watcher(hook, [F] * 3 + [F] * 20, policy=WatchPolicy(auto_rollback=True),
                          rollback=lambda: calls.append(1) or "v1.1").run()
    assert calls == [1] and summary.state == "degraded"
    assert len(hook.texts) == 2 and "degraded" in hook.texts[1]


def test_a_rollback_that_cannot_happen_degrades():
    def rollback():
        raise CellarError("no earlier healthy release to roll back to")
    with Listener() as hook:
        summary = watcher(hook, [F] * 6, policy=WatchPolicy(auto_rollback=True), rollback=rollback).run()
    assert summary.rollbacks == 0 and summary.state == "degraded"
    assert "no earlier healthy release" in hook.texts[-1] and len(hook.texts) == 2


def test_error_runs_alert_but_never_roll_back():
    calls = []
    with Listener() as hook:
        watcher(hook, [E] * 5, policy=WatchPolicy(auto_rollback=True), rollback=lambda: calls.append(1)).run()
    assert calls == [] and len(hook.texts) == 1 and "connection refused" in hook.texts[0]


def test_a_held_lock_skips_the_run():
    def probe_once():
        raise OperationInProgress("promote in progress")
    summary = Watcher(probe_once=probe_once, notify=print, every_s=0, sleep=lambda _: None, max_runs=3).run()
    assert summary.skipped == 3 and summary.runs == 0


def test_a_dead_webhook_never_ends_the_watch():
    def notify(text):
        raise OSError("down")
    queue = [F] * 5
    summary = Watcher(probe_once=lambda: run(queue.pop(0)), notify=notify, every_s=0,
                      sleep=lambda _: None, max_runs=5).run()
    assert summary.runs == 5 and summary.alerts == [A.ALERT_FAILING]


def test_max_runs_ends_and_the_loop_sleeps_between_runs_only():
    pauses = []
    summary = Watcher(probe_once=lambda: run(P), notify=print, every_s=7, sleep=pauses.append, max_runs=3).run()
    assert summary.runs == 3 and pauses == [7, 7]


def test_sigterm_stops_the_loop_between_runs():
    flag = StopFlag()
    runs = []
    before = signal.getsignal(signal.SIGTERM)

    def probe_once():
        runs.append(1)
        if len(runs) == 2:  # arrives mid-run: that run completes, no further one starts
            os.kill(os.getpid(), signal.SIGTERM)
        return run(P)

    with stop_on_signals(flag):
        summary = Watcher(probe_once=probe_once, notify=print, every_s=0.01, sleep=flag.wait,
                          should_stop=flag).run()
    assert len(runs) == 2 and summary.stopped_by == "signal"
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_a_signal_during_the_pause_wakes_the_loop_at_once():
    flag = StopFlag()
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    with stop_on_signals(flag):
        timer.start()
        watch = Watcher(probe_once=lambda: run(P), notify=print, every_s=600, sleep=flag.wait, should_stop=flag)
        summary = watch.run()  # would take 10 minutes per pause without the wake-up
    assert summary.runs == 1 and summary.stopped_by == "signal"


def test_failures_must_be_positive():
    with pytest.raises(ValueError):
        WatchPolicy(failures=0)


# --- restart loops (issue 24) ------------------------------------------------------------------


def test_a_restart_loop_alerts_once_and_again_only_after_a_quiet_window():
    from registry.health.watching import RestartLoop

    loop = RestartLoop(limit=3, window_s=600)
    assert not loop.observe("c1", 5, 0)  # restarts before the watch started are no loop yet
    assert not loop.observe("c1", 7, 60)
    assert loop.observe("c1", 8, 120)  # 3 more within 10 minutes
    assert not loop.observe("c1", 12, 180)  # once per loop
    assert not loop.observe("c1", 12, 700)  # quiet, but not for a whole window yet
    assert not loop.observe("c1", 12, 781)  # a whole window quiet: the loop ended
    assert not loop.observe("c1", 14, 800) and loop.observe("c1", 15, 900)  # a new loop alerts again
    assert not loop.observe("c2", 0, 1000)  # a new container starts over
    assert not RestartLoop(limit=3, window_s=60).observe("c", 1, 0)


def test_the_watch_alerts_on_a_restart_loop_between_probe_runs():
    from registry.health.watching import Restarts, Watcher

    counts = iter([0, 1, 2, 4])
    sent = []
    watcher = Watcher(probe_once=lambda: None, notify=sent.append, every_s=0, max_runs=4, env_name="prod",
                      restarts=lambda: Restarts(container="c", version="v2", count=next(counts),
                                                last_exit=lambda: 137),
                      clock=iter([0.0, 10.0, 20.0, 30.0]).__next__)
    summary = watcher.run()
    assert summary.alerts == ["alert-restarting"]
    assert sent == [":repeat: prod: v2's container was restarted 4 times by Docker in 10 min (last exit code 137): "
                    "its server keeps crashing. See `docker logs` and `registry status --env prod`."]
