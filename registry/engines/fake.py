"""In-memory doubles of the engine and HTTP-check ports, for fast tests of the ledger, locks,
recovery and the deploy orchestration.

``FakeEngine`` behaves like the parts of Docker that deploys rely on: names are unique, a host
port can be published by one running container only, a stopped container keeps its labels.
``FakeEngine.checks`` answers health and warm-up for the containers of that engine. Tests make
versions fail with ``unhealthy`` (version -> reason), slow with ``slow`` (version -> seconds),
and make any engine call raise with ``fail_on`` (call name -> exception, e.g. KeyboardInterrupt).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from registry.engines.engine import ContainerInfo, ContainerSpec
from registry.engines.http import ExitCheck, OnAnswer, Untrusted, plain_excerpt
from registry.errors import EngineError, NotFound, StepFailed
from registry.models import Request


@dataclass
class _Container:
    info: ContainerInfo
    spec: ContainerSpec


@dataclass
class FakeEngine:
    base_url: str = "fake://"
    images: dict[str, str] = field(default_factory=dict)
    pushed: dict[str, str] = field(default_factory=dict)  # what push_image put in "the registry"
    unhealthy: dict[str, str] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)  # version -> seconds to come up
    fail_on: dict[str, BaseException] = field(default_factory=dict)  # call -> raised once
    containers: dict[str, _Container] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.checks = FakeChecks(self)

    def image_digest(self, ref: str) -> str:
        if ref in self.images.values():
            return ref
        if ref not in self.images:
            raise NotFound(f"image {ref!r} is not on the Docker engine at {self.base_url}")
        return self.images[ref]

    def create(self, spec: ContainerSpec) -> str:
        self._maybe_fail("create")
        if any(c.info.name == spec.name for c in self.containers.values()):
            raise StepFailed(f"a container named {spec.name} already exists")
        cid = f"fake{next(self._ids):060d}"
        self.containers[cid] = _Container(ContainerInfo(id=cid, name=spec.name, labels=dict(spec.labels),
                                                        running=False, status="created", env=dict(spec.env),
                                                        image=spec.image),
                                          spec)
        self.calls.append(f"create {spec.name}")
        return cid

    def start(self, container_id: str) -> None:
        self._maybe_fail("start")
        c = self._get(container_id)
        for other in self.containers.values():
            if other.info.running and other is not c and other.spec.host_port == c.spec.host_port:
                raise StepFailed(f"the host port {c.spec.host_port} is already in use by another process")
        c.info.running, c.info.status = True, "running"
        self.calls.append(f"start {c.info.name}")

    def stop(self, container_id: str, *, timeout: float = 5) -> None:
        self._maybe_fail("stop")
        if container_id in self.containers:
            c = self.containers[container_id]
            c.info.running, c.info.status, c.info.exit_code = False, "exited", 0
            c.info.restart_policy = "no"
            self.calls.append(f"stop {c.info.name}")

    def remove(self, container_id: str) -> None:
        self._maybe_fail("remove")
        c = self.containers.pop(container_id, None)
        if c:
            self.calls.append(f"remove {c.info.name}")

    def inspect(self, container_id: str) -> ContainerInfo | None:
        c = self.containers.get(container_id)
        return c.info if c else None

    def set_restart(self, container_id: str, policy: str) -> None:
        self._maybe_fail("set_restart")
        if container_id in self.containers:
            self.containers[container_id].info.restart_policy = policy

    def last_exit_code(self, container_id: str) -> int | None:
        c = self.containers.get(container_id)
        return c.info.exit_code if c else None

    def find_labelled(self, **labels: str) -> list[ContainerInfo]:
        want = {f"cellar.{k.replace('_', '-')}": v for k, v in labels.items()}
        return [c.info for c in self.containers.values()
                if all(c.info.labels.get(k) == v for k, v in want.items())]

    def logs(self, container_id: str, *, tail: int = 10) -> str:
        return ""

    def save_image(self, digest: str, dest_file: Path) -> None:
        self._maybe_fail("save_image")
        if digest not in self.images.values():
            raise NotFound(f"image {digest!r} is not on the Docker engine at {self.base_url}")
        dest_file.write_bytes(b"fake-image " + digest.encode())
        self.calls.append(f"save {digest}")

    def load_image(self, path: Path) -> str:
        self._maybe_fail("load_image")
        digest = path.read_bytes().removeprefix(b"fake-image ").decode()
        self.images[digest] = digest
        self.calls.append(f"load {digest}")
        return digest

    def push_image(self, image_id: str, repository: str, tag: str, auth: dict | None) -> str:
        self._maybe_fail("push_image")
        if image_id not in self.images.values():
            raise NotFound(f"image {image_id!r} is not on the Docker engine at {self.base_url}")
        self.pushed[f"{repository}:{tag}"] = image_id
        self.calls.append(f"push {image_id} {repository}:{tag}")
        return "sha256:" + hashlib.sha256(image_id.encode()).hexdigest()

    def pull_image(self, repository: str, tag: str, auth: dict | None) -> str:
        self._maybe_fail("pull_image")
        image_id = self.pushed.get(f"{repository}:{tag}")
        if image_id is None:
            raise EngineError(f"the Docker engine could not pull {repository}:{tag}: not found")
        self.images[image_id] = image_id
        self.calls.append(f"pull {repository}:{tag}")
        return image_id

    def running(self) -> list[ContainerInfo]:
        return [c.info for c in self.containers.values() if c.info.running]

    def close(self) -> None:
        pass

    def serving(self, url: str) -> _Container | None:
        """The running container published on ``url``'s port, if any."""
        port = urlsplit(url).port
        return next((c for c in self.containers.values() if c.info.running and c.spec.host_port == port), None)

    def _maybe_fail(self, call: str) -> None:
        if call in self.fail_on:
            raise self.fail_on.pop(call)

    def _get(self, container_id: str) -> _Container:
        if container_id not in self.containers:
            raise StepFailed(f"no container {container_id[:12]}")
        return self.containers[container_id]


