"""The tables, as SQLAlchemy Core metadata.

Core rather than the ORM keeps ``sqlalchemy.orm`` off the CLI's start-up path; rows are
turned into pydantic models at the store boundary (``registry.store.sql``). The schema is
created and changed only by the Alembic migrations in ``migrations/``; a test checks that
this metadata matches the migrated database.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

# The Alembic revision this code needs; tests check it is the head of migrations/versions.
SCHEMA_HEAD = "0012"

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", String(63), nullable=False),
    Column("manifest_digest", String(71), nullable=False),
    # The canonical manifest whose sha256 is manifest_digest, kept byte for byte.
    Column("manifest", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("provenance", Text),
    Column("mac", String(80)),  # registry.trust.seals seal (0004)
    Column("deprecated_at", DateTime(timezone=True)),  # hidden from listings, refused by promote (0005)
    Column("deprecated_reason", Text),
    UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
    Index("ix_versions_model_created", "model_id", "created_at", "id"),
    Index("ix_versions_created", "created_at", "id"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(71), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Which blobs a version uses, by role: kind is "weight" (name = relative path) or "prompt".
version_files = Table(
    "version_files",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("name", String(1024), primary_key=True),
    Column("digest", String(71), ForeignKey("blobs.digest"), nullable=False),
    Index("ix_version_files_digest", "digest"),
)

# Per-tensor index of safetensors blobs; keyed by blob so equal files share it.
tensors = Table(
    "tensors",
    metadata,
    Column("blob_digest", String(71), ForeignKey("blobs.digest"), primary_key=True),
    Column("name", String(1024), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("dtype", String(32), nullable=False),
    Column("shape", String(255), nullable=False),
    Column("digest", String(71), nullable=False),
)

# Append-only, hash-chained audit log (see registry.trust.audit).
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("db_user", String(255)),
    Column("action", String(64), nullable=False),
    Column("object", String(255), nullable=False),
    Column("model", String(63)),
    Column("env", String(63)),
    Column("detail", Text, nullable=False),
    Column("reason", Text),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("mac", String(80)),
    Index("ix_events_action", "action"),
    Index("ix_events_model", "model"),
)

# Which events changed which prompt (detail.prompts_changed), so `audit --prompt` reads an index
# instead of every event's JSON (0007). Derived from the sealed events: `audit verify` checks it.
event_prompts = Table(
    "event_prompts",
    metadata,
    Column("prompt", String(1024), primary_key=True),
    Column("event_id", Integer, primary_key=True),  # no foreign key: derived, checked by verify
)

# --- environments, releases, operation locks (0002) ------------------------------------

environments = Table(
    "environments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("port", Integer, nullable=False),
    Column("bind_addr", String(64), nullable=False),
    Column("docker_host", String(255)),
    # None: use the version's own runtime.health.timeout_s.
    Column("health_timeout_s", Float),
    Column("keep", Integer, nullable=False),
    Column("protected", Boolean, nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("gate", Boolean, nullable=False, server_default=false()),  # probes gate promotes (0005)
    # JSON: host settings that win over the versions' (GPUs, memory ...), share_gpus (0010)
    Column("runtime", Text),
    # JSON list of Docker host URLs when the environment is a fleet, the canary first (0011)
    Column("hosts", Text),
    Column("mac", String(80)),
)

# The release ledger: append-only per environment, revisions 1, 2, 3 ... Rows are never
# deleted; only status, container and finish fields move forward (see registry.ledger).
releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("env", String(63), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("operation", String(16), nullable=False),
    Column("model", String(63), nullable=False),
    Column("version", String(63), nullable=False),
    Column("manifest_digest", String(71), nullable=False),
    Column("image_digest", String(80)),
    Column("status", String(20), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("reason", Text),
    Column("container_id", String(80)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("rollback_of", Integer),
    Column("healthy", Boolean, nullable=False),
    Column("error", Text),
    # JSON list of {host, container_id, state} in a fleet; NULL for one host (0011)
    Column("hosts", Text),
    Column("mac", String(80)),
    UniqueConstraint("env", "revision", name="uq_releases_env_revision"),
    # The database itself allows only one deployed release per environment: migration 0002
    # makes this index partial (WHERE status = 'deployed'). The WHERE is not repeated here:
    # naming dialect options imports both SQL dialects (~25 ms) on every command's start-up,
    # and this metadata only serves queries (tests check the migrated index is partial).
    Index("ix_releases_env_status", "env", "status"),
    Index("uq_releases_one_deployed", "env", unique=True),
)

# One operation per environment at a time: a row here is the lock, with who holds it.
env_locks = Table(
    "env_locks",
    metadata,
    Column("env", String(63), primary_key=True),
    Column("operation", String(16), nullable=False),
    Column("target", String(140), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
)

# The signed head of the audit log (0004, registry.trust.seals): one row.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("head", String(64), nullable=False),
    Column("mac", String(80), nullable=False),
    CheckConstraint("id = 1", name="ck_audit_head_one_row"),
)

# --- probe runs (0003) ---------------------------------------------------------------------

# One execution of a probe suite against an environment's deployed release (see
# registry.store.sql.probes). The counts repeat what probe_results holds so that `health` and
# `metrics` can filter and count runs without reading every result.
probe_runs = Table(
    "probe_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("env", String(63), nullable=False),
    Column("model", String(63), nullable=False),
    Column("version", String(63), nullable=False),
    Column("revision", Integer),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("passed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Index("ix_probe_runs_env_started", "env", "started_at"),
)

probe_results = Table(
    "probe_results",
    metadata,
    Column("run_id", Integer, ForeignKey("probe_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("probe", String(63), nullable=False),
    Column("status", String(8), nullable=False),
    Column("latency_ms", Float),
    Column("http_status", Integer),
    Column("detail", Text, nullable=False),
    Column("host", String(255)),  # the Docker host it was sent to, in a fleet; NULL for one host (0012)
)

# --- hooks: audit events POSTed to other tools (0008, registry.hooks) -------------------------

# The audit log is the outbox: a hook's ``cursor`` is the id of the last event it is done with
# (delivered, or given up on after its attempts), so nothing is written on a promote's path and
# nothing is lost when a deliverer dies. ``attempts``/``next_at`` hold the head event's retries;
# ``lease_*`` keep two deliverers from sending the same hook's events at once.
hooks = Table(
    "hooks",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("url", Text),  # None: read from the environment variable url_env when delivering
    Column("url_env", String(255)),
    Column("secret_env", String(255)),
    Column("events", Text, nullable=False),  # JSON list of audit actions
    Column("format", String(16), nullable=False),
    Column("web_url", Text),
    Column("cursor", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True)),
    Column("lease_owner", String(255)),
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(255), nullable=False),
)

hook_deliveries = Table(
    "hook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hook", String(63), nullable=False),
    Column("event_id", Integer),  # None: a `registry hook test`
    Column("action", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered, failed, gave-up
    Column("status", Integer),  # the HTTP status, when one came back
    Column("detail", Text, nullable=False),
    Column("ms", Integer, nullable=False),
    Index("ix_hook_deliveries_hook_id", "hook", "id"),
)

# --- signatures and trust (0009, registry.signing) -------------------------------------------

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("fingerprint", String(71), nullable=False, unique=True),  # sha256 of the PEM public key
    Column("public_key", Text, nullable=False),  # PEM; a private key never reaches the database
    Column("actor", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("mac", String(80)),
)

env_trust = Table(
    "env_trust",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("env", String(63), nullable=False, unique=True),
    Column("trusted", Text, nullable=False),  # JSON list of key names
    Column("require_signatures", Integer, nullable=False),
    Column("mac", String(80)),
)

signatures = Table(
    "signatures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model", String(63), nullable=False),
    Column("version", String(63), nullable=False),
    Column("signer", String(63), nullable=False),
    Column("fingerprint", String(71), nullable=False),
    Column("env", String(63)),  # an approval's environment; None for a signature
    Column("expires_at", DateTime(timezone=True)),
    Column("actor", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("bundle", Text, nullable=False),  # the Sigstore bundle (JSON); what is checked, not the columns
    Index("ix_signatures_model_version", "model", "version"),
)
