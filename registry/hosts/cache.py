"""A Docker host's content-addressed copy of the blobs its containers mount.

One labelled volume per registry on each host (``cellar-cache-<registry id>``) holds
``blobs/sha256/<hex>``, written through the Engine API's archive upload into a helper
container that mounts the volume and is never started. A deploy sends only the blobs the host
lacks (or holds with the wrong size), then hashes every blob the version needs *on the host*
(``sha256sum`` in a container of the version's own image, network off; an image without it:
the bytes are read back through the archive API and hashed here) before a container mounts
them: a blob damaged there is sent again, never served. The container gets a read-only tmpfs
at ``/model`` holding exactly the version's files, each a read-only bind of its blob.

The archive upload writes a file in place: a transfer cut short leaves a blob shorter than its
record on the host, which the next deploy's size check (and in any case the hash) sends again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from docker.errors import APIError, DockerException
from docker.errors import NotFound as DockerNotFound
from docker.types import Mount

from registry.engines.engine import LABEL
from registry.errors import EngineError
from registry.faults import crashpoint
from registry.hosts.docker_api import ROLE, Api, helper_labels, short, sweep_helpers
from registry.hosts.files import version_files
from registry.hosts.stamps import Stamp, Stamps
from registry.store.files.blobs import BlobStore

VOLUME_PREFIX = "cellar-cache-"
MOUNT = "/cellar-cache"
CHUNK = 4 << 20
HASH_RATE = 50 << 20  # bytes/s the slowest host hashes at: bounds the wait for sha256sum
Progress = Callable[[int, int], None]  # (bytes sent, bytes to send)


@dataclass
class Delivery:
    """What a deploy's transfer did on one host, and what the container mounts from it."""

    host: str
    files: dict[str, str] = field(default_factory=dict)  # path in the container -> path on the host
    sent: int = 0          # blobs that travelled
    sent_bytes: int = 0
    cached: int = 0        # blobs the host already held, proven (stamp unchanged, or hashed there)
    hashed: int = 0        # of those it held, how many were hashed on the host this time
    repaired: int = 0      # blobs the host held damaged, sent again

    def summary(self) -> str:
        return (f"sent {self.sent} blob{'s' * (self.sent != 1)} ({self.sent_bytes} bytes) to {self.host}, "
                f"{self.cached} already there ({self.hashed} hashed there)"
                + (f", {self.repaired} damaged there and sent again" if self.repaired else ""))


