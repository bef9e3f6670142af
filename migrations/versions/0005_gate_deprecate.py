"""Environments that gate promotes on their probe suite; deprecated versions.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        # run the version's probes after health and warm-up; any fail or error rolls back
        batch.add_column(sa.Column("gate", sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("deprecated_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("deprecated_reason", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("deprecated_reason")
        batch.drop_column("deprecated_at")
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("gate")
