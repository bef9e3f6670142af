"""The standard questions against what is deployed: probe once, report health, watch on a
schedule, and the figures for a metrics page. (The promote gate is ``Promote.probe_gate``; the
suite both send is ``registry.probes.suites``.)

    ProbeEnv(DeployAction)     run the deployed release's suite once against the published port; store it
    Health               stored runs -> HealthReport, change points with a one-line diff summary
    Watch                a ``watching.Watcher`` wired to ProbeEnv, the normal Rollback and a notifier
    MetricsScrape        what one scrape of ``registry metrics`` shows, read from the database

The judging is pure (``registry.probes.probing``, ``report``, ``watching``); this module only
finds the release, its suite and its container, and records what was measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from registry import clock, ledger
from registry.action import Action
from registry.configuration import Configuration
from registry.deploy import ownership
from registry.deploy.action import DeployAction, base_url, where_checks_go
from registry.engines.engine import Engine
from registry.errors import CellarError, OperationInProgress
from registry.health.watching import Restarts, StopFlag, Watcher, WatchPolicy
from registry.ledger import Operation, Release, ReleaseStatus
from registry.models import Environment
from registry.models.probes import (
    DeployedInfo,
    HealthReport,
    MetricsSnapshot,
    ProbeResult,
    ProbeRun,
    ProbeStatus,
    WatchSummary,
    bounded,
)
from registry.probes import probing, suites
from registry.probes.suites import Suite
from registry.store.sql import environments, events, locks, probes, releases
from registry.trust import secrets

# Imported where used: a cron `registry probe` needs neither diffs nor rollbacks (start-up
# time, bench/probe.py): registry.versions.inspection, registry.health.report, registry.deploy.rollback.

log = logging.getLogger("registry.health.monitoring")

METRICS_WINDOW = timedelta(days=7)  # runs a scrape reads: bounded, whatever the database holds


class ProbeEnv(DeployAction):
    """``ProbeEnv(cfg, actor=...).run(env_name)``: one run of the deployed release's suite.

    Nothing deployed, no container, a stopped one or an unreachable engine is recorded as
    ``error`` results (nothing was measured, and the detail says why), never raised; a held lock (a promote or rollback
    switching containers) raises OperationInProgress, so the run is skipped rather than blamed."""

    timeout_s: float = probing.DEFAULT_TIMEOUT_S

    def run(self, env_name: str | None) -> ProbeRun:
        with self.cfg.store.read() as conn:
            env = environments.named_or_default(conn, env_name)
            rows = releases.current_and_pending(conn, env.name)  # a probe needs only what runs now
            held = locks.get(conn, env.name)
        if held is not None:
            raise OperationInProgress(ownership.busy_message(held))
        now = ledger.current(rows)
        if now is None:
            with self.cfg.store.read() as conn:
                dark = ledger.went_dark(releases.last_known_good(conn, env.name))
            return suites.record(self.cfg, nothing_deployed(env.name, actor=self.actor, dark=dark))
        suite = suites.suite_of(self.cfg, now.model, now.version, env_name=env.name)
        results = self.measure(env, now, suite) if suite.probes else [nothing_to_ask(now)]
        return suites.record(self.cfg, probing.new_run(results, env=env.name, model=now.model, version=now.version,
                                                revision=now.revision, actor=self.actor))

    def measure(self, env: Environment, release: Release, suite: Suite) -> list[ProbeResult]:
        """Send the suite; when something could not be measured, ask Docker why (the container
        is gone or stopped, the engine is down) and say so in those results. Docker is not
        consulted on the usual path: a cron probe then never loads docker-py (bench/probe.py).
        In a fleet the suite goes to every host, each result naming the host it came from."""
        self.env = env
        if not env.hosts:
            return self._measure_on(env, release, suite, env.docker_host)
        return [r.model_copy(update={"host": host}) for host in env.fleet
                for r in self._measure_on(env, release, suite, host)]

    def _measure_on(self, env: Environment, release: Release, suite: Suite, host: str | None) -> list[ProbeResult]:
        results = probing.run_suite(base_url(env, host), suite.probes, timeout_s=self.timeout_s, render=suite.render)
        if all(r.status != ProbeStatus.ERROR for r in results) and release.container_on(host, env.fleet[0]):
            return results
        why = self.container_problem(env, release, host)
        if why is None:  # it runs, yet nothing answered: say where the requests went, and from where
            if not any(r.status == ProbeStatus.ERROR and r.detail.startswith("no answer") for r in results):
                return results
            why = where_checks_go(env, host)
        return [r.model_copy(update={"detail": bounded(f"{why}; {r.detail}")}) if r.status == ProbeStatus.ERROR
                else r for r in results]

    def container_problem(self, env: Environment, release: Release, host: str | None = None) -> str | None:
        """Why ``release``'s container (on ``host``, default the first) cannot answer, or None when it runs."""
        host = env.fleet[0] if host is None else host
        cid = release.container_on(host, env.fleet[0])
        if not cid:
            return f"no container recorded for {release.ref}: see `registry status`"
        try:
            self.use_env(env)
            self.on_host(host)
            info = self.engine.inspect(cid)
        except (CellarError, OSError) as exc:  # OSError: the connection dropped under docker-py
            return f"Docker engine unreachable: {self.scrub(str(exc))}"
        if info is None:
            return f"no container for {release.ref} (revision {release.revision}): see `registry status`"
        return None if info.running else f"container of {release.ref} is {info.status}"


