"""Initial schema: models, versions, blobs, version files, tensors, audit events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DIGEST = sa.String(71)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("version", sa.String(63), nullable=False),
        sa.Column("manifest_digest", DIGEST, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("provenance", sa.Text),
        sa.UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
    )
    op.create_index("ix_versions_model_created", "versions", ["model_id", "created_at"])
    op.create_table(
        "blobs",
        sa.Column("digest", DIGEST, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "version_files",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(1024), primary_key=True),
        sa.Column("digest", DIGEST, sa.ForeignKey("blobs.digest"), nullable=False),
    )
    op.create_index("ix_version_files_digest", "version_files", ["digest"])
    op.create_table(
        "tensors",
        sa.Column("blob_digest", DIGEST, sa.ForeignKey("blobs.digest"), primary_key=True),
        sa.Column("name", sa.String(1024), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("dtype", sa.String(32), nullable=False),
        sa.Column("shape", sa.String(255), nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("db_user", sa.String(255)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object", sa.String(255), nullable=False),
        sa.Column("model", sa.String(63)),
        sa.Column("env", sa.String(63)),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_events_action", "events", ["action"])
    op.create_index("ix_events_model", "events", ["model"])


def downgrade() -> None:
    op.drop_index("ix_events_model", "events")
    op.drop_index("ix_events_action", "events")
    op.drop_table("events")
    op.drop_table("tensors")
    op.drop_index("ix_version_files_digest", "version_files")
    op.drop_table("version_files")
    op.drop_table("blobs")
    op.drop_index("ix_versions_model_created", "versions")
    op.drop_table("versions")
    op.drop_table("models")
