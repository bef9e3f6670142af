"""Environments, the release ledger, and per-environment operation locks.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ONE_DEPLOYED = sa.text("status = 'deployed'")


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("bind_addr", sa.String(64), nullable=False),
        sa.Column("docker_host", sa.String(255)),
        sa.Column("health_timeout_s", sa.Float),
        sa.Column("keep", sa.Integer, nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("env", sa.String(63), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.String(63), nullable=False),
        sa.Column("manifest_digest", sa.String(71), nullable=False),
        sa.Column("image_digest", sa.String(80)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("container_id", sa.String(80)),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("rollback_of", sa.Integer),
        sa.Column("healthy", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("env", "revision", name="uq_releases_env_revision"),
    )
    op.create_index("uq_releases_one_deployed", "releases", ["env"], unique=True,
                    sqlite_where=ONE_DEPLOYED, postgresql_where=ONE_DEPLOYED)
    op.create_table(
        "env_locks",
        sa.Column("env", sa.String(63), primary_key=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("target", sa.String(140), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("env_locks")
    op.drop_index("uq_releases_one_deployed", "releases")
    op.drop_table("releases")
    op.drop_table("environments")
