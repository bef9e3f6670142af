"""gc and verify of the blob caches on Docker hosts that do not share the registry's disk
(registry.hosts.cache): which hosts have one, which blobs kept releases need there, and the
image that runs the helpers (a kept release's own: the one image certain to be on that host)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from registry.configuration import Configuration
from registry.errors import CellarError
from registry.ledger import Release
from registry.models import Environment
from registry.models.upkeep import BlobItem, ProblemKind, StorageProblem


def _caches(cfg: Configuration, envs: list[Environment], needed: list[Release],
            warnings: list[str]) -> Iterator:
    """(HostCache, digests of blobs kept releases on that host need) for each host with a cache."""
    from registry.hosts.cache import HostCache  # docker-py: only when there are hosts to ask

    for host in sorted({h for e in envs for h in e.fleet}, key=str):
        names = {e.name for e in envs if host in e.fleet}
        images = [r.image_digest for r in needed if r.env in names and r.image_digest]
        try:
            engine = cfg.engine(host)
            if not hasattr(engine, "api") or not images:
                continue
            cache = HostCache(engine, registry_id=cfg.registry_id, image=images[0])
            if cache.exists():
                yield cache
        except CellarError as exc:
            warnings.append(f"blob cache on {host or 'the local engine'} not checked: {exc}")


def collect(cfg: Configuration, envs: list[Environment], needed: list[Release], keep: set[str], *,
            dry_run: bool, grace_s: float, warnings: list[str]) -> list[BlobItem]:
    """Remove from each host's cache the blobs no kept release needs (any environment's: a
    blob is shared by content), older than the grace period (a promote may be sending it)."""
    from registry.hosts.docker_api import sweep_helpers

    removed = []
    for cache in _caches(cfg, envs, needed, warnings):
        try:
            if not dry_run:  # helpers a killed transfer left there, their process provably gone
                sweep_helpers(cache.api, cfg.registry_id)
            held = cache.listing()
            drop = [d for d, (_size, mtime) in held.items() if d not in keep and mtime < time.time() - grace_s]
            if not dry_run:
                cache.remove(drop)
        except CellarError as exc:
            warnings.append(f"blob cache on {cache.host} not collected: {exc}")
            continue
        removed += [BlobItem(digest=d, size=held[d][0], path=f"{cache.host} {cache.volume}") for d in drop]
    return removed


def check(cfg: Configuration, envs: list[Environment], needed: list[Release], users: dict[str, list[str]],
          warnings: list[str]) -> list[StorageProblem]:
    """Each blob a kept release needs that a host holds, hashed on that host; a blob it lacks is
    not damage (the next deploy there sends it)."""
    problems = []
    for cache in _caches(cfg, envs, needed, warnings):
        held = cache.listing()
        want = sorted(d for d in held if d in users)
        for d in cache.damaged(want, {d: held[d][0] for d in want}):
            problems.append(StorageProblem(kind=ProblemKind.HOST_CACHE, digest=d, path=f"{cache.host} {cache.volume}",
                                           versions=sorted(users[d]),
                                           detail="the host's copy does not match its digest: the next deploy "
                                                  "there sends it again"))
    return problems
