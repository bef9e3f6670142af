"""Commands for signatures and trust: key add/list/remove, sign, approve, signature, checkout,
audit approvals (``env set --trust`` lives with the other env commands in cli/deploy.py)."""

from __future__ import annotations

import typer

from cli.app import ACTOR, JSON, CellarGroup, app, open_registry
from cli.inspection import audit_app
from cli.output import console, esc, print_json, short, table, when

key_app = typer.Typer(cls=CellarGroup, help="Named public keys whose signatures environments can trust.",
                      no_args_is_help=True)
app.add_typer(key_app, name="key")

KEY = typer.Option(..., "--key", help="Private key file (EC PEM; passphrase from $REGISTRY_SIGN_PASSPHRASE), or a "
                                      "key on a token: pkcs11:token=T;object=LABEL (PIN from $REGISTRY_PKCS11_PIN).")


@key_app.command("add")
def key_add(
    name: str = typer.Argument(..., help="Who holds the key, e.g. alice."),
    public_key: str = typer.Argument(..., help="Public key file (EC P-256/384/521, PEM)."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Name a public key, so signatures made with its private key are recorded under that name.

    Example:  registry key add alice alice.pub
    """
    with open_registry() as reg:
        key = reg.add_key(name, public_key, actor=actor)
    if as_json:
        return print_json(key)
    console().print(f"Added key {esc(key.name)} {key.fingerprint}")


@key_app.command("list")
def key_list(as_json: bool = JSON) -> None:
    """List the registered keys, with their fingerprints and the environments that trust them.

    Example:  registry key list
    """
    with open_registry() as reg:
        keys = reg.keys()
    if as_json:
        return print_json(keys)
    if not keys:
        return print("No keys yet: add one with `registry key add NAME PUBLIC_KEY`.")
    table(["NAME", "FINGERPRINT", "TRUSTED BY", "ADDED"],
          [[k.name, short(k.fingerprint, 23), ", ".join(k.trusted_by) or "-", when(k.created_at)] for k in keys])


@key_app.command("remove")
def key_remove(
    name: str = typer.Argument(..., help="Key name."),
    reason: str = typer.Option(None, "--reason", help="Why (kept in the audit log)."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Forget a key: its signatures and approvals stop counting everywhere.

    Example:  registry key remove mallory --reason "left the team"
    """
    with open_registry() as reg:
        key = reg.remove_key(name, reason=reason, actor=actor)
    if as_json:
        return print_json(key)
    console().print(f"Removed key {esc(key.name)} {key.fingerprint}")


@app.command()
def sign(
    ref: str = typer.Argument(..., help="v1.3 or model@v1.3."),
    key: str = KEY,
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Sign a version: an OpenSSF model-signing bundle over its files and record, by a registered key.

    Example:  registry sign support-bot@v1.1 --key ~/.keys/alice.pem
    """
    with open_registry() as reg:
        sig = reg.sign(ref, key=key, actor=actor)
    if as_json:
        return print_json(sig)
    console().print(f"Signed {esc(sig.model)}@{esc(sig.version)} as {esc(sig.signer)} ({short(sig.fingerprint, 23)})")


@app.command()
def approve(
    ref: str = typer.Argument(..., help="v1.3 or model@v1.3."),
    env: str = typer.Option(..., "--env", help="The environment this approval is for (it counts nowhere else)."),
    key: str = KEY,
    expires: str = typer.Option(None, "--expires", help="Until when: an age (12h, 7d) or an ISO date/time."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Approve a version for one environment: a signature bound to it, optionally until a time.

    Example:  registry approve support-bot@v1.1 --env prod --key ~/.keys/bob.pem --expires 7d
    """
    with open_registry() as reg:
        sig = reg.approve(ref, env=env, key=key, expires=expires, actor=actor)
    if as_json:
        return print_json(sig)
    until = f" until {when(sig.expires_at)}" if sig.expires_at else ""
    console().print(f"Approved {esc(sig.model)}@{esc(sig.version)} for {esc(sig.env)} as {esc(sig.signer)}{until}")


@app.command()
def signature(
    ref: str = typer.Argument(..., help="v1.3 or model@v1.3."),
    signer: str = typer.Option(..., "--signer", help="Whose signature (a key name)."),
    out: str = typer.Option(..., "-o", "--output", help="File to write the bundle to."),
    env: str = typer.Option(None, "--env", help="That signer's approval for this environment instead."),
    as_json: bool = JSON,
) -> None:
    """Write one signer's bundle, to verify a checkout with the upstream tool alone.

    Example:  registry signature support-bot@v1.1 --signer alice -o alice.sig
    """
    with open_registry() as reg:
        sig = reg.write_signature(ref, signer=signer, env=env, out=out)
    if as_json:
        return print_json(sig)
    console().print(f"Wrote {esc(sig.signer)}'s {sig.kind} of {esc(sig.model)}@{esc(sig.version)} to {esc(out)}")


@app.command()
def checkout(
    ref: str = typer.Argument(..., help="v1.3 or model@v1.3."),
    dest: str = typer.Argument(..., help="A new (or empty) folder."),
    as_json: bool = JSON,
) -> None:
    """Write a version's files (weights, prompts/NAME) and its record (cellar-record.json) into a folder.

    Example:  registry checkout support-bot@v1.1 ./v1.1
    """
    with open_registry() as reg:
        result = reg.checkout(ref, dest)
    if as_json:
        return print_json(result)
    console().print(f"Checked out {esc(result.model)}@{esc(result.version)} into {esc(result.path)} "
                    f"({len(result.files)} files)")


@audit_app.command("approvals")
def audit_approvals(
    env: str = typer.Option(None, "--env", help="Environment (default: the default one)."),
    at: str = typer.Option(None, "--at", help="When: an ISO date/time (UTC) or an age like 7d (default: now)."),
    as_json: bool = JSON,
) -> None:
    """Who signed and approved what ran in an environment at a time, each signature verified now.

    Example:  registry audit approvals --env prod --at 2026-12-01T15:00
    """
    with open_registry() as reg:
        record = reg.approvals(env, at=at)
    if as_json:
        return print_json(record)
    out = console()
    if record.release is None:
        return out.print(f"Nothing was running in {esc(record.env)} at {when(record.at)}.")
    r = record.release
    out.print(f"{esc(record.env)} at {when(record.at)}: {esc(r.model)}@{esc(r.version)} (revision {r.revision}, "
              f"deployed {when(r.finished_at or r.started_at)} by {esc(r.actor)})")
    if not record.signatures:
        out.print("  no signatures or approvals")
    for s in record.signatures:
        out.print("  " + signature_line(s))


def signature_line(s) -> str:
    """One signature or approval, for `show` and `audit approvals`."""
    what = f"approved for {esc(s.env)}" if s.env else "signed"
    until = f" until {when(s.expires_at)}" if s.expires_at else ""
    state = "[green]verified[/]" if s.verified else f"[red]refused: {esc(s.problem or 'not verified')}[/]"
    return f"{what:9} {esc(s.signer)}  {short(s.fingerprint, 23)}  {when(s.created_at)}{until}  {state}"