def nothing_deployed(env_name: str, *, actor: str, dark: tuple[Release, Release] | None = None) -> ProbeRun:
    """A run with one ``error`` result: there is no release whose suite could be sent. When
    something served there before (``dark``: ``ledger.went_dark``) the detail says since when
    and what to run."""
    detail = f"nothing is deployed in {env_name}: promote a version first"
    if dark is not None:
        last, good = dark
        since = (last.finished_at or last.started_at).strftime("%Y-%m-%d %H:%M:%S UTC")
        detail = (f"{env_name} is dark since {since}, when revision {last.revision} ({last.ref}) {last.status}; "
                  f"last known good: {good.ref}; free what blocks it, then `registry rollback --env {env_name}`")
    result = ProbeResult(probe="(deployed release)", status=ProbeStatus.ERROR, detail=bounded(detail))
    return probing.new_run([result], env=env_name, model="", version="", revision=None, actor=actor)


def nothing_to_ask(release: Release) -> ProbeResult:
    """The one ``error`` result of a run against a version without probes: nothing was asked."""
    return ProbeResult(probe="(probe suite)", status=ProbeStatus.ERROR,
                       detail=f"{release.ref} declares no probes, so nothing was asked: add a `probes:` section "
                              "to its manifest and push a new version")


# --- health -------------------------------------------------------------------------------


class Health(Action):
    """``Health(cfg).run(...)``: Figures per version and the change points of the stored runs (one environment or all),
    each change point with the release's actor, reason and what changed from the version before.
    ``runs``: those runs, when the caller has already read them (the web view charts them too)."""

    def run(self, env_name: str | None = None, *, since: datetime | None = None,
            runs: list[ProbeRun] | None = None) -> HealthReport:
        cfg = self.cfg
        from registry.health import report

        with cfg.store.read() as conn:
            if env_name is not None:
                environments.named_or_default(conn, env_name)  # a typo is NotFound, not an empty report
            if runs is None:
                runs = probes.runs(conn, env_name, since)
            rows = releases.newest(conn, env_name)
        built = report.build(runs, rows, since=since)
        models = {(r.env, r.revision): r.model for r in rows}
        for point in built.change_points:
            point.summary = change_summary(cfg, models.get((point.env, point.revision)),
                                           point.previous_version, point.version)
        return built


def change_summary(cfg: Configuration, model: str | None, before: str, after: str) -> str:
    """One line naming what changed from ``model@before`` to ``model@after`` ('' when unknown)."""
    if not model or not before:
        return ""
    if before == after:
        return "same version, redeployed"
    from registry.health import report
    from registry.versions import inspection

    try:
        return report.diff_summary(inspection.diff(cfg, f"{model}@{before}", f"{model}@{after}"))
    except CellarError as exc:  # a missing prompt blob must not cost the whole report
        log.warning("no diff summary for %s@%s: %s", model, after, exc)
        return ""


# --- watch --------------------------------------------------------------------------------


