"""An in-memory container engine for tests of the ledger, locks and recovery.

It behaves like the parts of Docker that promote and rollback rely on: names are unique,
a host port can be published by one running container only, a stopped container keeps its
labels. Tests make versions fail with ``unhealthy`` (version -> reason) and ``images``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from registry.deploy.engine import ContainerInfo, ContainerSpec, StepFailed
from registry.errors import NotFound
from registry.models import Request


@dataclass
class _Container:
    info: ContainerInfo
    spec: ContainerSpec


@dataclass
class FakeEngine:
    base_url: str = "fake://"
    images: dict[str, str] = field(default_factory=dict)
    unhealthy: dict[str, str] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)  # version -> seconds to come up
    containers: dict[str, _Container] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def image_digest(self, ref: str) -> str:
        if ref in self.images.values():
            return ref
        if ref not in self.images:
            raise NotFound(f"image {ref!r} is not on the Docker engine at {self.base_url}")
        return self.images[ref]

    def create(self, spec: ContainerSpec) -> str:
        if any(c.info.name == spec.name for c in self.containers.values()):
            raise StepFailed(f"a container named {spec.name} already exists")
        cid = f"fake{next(self._ids):060d}"
        self.containers[cid] = _Container(ContainerInfo(id=cid, name=spec.name, labels=dict(spec.labels),
                                                        running=False, status="created", env=dict(spec.env)),
                                          spec)
        self.calls.append(f"create {spec.name}")
        return cid

    def start(self, container_id: str) -> None:
        c = self._get(container_id)
        for other in self.containers.values():
            if other.info.running and other is not c and other.spec.host_port == c.spec.host_port:
                raise StepFailed(f"the host port {c.spec.host_port} is already in use by another process")
        c.info.running, c.info.status = True, "running"
        self.calls.append(f"start {c.info.name}")

    def stop(self, container_id: str, *, timeout: float = 5) -> None:
        if container_id in self.containers:
            c = self.containers[container_id]
            c.info.running, c.info.status, c.info.exit_code = False, "exited", 0
            self.calls.append(f"stop {c.info.name}")

    def remove(self, container_id: str) -> None:
        c = self.containers.pop(container_id, None)
        if c:
            self.calls.append(f"remove {c.info.name}")

    def inspect(self, container_id: str) -> ContainerInfo | None:
        c = self.containers.get(container_id)
        return c.info if c else None

    def find(self, **labels: str) -> list[ContainerInfo]:
        want = {f"cellar.{k.replace('_', '-')}": v for k, v in labels.items()}
        return [c.info for c in self.containers.values()
                if all(c.info.labels.get(k) == v for k, v in want.items())]

    def logs(self, container_id: str, *, tail: int = 10) -> str:
        return ""

    def wait_healthy(self, container_id: str, *, url: str, timeout: float) -> None:
        c = self._get(container_id)
        version = c.info.labels.get("cellar.version", "")
        time.sleep(self.slow.get(version, 0))
        reason = self.unhealthy.get(version)
        if reason or not c.info.running:
            raise StepFailed(reason or "container exited with code 1")

    def warm_up(self, *, base_url: str, requests: list[Request]) -> None:
        self.calls.append(f"warm-up {len(requests)}")

    def answers(self, *, url: str) -> bool:
        return any(c.info.running and f":{c.spec.host_port}/" in url
                   and not self.unhealthy.get(c.info.labels.get("cellar.version", ""))
                   for c in self.containers.values())

    def running(self) -> list[ContainerInfo]:
        return [c.info for c in self.containers.values() if c.info.running]

    def close(self) -> None:
        pass

    def _get(self, container_id: str) -> _Container:
        if container_id not in self.containers:
            raise StepFailed(f"no container {container_id[:12]}")
        return self.containers[container_id]
