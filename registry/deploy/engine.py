"""The container engine port: what promote and rollback need from Docker, and nothing more.

``registry.deploy.docker.DockerEngine`` implements it against a real engine and
``registry.deploy.fake.FakeEngine`` in memory (for ledger and lock tests), the way httpx
ships ``MockTransport`` beside its real transport.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from registry.models import Request, is_secret_key

LABEL = "cellar"
STOP_TIMEOUT_S = 5


class StepFailed(Exception):
    """A deploy step failed in a way an automatic rollback answers (health, exit, port, image)."""


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


@dataclass
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    running: bool
    status: str
    exit_code: int | None = None
    created: str = ""
    # The container's environment (secret values included): used only to scrub them from text.
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def revision(self) -> int | None:
        value = self.labels.get(f"{LABEL}.revision")
        return int(value) if value and value.isdigit() else None


class Engine(Protocol):
    base_url: str

    def image_digest(self, ref: str) -> str: ...
    def create(self, spec: ContainerSpec) -> str: ...
    def start(self, container_id: str) -> None: ...
    def stop(self, container_id: str, *, timeout: float = STOP_TIMEOUT_S) -> None: ...
    def remove(self, container_id: str) -> None: ...
    def inspect(self, container_id: str) -> ContainerInfo | None: ...
    def find(self, **labels: str) -> list[ContainerInfo]: ...
    def logs(self, container_id: str, *, tail: int = 10) -> str: ...
    def wait_healthy(self, container_id: str, *, url: str, timeout: float) -> None: ...
    def warm_up(self, *, base_url: str, requests: list[Request]) -> None: ...
    def answers(self, *, url: str) -> bool: ...
    def close(self) -> None: ...


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


def secret_env_values(env: dict[str, str]) -> set[str]:
    """Values of a container's variables named like secrets (``*_TOKEN``, ``*_KEY`` ...)."""
    return {v for k, v in env.items() if is_secret_key(k) and len(v) >= 4}


def redact(text: str, secret_values: set[str]) -> str:
    """Text (container logs included) with every secret value replaced by ***."""
    for value in sorted(secret_values, key=len, reverse=True):  # longest first: no partial leftovers
        if value and value in text:
            text = text.replace(value, "***")
    return text
