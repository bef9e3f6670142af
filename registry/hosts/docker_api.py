"""What the hosts package shares: the docker-py API type, the labels of its short-lived helper
containers, and the sweep of helpers a killed process left behind."""

from __future__ import annotations

import os
import socket

from docker import APIClient as Api
from docker.errors import DockerException

from registry.engines.docker import _short as short
from registry.engines.engine import LABEL
from registry.store.files.blobs import process_alive

__all__ = ["Api", "helper_labels", "short", "sweep_helpers"]

ROLE = f"{LABEL}.role"
OWNER = f"{LABEL}.owner"


def helper_labels(registry_id: str, role: str) -> dict[str, str]:
    """A helper container's labels: whose registry, what for, and which process (host:pid) made it."""
    return {f"{LABEL}.registry": registry_id, ROLE: role, OWNER: f"{socket.gethostname()}:{os.getpid()}"}


def sweep_helpers(api: Api, registry_id: str) -> int:
    """Remove this registry's helper containers whose process provably died (same host, pid
    gone): a transfer killed with -9 leaves its helper; the next one on that host removes it."""
    removed = 0
    try:
        found = api.containers(all=True, filters={"label": [f"{LABEL}.registry={registry_id}", ROLE]})
        for c in found:
            host, _, pid = (c.get("Labels") or {}).get(OWNER, "").rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
                api.remove_container(c["Id"], force=True)
                removed += 1
    except DockerException:
        pass  # tidying only: the transfer itself reports an engine that fails
    return removed
