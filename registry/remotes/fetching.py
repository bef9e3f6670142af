"""``registry pull oci://HOST/NAMESPACE/MODEL:VERSION`` (or ``--remote NAME REF``).

Order: read the manifest; a Cellar artifact brings its record layer, another tool's ModelPack
artifact becomes a version with its weights and no prompts (its record built here). The same
version here already: nothing to do. Otherwise every layer this home lacks is fetched into a
temp file, hashed as it arrives and checked against its digest and size; only when all are
verified are they renamed into the blob store, and the version and its ``pull`` event recorded
in one transaction. A layer that does not match refuses the pull with nothing stored or
recorded; the temp files are always removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from pydantic import ValidationError

from registry import clock
from registry.action import Action
from registry.configuration import Configuration
from registry.durable import fsync_dir
from registry.errors import InvalidInput, RemoteError
from registry.faults import crashpoint
from registry.formats import canonical
from registry.models import NAME_RE, VERSION_RE, ImageRef, Provenance, Runtime
from registry.models.remotes import RemotePullResult
from registry.remotes import images, managing, modelpack, settings
from registry.remotes.client import RETRIES, OciClient, Progress
from registry.remotes.settings import ArtifactRef
from registry.store.sql import versions
from registry.versions import arriving

READ = 1 << 20
MAX_SMALL = 16 << 20  # a config or Cellar's record layer larger than this is refused


def pull(cfg: Configuration, source: str, *, remote: str | None, plain_http: bool, insecure: bool,
         ca_file: str | Path | None, actor: str, progress: Progress | None,
         with_image: bool = False) -> RemotePullResult:
    """``source`` is ``oci://HOST/REPO:TAG``, or ``MODEL@VERSION`` on ``remote``."""
    if remote is not None:
        found = settings.find(cfg.home, remote)
        client, ref = managing.client_for(cfg, found), managing.artifact_ref(found, source)
    else:
        client, ref = managing.client_for_url(cfg, source, plain_http=plain_http, insecure=insecure, ca_file=ca_file)
    with contextlib.closing(client):
        return PullRemote(cfg, actor=actor).run(client, ref, with_image=with_image, progress=progress)


class PullRemote(Action):
    """``PullRemote(cfg, actor=...).run(client, ref)``: the client is for ``ref``'s host."""

    def run(self, client: OciClient, ref: ArtifactRef, *, with_image: bool = False,
            progress: Progress | None = None) -> RemotePullResult:
        started = time.monotonic()
        data, _ = client.get_manifest(ref.repository, ref.reference)
        artifact_digest = modelpack.digest_of(data)
        if ref.digest and artifact_digest != ref.digest:
            raise RemoteError(f"{ref} served a manifest whose digest is {artifact_digest[:19]}; nothing was recorded")
        incoming = _incoming(client, ref, modelpack.parse_manifest(data, where=str(ref)))
        _check(incoming, where=str(ref))
        result = RemotePullResult(model=incoming.model, version=incoming.version, reference=str(ref),
                                  artifact_digest=artifact_digest, manifest_digest=incoming.manifest_digest,
                                  created=False, foreign=incoming.foreign, warnings=incoming.warnings)
        if with_image:  # before anything is recorded: an image that is not the pinned one refuses the pull
            result.image_pulled = images.pull(self.cfg, host=ref.host, artifact_repository=ref.repository,
                                              tag=managing.tag_of(incoming.version), record=incoming.record)
        if not arriving.recorded_already(self.cfg, incoming.model, incoming.version, incoming.manifest_digest,
                                         source=str(ref), verb="pulled"):
            fetched = Fetched(self.cfg)
            try:
                for kind, name, digest, size in _unique(incoming.files):
                    if not self.cfg.blobs.has(digest, size=size):
                        fetched.add(client, ref.repository, digest, size, what=f"{kind} {name}", progress=progress)
                result.blobs_fetched, result.bytes_fetched = len(fetched.files), fetched.bytes
                crashpoint("pull:verified")
                fetched.install()
                result.created = self._record(incoming, ref, artifact_digest)
            finally:
                fetched.cleanup()
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _record(self, incoming: modelpack.Incoming, ref: ArtifactRef, artifact_digest: str) -> bool:
        provenance = Provenance.model_validate(incoming.provenance) if incoming.provenance else None
        changelog = incoming.changelog
        rows = versions.VersionRows(
            model=incoming.model, version=incoming.version, manifest_digest=incoming.manifest_digest,
            record=incoming.record, message=str(changelog.get("message") or ""),
            actor=str(changelog.get("actor") or self.actor), provenance=provenance,
            created_at=arriving.when(changelog.get("created_at")) or clock.now(), files=incoming.files,
            tensors=arriving.tensor_index(self.cfg, incoming.record, known={}))
        return arriving.record_arrived(self.cfg, rows, actor=self.actor, action="pull", detail={
            "from": str(ref), "artifact_digest": artifact_digest, "pushed_by": changelog.get("actor"),
            "pushed_at": changelog.get("created_at"), "foreign": incoming.foreign})


