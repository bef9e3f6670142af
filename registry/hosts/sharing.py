"""Whether a Docker engine provably shares the registry's disk: a file with a random token is
written in the snapshot folder, a container (created, never started) bind-mounts it, and the
engine's archive API reads it back. Only the same token proves it: an engine elsewhere refuses
the mount (no such path there) or shows other bytes (the same path on another disk). The URL
is never taken as proof: a unix socket may front a remote engine, a tcp:// one a local engine.

A proof is remembered in the registry home for a day, for that engine (its URL, ID and data
root) and that folder (its device and inode): a probe costs a container (160 ms
measured on the local engine), a remembered proof one ``info`` call (5 ms). Should it ever be
wrong, the container's bind mount of a snapshot that does not exist there fails loudly (a
``bind`` mount, never a silently created empty folder).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
import time
from pathlib import Path

from docker.errors import APIError, DockerException
from docker.types import Mount

from registry.errors import EngineError
from registry.hosts.docker_api import Api, helper_labels, short

# (engine URL, folder) -> shares: one probe per process and engine (a CLI command is one run)
_known: dict[tuple[str, str], bool] = {}
PROOF_S = 24 * 3600  # a remembered proof is probed again after a day


def shares_disk(engine, folder: Path, *, image: str, registry_id: str, proofs: Path | None = None) -> bool:
    """True when the engine behind ``engine`` sees ``folder`` as this machine does. An engine
    without a Docker API (the in-library fake) runs nothing from a disk: treated as shared.
    ``proofs``: the file where proofs are remembered (none: probe every time)."""
    api: Api | None = getattr(engine, "api", None)
    if api is None:
        return True
    key = (engine.base_url, str(folder))
    if key not in _known:
        folder.mkdir(parents=True, exist_ok=True)
        book = _Proofs(proofs, api, folder, engine.base_url)
        _known[key] = book.holds() or _probe(api, folder, image=image, registry_id=registry_id)
        if _known[key]:
            book.remember()
    return _known[key]


class _Proofs:
    """Positive proofs remembered: {engine URL|ID|data root: {folder: [st_dev, st_ino, proved at]}}."""

    def __init__(self, path: Path | None, api: Api, folder: Path, url: str):
        self.path, self.folder = path, str(folder)
        try:
            # The ID alone is no identity: Docker before 23 derives it from /etc/docker/key.json,
            # which two engines on one machine (or machines cloned from one image) share.
            info = api.info() if path else {}
            self.engine_id = f"{url}|{info.get('ID', '')}|{info.get('DockerRootDir', '')}" if info.get("ID") else ""
            st = folder.stat()
            self.ident = [st.st_dev, st.st_ino]
        except (DockerException, OSError):
            self.engine_id = ""

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text()) if self.path else {}
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def holds(self) -> bool:
        if not self.engine_id:
            return False
        proof = self._load().get(self.engine_id, {}).get(self.folder)
        return (isinstance(proof, list) and len(proof) == 3 and proof[:2] == self.ident
                and 0 <= time.time() - proof[2] < PROOF_S)

    def remember(self) -> None:
        if not self.engine_id or self.path is None:
            return
        data = self._load()
        data.setdefault(self.engine_id, {})[self.folder] = [*self.ident, time.time()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}")
            tmp.write_text(json.dumps(data, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            pass  # not remembered: the next run probes again


def _probe(api: Api, folder: Path, *, image: str, registry_id: str) -> bool:
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
