"""Probe runs and their per-probe results.

Revision ID: 0003
Revises: 0002

Only new tables: SQLite needs no batch copy for CREATE/DROP TABLE (migrations/env.py turns
batch mode on for SQLite, should a later change to these tables alter columns).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "probe_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("env", sa.String(63), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.String(63), nullable=False),
        sa.Column("revision", sa.Integer),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("passed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
    )
    op.create_index("ix_probe_runs_env_started", "probe_runs", ["env", "started_at"])
    op.create_table(
        "probe_results",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("probe_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("probe", sa.String(63), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("http_status", sa.Integer),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("probe_results")
    op.drop_index("ix_probe_runs_env_started", "probe_runs")
    op.drop_table("probe_runs")
