"""Commands that look back: diff, blame, audit (with audit verify and audit checkpoint)."""

from __future__ import annotations

import sys

import typer

from cli.app import JSON, CellarGroup, app, open_registry
from cli.output import console, esc, first_line, print_json, short, size, table, warn, when

BLAME_COLOURED = 2_000  # lines: a longer blame is printed plain (rich would take seconds)
audit_app = typer.Typer(cls=CellarGroup, invoke_without_command=True)  # help: the callback's docstring
app.add_typer(audit_app, name="audit")


@app.command()
def diff(
    a: str = typer.Argument(..., help="Old side: v1.2, model@v1.2, an environment, ENV@TIME (what served there "
                                      "then; no zone means UTC, or an age like 2h) or an unpushed manifest path."),
    b: str = typer.Argument(..., help="New side, same forms as A."),
    as_json: bool = JSON,
    stat: bool = typer.Option(False, "--stat", help="Only a summary: what changed, not how."),
    exit_code: bool = typer.Option(False, "--exit-code",
                                   help="Exit 1 when the contents differ, 0 when equal (like git diff)."),
) -> None:
    """What changed between two versions: image, runtime, prompts, weights tensor by tensor, probes.

    Also the changelog message and git provenance. Weight bytes are never read: tensors are
    compared by their recorded digests. Secret values are never shown.

    With --exit-code the exit status is 1 when the contents (the manifest digests) differ; a
    different changelog message or git commit alone does not count.

    Example:  registry diff support-bot@v1.2 v1.3 --stat
    """
    with open_registry() as reg:
        result = reg.diff(a, b)
    for warning in result.warnings:
        warn(warning)
    if as_json:
        print_json(result)
    else:
        from cli import diff_render

        diff_render.render(console(), result, stat=stat)
    if exit_code and result.differs:
        raise typer.Exit(1)


@app.command()
def blame(
    prompt: str = typer.Argument(..., help="The prompt template's name, e.g. system."),
    at: str = typer.Option(None, "--at", help="The version to blame (default: the newest)."),
    model: str = typer.Option(None, "--model", help="The model (default: the only one, or the one in ./cellar.yaml)."),
    text: bool = typer.Option(False, "--text", help="Print the template's text as pushed, nothing else."),
    as_json: bool = JSON,
) -> None:
    """For each line of a prompt template: the version, actor, time and git commit that introduced it.

    The git commit and author are shown when the version was pushed from a git work tree.

    Example:  registry blame system --at support-bot@v1.3
    """
    if text:
        with open_registry() as reg:
            body = reg.prompt_text(prompt, at=at, model=model)
        return _print_text(body)
    with open_registry() as reg:
        lines = reg.blame(prompt, at=at, model=model)
    if as_json:
        return print_json(lines)
    from registry import safe_for_terminal

    width = max(len(x.version) for x in lines) if lines else 0
    rows, heads = [], {}  # the columns before the text, per origin (few, however long the prompt)
    for x in lines:
        key = (x.version, x.actor, x.time, x.commit, x.author, x.dirty)
        if key not in heads:
            git = f"{x.commit[:8]} {x.author}" if x.commit else ("(uncommitted)" if x.dirty else "")
            heads[key] = (f"{x.version:<{width}}", f"{x.actor}  {when(x.time)}  ", git)
        rows.append((*heads[key], f"  {x.line:>3}| ", x.text))
    if len(rows) > BLAME_COLOURED or not sys.stdout.isatty():  # rich costs ~0.4 ms a line
        shown = {h: " ".join(map(safe_for_terminal, h[:2])) + safe_for_terminal(h[2]) for h in heads.values()}
        sys.stdout.write("".join(shown[(v, a, g)] + n + safe_for_terminal(t) + "\n" for v, a, g, n, t in rows))
        return None
    out = console()
    for v, a, g, n, t in rows:
        out.print(f"[yellow]{esc(v)}[/] {esc(a)}[dim]{esc(g)}[/]{n}{esc(t)}")
    return None


def _print_text(body: str) -> None:
    """The text as is into a pipe or file; on a terminal, control characters made visible."""
    from registry import visible_text

    sys.stdout.write(visible_text(body) if sys.stdout.isatty() else body)
    sys.stdout.flush()


@audit_app.callback()
def audit(
    ctx: typer.Context,
    action: str = typer.Option(None, "--action",
                               help="Only this action (push, promote, rollback, ...; an unknown one lists them all)."),
    actor: str = typer.Option(None, "--actor", help="Only actors containing this text (case-insensitive)."),
    env: str = typer.Option(None, "--env", help="Only events about this environment."),
    model: str = typer.Option(None, "--model", help="Only events about this model."),
    prompt: str = typer.Option(None, "--prompt", help="Only events that changed this prompt template."),
    since: str = typer.Option(None, "--since", help="Only events since an ISO date or an age: 30s, 30m, 12h, 7d, 2w."),
    limit: int = typer.Option(None, "--limit", min=0,
                              help="At most N events (default 100 for the table, all for --json; 0 = all)."),
    before: int = typer.Option(None, "--before",
                               help="Only events older than event ID: the next page after the last ID shown."),
    as_json: bool = JSON,
) -> None:
    """The tamper-evident audit log: who did what, when and why, newest first.

    `registry audit verify` checks the hash chain; `registry audit checkpoint` prints its head.

    Example:  registry audit --prompt system --since 30d
    """
    if ctx.invoked_subcommand is not None:
        return
    shown = (None if as_json else 100) if limit is None else (limit or None)
    with open_registry() as reg:
        events = reg.audit(action=action, actor=actor, env=env, model=model, prompt=prompt,
                           since=since, limit=shown, before=before)
        empty = None if events or as_json else _nothing_matched(reg, env=env, model=model)
    if as_json:
        return print_json(events)
    if empty:
        return print(empty)
    _event_table(events)
    if shown and len(events) == shown:
        print(f"... older events: --before {events[-1].id} (or --limit 0 for all)")


