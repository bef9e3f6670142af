"""Environments' runtime overrides (GPUs, memory, shared memory ...) and GPU sharing, as JSON.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        # NULL: no overrides (and the row's seal is what it was: registry.trust.seals.LATE_COLUMNS)
        batch.add_column(sa.Column("runtime", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("runtime")
