"""Fleets: an environment's Docker hosts, and each host's container and state on a release.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: one host, as before (and the row's seal is what it was: registry.trust.seals.LATE_COLUMNS)
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("hosts", sa.Text))
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("hosts", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("hosts")
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("hosts")
