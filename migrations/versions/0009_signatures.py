"""Signatures and trust (issue 25): named public keys, each environment's trust policy, and the
OpenSSF model-signing bundles recorded for versions (a signature, or an approval bound to one
environment). Private keys never reach the database; public keys and trust rows are sealed.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("fingerprint", sa.String(71), nullable=False, unique=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mac", sa.String(80)),
    )
    op.create_table(
        "env_trust",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("env", sa.String(63), nullable=False, unique=True),
        sa.Column("trusted", sa.Text, nullable=False),
        sa.Column("require_signatures", sa.Integer, nullable=False),
        sa.Column("mac", sa.String(80)),
    )
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.String(63), nullable=False),
        sa.Column("signer", sa.String(63), nullable=False),
        sa.Column("fingerprint", sa.String(71), nullable=False),
        sa.Column("env", sa.String(63)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bundle", sa.Text, nullable=False),
    )
    op.create_index("ix_signatures_model_version", "signatures", ["model", "version"])


def downgrade() -> None:
    op.drop_index("ix_signatures_model_version", table_name="signatures")
    op.drop_table("signatures")
    op.drop_table("env_trust")
    op.drop_table("signing_keys")
