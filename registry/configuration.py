"""The configuration every operation runs with, built once per ``Registry`` (Helm's
``action.Configuration``): the metadata store, the blob store, snapshots, the container engines
and HTTP checks, and the process environment. Tests build one with the in-library fakes
through ``Registry.open(..., engine_factory=..., checks=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from registry.engines.engine import Engine
from registry.engines.http import Checks, HttpChecks
from registry.home import Home
from registry.store.files.blobs import BlobStore
from registry.store.files.statcache import StatCache
from registry.store.sql import Store, events

# docker host URL (None: $DOCKER_HOST or the local socket) -> an engine connected to it
EngineFactory = Callable[[str | None], Engine]


def docker_engine(docker_host: str | None) -> Engine:
    """The real engine; docker-py is imported only when a command needs Docker."""
    from registry.engines.docker import DockerEngine

    return DockerEngine(docker_host)


@dataclass
class Configuration:
    home: Home
    store: Store
    blobs: BlobStore
    stat_cache: StatCache
    engine_factory: EngineFactory = docker_engine
    checks: Checks = field(default_factory=HttpChecks)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    # blob digest -> its tensors' digests, once read: a blob's index never changes, and a
    # prompt-tuning loop would otherwise read the same index for every version it pushes.
    tensor_index: dict[str, dict[str, str]] = field(default_factory=dict)
    # (model, version) -> None: fetch the version's blobs this home lacks from its blob store (a
    # remote, registry.remotes.store), verified; None when the home's blob folder is all there is.
    fetch_blobs: Callable[[str, str], None] | None = None
    _engines: dict[str | None, Engine] = field(default_factory=dict, repr=False)
    _registry_id: str | None = field(default=None, repr=False)

    @classmethod
    def for_home(cls, home: Home, store: Store, **ports) -> Configuration:
        blobs = BlobStore(home.blobs)
        return cls(home=home, store=store, blobs=blobs, stat_cache=StatCache(home.stat_cache, tmp=blobs.tmp),
                   **{k: v for k, v in ports.items() if v is not None})

    @property
    def snapshots(self) -> Path:
        return self.home.snapshots

    def engine(self, docker_host: str | None = None) -> Engine:
        """The engine at ``docker_host`` (default: $DOCKER_HOST or the local socket), connected
        on first use and kept: an unreachable engine fails here, before anything is recorded."""
        if docker_host not in self._engines:
            self._engines[docker_host] = self.engine_factory(docker_host)
        return self._engines[docker_host]

    @property
    def registry_id(self) -> str:
        """This registry's identity (label ``cellar.registry``), read once."""
        if self._registry_id is None:
            with self.store.read() as conn:
                self._registry_id = events.registry_id(conn)
        return self._registry_id

    def close(self) -> None:
        """Save the stat cache and close every engine opened, then the database."""
        try:
            self.stat_cache.save()
            for engine in self._engines.values():
                engine.close()
        finally:
            self.store.close()
