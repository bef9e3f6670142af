"""The container engine port: what deploys need from Docker, and nothing more.

``registry.engines.docker.DockerEngine`` implements it against a real engine and
``registry.engines.fake.FakeEngine`` in memory (for fast tests of the ledger, locks and
recovery), the way httpx ships ``MockTransport`` beside its real transport. HTTP checks
against a started container are a port of their own: ``registry.engines.http.Checks``.

Errors, for every method: ``EngineError`` when the engine cannot be reached or refuses a call
in a way no rollback answers; ``StepFailed`` where the docstring says so (the new release
cannot run: an automatic rollback answers it). Nothing else escapes an adapter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LABEL = "cellar"
STOP_TIMEOUT_S = 5


@dataclass
class HostSettings:
    """A container's share of its host, in Docker's terms (from a version's runtime settings and
    its environment's overrides: ``registry.deploy.resources``). None: Docker's default."""

    gpus: str | int | list[str] | None = None  # "all", a count, or device IDs / UUIDs
    shm_size: str | None = None  # "16g"
    memory: str | None = None
    ipc: str | None = None  # "host", "private", "shareable"
    nano_cpus: int | None = None
    ulimits: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (soft, hard)
    log_driver: str = "json-file"
    log_options: dict[str, str] = field(default_factory=dict)
    # Applied once the container answers (``Engine.set_restart``): created with none, so a server that
    # exits while starting fails its promote at once instead of restarting in a loop.
    restart: str = "unless-stopped"


@dataclass
class ContainerSpec:
    """Everything needed to create one release's container. ``env`` may hold secret values:
    it is handed to the engine and never printed, logged or stored."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str] = field(repr=False)
    snapshot: str
    container_port: int
    host_port: int
    bind_addr: str = "127.0.0.1"
    command: list[str] | str | None = None
    host: HostSettings = field(default_factory=HostSettings)
    # A host that does not share the registry's disk: /model is a read-only tmpfs holding each
    # of these (path in the container -> its blob in the host's cache), bound read-only; then
    # ``snapshot`` is empty (registry.hosts).
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    running: bool
    status: str
    exit_code: int | None = None
    created: str = ""
    image: str = ""  # the image ID it runs (``sha256:...``): what a drift check compares with the ledger
    # The container's environment (secret values included): used only to scrub them from text.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    restart_count: int = 0  # times Docker restarted it by its restart policy (inspect only)
    restart_policy: str = ""  # "unless-stopped", "on-failure:3", "no" ... (inspect only)
    finished_at: str = ""  # when its process last ended (inspect only)

    @property
    def revision(self) -> int | None:
        value = self.labels.get(f"{LABEL}.revision")
        return int(value) if value and value.isdigit() else None


class Engine(Protocol):
    """One container engine (a Docker host)."""

    base_url: str  # where it is, for messages (never with credentials)

    def image_digest(self, ref: str) -> str:
        """The image ID (``sha256:...``) that a tag or digest names now; NotFound when absent."""

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; its id. StepFailed when the image is missing."""

    def start(self, container_id: str) -> None:
        """Start a created or stopped container. StepFailed when it cannot start (port taken,
        image gone, no such container)."""

    def stop(self, container_id: str, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop within ``timeout`` seconds, and remove its restart policy first: a container Cellar
        stopped (kept for rollback, failed) stays stopped when the engine or the machine restarts.
        Idempotent: a stopped or missing container is fine."""

    def remove(self, container_id: str) -> None:
        """Remove, running or not. Idempotent: a missing container is fine."""

    def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's state and labels; None when it does not exist."""

    def set_restart(self, container_id: str, policy: str) -> None:
        """Give the container the restart policy ``policy`` ("no" removes it): set on the deployed
        container once it answers, removed from one kept stopped for rollback. A missing
        container is fine."""

    def last_exit_code(self, container_id: str) -> int | None:
        """The exit code of the container's last death that the engine still remembers (it resets
        the state's own on a restart); None when unknown."""

    def find_labelled(self, **labels: str) -> list[ContainerInfo]:
        """Containers, running or not, carrying every ``cellar.<key>=<value>`` label given
        (``revision="3"``, ``manifest_digest=...``: underscores become dashes)."""

    def logs(self, container_id: str, *, tail: int = 10) -> str:
        """The last ``tail`` log lines (unscrubbed: the caller scrubs); empty when unavailable."""

    def save_image(self, digest: str, dest_file: Path) -> None:
        """Write the image ``digest`` names as a ``docker save`` tar to ``dest_file`` (untagged:
        loading it elsewhere never moves a tag there). NotFound when the image is absent."""

    def load_image(self, path: Path) -> str:
        """Load a ``docker save`` tar; the image ID (``sha256:...``) it holds."""

    def push_image(self, image_id: str, repository: str, tag: str, auth: dict | None) -> str:
        """Push the image ``image_id`` to ``repository:tag`` of an OCI registry (``auth``:
        username and password, or None); the manifest digest the registry holds it under.
        The engine keeps no new tag of it, unless that tag is the image's only one."""

    def pull_image(self, repository: str, tag: str, auth: dict | None) -> str:
        """Pull ``repository:tag`` from an OCI registry (tagged so, as ``docker pull`` leaves it); its image ID."""

    def close(self) -> None:
        """Release the connection. Idempotent."""


def labels_for(*, model: str, env: str, version: str, revision: int, manifest_digest: str,
               registry: str) -> dict[str, str]:
    """The labels every container Cellar creates carries, so state can be rebuilt from Docker.
    ``cellar.registry`` keeps two registries with a same-named environment on one host apart."""
    return {f"{LABEL}.model": model, f"{LABEL}.env": env, f"{LABEL}.version": version,
            f"{LABEL}.revision": str(revision), f"{LABEL}.manifest-digest": manifest_digest,
            f"{LABEL}.registry": registry}


def container_name(*, env: str, model: str, revision: int, registry: str) -> str:
    """A name unique per (registry, env, model, revision): ``cellar-prod-eu-bot`` alone could be
    env prod-eu + model bot or env prod + model eu-bot, so a short hash of the parts follows."""
    tag = hashlib.sha256(f"{registry}\0{env}\0{model}".encode()).hexdigest()[:6]
    return f"cellar-{env}-{model}-r{revision}-{tag}"
