"""Results of the remote commands: push --remote, pull, remote verify.

They are what the Python API returns and what ``--json`` prints, so field names are public.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, computed_field


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True)


class RemotePushResult(_Model):
    model: str
    version: str
    remote: str
    reference: str                    # oci://HOST/NAMESPACE/MODEL:VERSION
    artifact_digest: str              # the OCI manifest's digest: the same version gives the same one
    created: bool                     # False: the registry held this exact artifact already
    blobs_uploaded: int = 0
    blobs_mounted: int = 0            # borrowed from another repository of the registry
    blobs_present: int = 0            # there already: nothing sent
    bytes_uploaded: int = 0
    image: str | None = None          # with --with-image: REPOSITORY@DIGEST of the pushed image
    seconds: float = 0.0


class RemotePullResult(_Model):
    model: str
    version: str
    reference: str
    artifact_digest: str
    manifest_digest: str
    created: bool                     # False: this exact version was here already (a no-op)
    foreign: bool = False             # written by another tool: weights only, no prompts
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    image_pulled: bool = False        # with --with-image: the pinned image was pulled (and is the pinned one)
    seconds: float = 0.0
    warnings: list[str] = Field(default_factory=list)


class RemoteVersionState(_Model):
    """One version as ``registry remote verify`` found it on the remote."""

    model: str
    version: str
    state: str                        # "same" | "absent" | "different" | "missing-blobs" | "unknown"
    missing: list[str] = Field(default_factory=list)


class RemoteVerifyReport(_Model):
    remote: str
    versions: list[RemoteVersionState] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented pattern; mypy refuses it
    @property
    def ok(self) -> bool:
        """False when a version is held otherwise or incompletely; absent and unknown are fine."""
        return not any(v.state in ("different", "missing-blobs") for v in self.versions)