def _incoming(client: OciClient, ref: ArtifactRef, manifest: dict) -> modelpack.Incoming:
    where = str(ref)
    layer = modelpack.cellar_layer(manifest)
    if layer is not None:
        return modelpack.from_cellar(manifest, _small(client, ref, layer), where=where)
    config = manifest["config"]
    if config.get("mediaType") != modelpack.CONFIG_TYPE and manifest.get("artifactType") != modelpack.ARTIFACT_TYPE:
        raise InvalidInput(f"{where} is not a ModelPack artifact (config {config.get('mediaType')}): it may be a "
                           "container image; nothing was recorded")
    try:
        parsed = json.loads(_small(client, ref, config))
    except ValueError:
        raise InvalidInput(f"{where}: its ModelPack config is not JSON; nothing was recorded") from None
    model, version = _names(ref)
    empty = {"image": ImageRef().model_dump(), "weights": [], "prompts": [],
             "runtime": Runtime().model_dump(mode="json", by_alias=True), "probes": []}
    incoming = modelpack.from_modelpack(manifest, parsed if isinstance(parsed, dict) else {}, model=model,
                                        version=version, where=where, empty_record=empty)
    incoming.manifest_digest = canonical.digest(incoming.record)
    incoming.warnings.append(f"{where} was written by another tool: recorded with its weights, no prompts, no "
                             "image and the default runtime")
    return incoming


def _small(client: OciClient, ref: ArtifactRef, descriptor: dict) -> bytes:
    """A small blob (a config or Cellar's record), read whole and checked against its digest."""
    digest, size = str(descriptor.get("digest", "")), int(descriptor.get("size", 0))
    if size > MAX_SMALL:
        raise InvalidInput(f"{ref}: its {descriptor.get('mediaType')} blob is {size} bytes, over the "
                           f"{MAX_SMALL >> 20} MiB Cellar reads; nothing was recorded")
    with client.open_blob(ref.repository, digest) as r:
        data = r.raw.read(size + 1, decode_content=True)
    if len(data) != size or modelpack.digest_of(data) != digest:
        raise RemoteError(f"{ref}: blob {digest[:19]} does not match its digest (tampered or damaged in the "
                          "registry); nothing was recorded")
    return data


def _names(ref: ArtifactRef) -> tuple[str, str]:
    """The model and version a foreign artifact is recorded as: its repository's last part, its tag."""
    model = ref.repository.rsplit("/", 1)[-1]
    version = ref.tag or ""
    if not NAME_RE.fullmatch(model) or not VERSION_RE.fullmatch(version):
        raise InvalidInput(f"{ref}: cannot record it as a Cellar version (model {model!r}, version {version!r}): "
                           "pull it by a tag that is a valid version name")
    return model, version


