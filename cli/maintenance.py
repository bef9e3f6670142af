"""Commands that keep a registry whole: verify, gc, backup, restore, export, import, deprecate, delete."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.app import ACTOR, JSON, app, open_registry
from cli.output import console, esc, plain, print_json, short, size, warn

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

REASON = typer.Option(None, "--reason", help="Why (recorded in the audit log).")


@app.command()
def verify(
    hosts: bool = typer.Option(False, "--hosts", help="Also hash, on each Docker host that caches blobs "
                                                     "(one that does not share this disk), the blobs cached there."),
    as_json: bool = JSON,
) -> None:
    """Re-hash every blob, check references, snapshots, the audit chain and the database; exit 1 on damage.

    Example:  registry verify --json > verify.json || echo "the store is damaged"
    """
    with open_registry() as reg, _Bar(disable=as_json, label="verify") as bar:
        report = reg.verify(progress=bar.update, hosts=hosts)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report) -> None:
    for p in report.problems:
        who = f" used by {', '.join(p.versions)}" if p.versions else (" used by no version" if p.digest else "")
        sizes = (f" ({size(p.actual_size)} on disk, {size(p.expected_size)} recorded)"
                 if p.expected_size is not None and p.actual_size is not None else "")
        what = p.digest or p.path or ""
        print(f"{'DAMAGE' if p.damage else 'note  '}  {p.kind}  {plain(what)}{plain(who)}{sizes}"
              + (f": {plain(p.detail)}" if p.detail else ""))
    for path in report.stale_temp_files:
        print(f"note    stale temp file {plain(path)} (gc removes it)")
    for w in report.warnings:
        warn(w)
    verdict = "intact" if report.ok else f"DAMAGED: {sum(p.damage for p in report.problems)} problem(s)"
    print(f"{verdict}: {report.blobs_checked} blobs ({size(report.bytes_hashed)}) re-hashed in {report.seconds:.1f} s, "
          f"{report.snapshots_checked} snapshots, {report.audit_events} audit events; {report.database_check}")


@app.command()
def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only print what would be removed."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Remove unreferenced blobs, stale temp files, unneeded snapshots and old stopped containers.

    Never anything a version, a deployed release or a kept rollback target needs; unreferenced
    blobs younger than an hour are kept (a push may be about to record them).

    Example:  registry gc --dry-run
    """
    with open_registry() as reg:
        result = reg.gc(dry_run=dry_run, actor=actor)
    if as_json:
        return print_json(result)
    verb = "would remove" if result.dry_run else "removed"
    for b in result.blobs:
        print(f"{verb} blob {b.digest}  {size(b.size)}")
    for item in [*result.temp_files, *result.snapshots]:
        print(f"{verb} {plain(item.path)}  {size(item.size)}  ({plain(item.why)})")
    for b in result.host_blobs:
        print(f"{verb} blob {b.digest}  {size(b.size)}  from the cache on {plain(b.path)}")
    for c in result.containers:
        print(f"{verb} container {plain(c.name or c.id[:12])} ({plain(c.env)}, {plain(c.version)} r{c.revision})")
    for s in result.skipped:
        print(f"kept {plain(s.path)}: {plain(s.why)}")
    for w in result.warnings:
        warn(w)
    kept = f"; {len(result.kept_fresh)} fresh unreferenced blob(s) kept" if result.kept_fresh else ""
    print(f"{'dry run: ' if result.dry_run else ''}{size(result.bytes_freed)} "
          f"{'to free' if result.dry_run else 'freed'}{kept}")


