"""The OCI distribution API, as far as Cellar uses it, over ``requests`` (docker-py's own HTTP
library, so nothing new to install).

What it relies on is what Distribution 2.8 (Debian's ``docker-registry``) offers, the oldest
registry teams still run: ``HEAD`` a blob, ``POST`` an upload (with ``mount``/``from`` to borrow
a blob another repository holds), ``PATCH`` chunks with ``Content-Range``, ``PUT ?digest=``,
``GET`` a blob or manifest, ``PUT`` a manifest. No referrers API, no single-POST upload.

Memory stays bounded: a chunk is sent from a read-only mapping of the blob file (the kernel
copies it into the socket), CHUNK bytes at a time, unmapped before the next one. A dropped
connection resumes where the registry says the upload stands, or restarts it, RETRIES times.
Authentication: HTTP Basic, or a bearer token from the realm the registry names (Harbor, Zot).
"""

from __future__ import annotations

import contextlib
import mmap
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests

from registry.errors import CorruptBlob, NotFound, RemoteError
from registry.faults import crashpoint

CHUNK = 64 << 20  # per PATCH: 16 round trips for 1 GiB, and at most this much mapped at once
RETRIES = 3
BACKOFF_S = 0.5
TIMEOUT = (10, 300)  # connect, read (a registry may take long to commit a large blob)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join([MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"])

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one registry host."""

    base_url: str  # https://HOST[:PORT]
    ca_file: str | None = None
    credentials: tuple[str, str] | None = None


class OciClient:
    """One registry host; ``close()`` ends its connections."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.session = requests.Session()
        # per request: requests lets $REQUESTS_CA_BUNDLE override a session's own ``verify``
        self._verify: str | bool = endpoint.ca_file or True
        self.session.headers["User-Agent"] = "cellar-registry"
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self.session.close()

    # --- blobs -------------------------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        r = self._call("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo)
        if r.status_code == 404:
            return False
        self._expect(r, 200, f"look up blob {digest[:19]} in {repo}")
        return True

    def upload(self, repo: str, digest: str, size: int, path: Path, *, mount_from: str | None = None,
               progress: Progress | None = None) -> str:
        """Put the blob file ``path`` into ``repo`` as ``digest``: "mounted" or "uploaded"."""
        location = self._start(repo, digest, mount_from)
        if location is None:
            return "mounted"
        offset, failures = 0, 0
        with open(path, "rb") as f:
            while offset < size:
                n = min(CHUNK, size - offset)
                try:
                    location = self._patch(repo, location, f.fileno(), offset, n)
                    offset += n
                    if progress:
                        progress(n)
                except (requests.ConnectionError, requests.Timeout) as exc:
                    failures += 1
                    if failures > RETRIES:
                        raise RemoteError(f"the upload of {digest[:19]} to {repo} broke off {failures} times "
                                          f"({_reason(exc)}): check the registry, then push again") from None
                    time.sleep(BACKOFF_S * failures)
                    location, offset = self._resume(repo, digest, location)
        r = self._call("PUT", location, repo=repo, params={"digest": digest}, headers={"Content-Length": "0"})
        if r.status_code == 400 and "DIGEST_INVALID" in r.text:
            raise CorruptBlob(f"the registry refused blob {digest[:19]}: the bytes sent from {path} do not hash to "
                              "it; run `registry verify` (nothing was published)")
        self._expect(r, 201, f"finish the upload of {digest[:19]} to {repo}")
        return "uploaded"

    def upload_bytes(self, repo: str, digest: str, data: bytes) -> None:
        """A small blob (a config, Cellar's record): POST, then one PUT with the bytes."""
        location = self._start(repo, digest, None)
        assert location is not None  # no mount was asked for
        r = self._call("PUT", location, repo=repo, params={"digest": digest}, data=data,
                       headers={"Content-Type": "application/octet-stream"})
        self._expect(r, 201, f"store blob {digest[:19]} in {repo}")

    def _start(self, repo: str, digest: str, mount_from: str | None) -> str | None:
        """A new upload's location, or None when the registry mounted the blob from ``mount_from``."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        r = self._call("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, params=params,
                       headers={"Content-Length": "0"}, also=(mount_from,) if mount_from else ())
        if r.status_code == 201 and mount_from:
            return None
        self._expect(r, 202, f"start an upload to {repo}")
        return self._location(r)

    def _patch(self, repo: str, location: str, fd: int, offset: int, n: int) -> str:
        with _mapped(fd, offset, n) as view:
            crashpoint("remote:chunk")
            r = self._call("PATCH", location, repo=repo, data=view, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(n),
                "Content-Range": f"{offset}-{offset + n - 1}"})
        self._expect(r, 202, f"upload to {repo}")
        return self._location(r)

    def _resume(self, repo: str, digest: str, location: str) -> tuple[str, int]:
        """Where a broken upload stands (its location and the next offset), or a new one from 0."""
        with contextlib.suppress(requests.RequestException):
            r = self._call("GET", location, repo=repo)
            match = re.fullmatch(r"0-(\d+)", r.headers.get("Range", ""))
            if r.status_code == 204 and match and int(match.group(1)) > 0:
                return self._location(r), int(match.group(1)) + 1
        return self._start(repo, digest, None) or location, 0

    def open_blob(self, repo: str, digest: str, *, offset: int = 0) -> requests.Response:
        """A streaming response of the blob's bytes from ``offset`` on; the caller verifies them
        and closes it."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        r = self._call("GET", f"/v2/{repo}/blobs/{digest}", repo=repo, stream=True, headers=headers)
        if r.status_code == 404:
            r.close()
            raise NotFound(f"blob {digest[:19]} is missing from {self.endpoint.base_url}/{repo}; nothing was recorded")
        self._expect(r, 206 if offset else 200, f"read blob {digest[:19]} from {repo}")
        return r

    # --- manifests ---------------------------------------------------------------------------

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest of the manifest ``reference`` names, or None if there is none."""
        r = self._call("HEAD", f"/v2/{repo}/manifests/{reference}", repo=repo, headers={"Accept": ACCEPT})
        if r.status_code == 404:
            return None
        self._expect(r, 200, f"look up {repo}:{reference}")
        return r.headers.get("Docker-Content-Digest")

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """(bytes, media type) of a manifest; NotFound if the registry has none."""
        r = self._call("GET", f"/v2/{repo}/manifests/{reference}", repo=repo, headers={"Accept": ACCEPT})
        if r.status_code == 404:
            raise NotFound(f"{self.endpoint.base_url}/{repo}:{reference} does not exist: check the name and tag")
        self._expect(r, 200, f"read {repo}:{reference}")
        return r.content, r.headers.get("Content-Type", "").split(";")[0]

    def put_manifest(self, repo: str, tag: str, body: bytes) -> str:
        r = self._call("PUT", f"/v2/{repo}/manifests/{tag}", repo=repo, data=body,
                       headers={"Content-Type": MANIFEST})
        self._expect(r, 201, f"store the manifest {repo}:{tag}")
        return r.headers.get("Docker-Content-Digest", "")

    def tags(self, repo: str) -> list[str]:
        r = self._call("GET", f"/v2/{repo}/tags/list", repo=repo, pull_only=True)
        if r.status_code == 404:
            return []
        self._expect(r, 200, f"list the tags of {repo}")
        return list(r.json().get("tags") or [])

    # --- HTTP, authentication, errors ---------------------------------------------------------

    def _call(self, method: str, path: str, *, repo: str, also: tuple[str, ...] = (), pull_only: bool = False,
              **kwargs) -> requests.Response:
        """One request; on 401, authenticate as the registry asks and send it once more."""
        url = urljoin(self.endpoint.base_url, path)
        scope = " ".join(f"repository:{r}:{'pull' if pull_only or r != repo else 'pull,push'}" for r in (repo, *also))
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs.setdefault("verify", self._verify)
        given = kwargs.pop("headers", {})
        for attempt in range(2):
            headers = {**given, **self._auth_header(scope)}
            try:
                r = self.session.request(method, url, headers=headers, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise RemoteError(f"TLS verification of {self.endpoint.base_url} failed ({_reason(exc)}): give "
                                  "the registry's CA with `registry remote add --ca-file PEM`") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if method == "PATCH":
                    raise  # the upload loop resumes it
                raise RemoteError(f"cannot reach the registry at {self.endpoint.base_url} ({_reason(exc)}): check "
                                  "that it runs and the remote's URL (`registry remote list`)") from None
            if r.status_code != 401 or attempt:
                return r
            r.close()
            self._authenticate(r.headers.get("WWW-Authenticate", ""), scope)
        raise AssertionError("unreachable")

    def _auth_header(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if "basic" in self._tokens:
            return {"Authorization": self._tokens["basic"]}
        return {}

    def _authenticate(self, challenge: str, scope: str) -> None:
        creds = self.endpoint.credentials
        if creds is None:
            raise RemoteError(f"{self.endpoint.base_url} asks for credentials: run `docker login "
                              f"{self.endpoint.base_url.split('://')[1]}` or set REGISTRY_REMOTE_USERNAME and "
                              "REGISTRY_REMOTE_PASSWORD")
        if challenge.lower().startswith("basic"):
            if "basic" in self._tokens:
                raise RemoteError(f"{self.endpoint.base_url} refused the credentials: check them (docker login)")
            self._tokens["basic"] = requests.auth._basic_auth_str(*creds)
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if not challenge.lower().startswith("bearer") or "realm" not in params:
            raise RemoteError(f"{self.endpoint.base_url} asks for an authentication Cellar does not speak: {challenge}")
        try:
            r = self.session.get(params["realm"], params={"service": params.get("service", ""), "scope": scope},
                                 auth=creds, timeout=TIMEOUT, verify=self._verify)
        except requests.RequestException as exc:
            raise RemoteError(f"cannot get a token from {params['realm']} ({_reason(exc)})") from None
        if r.status_code != 200:
            raise RemoteError(f"{params['realm']} refused the credentials (HTTP {r.status_code}): check them")
        body = r.json()
        self._tokens[scope] = body.get("token") or body.get("access_token") or ""

    def _expect(self, r: requests.Response, status: int, doing: str) -> None:
        if r.status_code == status:
            return
        if r.status_code in (401, 403):
            raise RemoteError(f"{self.endpoint.base_url} denied the request to {doing} (HTTP {r.status_code}): "
                              "check the credentials and their rights on this repository")
        raise RemoteError(f"{self.endpoint.base_url} refused to {doing}: HTTP {r.status_code} {_error_text(r)}")

    def _location(self, r: requests.Response) -> str:
        location = r.headers.get("Location")
        if not location:
            raise RemoteError(f"{self.endpoint.base_url} answered an upload without a Location header")
        return urljoin(self.endpoint.base_url, location)


@contextlib.contextmanager
def _mapped(fd: int, offset: int, length: int) -> Iterator[memoryview]:
    """``length`` bytes of ``fd`` at ``offset``, mapped read-only and unmapped after the block
    (so at most one chunk of the file counts towards this process's memory)."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(fd, length + offset - start, prot=mmap.PROT_READ, offset=start) as mapped:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mapped)[offset - start:]
        try:
            yield view
        finally:
            view.release()


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Connection reset", "Connection aborted",
                   "certificate verify failed", "Name or service not known", "RemoteDisconnected"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


def _error_text(r: requests.Response) -> str:
    try:
        errors = r.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:300]
    except ValueError:
        return r.text[:200]
