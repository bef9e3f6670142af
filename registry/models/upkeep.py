"""Results of the maintenance commands: verify, gc, backup, restore, export, import.

They are what the Python API returns and what ``--json`` prints, so field names are public.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True)


class ProblemKind(StrEnum):
    CORRUPT = "corrupt"              # the bytes no longer match the digest
    TRUNCATED = "truncated"          # the size differs from the recorded one (shorter or longer)
    MISSING = "missing"              # recorded, but no file in the store
    UNREFERENCED = "unreferenced"    # stored, but no version records it (gc reclaims it)
    STRAY = "stray"                  # a file in the store whose name is not a digest
    UNREADABLE = "unreadable"        # the file exists but cannot be read (permissions, I/O error)
    SNAPSHOT = "snapshot"            # a materialised snapshot no longer matches its version
    REFERENCE = "reference"          # a recorded reference that does not resolve
    AUDIT = "audit"                  # the audit hash chain is broken
    DATABASE = "database"            # the database's own integrity check failed
    REMOTE_ONLY = "remote-only"      # not in this home, but on its blob store (a remote): fetched when needed
    HOST_CACHE = "host-cache"        # a Docker host's cached copy of a blob does not match (issue 22)


# Kinds that are not damage: an unreferenced blob is garbage for gc, not a broken store
# (and a push running right now has blobs that are not recorded yet); a blob a home's blob
# store holds is only not cached here.
NOTICES = frozenset({ProblemKind.UNREFERENCED, ProblemKind.REMOTE_ONLY})


class StorageProblem(_Model):
    """One thing verify found; ``versions`` are the model@version refs that use the blob."""

    kind: ProblemKind
    digest: str | None = None
    path: str | None = None
    versions: list[str] = Field(default_factory=list)
    expected_size: int | None = None
    actual_size: int | None = None
    detail: str = ""

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented pattern; mypy refuses it
    @property
    def damage(self) -> bool:
        return self.kind not in NOTICES


class VerifyReport(_Model):
    """``registry verify``: exit 0 when ``ok``."""

    ok: bool
    blobs_checked: int
    bytes_hashed: int
    seconds: float
    problems: list[StorageProblem] = Field(default_factory=list)
    stale_temp_files: list[str] = Field(default_factory=list)
    snapshots_checked: int = 0
    audit_events: int = 0
    database_check: str = ""          # what the database's own check covered
    warnings: list[str] = Field(default_factory=list)  # e.g. a Docker host whose cache could not be checked


class BlobItem(_Model):
    digest: str
    size: int
    path: str


class PathItem(_Model):
    path: str
    size: int
    why: str = ""


class ContainerItem(_Model):
    env: str
    id: str
    name: str = ""
    version: str = ""
    revision: int | None = None


class GcPlan(_Model):
    """What one gc removes; the dry run prints it, the real run executes exactly it."""

    blobs: list[BlobItem] = Field(default_factory=list)
    temp_files: list[PathItem] = Field(default_factory=list)
    snapshots: list[PathItem] = Field(default_factory=list)
    containers: list[ContainerItem] = Field(default_factory=list)
    bytes_freed: int = 0
    kept_fresh: list[str] = Field(default_factory=list)  # unreferenced blobs inside the grace period
    warnings: list[str] = Field(default_factory=list)    # e.g. an engine that could not be asked
    # blobs in the caches of Docker hosts that do not share this disk (path: "HOST VOLUME")
    host_blobs: list[BlobItem] = Field(default_factory=list)


class GcResult(GcPlan):
    """``registry gc [--dry-run]``: the plan, plus what the real run could not remove."""

    dry_run: bool
    skipped: list[PathItem] = Field(default_factory=list)  # touched by a concurrent push, or vanished


class BackupResult(_Model):
    dest: str
    db_kind: str                      # "sqlite" or "postgresql"
    db_file: str
    db_sha256: str
    blobs_total: int
    blobs_copied: int                 # new in this backup (the rest were there already)
    blobs_linked: int                 # of the new ones, hard-linked rather than copied
    bytes_copied: int
    seconds: float
    problems: list[StorageProblem] = Field(default_factory=list)  # source blobs not backed up (corrupt ...)


class RestoreResult(_Model):
    home: str
    db_kind: str
    blobs_restored: int
    bytes_restored: int
    seconds: float
    problems: list[StorageProblem] = Field(default_factory=list)
    verify: VerifyReport | None = None  # the restored registry, verified (Registry.restore)
    # The restored registry's identity (the cellar.registry label on its containers) and whether
    # it is the original's: then both homes act on the same containers (restore --new-identity).
    registry_id: str = ""
    identity_shared: bool = False

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented pattern; mypy refuses it
    @property
    def ok(self) -> bool:
        return not self.problems and (self.verify is None or self.verify.ok)


class ExportResult(_Model):
    file: str
    model: str
    version: str
    manifest_digest: str
    blobs: int
    bytes: int
    with_image: bool
    seconds: float


class ImportResult(_Model):
    file: str
    model: str
    version: str
    manifest_digest: str
    created: bool                     # False: the same version was already there (a no-op)
    blobs_stored: int
    bytes_stored: int
    image_loaded: bool
    seconds: float


class Deprecation(_Model):
    """``registry deprecate``: hidden from ``list`` (``--all`` shows it), refused by promote."""

    model: str
    version: str
    deprecated_at: datetime
    reason: str | None = None
    changed: bool = True              # False: it was deprecated already (nothing recorded)


class DeleteResult(_Model):
    """``registry delete --force``: the version's rows are gone; gc reclaims its blobs."""

    model: str
    version: str
    manifest_digest: str
    blobs_released: list[str] = Field(default_factory=list)  # digests no other version uses now
