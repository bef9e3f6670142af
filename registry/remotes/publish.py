"""``registry push --remote NAME REF``: publish a recorded version as one ModelPack artifact.

Order: look up the tag (another artifact there: refused, versions are immutable), then for each
blob ``HEAD`` first (the same artifact there already and every blob too: nothing sent), else
borrow it from another repository of the registry that holds it (a version of another model
with the same file), else upload it in chunks; the manifest last, so the tag never names an
incomplete artifact.
A push that broke off leaves only blobs the registry's own gc reclaims; pushing again sends
what is missing.
"""

from __future__ import annotations

import time

from registry.action import Action
from registry.configuration import Configuration
from registry.errors import NotFound, VersionConflict
from registry.models.remotes import RemotePushResult
from registry.remotes import images, modelpack
from registry.remotes.client import OciClient, Progress
from registry.remotes.managing import client_for, tag_of
from registry.remotes.settings import SCHEME, Remote
from registry.store.sql import events, versions


def artifact_of(cfg: Configuration, model: str, version: str) -> modelpack.Artifact:
    """The artifact of a recorded version (its record as sealed: nothing unproven is published)."""
    with cfg.store.read() as conn:
        stored = versions.record_of(conn, model, version)
        info = versions.info(conn, model, version)
    changelog = {"message": info.message, "actor": info.actor, "created_at": info.created_at.isoformat()}
    provenance = info.provenance.model_dump(mode="json") if info.provenance else None
    return modelpack.build(model=model, version=version, manifest_digest=stored.digest, record=stored.record,
                           changelog=changelog, provenance=provenance)


class PushRemote(Action):
    """``PushRemote(cfg, actor=...).run(remote, model, version)``."""

    def run(self, remote: Remote, model: str, version: str, *, with_image: bool = False,
            progress: Progress | None = None) -> RemotePushResult:
        started = time.monotonic()
        artifact = artifact_of(self.cfg, model, version)
        self._require_local(model, version, artifact)
        repo, tag = remote.repository(model), tag_of(version)
        client = client_for(self.cfg, remote)
        try:
            there = client.manifest_digest(repo, tag)
            result = RemotePushResult(model=model, version=version, remote=remote.name,
                                      reference=f"{SCHEME}{remote.host}/{repo}:{tag}",
                                      artifact_digest=artifact.digest, created=there is None)
            if there is not None and there != artifact.digest:
                raise VersionConflict(f"{result.reference} holds another artifact ({there[:19]}, this version is "
                                      f"{artifact.digest[:19]}): versions are immutable; push under a new version")
            if with_image:
                result.image = images.push(self.cfg, host=remote.host, artifact_repository=repo, tag=tag,
                                           record=artifact.record, ref=f"{model}@{version}")
            # HEAD first even when the tag is there: a blob the registry lost since is sent again
            self._send_blobs(client, remote, repo, artifact, result, progress)
            if there is None:
                client.put_manifest(repo, tag, artifact.manifest)
        finally:
            client.close()
        if there is not None and not (result.blobs_uploaded or result.blobs_mounted):
            return _timed(result, started)  # nothing changed there: no event
        with self.cfg.store.write() as conn:
            events.append(conn, actor=self.actor, action="remote-push", object=f"{model}@{version}", model=model,
                          db_user=self.cfg.store.db_user(conn), detail={
                              "remote": remote.name, "to": result.reference, "artifact_digest": artifact.digest,
                              "uploaded": result.blobs_uploaded, "mounted": result.blobs_mounted,
                              "image": result.image})
        return _timed(result, started)

    def _require_local(self, model: str, version: str, artifact: modelpack.Artifact) -> None:
        for layer in artifact.layers:
            if not self.cfg.blobs.has(layer.digest, size=layer.size):
                raise NotFound(f"blob {layer.digest} ({layer.path}) of {model}@{version} is missing from this "
                               "home: run `registry verify`; nothing was pushed")

    def _send_blobs(self, client: OciClient, remote: Remote, repo: str, artifact: modelpack.Artifact,
                    result: RemotePushResult, progress: Progress | None) -> None:
        layers = {layer.digest: layer.size for layer in artifact.layers}
        with self.cfg.store.read() as conn:
            holders = versions.models_holding(conn, list(layers))
        for digest, size in layers.items():
            if client.has_blob(repo, digest):
                result.blobs_present += 1
                continue
            others = [remote.repository(m) for m in holders.get(digest, []) if remote.repository(m) != repo]
            how = client.upload(repo, digest, size, self.cfg.blobs.path(digest), mount_from=next(iter(others), None),
                                progress=progress)
            result.blobs_uploaded += how == "uploaded"
            result.blobs_mounted += how == "mounted"
            result.bytes_uploaded += size if how == "uploaded" else 0
        for digest, data in artifact.small_blobs().items():
            if client.has_blob(repo, digest):
                continue
            client.upload_bytes(repo, digest, data)
            result.blobs_uploaded += 1
            result.bytes_uploaded += len(data)


def _timed(result: RemotePushResult, started: float) -> RemotePushResult:
    result.seconds = round(time.monotonic() - started, 3)
    return result
