"""Whether a Docker engine provably shares the registry's disk: a file with a random token is
written in the snapshot folder, a container (created, never started) bind-mounts it, and the
engine's archive API reads it back. Only the same token proves it: an engine elsewhere refuses
the mount (no such path there) or shows other bytes (the same path on another disk). The URL
is never taken as proof: a unix socket may front a remote engine, a tcp:// one a local engine.
"""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path

from docker.errors import APIError, DockerException
from docker.types import Mount

from registry.errors import EngineError
from registry.hosts.docker_api import Api, helper_labels, short

# (engine URL, folder) -> shares: one probe per process and engine (a CLI command is one run)
_known: dict[tuple[str, str], bool] = {}


def shares_disk(engine, folder: Path, *, image: str, registry_id: str) -> bool:
    """True when the engine behind ``engine`` sees ``folder`` as this machine does. An engine
    without a Docker API (the in-library fake) runs nothing from a disk: treated as shared."""
    api: Api | None = getattr(engine, "api", None)
    if api is None:
        return True
    key = (engine.base_url, str(folder))
    if key not in _known:
        _known[key] = _probe(api, folder, image=image, registry_id=registry_id)
    return _known[key]


def _probe(api: Api, folder: Path, *, image: str, registry_id: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    probe = folder / f".probe-{token[:12]}"
    probe.write_text(token)
    try:
        try:
            created = api.create_container(
                image, labels=helper_labels(registry_id, "probe"), network_disabled=True,
                host_config=api.create_host_config(
                    mounts=[Mount("/cellar-probe", str(probe), type="bind", read_only=True)]))
        except APIError as exc:
            if "does not exist" in str(exc) or "not a directory" in str(exc).lower():
                return False  # the engine has no such path: another disk
            raise EngineError(f"cannot probe the Docker engine's disk: {short(exc)}") from None
        try:
            return _read_back(api, created["Id"]) == token
        finally:
            api.remove_container(created["Id"], force=True)
    except DockerException as exc:
        raise EngineError(f"cannot probe the Docker engine's disk: {short(exc)}") from None
    finally:
        probe.unlink(missing_ok=True)


def _read_back(api: Api, container_id: str) -> str:
    stream, _stat = api.get_archive(container_id, "/cellar-probe")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        data = tar.extractfile(member) if member else None
        return data.read(64).decode("utf-8", "replace") if data else ""
