"""Commands that record and read versions: init, push, list, show, log, db upgrade."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.app import ACTOR, DEFAULT_LIMIT, JSON, app, db_app, open_registry
from cli.output import console, esc, first_line, print_json, short, size, table, warn, when

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


@app.command()
def init(
    path: Path = typer.Argument(None, help="Where to create the home (default: $REGISTRY_HOME or ./.cellar)."),
    db_url: str = typer.Option(None, "--db-url",
                               help="Database URL to remember in the home, e.g. postgresql+psycopg://cellar@db/cellar "
                                    "(password from PGPASSWORD or ~/.pgpass, never stored)."),
    blobs: str = typer.Option(None, "--blobs",
                              help="Keep blobs in this OCI registry, oci://HOST[:PORT]/NAMESPACE (a remote named "
                                   "'blobs'; this machine's blob folder becomes a cache)."),
    blobs_plain_http: bool = typer.Option(False, "--blobs-plain-http",
                                          help="With --blobs: plain HTTP (a loopback registry)."),
    blobs_ca_file: Path = typer.Option(None, "--blobs-ca-file", help="With --blobs: the registry's CA (PEM)."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Create a registry (home folder, database, blob store). Safe to run again.

    Example:  registry init --db-url postgresql+psycopg://cellar@db.internal/cellar
    """
    from registry import Registry

    reg, result = Registry.init(path, actor=actor, db_url=db_url)
    with reg:
        if blobs:
            reg.add_remote("blobs", blobs, plain_http=blobs_plain_http, ca_file=blobs_ca_file, blob_store=True,
                           replace=True, actor=actor)
    if as_json:
        return print_json(result)
    verb = "Created" if result.created else "Registry already up to date at"
    console().print(f"{verb} {esc(result.home)} (database {esc(result.db_url)})")
    if "***" in result.db_url:
        console().print("The password is not stored: later commands read it from PGPASSWORD or ~/.pgpass.")


@db_app.command("upgrade")
def db_upgrade(actor: str = ACTOR) -> None:
    """Migrate the registry database to the schema this program needs.

    Example:  registry db upgrade
    """
    from registry import Registry

    before, after = Registry.upgrade_schema(actor=actor)
    console().print(f"schema {before} -> {after}" if before != after else f"schema already at {after}")