def _nothing_matched(reg, *, env: str | None, model: str | None) -> str:
    """Why the table is empty: a model or environment the log never names is likely a typo."""
    if model and not reg.audit(model=model, limit=1):
        return f"No events for model {model!r}: it never appears in the audit log (see `registry list`)."
    if env and not reg.audit(env=env, limit=1):
        return f"No events for environment {env!r}: it never appears in the audit log (see `registry status`)."
    return "No matching events."


def _event_table(events) -> None:
    table(["ID", "WHEN", "ACTOR", "ACTION", "ENV", "OBJECT", "DETAIL"],
          [[e.id, when(e.at), e.actor + (f" (db {e.db_user})" if e.db_user else ""), e.action, e.env or "-",
            e.object, _summary(e)] for e in events])


def _summary(event) -> str:
    d = event.detail
    parts = []
    if d.get("automatic"):
        parts.append("automatic")
    if d.get("status"):  # promote and rollback: a failed one must not read as a success
        parts.append(f"status {d['status']}")
    if d.get("error"):
        parts.append(f"error: {first_line(str(d['error']))}")
    if d.get("prompts_changed"):
        parts.append("prompts " + ", ".join(d["prompts_changed"]))
    if d.get("message"):
        parts.append(repr(first_line(d["message"])))
    parts += _maintenance_summary(d)
    if d.get("fingerprint"):  # sign, approve, key-add, key-remove (issue 25)
        parts.append(f"key {d.get('signer') or d.get('name')} {short(d['fingerprint'], 23)}"
                     + (f" until {d['expires_at'][:16]}" if d.get("expires_at") else ""))
    if d.get("signed_by"):  # a promote or rollback under a trust policy: who vouched
        parts.append("signed by " + ", ".join(d["signed_by"]))
    if "require_signatures" in d:
        parts.append(f"trusts {', '.join(d['trusted']) or 'no key'}; requires {d['require_signatures']}")
    if event.reason:
        parts.append(f"reason: {event.reason}")
    return "; ".join(parts)


def _maintenance_summary(d: dict) -> list[str]:
    """What gc, backup, restore, export and import did, from the figures their events record."""
    parts = []
    if d.get("from"):
        parts.append(f"from {d['from']}")
    if d.get("file"):
        parts.append(f"to {d['file']}" + (" with image" if d.get("with_image") else ""))
    if d.get("image_loaded"):
        parts.append("image loaded")
    if "blobs" in d:
        copied = f" ({d['copied']} copied)" if "copied" in d else ""
        parts.append(f"{d['blobs']} blobs{copied}")
    if d.get("bytes_freed"):
        parts.append(f"{size(d['bytes_freed'])} freed")
    if d.get("containers"):
        parts.append(f"{len(d['containers'])} containers removed")
    if d.get("problems"):
        parts.append(f"{d['problems']} problems")
    return parts


@audit_app.command("verify")
def audit_verify(
    checkpoint: str = typer.Option(None, "--checkpoint",
                                   help="HASH:COUNT from `registry audit checkpoint`, or a file holding it."),
    as_json: bool = JSON,
) -> None:
    """Recompute the hash chain; name the first event altered, inserted, deleted or reordered.

    Exits 1 when the chain is broken. With --checkpoint, a truncated tail is caught too.

    Example:  registry audit verify --checkpoint audit-2026-11.txt
    """
    from registry import AuditBroken

    with open_registry() as reg:
        result = reg.verify_audit(checkpoint=checkpoint)
    if as_json:
        print_json(result)
    elif result.ok:
        console().print(f"audit log intact: {result.checked} events, head {short(result.head)}")
    if result.problem is not None:
        raise AuditBroken(f"audit log broken at event {result.problem.event}: {result.problem.message}")
    if not result.ok:
        first = result.seals[0]
        more = f" (and {len(result.seals) - 1} more: see --json)" if len(result.seals) > 1 else ""
        raise AuditBroken(f"audit record altered: {first.object}: {first.message}{more}")


@audit_app.command("checkpoint")
def audit_checkpoint(as_json: bool = JSON) -> None:
    """Print the audit log's head hash and event count as HASH:COUNT.

    Keep it elsewhere (a ticket, a git repo) and pass it to `registry audit verify --checkpoint`
    later to catch a truncated tail.

    Example:  registry audit checkpoint >> ~/cellar-checkpoints.txt
    """
    with open_registry() as reg:
        cp = reg.audit_checkpoint()
    if as_json:
        return print_json(cp)
    print(cp)

