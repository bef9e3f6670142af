"""A remote as a home's blob store (``registry remote add NAME URL --blob-store``).

Every push also publishes the version there; this home's own blob folder becomes a cache of
what this machine has read. Homes that share one metadata database (PostgreSQL) then share the
registry: a version pushed on the CI machine is promotable from an operator's laptop, whose
promote fetches the blobs its cache lacks (each verified against its digest, as a pull does)
before it verifies and materialises the version as usual.
"""

from __future__ import annotations

import contextlib

from registry.configuration import Configuration
from registry.errors import CellarError, NotFound
from registry.home import Home, read_config
from registry.models import PushResult
from registry.models.upkeep import ProblemKind, StorageProblem
from registry.remotes import settings
from registry.remotes.fetching import Fetched
from registry.remotes.managing import client_for
from registry.remotes.publish import PushRemote
from registry.remotes.settings import BLOB_STORE, Remote
from registry.store.sql import versions


def blob_store(home: Home) -> Remote | None:
    """The remote this home keeps its blobs in, or None (the local folder only)."""
    name = read_config(home.path).get(BLOB_STORE)
    return settings.find(home, name) if name else None


def publish(cfg: Configuration, result: PushResult, *, actor: str) -> PushResult:
    """After a push: the version on the blob store too; a warning (the version stays recorded
    here) when the registry cannot take it now."""
    remote = blob_store(cfg.home)
    if remote is None:
        return result
    ref = f"{result.model}@{result.version}"
    try:
        PushRemote(cfg, actor=actor).run(remote, result.model, result.version)
    except CellarError as exc:
        result.warnings.append(f"{ref} is recorded, but not on the blob store {remote.url} ({exc}): other homes "
                               f"cannot fetch it until `registry push --remote {remote.name} {ref}` succeeds")
    return result


def fetch_missing(cfg: Configuration, model: str, version: str) -> int:
    """Fetch into this home's cache the blobs of ``model@version`` it lacks; how many."""
    remote = blob_store(cfg.home)
    if remote is None:
        return 0
    with cfg.store.read() as conn:
        record = versions.record_of(conn, model, version).record
    wanted = {f["digest"]: f["size"] for f in [*record["weights"], *record["prompts"]]}
    missing = {d: s for d, s in wanted.items() if not cfg.blobs.has(d, size=s)}
    if not missing:
        return 0
    fetched = Fetched(cfg)
    try:
        with contextlib.closing(client_for(cfg, remote)) as client:
            for digest, size in sorted(missing.items()):
                try:
                    fetched.add(client, remote.repository(model), digest, size, what=f"blob {digest[:19]}",
                                progress=None)
                except NotFound:
                    raise NotFound(f"blob {digest[:19]} of {model}@{version} is neither in this home nor on the "
                                   f"blob store {remote.url}: push the version there again from a home that has "
                                   "it (`registry push --remote`)") from None
        fetched.install()
    finally:
        fetched.cleanup()
    return len(missing)


def only_not_cached(cfg: Configuration, problems: list[StorageProblem]) -> list[StorageProblem]:
    """``registry verify`` in a home with a blob store: a blob missing here that the store holds
    (in the repository of a model that uses it) is ``remote-only``, a notice, not damage."""
    remote = blob_store(cfg.home)
    missing = [p for p in problems if p.kind == ProblemKind.MISSING and p.digest and p.versions]
    if remote is None or not missing:
        return problems
    with contextlib.closing(client_for(cfg, remote)) as client:
        held = {id(p) for p in missing
                if client.has_blob(remote.repository(p.versions[0].split("@", 1)[0]), p.digest or "")}
    return [p.model_copy(update={"kind": ProblemKind.REMOTE_ONLY, "detail": f"on the blob store {remote.url}"})
            if id(p) in held else p for p in problems]