@app.command()
def push(
    manifest: Path = typer.Argument(None, help="Manifest file or folder (default: ./cellar.yaml)."),
    version: str = typer.Option(None, "--version", help="Override the manifest's version."),
    message: str = typer.Option(None, "-m", "--message", help="Changelog entry for this version."),
    model: str = typer.Option(None, "--model", help="Push without a manifest: the model name."),
    weights: list[str] = typer.Option(None, "--weights",
                                      help="Without a manifest: a weight file or folder (repeatable)."),
    prompt: list[str] = typer.Option(None, "--prompt",
                                     help="Without a manifest: NAME=PATH of a prompt template (repeatable)."),
    image: str = typer.Option(None, "--image", help="Without a manifest: the container image."),
    sign_key: str = typer.Option(None, "--sign-key",
                                 help="Also sign the version with this private key file (see `registry sign`)."),
    remote: str = typer.Option(None, "--remote",
                               help="Publish the recorded version MANIFEST names (v1.3 or model@v1.3) to this "
                                    "remote as a ModelPack artifact."),
    with_image: bool = typer.Option(False, "--with-image",
                                    help="With --remote: push the pinned image too (by the Docker engine)."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Record a new immutable version: weights, prompts, image, runtime config, changelog entry.
    With --remote: publish a recorded version to the team's OCI registry.

    Example:  registry push examples/support-bot/v1.1 -m "Friendlier system prompt"
    """
    import registry

    if remote:
        return _push_remote(str(manifest or ""), remote=remote, with_image=with_image, actor=actor, as_json=as_json)

    if model and manifest is not None:
        raise typer.BadParameter("give either a MANIFEST or --model with --weights/--prompt, not both")
    if not model and (weights or prompt or image):
        given = ", ".join(f for f, v in (("--weights", weights), ("--prompt", prompt), ("--image", image)) if v)
        raise typer.BadParameter(f"{given} describe a version pushed without a manifest: add --model NAME, "
                                 "or put them in the manifest (cellar.yaml) and push that; nothing was pushed")
    with open_registry() as reg, _progress(disable=as_json) as progress:
        if model:
            source = registry.manifest_from_flags(model=model, version=version, message=message, weights=weights,
                                             prompts=prompt, image=image, root=Path.cwd())
        else:
            source = registry.load_manifest(manifest or Path.cwd(), version=version, message=message)
        result = reg.push(source, actor=actor, progress=progress, sign_key=sign_key)
    if as_json:
        return print_json(result)
    for warning in result.warnings:  # plain prints: rich costs a push ~20 ms of start-up
        warn(warning)
    ref = f"{result.model}@{result.version}"
    if result.created:
        print(f"Pushed {ref} ({short(result.manifest_digest)}): {result.files} files, "
              f"{size(result.bytes_ingested)} new")
    else:
        print(f"{ref} already exists with identical content ({short(result.manifest_digest)}); nothing to do")
    if sign_key:
        print(f"Signed {ref} with {sign_key}")


def _push_remote(ref: str, *, remote: str, with_image: bool, actor: str | None, as_json: bool) -> None:
    if not ref:
        raise typer.BadParameter("name the version to publish, e.g. registry push --remote team support-bot@v1.3")
    from cli.maintenance import _Bar

    with open_registry() as reg, _Bar(disable=as_json, label="push") as bar:
        result = reg.push_remote(ref, remote=remote, with_image=with_image, actor=actor, progress=bar.advance)
    if as_json:
        return print_json(result)
    if result.image:
        print(f"image pushed as {result.image}")
    if not result.created and not result.blobs_uploaded:
        return print(f"{result.reference} holds this version already ({short(result.artifact_digest)}); nothing to do")
    if not result.created:
        return print(f"{result.reference} holds this version; {result.blobs_uploaded} blobs it had lost sent again")
    print(f"pushed {result.model}@{result.version} to {result.reference} ({short(result.artifact_digest)}): "
          f"{result.blobs_uploaded} blobs uploaded ({size(result.bytes_uploaded)}), {result.blobs_mounted} mounted, "
          f"{result.blobs_present} there already")


class _progress:
    """A rich progress bar on stderr for files over 64 MiB, when stderr is a terminal."""

    LARGE = 64 << 20

    def __init__(self, disable: bool):
        self.disable = disable or not sys.stderr.isatty()
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self):
        return None if self.disable else self.update

    def update(self, name: str, done: int, total: int) -> None:
        if total < self.LARGE:
            return
        if self.bar is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), console=console(stderr=True), transient=True)
            self.bar.start()
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(esc(name), total=total)  # descriptions are markup
        self.bar.advance(self.tasks[name], done)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


@app.command("list")
def list_(
    model: str = typer.Argument(None, help="Only this model's versions."),
    limit: int = typer.Option(None, "--limit", min=0,
                              help="At most N rows (default 100 for the table, all for --json; 0 = all)."),
    all_: bool = typer.Option(False, "--all", help="Also deprecated versions (marked in MESSAGE)."),
    as_json: bool = JSON,
) -> None:
    """List versions, newest first (deprecated ones only with --all).

    Example:  registry list support-bot --limit 10
    """
    with open_registry() as reg:
        shown = (None if as_json else 100) if limit is None else (limit or None)
        rows = reg.versions(model, limit=shown, include_deprecated=all_)
        total = (reg.count_versions(model, include_deprecated=all_) if shown and len(rows) == shown
                 else len(rows))
    if as_json:
        return print_json(rows)
    if not rows:
        return print("No versions yet: push one with `registry push`.")
    table(["MODEL", "VERSION", "DIGEST", "PUSHED", "BY", "MESSAGE"],
          [[r.model, r.version, short(r.manifest_digest), when(r.created_at), r.actor,
            ("(deprecated) " if r.deprecated_at else "") + first_line(r.message)]
           for r in rows])
    if total > len(rows):
        print(f"... {total - len(rows)} more (use --limit 0 for all)")


@app.command()
def show(
    ref: str = typer.Argument(..., help="v1.3, model@v1.3, or ENV@TIME: what served in ENV then "
                                         "(an ISO time, no zone means UTC, or an age like 2h)."),
    as_json: bool = JSON,
) -> None:
    """Show everything recorded about one version: image, weights and tensors, prompts, provenance.

    Example:  registry show support-bot@v1.1   (or: registry show production@2026-11-20T03:12)
    """
    from cli.signing import signature_line

    with open_registry() as reg:
        info = reg.show(ref)
        signed = reg.signatures(f"{info.model}@{info.version}")
    if as_json:
        return print_json({**info.model_dump(mode="json", by_alias=True), "signatures": signed})
    out = console()
    out.print(f"[bold]{esc(info.model)}@{esc(info.version)}[/]  {info.manifest_digest}")
    out.print(f"pushed  {when(info.created_at)} by {esc(info.actor)}")
    if info.message:
        out.print(f"message {esc(info.message)}")
    out.print(f"image   {esc(info.image.ref or '-')}  {esc(info.image.digest or '(unresolved)')}")
    for w in info.weights:
        note = f", {len(w.tensors)} tensors" if w.tensors else ""
        out.print(f"weight  {esc(w.path)}  {short(w.digest)}  {size(w.size)}{note}")
        for tensor in w.tensors[:20]:
            out.print(f"          {esc(tensor.name)}  {esc(tensor.dtype)}{esc(tensor.shape)}  {short(tensor.digest)}")
        if len(w.tensors) > 20:
            out.print(f"          ... {len(w.tensors) - 20} more (see --json)")
    for p in info.prompts:
        out.print(f"prompt  {esc(p.name)}  {short(p.digest)}  {size(p.size)}{_file_origin(info, p.name)}")
    rt = info.runtime
    env = esc(", ".join(f"{k}={v}" for k, v in sorted(rt.env.items())))
    out.print(f"runtime port {rt.port}, health {esc(rt.health.path)} ({rt.health.timeout_s:g} s)"
              + (f", env {env}" if env else "") + (f", secrets {esc(', '.join(rt.secrets))}" if rt.secrets else ""))
    host = rt.resources().model_dump(mode="json")  # only the settings the version asks for
    if host:
        out.print("host    " + esc(", ".join(f"{k} {_setting(v)}" for k, v in host.items())))
    if info.probes:
        out.print(f"probes  {esc(', '.join(p.name for p in info.probes))}")
    if pv := info.provenance:
        out.print(f"git     {_git_line(pv)}")
    for sig in signed:
        out.print(signature_line(sig))


def _setting(value) -> str:
    """A runtime setting as written in a manifest: ``[0, 1]``, ``{memlock: -1}``."""
    if isinstance(value, list):
        return "[" + ", ".join(_setting(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_setting(v)}" for k, v in value.items()) + "}"
    return str(value)


def _git_line(pv) -> str:
    """Commit, branch, dirty flag and remote of a version pushed from a git work tree."""
    return (f"{esc(pv.commit or '(no commit)')} on {esc(pv.branch or '(detached)')}"
            + (" [yellow](dirty)[/]" if pv.dirty else "") + (f"  {esc(pv.remote)}" if pv.remote else ""))


def _file_origin(info, name: str) -> str:
    fp = info.provenance.files.get(name) if info.provenance else None
    if not fp or not fp.commit:
        return ""
    return f"  last changed in {esc(fp.commit[:10])} by {esc(fp.author)}" + (" (dirty)" if fp.dirty else "")


@app.command()
def log(
    model: str = typer.Argument(None, help="Only this model's changelog."),
    limit: int = typer.Option(DEFAULT_LIMIT, "--limit", min=0, help="At most N entries, newest first (0 = all)."),
    show_all: bool = typer.Option(False, "--all", help="Every entry (same as --limit 0)."),
    as_json: bool = JSON,
) -> None:
    """The changelog: each version's message, who pushed it, when, and its git commit, newest first.

    Shows the newest 100 entries unless --limit or --all says otherwise.

    Example:  registry log support-bot --limit 20
    """
    shown = None if show_all or not limit else limit
    with open_registry() as reg:
        rows = reg.changelog(model, limit=shown)
        more = reg.count_versions(model) - len(rows) if shown and len(rows) == shown else 0
    if as_json:
        return print_json(rows)
    out = console()
    for r in rows:
        out.print(f"[bold yellow]{esc(r.model)}@{esc(r.version)}[/]  {short(r.manifest_digest)}")
        out.print(f"Pushed: {when(r.created_at)} by {esc(r.actor)}")
        if pv := r.provenance:
            out.print(f"Git:    {_git_line(pv)}")
        out.print("\n".join(f"    {esc(line)}" for line in (r.message or "(no message)").splitlines()) + "\n")
    if more:
        print(f"... {more} older entries (use --all or --limit N)")
