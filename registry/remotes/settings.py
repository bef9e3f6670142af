"""What a remote is, and where it is remembered.

A remote is ``oci://HOST[:PORT]/NAMESPACE``: versions go to the repositories
``NAMESPACE/MODEL``, tagged with the version. Remotes are remembered in the home's config file
(``remotes``), per machine like the Docker credentials they use; no credential is ever stored
there or in the database (``registry.remotes.auth`` reads them when needed).

HTTPS is verified against the system's CAs or ``ca_file``. Plain HTTP sends the weights and
the credentials in clear, so it is allowed to a loopback host only, unless ``insecure``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from registry.errors import InvalidInput, NotFound
from registry.home import Home, read_config, update_config

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# OCI distribution: a repository path component, a tag.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HOST = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")
SCHEME = "oci://"
BLOB_STORE = "blob_store"  # the config key naming the remote a home keeps its blobs in


class Remote(BaseModel):
    """One remote, as ``registry remote list`` shows it (``blob_store``: this home's blob store)."""

    name: str
    url: str  # oci://HOST[:PORT]/NAMESPACE
    host: str  # HOST[:PORT]
    namespace: str
    plain_http: bool = False
    insecure: bool = False  # plain HTTP to a host that is not loopback, explicitly allowed
    ca_file: str | None = None
    blob_store: bool = False

    @property
    def base_url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"

    def repository(self, model: str) -> str:
        return f"{self.namespace}/{model}" if self.namespace else model


@dataclass(frozen=True)
class ArtifactRef:
    """``oci://HOST[:PORT]/REPOSITORY:TAG`` (or ``@sha256:...``), split."""

    host: str
    repository: str
    tag: str | None
    digest: str | None = None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        at = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"{SCHEME}{self.host}/{self.repository}{at}"


def remote_from(name: str, url: str, *, plain_http: bool = False, insecure: bool = False,
                ca_file: str | Path | None = None) -> Remote:
    """A validated remote; InvalidInput says what to fix."""
    if not NAME.fullmatch(name):
        raise InvalidInput(f"remote name {name!r} is not valid: use lowercase letters, digits, '.', '_' and '-'")
    host, namespace = _split_url(url)
    if plain_http and not insecure and not is_loopback(host):
        raise InvalidInput(f"plain HTTP to {host} would send weights and credentials in clear: use HTTPS "
                           "(the default), or add --insecure if this network is trusted")
    if ca_file is not None:
        ca_file = Path(ca_file).absolute()
        if not ca_file.is_file():
            raise InvalidInput(f"CA file {ca_file} does not exist: give the PEM file of the registry's CA")
    return Remote(name=name, url=f"{SCHEME}{host}/{namespace}".rstrip("/"), host=host, namespace=namespace,
                  plain_http=plain_http, insecure=insecure and plain_http, ca_file=str(ca_file) if ca_file else None)


def parse_artifact(url: str) -> ArtifactRef:
    """``oci://HOST[:PORT]/NAMESPACE/MODEL:VERSION`` (or ``@sha256:<hex>``) -> its parts."""
    host, path = _split_url(url)
    digest = tag = None
    if "@" in path:
        path, digest = path.split("@", 1)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise InvalidInput(f"{url}: {digest!r} is not a sha256 digest")
    elif ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise InvalidInput(f"{url}: {tag!r} is not a valid tag")
    if not path:
        raise InvalidInput(f"{url}: name the repository, e.g. {SCHEME}{host}/team/support-bot:v1.3")
    _check_repository(url, path)
    return ArtifactRef(host=host, repository=path, tag=tag or (None if digest else "latest"), digest=digest)


def _split_url(url: str) -> tuple[str, str]:
    if not url.startswith(SCHEME):
        raise InvalidInput(f"{url!r} is not an OCI registry URL: write {SCHEME}HOST[:PORT]/NAMESPACE")
    host, _, path = url[len(SCHEME):].partition("/")
    if "@" in host:  # said without echoing the URL: it may hold a password
        raise InvalidInput("credentials never go in a registry URL: use `docker login HOST` or "
                           "REGISTRY_REMOTE_USERNAME and REGISTRY_REMOTE_PASSWORD")
    if not _HOST.fullmatch(host):
        raise InvalidInput(f"{url}: {host!r} is not a host name with an optional port")
    path = path.strip("/")
    if path and ":" not in path and "@" not in path:
        _check_repository(url, path)
    return host, path


def _check_repository(url: str, path: str) -> None:
    if not all(_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise InvalidInput(f"{url}: {path!r} is not a valid repository path (lowercase letters, digits, "
                           "'.', '_', '-' between '/')")


def is_loopback(host: str) -> bool:
    """Whether ``HOST[:PORT]`` names this machine: localhost, 127.0.0.0/8 or ::1."""
    name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# --- remembered in the home ------------------------------------------------------------------------


def remotes(home: Home) -> list[Remote]:
    """The home's remotes, by name."""
    config = read_config(home.path)
    saved = config.get("remotes") or {}
    return [Remote.model_validate({"name": name, **fields, "blob_store": name == config.get(BLOB_STORE)})
            for name, fields in sorted(saved.items())]


def find(home: Home, name: str) -> Remote:
    for remote in remotes(home):
        if remote.name == name:
            return remote
    known = ", ".join(r.name for r in remotes(home)) or "none yet"
    raise NotFound(f"no remote named {name!r} ({known}): add it with `registry remote add {name} oci://HOST/NAMESPACE`")


def for_host(home: Home, host: str) -> Remote | None:
    """The first remote on ``host``: its TLS settings serve a pull by URL."""
    return next((r for r in remotes(home) if r.host == host), None)


def save(home: Home, remote: Remote) -> None:
    saved = dict(read_config(home.path).get("remotes") or {})
    saved[remote.name] = remote.model_dump(exclude={"name", "blob_store"}, exclude_none=True)
    update_config(home, remotes=saved)


def forget(home: Home, name: str) -> Remote:
    remote = find(home, name)
    saved = dict(read_config(home.path).get("remotes") or {})
    saved.pop(name, None)
    update_config(home, remotes=saved or None)
    return remote