def _check(incoming: modelpack.Incoming, *, where: str) -> None:
    """What promote and show will read from the record must parse, and its digest must be its own."""
    record = incoming.record
    if not NAME_RE.fullmatch(incoming.model) or not VERSION_RE.fullmatch(incoming.version):
        raise InvalidInput(f"{where}: {incoming.model!r}@{incoming.version!r} is not a valid model and version; "
                           "nothing was recorded")
    try:
        Runtime.model_validate(record.get("runtime"))
        ImageRef.model_validate(record.get("image") or {})
        if incoming.provenance:
            Provenance.model_validate(incoming.provenance)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{where}: its record is not valid ({'.'.join(map(str, first['loc']))}: "
                           f"{first['msg']}); nothing was recorded") from None
    if canonical.digest(record) != incoming.manifest_digest:
        raise InvalidInput(f"{where}: Cellar's record does not hash to the manifest digest it names "
                           f"({incoming.manifest_digest[:19]}); nothing was recorded")
    for w in record.get("weights", []):
        modelpack.check_relative(str(w.get("path", "")), where)
    for p in record.get("prompts", []):  # a prompt becomes prompts/<name> in a snapshot
        modelpack.check_relative(f"{modelpack.PROMPTS_DIR}/{p.get('name', '')}", where)


class _Download:
    """Bytes of one blob landing in ``out``, hashed as they arrive; ``got`` survives a response
    that broke off, so the next one starts there."""

    def __init__(self, out, size: int, progress: Progress | None):
        self.out, self.size, self.progress = out, size, progress
        self.hash, self.got = hashlib.sha256(), 0

    def take(self, r: requests.Response) -> None:
        """The response's bytes, at most one past ``size`` (more than the digest's size is refused)."""
        for chunk in r.iter_content(READ):
            chunk = chunk[: self.size + 1 - self.got]
            self.hash.update(chunk)
            self.out.write(chunk)
            self.got += len(chunk)
            if self.progress:
                self.progress(len(chunk))
            if self.got > self.size:
                break


def _unique(files: list[tuple[str, str, str, int]]) -> list[tuple[str, str, str, int]]:
    seen: set[str] = set()
    return [f for f in files if not (f[2] in seen or seen.add(f[2]))]  # type: ignore[func-returns-value]


@dataclass
class Fetched:
    """Verified blobs in temp files of the blob store, until ``install`` renames them in."""

    cfg: Configuration
    files: dict[str, Path] = field(default_factory=dict)
    bytes: int = 0

    def add(self, client: OciClient, repo: str, digest: str, size: int, *, what: str,
            progress: Progress | None) -> None:
        """Fetch one blob into a temp file, hashed as it arrives; a dropped connection goes on
        from the byte it stopped at (a ranged GET), RETRIES times at most."""
        tmp = self.cfg.blobs.tmp / f"pull-{os.getpid()}-{secrets.token_hex(6)}"
        self.files[digest] = tmp
        failures = 0
        with open(tmp, "xb") as out:
            download = _Download(out, size, progress)
            while True:
                try:
                    with client.open_blob(repo, digest, offset=download.got) as r:
                        download.take(r)
                    break
                except requests.RequestException as exc:  # broke off mid-stream
                    failures += 1
                    if failures > RETRIES:
                        raise RemoteError(f"reading {what} from the registry broke off {failures} times ({exc}); "
                                          "nothing was recorded: pull again") from None
            out.flush()
            os.fsync(out.fileno())
        if download.got != size or "sha256:" + download.hash.hexdigest() != digest:
            raise RemoteError(f"{what}: the registry served bytes that do not match its digest {digest[:19]} "
                              "(tampered or damaged in the registry); nothing was recorded")
        self.bytes += size

    def install(self) -> None:
        for digest, tmp in sorted(self.files.items()):
            final = self.cfg.blobs.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        self.files.clear()

    def cleanup(self) -> None:
        for tmp in self.files.values():
            tmp.unlink(missing_ok=True)
        self.files.clear()
