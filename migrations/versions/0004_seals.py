"""Seals: an HMAC ``mac`` on events, versions, releases and environments, and the signed head.

The key lives in a file outside the database (registry.trust.seals); rows written before this
revision have no seal (NULL) until ``registry init`` seals the existing record once.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SEALED = ("events", "versions", "releases", "environments")
MAC = 80  # "KEYID:" + 64 hex digits is 73 characters


def upgrade() -> None:
    # ADD COLUMN of a nullable column needs no table copy, even in batch mode on SQLite.
    for table in SEALED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("mac", sa.String(MAC)))
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),  # always 1: one row
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(MAC), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_head_one_row"),
    )


def downgrade() -> None:
    op.drop_table("audit_head")
    for table in reversed(SEALED):
        # SQLite copies the table here: the partial one-deployed index on releases must survive
        # the copy, so it is dropped first and created again afterwards with its WHERE.
        if table == "releases":
            op.drop_index("uq_releases_one_deployed", "releases")
        with op.batch_alter_table(table) as batch:
            batch.drop_column("mac")
        if table == "releases":
            where = sa.text("status = 'deployed'")
            op.create_index("uq_releases_one_deployed", "releases", ["env"], unique=True,
                            sqlite_where=where, postgresql_where=where)
