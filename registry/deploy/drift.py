"""Drift: what runs, compared with what the ledger records (pure; the callers ask Docker).

Containers carry their release in labels, so what runs can always be named: a kept container
started by hand (``docker start``) while the deployed one was stopped, or a deployed container
whose image is not the digest its release pinned. ``registry status`` names each difference,
``registry recover`` puts the recorded release back, or with ``--adopt`` records what runs.
"""

from __future__ import annotations

from registry.engines.engine import LABEL, ContainerInfo
from registry.ledger import Release


def differences(now: Release | None, recorded: ContainerInfo | None, found: list[ContainerInfo], *,
                registry: str) -> list[str]:
    """One line per way what runs differs from the deployed release ``now`` (none: they agree).
    ``recorded`` is ``now``'s container as Docker has it; ``found``, the environment's containers
    labelled for ``registry`` (this registry's identity)."""
    ledger_has = f" (the ledger has {now.ref}, revision {now.revision})" if now else ""
    out = [f"{describe(c)} runs, not recorded{ledger_has}" for c in strays(now, found)]
    owner = recorded.labels.get(f"{LABEL}.registry", registry) if recorded is not None else registry
    if now is not None and owner != registry:  # e.g. this home is a copy restored with --new-identity
        out.append(f"the container of {now.ref} belongs to another registry ({owner[:12]}): this home does not "
                   "run it")
    ran = recorded.image if recorded is not None and recorded.running else ""
    if now is not None and ran and now.image_digest and ran != now.image_digest:
        out.append(f"the container of {now.ref} runs image {ran[:19]}, not {now.image_digest[:19]} recorded")
    return out


def strays(now: Release | None, found: list[ContainerInfo]) -> list[ContainerInfo]:
    """Running containers of the environment other than the deployed release's own."""
    own = now.container_id if now else None
    return [c for c in found if c.running and c.id != own]


def describe(c: ContainerInfo) -> str:
    version = c.labels.get(f"{LABEL}.version", "?")
    return f"{c.labels.get(f'{LABEL}.model', '?')}@{version} (revision {c.revision}, container {c.id[:12]})"
