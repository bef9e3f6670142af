"""The Docker Engine adapter (docker-py). Imported only by commands that talk to Docker."""

from __future__ import annotations

import os

import docker
from docker.errors import DockerException, ImageNotFound

from registry.errors import EngineError, NotFound


def describe_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


class DockerEngine:
    """A connection to one Docker engine ($DOCKER_HOST or the local socket)."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 30):
        self.base_url = base_url or describe_host()
        try:
            if base_url:
                self.client = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                self.client = docker.from_env(timeout=timeout)
            self.client.ping()
        except DockerException as exc:
            raise EngineError(
                f"cannot reach the Docker engine at {self.base_url} ({_short(exc)}); "
                "start dockerd or set DOCKER_HOST"
            ) from None

    def close(self) -> None:
        self.client.close()

    def image_digest(self, ref: str) -> str:
        """The image ID (``sha256:...``) that ``ref`` names on this engine now."""
        try:
            return self.client.images.get(ref).id
        except ImageNotFound:
            raise NotFound(f"image {ref!r} is not on the Docker engine at {self.base_url}; "
                           "build or load it first") from None
        except DockerException as exc:
            raise EngineError(f"Docker engine error for image {ref!r}: {_short(exc)}") from None


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300]