@app.command()
def backup(
    dest: Path = typer.Argument(..., help="Backup folder (created; a previous backup there is updated)."),
    hard_links: bool = typer.Option(False, "--hard-links", help="Hard-link blobs where DEST is on the store's "
                                    "filesystem instead of copying: no space, but DEST and the store share every "
                                    "byte, so damage to a blob in one is damage in both. "
                                    "Not a backup against bit rot."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Back up the database and blobs while the registry stays in use; the second time, only new blobs.
    Blobs are independent copies (the kernel copies them, as a push does).

    Example:  registry backup /mnt/backup/cellar
    """
    with open_registry() as reg:
        result = reg.backup(dest, actor=actor, hard_links=hard_links)
    if as_json:
        print_json(result)
    else:
        how = f"{result.blobs_linked} hard-linked, " if result.blobs_linked else ""
        print(f"backed up to {plain(result.dest)}: {result.db_kind} database ({plain(result.db_file)}), "
              f"{result.blobs_total} blobs, {result.blobs_copied} new ({how}{size(result.bytes_copied)} copied) "
              f"in {result.seconds:.1f} s")
        for p in result.problems:
            warn(f"{p.kind} blob {p.digest or p.path} not in this backup: {p.detail}")
    raise typer.Exit(1 if result.problems else 0)


@app.command()
def restore(
    src: Path = typer.Argument(..., help="A folder written by `registry backup`."),
    path: Path = typer.Argument(None, help="The new home (default: $REGISTRY_HOME or ./.cellar); must be empty."),
    new_identity: bool = typer.Option(False, "--new-identity",
                                      help="Give the copy its own identity, to live beside the original "
                                           "(it then acts on its own containers only)."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Restore a backup into a new or empty registry home, then verify it; exit 1 unless intact.
    The copy keeps the original's identity (a replacement: it acts on the same containers)
    unless --new-identity.

    Example:  REGISTRY_HOME=/srv/cellar registry restore /mnt/backup/cellar
    """
    from registry import Registry

    result = Registry.restore(src, path, actor=actor, new_identity=new_identity)
    if as_json:
        print_json(result)
    else:
        print(f"restored {result.blobs_restored} blobs ({size(result.bytes_restored)}) and the {result.db_kind} "
              f"database into {plain(result.home)} in {result.seconds:.1f} s")
        for p in result.problems:
            warn(f"{p.kind} blob {p.digest}: {p.detail}")
        if result.identity_shared:
            warn(f"this copy has the original's identity ({result.registry_id[:12]}): both homes act on the same "
                 "containers, so a promote or rollback from one switches what the other runs. Fine to replace a "
                 "lost home; for a copy that lives beside the original, restore again with --new-identity")
        if result.verify is not None:
            _print_report(result.verify)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def export(
    ref: str = typer.Argument(..., help="v1.3 or model@v1.3."),
    out: Path = typer.Option(..., "-o", "--output", help="The tar file to write."),
    with_image: bool = typer.Option(False, "--with-image", help="Include the pinned container image (docker save)."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Write one version (blobs, record, changelog, provenance, optionally its image) to one tar file.

    Example:  registry export support-bot@v1.3 -o support-bot-v1.3.tar --with-image
    """
    with open_registry() as reg, _Bar(disable=as_json, label="export") as bar:
        result = reg.export(ref, out, with_image=with_image, actor=actor, progress=bar.advance)
    if as_json:
        return print_json(result)
    image = " and its image" if result.with_image else ""
    print(f"exported {result.model}@{result.version}{image} ({result.blobs} blobs, {size(result.bytes)}) "
          f"to {plain(result.file)} in {result.seconds:.1f} s")


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A file written by `registry export`."),
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Check every member and digest of an export file, then record its version (and load its image).

    Example:  registry import support-bot-v1.3.tar
    """
    with open_registry() as reg, _Bar(disable=as_json, label="import") as bar:
        result = reg.import_archive(file, actor=actor, progress=bar.advance)
    if as_json:
        return print_json(result)
    ref = f"{result.model}@{result.version}"
    image = ", image loaded" if result.image_loaded else ""
    if result.created:
        print(f"imported {ref} ({short(result.manifest_digest)}): {result.blobs_stored} blobs, "
              f"{size(result.bytes_stored)} new{image}")
    else:
        print(f"{ref} is already here with identical content ({short(result.manifest_digest)}); "
              f"nothing recorded{image}")


@app.command()
def deprecate(
    ref: str = typer.Argument(..., help="v1.3 or model@v1.3."),
    reason: str = REASON,
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Hide a version from `registry list` (shown by --all) and refuse to promote it; diff and audit still work.

    Example:  registry deprecate support-bot@v1.2 --reason "answers refunds wrongly"
    """
    with open_registry() as reg:
        result = reg.deprecate(ref, reason=reason, actor=actor)
    if as_json:
        return print_json(result)
    ref = f"{result.model}@{result.version}"
    print(f"deprecated {ref}" if result.changed else f"{ref} was deprecated already")


@app.command()
def delete(
    ref: str = typer.Argument(..., help="v1.3 or model@v1.3."),
    force: bool = typer.Option(False, "--force", help="Required: deleting cannot be undone."),
    reason: str = REASON,
    actor: str = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Delete a version that was never deployed; `registry gc` then reclaims its blobs.

    Example:  registry delete support-bot@v1.4-rc1 --force --reason "pushed by mistake"
    """
    with open_registry() as reg:
        result = reg.delete(ref, force=force, reason=reason, actor=actor)
    if as_json:
        return print_json(result)
    print(f"deleted {result.model}@{result.version}; {len(result.blobs_released)} blob(s) for `registry gc` to reclaim")


class _Bar:
    """A rich progress bar on stderr when it is a terminal; ``update(n, total)`` or ``advance(n)``."""

    def __init__(self, *, disable: bool, label: str):
        self.disable, self.label = disable or not sys.stderr.isatty(), label
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self):
        return self

    def update(self, done: int, total: int | None = None) -> None:
        if self.disable:
            return
        if self.bar is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self.bar = Progress(TextColumn(esc(self.label)), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                console=console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(esc(self.label), total=total)
        assert self.task is not None  # added with the bar
        self.bar.advance(self.task, done)

    def advance(self, done: int) -> None:
        self.update(done)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