class HostCache:
    """The blob cache of this registry on one engine. ``image`` runs the helper containers
    (the version's own image: the one image certain to be on the host)."""

    def __init__(self, engine, *, registry_id: str, image: str, stamps: Path | None = None):
        self.api: Api = engine.api
        self.host = engine.base_url
        self.registry_id = registry_id
        self.image = image
        self.volume = VOLUME_PREFIX + registry_id[:24]
        self.stamps = Stamps(stamps, host=self.host, volume=self.volume)
        self.stats_work = True  # until the image turns out to have no stat

    # --- a deploy ------------------------------------------------------------------------

    def deliver(self, blobs: BlobStore, record: dict, *, on_progress: Progress | None = None) -> Delivery:
        """Make the version's blobs present and proven on the host; what its container mounts.
        A copy already there is trusted when its stat is what this registry stamped after it
        last sent or hashed it (registry.hosts.stamps), else hashed on the host and sent again
        when damaged; a blob sent now is the verified local blob's bytes, stamped once written.
        EngineError when the host cannot be reached or the transfer breaks off."""
        files = version_files(record)
        digests = sorted({d for _, d in files})
        sweep_helpers(self.api, self.registry_id)
        root = self._mountpoint()
        sizes = {d: blobs.path(d).stat().st_size for d in digests}
        held = self._stats(digests)
        present = [d for d in digests if d in held and held[d][0] == sizes[d]]
        unproven = [d for d in present if not (self.stats_work and self.stamps.holds(d, held[d]))]
        damaged = self.damaged(unproven, sizes)
        send = [d for d in digests if d not in present or d in damaged]
        with self._helper() as cid:
            self._send(cid, blobs, send, sizes, on_progress)
        written = self._stats(send)
        if wrong := [d for d in send if written.get(d, (-1,))[0] != sizes[d]]:
            raise EngineError(f"the copy of blob {wrong[0][:19]} on {self.host} is not the size sent: "
                              "check that host's disk; nothing was deployed")
        if self.stats_work:
            self.stamps.record({**{d: held[d] for d in present if d not in damaged}, **written}, forget=damaged)
        return Delivery(host=self.host, sent=len(send), sent_bytes=sum(sizes[d] for d in send),
                        cached=len(present) - len(damaged), hashed=len(unproven), repaired=len(damaged),
                        files={f"/model/{rel}": f"{root}/blobs/sha256/{_hex(d)}" for rel, d in files})

    def _stats(self, digests: list[str]) -> dict[str, Stamp]:
        """digest -> (size, mtime, ctime, inode) of the host's copy (absent: left out), from
        ``stat`` in the image; an image without it gives sizes only (and no stamps are trusted)."""
        if not digests:
            return {}
        paths = [f"{MOUNT}/blobs/sha256/{_hex(d)}" for d in digests]
        out = self._run(["stat"], ["-c", "%s %Y %Z %i %n", *paths], timeout=120) if self.stats_work else None
        if out is None:
            self.stats_work = False
            with self._helper(read_only=True) as cid:
                return {d: (size, -1, -1, -1) for d in digests if (size := self._size(cid, d)) is not None}
        found = {}
        for line in out.splitlines():
            fields = line.split(" ", 4)
            if len(fields) == 5 and all(f.isdigit() for f in fields[:4]):
                found["sha256:" + fields[4].rsplit("/", 1)[-1]] = (
                    int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3]))
        return found

    def damaged(self, digests: list[str], sizes: dict[str, int]) -> list[str]:
        """The digests whose copy on the host is missing or hashes otherwise (hashed there)."""
        if not digests:
            return []
        got = self._hash_on_host(digests, sum(sizes.values()))
        return [d for d in digests if got.get(d) != _hex(d)]

    # --- the volume and its helpers --------------------------------------------------------

    def _mountpoint(self) -> str:
        try:
            try:
                return self.api.inspect_volume(self.volume)["Mountpoint"]
            except DockerNotFound:
                labels = {f"{LABEL}.registry": self.registry_id, ROLE: "cache"}
                return self.api.create_volume(self.volume, labels=labels)["Mountpoint"]
        except DockerException as exc:
            raise EngineError(f"cannot open the blob cache on {self.host}: {short(exc)}") from None

    @contextmanager
    def _helper(self, *, role: str = "transfer", read_only: bool = False, **create) -> Iterator[str]:
        """A container of the cache (created; started only by a caller that needs to run it)."""
        try:
            cid = self.api.create_container(
                self.image, labels=helper_labels(self.registry_id, role), network_disabled=True,
                host_config=self.api.create_host_config(
                    mounts=[Mount(MOUNT, self.volume, type="volume", read_only=read_only)]), **create)["Id"]
        except DockerException as exc:
            raise EngineError(f"cannot reach the blob cache on {self.host}: {short(exc)}") from None
        try:
            yield cid
        finally:
            try:
                self.api.remove_container(cid, force=True)
            except (DockerException, requests.RequestException):
                pass  # left behind: sweep_helpers removes it on the next transfer

    def _size(self, cid: str, digest: str) -> int | None:
        """The size of the host's copy (archive API stat, no bytes read); None when absent."""
        stat = self._stat(cid, _hex(digest))
        return None if stat is None else int(stat.get("size", -1))

    def _stat(self, cid: str, name: str) -> dict | None:
        try:
            res = self.api.head(f"{self.api.base_url}/v{self.api.api_version}/containers/{cid}/archive",
                                params={"path": f"{MOUNT}/blobs/sha256/{name}"})
        except requests.RequestException as exc:
            raise EngineError(f"cannot reach the blob cache on {self.host}: {short(exc)}") from None
        if res.status_code == 404:
            return None
        return json.loads(base64.b64decode(res.headers.get("X-Docker-Container-Path-Stat", "") or "e30="))

    # --- sending ---------------------------------------------------------------------------

    def _send(self, cid: str, blobs: BlobStore, digests: list[str], sizes: dict[str, int],
              on_progress: Progress | None) -> None:
        if not digests:
            return
        total, sent = sum(sizes[d] for d in digests), [0]

        def counted() -> Iterator[bytes]:
            for chunk in _tar_stream(blobs, digests, sizes):
                sent[0] += len(chunk)
                if on_progress:
                    on_progress(min(sent[0], total), total)
                crashpoint("transfer:sending")
                yield chunk

        try:
            self.api.put_archive(cid, MOUNT, counted())
        except (DockerException, requests.RequestException) as exc:
            raise EngineError(f"sending the weights to {self.host} broke off after {sent[0]} of {total} bytes "
                              f"({short(exc)}); nothing was deployed, the release in place keeps serving: "
                              "run the command again (only what the host lacks travels)") from None

    # --- checking on the host --------------------------------------------------------------

    def _hash_on_host(self, digests: list[str], total: int) -> dict[str, str]:
        """digest -> the hex sha256 of the host's copy (absent: left out)."""
        paths = [f"{MOUNT}/blobs/sha256/{_hex(d)}" for d in digests]
        out = self._run(["sha256sum"], paths, timeout=60 + total // HASH_RATE)
        if out is None:
            return self._hash_by_reading(digests)
        found = {}
        for line in out.splitlines():
            hexdigest, _, path = line.partition("  ")
            found["sha256:" + path.rsplit("/", 1)[-1]] = hexdigest.strip()
        return found

    def _run(self, entrypoint: list[str], command: list[str], *, timeout: int, read_only: bool = True) -> str | None:
        """Run a helper with the cache mounted; its stdout. None when the image lacks the program."""
        with self._helper(role="check", read_only=read_only, entrypoint=entrypoint, command=command) as cid:
            try:
                self.api.start(cid)
            except APIError as exc:
                if "executable file not found" in str(exc) or "no such file" in str(exc).lower():
                    return None
                raise EngineError(f"cannot run a helper on {self.host}: {short(exc)}") from None
            try:
                self.api.wait(cid, timeout=timeout)
                return self.api.logs(cid, stdout=True, stderr=False).decode("utf-8", "replace")
            except (DockerException, requests.RequestException) as exc:
                raise EngineError(f"a helper on {self.host} failed: {short(exc)}") from None

    # --- upkeep: what the cache holds, and removing what nothing needs ----------------------

    def exists(self) -> bool:
        """Whether this registry ever cached blobs on the host."""
        try:
            self.api.inspect_volume(self.volume)
            return True
        except DockerNotFound:
            return False
        except DockerException as exc:
            raise EngineError(f"cannot open the blob cache on {self.host}: {short(exc)}") from None

    def listing(self) -> dict[str, tuple[int, float]]:
        """digest -> (size, modification time) of every blob the host holds (the image's sh lists them)."""
        script = f'for f in {MOUNT}/blobs/sha256/*; do [ -f "$f" ] && echo "$(wc -c < "$f") ${{f##*/}}"; done; true'
        out = self._run(["sh", "-c"], [script], timeout=120)
        if out is None:
            raise EngineError(f"cannot list the blob cache on {self.host}: the image {self.image[:19]} has no sh")
        found = {}
        with self._helper(read_only=True) as cid:
            for line in out.splitlines():
                size, _, name = line.strip().partition(" ")
                if size.isdigit() and len(name) == 64:
                    found["sha256:" + name] = (int(size), self._mtime(cid, name))
        return found

    def remove(self, digests: list[str]) -> None:
        """Unlink these blobs on the host (a running container keeps the file it mounted)."""
        if digests:
            script = f'cd {MOUNT}/blobs/sha256 && rm -f -- "$@"'
            if self._run(["sh", "-c"], [script, "sh", *(_hex(d) for d in digests)], timeout=120,
                         read_only=False) is None:
                raise EngineError(f"cannot collect the blob cache on {self.host}: the image has no sh")

    def _mtime(self, cid: str, name: str) -> float:
        stat = self._stat(cid, name) or {}
        try:
            return datetime.fromisoformat(stat.get("mtime", "")[:26].rstrip("Z")).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return time.time()  # unknown: counted as fresh, so kept

    def _hash_by_reading(self, digests: list[str]) -> dict[str, str]:
        """The image has no sha256sum: read each copy back through the archive API, hash it here."""
        found = {}
        with self._helper(role="check", read_only=True) as cid:
            for d in digests:
                try:
                    stream, _ = self.api.get_archive(cid, f"{MOUNT}/blobs/sha256/{_hex(d)}", chunk_size=CHUNK)
                    found[d] = _hash_tar_member(stream)
                except DockerNotFound:
                    continue
                except (DockerException, requests.RequestException) as exc:
                    raise EngineError(f"checking the blob cache on {self.host} failed: {short(exc)}") from None
        return found


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def _tar_stream(blobs: BlobStore, digests: list[str], sizes: dict[str, int]) -> Iterator[bytes]:
    """A tar of ``blobs/sha256/<hex>`` files, read-only, streamed chunk by chunk."""
    now = time.time()
    for folder in ("blobs", "blobs/sha256"):
        info = tarfile.TarInfo(folder)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
        yield info.tobuf(format=tarfile.PAX_FORMAT)
    for d in digests:
        info = tarfile.TarInfo(f"blobs/sha256/{_hex(d)}")
        info.size, info.mode, info.mtime = sizes[d], 0o444, now
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with open(blobs.path(d), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
        if pad := -sizes[d] % tarfile.BLOCKSIZE:
            yield b"\0" * pad
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _hash_tar_member(stream) -> str:
    """sha256 of the one file in an archive stream, read as it comes."""
    reader = _StreamReader(stream)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            f = tar.extractfile(member)
            h = hashlib.sha256()
            while f is not None and (chunk := f.read(CHUNK)):
                h.update(chunk)
            return h.hexdigest()
    return ""


class _StreamReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks):
        self._chunks, self._buf = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n
