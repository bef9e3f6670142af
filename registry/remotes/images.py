"""A version's container image through the same registry, by the Docker engine: pushed beside
the artifact as ``NAMESPACE/MODEL/image:VERSION``, pulled and accepted only when its image ID
is the digest the version pins (so a host with registry access runs exactly that image)."""

from __future__ import annotations

from registry.configuration import Configuration
from registry.errors import InvalidInput, NotFound, RemoteError
from registry.remotes.auth import credentials


def repository(host: str, artifact_repository: str) -> str:
    return f"{host}/{artifact_repository}/image"


def push(cfg: Configuration, *, host: str, artifact_repository: str, tag: str, record: dict, ref: str) -> str:
    """Push the pinned image; ``REPOSITORY@DIGEST`` as the registry holds it."""
    pinned = (record.get("image") or {}).get("digest")
    if not pinned:
        raise InvalidInput(f"{ref} pins no image digest: push it without --with-image")
    where = repository(host, artifact_repository)
    digest = cfg.engine().push_image(pinned, where, tag, _auth(cfg, host))
    return f"{where}@{digest}" if digest else f"{where}:{tag}"


def pull(cfg: Configuration, *, host: str, artifact_repository: str, tag: str, record: dict) -> bool:
    """Pull the pinned image unless the engine has it; True if pulled. RemoteError (nothing
    recorded) when the registry's image is not the pinned one."""
    pinned = (record.get("image") or {}).get("digest")
    if not pinned:
        return False
    engine = cfg.engine()
    try:
        engine.image_digest(pinned)
        return False
    except NotFound:
        pass
    got = engine.pull_image(repository(host, artifact_repository), tag, _auth(cfg, host))
    if got != pinned:
        raise RemoteError(f"the registry's image {repository(host, artifact_repository)}:{tag} is {got[:19]}, not "
                          f"{pinned[:19]} that the version pins; nothing was recorded")
    return True


def _auth(cfg: Configuration, host: str) -> dict | None:
    found = credentials(host, cfg.environ)
    return {"username": found[0], "password": found[1]} if found else None
