"""``registry hook``: audit events POSTed to chat, CI and incident tools (registry.hooks)."""

from __future__ import annotations

import sys

import typer

from cli.app import ACTOR, DEFAULT_LIMIT, JSON, CellarGroup, app, open_registry
from cli.output import plain, print_json, table, when

hook_app = typer.Typer(cls=CellarGroup, no_args_is_help=True,
                       help="Send audit events (push, promote, rollback, ...) to other tools, signed, at least once.")
app.add_typer(hook_app, name="hook")


@hook_app.command("add")
def hook_add(
    name: str = typer.Argument(..., help="A name for the hook."),
    url: str = typer.Argument(None, help="http(s) URL to POST to; one carrying a token goes in --url-env instead."),
    url_env: str = typer.Option(None, "--url-env",
                                help="Name of the environment variable holding the URL (read when delivering)."),
    events: str = typer.Option(None, "--events", help="Comma-separated audit actions "
                               "(default: push,promote,rollback,deprecate,approve,alert)."),
    secret_env: str = typer.Option(None, "--secret-env", help="Name of the environment variable holding the HMAC "
                                   "secret that "
                                   "signs each request (X-Cellar-Signature-256)."),
    fmt: str = typer.Option("json", "--format", help="json (the event document) or slack ({\"text\": ...})."),
    web_url: str = typer.Option(None, "--web-url", help="Base URL of `registry ui`, for links in each event."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Send every matching audit event from now on to URL.

    Example:  registry hook add chatops --url-env CHATOPS_URL --secret-env CHATOPS_SECRET --events promote,rollback
    """
    chosen = [e.strip() for e in events.split(",") if e.strip()] if events is not None else None
    with open_registry() as reg:
        hook = reg.add_hook(name, url, url_env=url_env, events=chosen, secret_env=secret_env, format=fmt,
                            web_url=web_url, actor=actor)
    if as_json:
        return print_json(hook)
    print(plain(f"Added hook {hook.name}: {', '.join(hook.events)} -> {hook.url}"
                + ("" if hook.signed_with else " (unsigned: give --secret-env to sign)")))
    print("Events are sent by `registry hook run` (or `registry watch`, or `registry hook deliver` from cron).")


@hook_app.command("list")
def hook_list(as_json: bool = JSON) -> None:
    """The hooks, with what each still has to deliver.

    Example:  registry hook list
    """
    with open_registry() as reg:
        hooks = reg.hooks()
    if as_json:
        return print_json(hooks)
    if not hooks:
        print("No hooks. Add one with `registry hook add NAME URL`.")
        return
    table(["NAME", "URL", "EVENTS", "FORMAT", "SIGNED WITH", "PENDING", "RETRY"],
          [[h.name, h.url, ",".join(h.events), h.format, h.signed_with or "unsigned", h.pending,
            f"attempt {h.attempts + 1} at {when(h.next_at)}" if h.next_at else "-"] for h in hooks])


@hook_app.command("remove")
def hook_remove(name: str = typer.Argument(..., help="The hook's name."), actor: str = ACTOR) -> None:
    """Stop sending events to a hook (its delivery records go with it).

    Example:  registry hook remove chatops
    """
    with open_registry() as reg:
        reg.remove_hook(name, actor=actor)
    print(plain(f"Removed hook {name}."))


@hook_app.command("test")
def hook_test(name: str = typer.Argument(..., help="The hook's name."), actor: str = ACTOR) -> None:
    """Send a test event now and say what came back; exit 1 when it was not delivered.

    Example:  registry hook test chatops
    """
    with open_registry() as reg:
        ok, said = reg.test_hook(name, actor=actor)
    print(plain(f"{'Delivered' if ok else 'Not delivered'}: {said}"), file=sys.stdout if ok else sys.stderr)
    raise typer.Exit(0 if ok else 1)


@hook_app.command("deliveries")
def hook_deliveries(
    name: str = typer.Argument(..., help="The hook's name."),
    limit: int = typer.Option(DEFAULT_LIMIT, "--limit", min=1, help="Show at most this many attempts."),
    as_json: bool = JSON,
) -> None:
    """A hook's delivery attempts, newest first.

    Example:  registry hook deliveries chatops --limit 20
    """
    with open_registry() as reg:
        rows = reg.hook_deliveries(name, limit=limit)
    if as_json:
        return print_json(rows)
    if not rows:
        print(plain(f"No deliveries to {name} yet."))
        return
    table(["WHEN", "EVENT", "ACTION", "ATTEMPT", "OUTCOME", "STATUS", "MS", "DETAIL"],
          [[when(d.at), d.event_id if d.event_id is not None else "test", d.action, d.attempt, d.outcome,
            d.status or "-", d.ms, d.detail] for d in rows])


@hook_app.command("deliver")
def hook_deliver(
    hook: str = typer.Option(None, "--hook", help="Only this hook."),
    timeout: float = typer.Option(30.0, "--timeout", help="Stop starting requests after this many seconds."),
    as_json: bool = JSON,
) -> None:
    """One delivery pass: each hook's due events, oldest first (for cron).

    Example:  registry hook deliver --timeout 50
    """
    with open_registry() as reg:
        result = reg.deliver_hooks(budget_s=timeout, hook=hook)
    if as_json:
        return print_json(result)
    print(_pass_line(result))


@hook_app.command("run")
def hook_run(
    every: float = typer.Option(2.0, "--every", min=0.1, help="Seconds between passes."),
) -> None:
    """Deliver events as they happen, until SIGTERM or Ctrl-C (run it as a service).

    Example:  CHATOPS_SECRET=... registry hook run
    """
    from registry import StopFlag, stop_on_signals

    flag = StopFlag()

    def said(result) -> None:
        if result.delivered or result.failed or result.gave_up:
            print(_pass_line(result), flush=True)

    with open_registry() as reg, stop_on_signals(flag):
        reg.run_hooks(should_stop=flag, wait=flag.wait, every_s=every, on_pass=said)
    print("hook run stopped")


def _pass_line(result) -> str:
    busy = f", {len(result.busy)} held by another deliverer" if result.busy else ""
    return (f"{result.delivered} delivered, {result.failed} failed (retried later), {result.gave_up} given up; "
            f"{result.waiting} waiting{busy}")
