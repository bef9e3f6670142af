"""Commands for the standard questions: probe, health, watch, metrics."""

from __future__ import annotations

import sys

import typer

from cli.app import ACTOR, JSON, app, open_registry, seconds
from cli.output import MAX_CELL, console, esc, plain, print_json, table, when

ENV = typer.Option(None, "--env", help="Environment (default: the default environment).")


@app.command()
def probe(
    env: str = ENV,
    csv: str = typer.Option(None, "--csv", help="Append one row per probe to this CSV file (header when new)."),
    timeout: float = typer.Option(None, "--timeout", callback=seconds,
                                  help="Seconds to wait for each answer (default 10)."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Send the deployed version's probe suite once and store the run. Exit 0 when every probe
    passes, 4 when any fails (wrong or too slow) or errors (nothing measured): fit for cron.

    Example:  registry probe --env production --csv probes.csv
    """
    with open_registry() as reg:
        run = reg.probe(env, csv=csv, actor=actor, timeout_s=timeout)
    if as_json:
        print_json(run)
    else:
        _show_run(run)
    if not run.ok:
        raise typer.Exit(4)


def _show_run(run) -> None:
    what = f"{run.model}@{run.version} (revision {run.revision})" if run.version else "nothing deployed"
    print(plain(f"{run.env}: {what}, {when(run.started_at)}"))
    if run.results:
        from registry import short_host

        fleet = any(r.host for r in run.results)  # a fleet's run: each result names its host
        table(["PROBE", *(["HOST"] if fleet else []), "STATUS", "LATENCY", "HTTP", "DETAIL"],
              [[r.probe, *([short_host(r.host)] if fleet else []), r.status.value,
                "-" if r.latency_ms is None else f"{r.latency_ms:.0f} ms", r.http_status or "-", r.detail]
               for r in run.results])
        for r in run.results:  # the table cuts long cells: a failure's reason is what matters most
            if r.status.value != "pass" and (len(r.detail) > MAX_CELL or fleet):
                print(plain(f"{r.probe}" + (f" on {short_host(r.host)}" if fleet else "") + f": {r.detail}"))
    else:
        print("This version declares no probes: add a `probes:` section to its manifest.")
    passed = sum(r.status.value == "pass" for r in run.results)
    print(f"{passed} of {len(run.results)} passed", file=sys.stderr if not run.ok else sys.stdout)


@app.command()
def health(
    env: str = typer.Option(None, "--env", help="Only this environment (default: all)."),
    since: str = typer.Option(None, "--since", help="Only runs since an ISO date or an age like 7d, 12h."),
    until: str = typer.Option(None, "--until", help="Only runs up to then, same forms as --since "
                                                    "(no zone means UTC)."),
    as_json: bool = JSON,
) -> None:
    """Probe figures per deployed version, and the releases after which latency or pass rate moved,
    with who released them, why and what changed.

    Example:  registry health --env production --since 30d --until 2026-11-21T00:00
    """
    with open_registry() as reg:
        report = reg.health(env, since=since, until=until)
    if as_json:
        return print_json(report)
    if not report.versions:
        return print("No probe runs yet: run `registry probe` (or `registry watch`) first.")
    table(["ENV", "VERSION", "REVISIONS", "RUNS", "PASS RATE", "P50", "P95", "FIRST RUN", "LAST RUN"],
          [[v.env, v.version, ",".join(map(str, v.revisions)), v.runs, _rate(v.pass_rate), _ms(v.p50_ms),
            _ms(v.p95_ms), when(v.first), when(v.last)] for v in report.versions])
    for v in report.versions:  # a fleet: where the pass rate comes from
        if v.hosts:
            print(plain(f"{v.env} {v.version} by host: " + ", ".join(f"{h} {_rate(r)}" for h, r in v.hosts.items())))
    _change_points(report.change_points)
    if sys.stdout.isatty():
        for name, line in report.sparklines.items():
            print(f"\n{plain(name)} latency per run:\n{line}")


def _change_points(points) -> None:
    if not points:
        return print("\nNo change points: latency and pass rate held steady across releases.")
    print("\nChange points:")
    for p in points:
        figures = (f"p95 {p.before:.0f} ms -> {p.after:.0f} ms" if p.metric == "p95_ms"
                   else f"pass rate {_rate(p.before)} -> {_rate(p.after)}")
        line = (f"  {p.env} revision {p.revision}: {p.version} (after {p.previous_version}) by {p.actor} "
                f"on {when(p.at)}: {figures}")
        if p.reason:
            line += f"; reason: {p.reason}"
        if p.summary:
            line += f"; changed: {p.summary}"
        print(plain(line))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


@app.command()
def watch(
    env: str = ENV,
    every: float = typer.Option(..., "--every", callback=seconds, help="Seconds between probe runs."),
    failures: int = typer.Option(3, "--failures", help="Consecutive failing runs that raise an alert."),
    alert_webhook: str = typer.Option(None, "--alert-webhook",
                                      help="Slack-compatible webhook URL (a secret: prefer --alert-webhook-env).",
                                      show_default=False),
    alert_webhook_env: str = typer.Option(None, "--alert-webhook-env",
                                          help="Name of the environment variable holding the webhook URL."),
    auto_rollback: bool = typer.Option(False, "--auto-rollback",
                                       help="Roll back once to the last healthy release after the alert."),
    max_runs: int = typer.Option(None, "--max-runs", min=1,
                                 help="Stop after this many runs (default: until SIGTERM or Ctrl-C)."),
    metrics_listen: str = typer.Option(None, "--metrics-listen", help="Also serve Prometheus metrics on HOST:PORT."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Probe on a schedule; alert after N failing runs in a row, optionally roll back once.
    Errors (nothing measured) alert but never roll back. SIGTERM or Ctrl-C stop between runs.

    Example:  registry watch --env production --every 60 --alert-webhook-env ALERT_WEBHOOK --auto-rollback
    """
    from registry import StopFlag, stop_on_signals

    hook = _webhook(alert_webhook, alert_webhook_env)
    flag = StopFlag()
    with open_registry() as reg, stop_on_signals(flag):
        if metrics_listen:
            _serving(reg.serve_metrics(metrics_listen))
        summary = reg.watch(env, every_s=every, failures=failures, notify=_notifier(hook),
                            auto_rollback=auto_rollback, max_runs=max_runs, should_stop=flag, sleep=flag.wait,
                            on_run=None if as_json else _run_line, actor=actor)
    if as_json:
        print_json(summary)
    else:
        print(plain(f"watch ended ({summary.stopped_by}): {summary.runs} runs, {summary.skipped} skipped, "
                    f"{len(summary.alerts)} alerts, {summary.rollbacks} rollbacks; state {summary.state}"))
    for line in summary.drift:
        print(plain(f"drift: {line}: see `registry status`, then `registry recover`"), file=sys.stderr)
    if summary.dark_since:
        _dark_exit({env or "the default environment": summary.dark_since})
    if summary.drift:
        raise typer.Exit(1)


def _dark_exit(dark_since: dict) -> None:
    """Exit 1 with one line on stderr: an environment that had a release serves nothing."""
    names = ", ".join(f"{name} (since {when(at)})" for name, at in sorted(dark_since.items()))
    print(plain(f"dark: nothing serves in {names}: see `registry status`, then `registry rollback --env ENV`"),
          file=sys.stderr)
    raise typer.Exit(1)


def _webhook(url: str | None, var: str | None):
    if url and var:
        raise typer.BadParameter("give --alert-webhook or --alert-webhook-env, not both",
                                 param_hint="'--alert-webhook' / '--alert-webhook-env'")
    from registry import Webhook, webhook_from_env

    if var:
        return webhook_from_env(var)
    return Webhook(url) if url else None


def _notifier(hook):
    def notify(text: str) -> bool:
        console(stderr=True).print(f"[yellow]alert:[/] {esc(text)}")
        return hook.send(text) if hook else True
    return notify


def _run_line(run) -> None:
    passed = sum(r.status.value == "pass" for r in run.results)
    print(plain(f"{when(run.started_at)}  {run.env}  {run.version or '-'}  {run.outcome.value}  "
                f"{passed}/{len(run.results)} passed"), flush=True)


def _serving(served) -> None:
    server = served[0]
    host, port = server.server_address[:2]
    print(f"serving metrics on http://{host}:{port}/metrics", file=sys.stderr, flush=True)


@app.command()
def metrics(
    listen: str = typer.Option(None, "--listen",
                               help="Serve the page on HOST:PORT until SIGTERM or Ctrl-C (default: print it once)."),
    as_json: bool = JSON,
) -> None:
    """Prometheus metrics read from the database: deployed versions, probe latency and results,
    consecutive failures, last deploy and rollback times (cron's `registry probe` runs included).

    Example:  registry metrics --listen 127.0.0.1:9105
    """
    from registry import StopFlag, stop_on_signals

    with open_registry() as reg:
        if listen is None:
            snapshot = reg.metrics_snapshot()
            print_json(snapshot) if as_json else sys.stdout.write(reg.metrics_text())
            if snapshot.dark_since:
                _dark_exit(snapshot.dark_since)
            return
        flag = StopFlag()
        with stop_on_signals(flag):
            served = reg.serve_metrics(listen)
            _serving(served)
            while not flag():
                flag.wait(3600)
            served[0].shutdown()
