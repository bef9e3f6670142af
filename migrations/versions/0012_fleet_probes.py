"""Fleets: which host a probe result came from (a fleet's suite is sent to every host).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("probe_results") as batch:
        batch.add_column(sa.Column("host", sa.String(255)))  # NULL: the environment's one host


def downgrade() -> None:
    with op.batch_alter_table("probe_results") as batch:
        batch.drop_column("host")
