"""Hooks: audit events POSTed to the tools teams already watch, the audit log as their outbox
(a cursor per hook), and every delivery attempt recorded (registry.hooks).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hooks",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("url", sa.Text),
        sa.Column("url_env", sa.String(255)),
        sa.Column("secret_env", sa.String(255)),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("web_url", sa.Text),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True)),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "hook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hook", sa.String(63), nullable=False),
        sa.Column("event_id", sa.Integer),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("ms", sa.Integer, nullable=False),
    )
    op.create_index("ix_hook_deliveries_hook_id", "hook_deliveries", ["hook", "id"])


def downgrade() -> None:
    op.drop_index("ix_hook_deliveries_hook_id", "hook_deliveries")
    op.drop_table("hook_deliveries")
    op.drop_table("hooks")
