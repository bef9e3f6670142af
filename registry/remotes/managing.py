"""``registry remote add/list/remove``, and the client for a remote or an ``oci://`` URL.

Adding or removing a remote writes an audit event (what the URL is, never a credential)."""

from __future__ import annotations

from pathlib import Path

from registry.action import Action
from registry.configuration import Configuration
from registry.errors import AlreadyExists, InvalidInput
from registry.home import read_config, update_config
from registry.remotes import settings
from registry.remotes.auth import credentials
from registry.remotes.client import Endpoint, OciClient
from registry.remotes.settings import ArtifactRef, Remote
from registry.store.sql import events


class AddRemote(Action):
    def run(self, name: str, url: str, *, plain_http: bool = False, insecure: bool = False,
            ca_file: str | Path | None = None, replace: bool = False, blob_store: bool = False) -> Remote:
        remote = settings.remote_from(name, url, plain_http=plain_http, insecure=insecure, ca_file=ca_file)
        known = {r.name: r for r in settings.remotes(self.cfg.home)}
        same = name in known and known[name].model_dump(exclude={"blob_store"}) == remote.model_dump(
            exclude={"blob_store"})
        if name in known and not replace and not same:
            raise AlreadyExists(f"remote {name!r} is {known[name].url} already: remove it first, or add --replace")
        settings.save(self.cfg.home, remote)
        if blob_store:
            update_config(self.cfg.home, **{settings.BLOB_STORE: name})
        self._audit("remote-add", remote, blob_store=blob_store)
        return settings.find(self.cfg.home, name)

    def _audit(self, action: str, remote: Remote, **extra) -> None:
        with self.cfg.store.write() as conn:
            events.append(conn, actor=self.actor, action=action, object=f"remote:{remote.name}",
                          db_user=self.cfg.store.db_user(conn),
                          detail={**remote.model_dump(include={"url", "plain_http", "insecure", "ca_file"}), **extra})


class RemoveRemote(AddRemote):
    def run(self, name: str) -> Remote:  # type: ignore[override]
        remote = settings.forget(self.cfg.home, name)
        if read_config(self.cfg.home.path).get(settings.BLOB_STORE) == name:
            update_config(self.cfg.home, **{settings.BLOB_STORE: None})  # back to the local folder alone
        self._audit("remote-remove", remote)
        return remote


def client_for(cfg: Configuration, remote: Remote) -> OciClient:
    """A client for the remote's host, with the credentials this machine has for it."""
    return OciClient(Endpoint(base_url=remote.base_url, ca_file=remote.ca_file,
                              credentials=credentials(remote.host, cfg.environ)))


def client_for_url(cfg: Configuration, url: str, *, plain_http: bool = False, insecure: bool = False,
                   ca_file: str | Path | None = None) -> tuple[OciClient, ArtifactRef]:
    """The client and artifact of ``oci://HOST/REPO:TAG``: TLS settings given here, else those of
    a remote on the same host, else HTTPS verified by the system's CAs."""
    ref = settings.parse_artifact(url)
    known = settings.for_host(cfg.home, ref.host)
    if plain_http or ca_file or known is None:
        remote = settings.remote_from("url", f"{settings.SCHEME}{ref.host}", plain_http=plain_http,
                                      insecure=insecure, ca_file=ca_file)
    else:
        remote = known
    return client_for(cfg, remote), ref


def artifact_ref(remote: Remote, ref: str) -> ArtifactRef:
    """``MODEL@VERSION`` (or ``MODEL:VERSION``) on a remote."""
    model, sep, version = ref.replace(":", "@").partition("@")
    if not sep or not model or not version:
        raise InvalidInput(f"{ref!r}: name the version on the remote as MODEL@VERSION, e.g. support-bot@v1.3")
    return settings.parse_artifact(f"{settings.SCHEME}{remote.host}/{remote.repository(model)}:{tag_of(version)}")


def tag_of(version: str) -> str:
    """The OCI tag of a version: tags have no '+', so it becomes '_'."""
    return version.replace("+", "_")
