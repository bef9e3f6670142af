"""The remotes' part of the ``Registry`` facade (registry.api): remote add/list/remove/verify,
push --remote, pull, and the hooks a blob-store remote adds to push and promote. Everything is
imported when called: a command that touches no remote never loads ``requests``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from registry import actor as actor_mod
from registry import home as home_mod
from registry.configuration import Configuration
from registry.store.sql import Store
from registry.versions import refs

if TYPE_CHECKING:
    from registry.models.remotes import RemotePullResult, RemotePushResult, RemoteVerifyReport
    from registry.remotes.settings import Remote


class RemoteCommands:
    cfg: Configuration

    @property
    def store(self) -> Store:
        raise NotImplementedError  # Registry's

    # --- remotes: the team's OCI registry, versions as ModelPack artifacts ----------------

    def add_remote(self, name: str, url: str, *, plain_http: bool = False, insecure: bool = False,
                   ca_file: str | Path | None = None, replace: bool = False, blob_store: bool = False,
                   actor: str | None = None) -> Remote:
        """Remember ``oci://HOST[:PORT]/NAMESPACE`` as ``name`` (``blob_store``: as this home's blob
        store); credentials are never stored (the Docker credentials file, REGISTRY_REMOTE_*)."""
        from registry.remotes.managing import AddRemote

        return AddRemote(self.cfg, actor=actor_mod.identify(actor)).run(
            name, url, plain_http=plain_http, insecure=insecure, ca_file=ca_file, replace=replace,
            blob_store=blob_store)

    def remotes(self) -> list[Remote]:
        from registry.remotes.settings import remotes

        return remotes(self.cfg.home)

    def remove_remote(self, name: str, *, actor: str | None = None) -> Remote:
        from registry.remotes.managing import RemoveRemote

        return RemoveRemote(self.cfg, actor=actor_mod.identify(actor)).run(name)

    def push_remote(self, ref: str, *, remote: str, with_image: bool = False, actor: str | None = None,
                    progress=None) -> RemotePushResult:
        """Publish a recorded version to a remote as one ModelPack artifact ``NAMESPACE/MODEL:VERSION``
        (``with_image``: its pinned image too, as ``NAMESPACE/MODEL/image:VERSION``, by the Docker engine)."""
        from registry.remotes import settings
        from registry.remotes.publish import PushRemote

        where = settings.find(self.cfg.home, remote)
        model, version = refs.resolve(self.store, ref)
        self._cache(model, version)
        return PushRemote(self.cfg, actor=actor_mod.identify(actor)).run(where, model, version, with_image=with_image,
                                                                         progress=progress)

    def pull(self, source: str, *, remote: str | None = None, plain_http: bool = False, insecure: bool = False,
             ca_file: str | Path | None = None, with_image: bool = False, actor: str | None = None,
             progress=None) -> RemotePullResult:
        """Bring a version in from ``oci://HOST/NAMESPACE/MODEL:VERSION`` (or ``MODEL@VERSION`` on
        ``remote``), every layer (and, ``with_image``, the pinned image) verified before anything
        is recorded; again: a no-op."""
        from registry.remotes.fetching import pull

        return pull(self.cfg, source, remote=remote, plain_http=plain_http, insecure=insecure, ca_file=ca_file,
                    actor=actor_mod.identify(actor), progress=progress, with_image=with_image)

    def verify_remote(self, remote: str) -> RemoteVerifyReport:
        """Which recorded versions the remote holds as pushed, lacks, holds otherwise or holds incompletely."""
        from registry.remotes import settings
        from registry.remotes.checking import check_remote

        return check_remote(self.cfg, settings.find(self.cfg.home, remote))

    def _blob_store(self) -> bool:
        return bool(home_mod.read_config(self.cfg.home.path).get("blob_store"))

    def _cache(self, model: str, version: str) -> None:
        """In a home whose blob store is a remote: fetch the version's blobs this home lacks."""
        if self._blob_store():
            from registry.remotes import store

            store.fetch_missing(self.cfg, model, version)