@dataclass
class FakeChecks:
    """Health and warm-up answered from a ``FakeEngine``'s state."""

    engine: FakeEngine

    def wait_healthy(self, url: str, *, timeout: float, exited: ExitCheck,
                     untrusted: Untrusted = plain_excerpt, on_answer: OnAnswer | None = None) -> None:
        c = self.engine.serving(url)
        if c is None:
            raise StepFailed(exited() or "container exited with code 1")
        version = c.info.labels.get("cellar.version", "")
        time.sleep(self.engine.slow.get(version, 0))
        if reason := self.engine.unhealthy.get(version):  # as if the server answered this body
            raise StepFailed(untrusted(reason))

    def warm_up(self, base_url: str, requests: list[Request], *, untrusted: Untrusted = plain_excerpt,
                timeout: float = 30.0) -> None:
        self.engine.calls.append(f"warm-up {len(requests)}")

    def answers(self, url: str) -> bool:
        c = self.engine.serving(url)
        return c is not None and not self.engine.unhealthy.get(c.info.labels.get("cellar.version", ""))


@dataclass
class FakeFleet:
    """Several ``FakeEngine``s by Docker host URL, for a fleet's tests: ``engine_factory`` gives
    each host's, and ``checks`` sends an HTTP check to the engine of the host the URL names
    (``http://gpu-2:PORT`` to ``tcp://gpu-2:2376``'s; a loopback address to a unix socket's)."""

    engines: dict[str | None, FakeEngine]

    def __post_init__(self) -> None:
        self.checks = _FleetChecks(self)

    def engine(self, host: str | None) -> FakeEngine:
        if host not in self.engines:
            raise EngineError(f"cannot reach the Docker engine at {host}")
        return self.engines[host]

    def serving(self, url: str) -> FakeEngine:
        name = urlsplit(url).hostname
        for host, engine in self.engines.items():
            if (urlsplit(host or "").hostname or "127.0.0.1") == name:
                return engine
        raise StepFailed(f"no answer: nothing listens on {url}")


@dataclass
class _FleetChecks:
    fleet: FakeFleet

    def wait_healthy(self, url: str, **kwargs) -> None:
        self.fleet.serving(url).checks.wait_healthy(url, **kwargs)

    def warm_up(self, base_url: str, requests: list[Request], **kwargs) -> None:
        self.fleet.serving(base_url).checks.warm_up(base_url, requests, **kwargs)

    def answers(self, url: str) -> bool:
        try:
            return self.fleet.serving(url).checks.answers(url)
        except StepFailed:
            return False