class Watch:
    """``Watch(cfg, actor=..., env_name=...)``: the pieces a ``Watcher`` calls, for real.

    The environment is resolved once, so an automatic rollback acts on the environment the
    watch started on even if the default changes meanwhile."""

    def __init__(self, cfg: Configuration, *, actor: str, env_name: str | None, failures: int = 3):
        self.cfg, self.actor, self.failures = cfg, actor, failures
        with cfg.store.read() as conn:
            self.env_name = environments.named_or_default(conn, env_name).name
        self._allowed: dict[tuple[str, str], bool] = {}

    def run(self, **options) -> WatchSummary:
        """Run the watch loop until ``max_runs`` or ``should_stop``; see ``watcher``. The summary
        says whether the environment is dark as the watch ends (its CLI then exits 1)."""
        summary = self.watcher(**options).run()
        with self.cfg.store.read() as conn:
            rows = releases.current_and_pending(conn, self.env_name)
            dark = None if rows else ledger.went_dark(releases.last_known_good(conn, self.env_name))
        if dark is not None:
            summary.dark_since = dark[0].finished_at or dark[0].started_at
        from registry.deploy.env_actions import Status  # Docker is asked once, as the watch ends

        summary.drift = next((s.drift for s in Status(self.cfg, actor=self.actor).run() if s.env == self.env_name), [])
        return summary

    def record_alert(self, notify: Callable[[str], object]) -> Callable[[str], object]:
        """``notify`` that first appends an ``alert`` event to the audit log (hooks send it)."""
        def recorded(text: str) -> object:
            try:
                with self.cfg.store.write() as conn:
                    events.append(conn, actor=self.actor, action="alert", object=self.env_name, env=self.env_name,
                                  detail={"text": secrets.from_environ(self.cfg.environ).scrub(text)},
                                  db_user=self.cfg.store.db_user(conn))
            except CellarError as exc:  # the alert itself must still go out
                log.warning("could not record the alert in the audit log: %s", exc)
            return notify(text)
        return recorded

    def probe_once(self) -> ProbeRun:
        return ProbeEnv(self.cfg, actor=self.actor).run(self.env_name)

    def rollback(self) -> str:
        """The normal rollback (lock, ledger ``rollback_of``, audit event) with its reason."""
        from registry.deploy.rollback import Rollback

        reason = f"automatic: {self.failures} consecutive failing probe runs"
        result = Rollback(self.cfg, actor=self.actor).run(env_name=self.env_name, reason=reason)
        return result.release.version

    def restarts(self) -> Restarts | None:
        """The deployed container's restart count (None when nothing is deployed or it is gone)."""
        with self.cfg.store.read() as conn:
            env = environments.named_or_default(conn, self.env_name)
            now = ledger.current(releases.current_and_pending(conn, env.name))
        if now is None:
            return None
        found: list[tuple[int, str, Engine]] = []  # in a fleet, the container restarted most: any host's loop counts
        for host in env.fleet:
            container = now.container_on(host, env.fleet[0])
            if not container:
                continue
            engine = self.cfg.engine(host)
            if (info := engine.inspect(container)) is not None:
                found.append((info.restart_count, container, engine))
        if not found:
            return None
        count, container, engine = max(found, key=lambda f: f[0])
        return Restarts(container=container, version=now.version, count=count,
                        last_exit=lambda: engine.last_exit_code(container))

    def may_roll_back(self, run: ProbeRun) -> bool:
        """False for a version whose manifest says ``no_auto_rollback: true``."""
        key = (run.model, run.version)
        if key not in self._allowed:
            try:
                self._allowed[key] = not suites.suite_of(self.cfg, *key).no_auto_rollback
            except CellarError:
                self._allowed[key] = False  # nothing deployed: nothing to roll back from
        return self._allowed[key]

    def watcher(self, *, every_s: float, notify: Callable[[str], object], auto_rollback: bool = False,
                max_runs: int | None = None, should_stop: Callable[[], bool] | None = None,
                sleep: Callable[[float], None] | None = None,
                on_run: Callable[[ProbeRun], None] | None = None) -> Watcher:
        """A ``Watcher`` probing this environment every ``every_s`` seconds."""
        stop = StopFlag()
        probe_once = self.probe_once if on_run is None else _reporting(self.probe_once, on_run)
        return Watcher(probe_once=probe_once, notify=self.record_alert(notify), every_s=every_s,
                       policy=WatchPolicy(failures=self.failures, auto_rollback=auto_rollback),
                       rollback=self.rollback if auto_rollback else None, sleep=sleep or stop.wait,
                       should_stop=should_stop or stop, max_runs=max_runs, may_roll_back=self.may_roll_back,
                       restarts=self.restarts, env_name=self.env_name)


def _reporting(probe_once: Callable[[], ProbeRun], on_run: Callable[[ProbeRun], None]) -> Callable[[], ProbeRun]:
    def run() -> ProbeRun:
        done = probe_once()
        on_run(done)
        return done
    return run




# --- metrics ------------------------------------------------------------------------------


class MetricsScrape(Action):
    """``MetricsScrape(cfg).run(...)``: What a scrape shows: each environment's deployed release,
    the runs of the last ``window`` (so counters cover that window), and the last deploy and
    rollback times."""

    def run(self, *, window: timedelta = METRICS_WINDOW) -> MetricsSnapshot:
        cfg = self.cfg
        with cfg.store.read() as conn:
            names = {e.name for e in environments.all_(conn)}
            rows = [r for r in releases.newest(conn) if r.env in names]
            runs = probes.runs(conn, since=clock.now() - window)
        snapshot = MetricsSnapshot(runs=[r for r in runs if r.env in names])
        for name in sorted(names):
            _add_env(snapshot, name, [r for r in rows if r.env == name])
        return snapshot


def _add_env(snapshot: MetricsSnapshot, env: str, rows: list[Release]) -> None:
    now = ledger.current(rows)
    if (dark := ledger.went_dark(rows)) is not None:
        snapshot.dark_since[env] = dark[0].finished_at or dark[0].started_at
    if now is not None:
        snapshot.deployed.append(DeployedInfo(env=env, model=now.model, version=now.version,
                                              revision=now.revision, deployed_at=now.finished_at or now.started_at,
                                              hosts={h.name: h.state for h in now.hosts} if now.hosts else None))
    went_live = [r for r in rows if r.status in (ReleaseStatus.DEPLOYED, ReleaseStatus.SUPERSEDED)]
    if went_live:
        snapshot.last_deploy[env] = max(r.finished_at or r.started_at for r in went_live)
    rolled = [r for r in went_live if r.operation in (Operation.ROLLBACK, Operation.AUTO_ROLLBACK)]
    if rolled:
        snapshot.last_rollback[env] = max(r.finished_at or r.started_at for r in rolled)
