"""Commands for the team's OCI registry: remote add/list/remove/verify, pull (push --remote is
in cli/versions.py, beside push)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.app import ACTOR, JSON, CellarGroup, app, open_registry
from cli.maintenance import _Bar
from cli.output import console, esc, print_json, short, size, table

remote_app = typer.Typer(cls=CellarGroup, no_args_is_help=True,
                         help="The team's OCI registries (Distribution, Harbor, Zot): add, list, remove, verify.")
app.add_typer(remote_app, name="remote")

PLAIN_HTTP = typer.Option(False, "--plain-http", help="HTTP instead of HTTPS (loopback hosts only, unless --insecure).")
INSECURE = typer.Option(False, "--insecure", help="Allow --plain-http to a host that is not loopback.")
CA_FILE = typer.Option(None, "--ca-file", help="PEM file of the CA that signed the registry's certificate.")


@remote_app.command("add")
def remote_add(
    name: str = typer.Argument(..., help="A name for the remote, e.g. team."),
    url: str = typer.Argument(..., help="oci://HOST[:PORT]/NAMESPACE"),
    plain_http: bool = PLAIN_HTTP,
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
    replace: bool = typer.Option(False, "--replace", help="Replace a remote of this name."),
    blob_store: bool = typer.Option(False, "--blob-store",
                                    help="Make it this home's blob store: pushes go there too, promotes fetch what "
                                         "this machine lacks."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Remember an OCI registry; credentials come from `docker login` or REGISTRY_REMOTE_USERNAME and
    REGISTRY_REMOTE_PASSWORD, and are never stored.

    Example:  registry remote add team oci://registry.internal:5000/ml --ca-file /etc/ssl/team-ca.pem
    """
    with open_registry() as reg:
        remote = reg.add_remote(name, url, plain_http=plain_http, insecure=insecure, ca_file=ca_file,
                                replace=replace, blob_store=blob_store, actor=actor)
    if as_json:
        return print_json(remote)
    console().print(f"Added remote {esc(remote.name)}: {esc(remote.url)} ({esc(_transport(remote))})")


@remote_app.command("list")
def remote_list(as_json: bool = JSON) -> None:
    """List the remotes.

    Example:  registry remote list
    """
    with open_registry() as reg:
        remotes = reg.remotes()
    if as_json:
        return print_json(remotes)
    if not remotes:
        return print("No remotes yet: add one with `registry remote add NAME oci://HOST/NAMESPACE`.")
    table(["NAME", "URL", "TRANSPORT", "BLOB STORE"],
          [[r.name, r.url, _transport(r), "yes" if r.blob_store else ""] for r in remotes])


@remote_app.command("remove")
def remote_remove(name: str = typer.Argument(..., help="The remote's name."), actor: str = ACTOR) -> None:
    """Forget a remote (nothing is deleted from the registry).

    Example:  registry remote remove team
    """
    with open_registry() as reg:
        remote = reg.remove_remote(name, actor=actor)
    console().print(f"Removed remote {esc(remote.name)} ({esc(remote.url)})")


@remote_app.command("verify")
def remote_verify(name: str = typer.Argument(..., help="The remote's name."), as_json: bool = JSON) -> None:
    """Which versions the remote holds as pushed, lacks, holds otherwise or incompletely; exit 1 if any
    is different or misses blobs.

    Example:  registry remote verify team
    """
    with open_registry() as reg:
        report = reg.verify_remote(name)
    if as_json:
        print_json(report)
    else:
        table(["MODEL", "VERSION", "STATE", "MISSING"],
              [[v.model, v.version, v.state, ", ".join(short(d) for d in v.missing)] for v in report.versions])
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def pull(
    source: str = typer.Argument(..., help="oci://HOST[:PORT]/NAMESPACE/MODEL:VERSION, or MODEL@VERSION "
                                           "with --remote."),
    remote: str = typer.Option(None, "--remote", help="Pull MODEL@VERSION from this remote."),
    plain_http: bool = PLAIN_HTTP,
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
    with_image: bool = typer.Option(False, "--with-image",
                                    help="Pull the pinned image too (by the Docker engine), refused unless its ID "
                                         "is the pinned digest."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Bring a version in from an OCI registry (a Cellar push, or a ModelPack artifact of another
    tool), every layer verified against its digest before anything is recorded.

    Example:  registry pull oci://registry.internal:5000/ml/support-bot:v1.3
    """
    with open_registry() as reg, _Bar(disable=as_json, label="pull") as bar:
        result = reg.pull(source, remote=remote, plain_http=plain_http, insecure=insecure, ca_file=ca_file,
                          with_image=with_image, actor=actor, progress=bar.advance)
    if as_json:
        return print_json(result)
    ref = f"{result.model}@{result.version}"
    for warning in result.warnings:
        print(f"warning: {warning}")
    if result.image_pulled:
        print("pulled the pinned image")
    if result.created:
        print(f"pulled {ref} ({short(result.manifest_digest)}) from {result.reference}: {result.blobs_fetched} "
              f"blobs, {size(result.bytes_fetched)} fetched")
    else:
        print(f"{ref} is already here with identical content ({short(result.manifest_digest)}); nothing to do")


def _transport(remote) -> str:
    if not remote.plain_http:
        return f"https, CA {remote.ca_file}" if remote.ca_file else "https"
    return "plain http (insecure)" if remote.insecure else "plain http (loopback)"
