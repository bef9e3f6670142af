"""Indexes for bounded reads at any size: newest versions (of a model, or of all models) and the
rows `status` needs, read through an index instead of a scan and a sort (issue 10).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_versions_model_created", "versions")
    # (model_id, created_at, id): "the model's newest version" (push's prompts_changed) and a
    # model's listing, ordered exactly as the queries order them, tie-breaker included
    op.create_index("ix_versions_model_created", "versions", ["model_id", "created_at", "id"])
    op.create_index("ix_versions_created", "versions", ["created_at", "id"])
    op.create_index("ix_releases_env_status", "releases", ["env", "status"])


def downgrade() -> None:
    op.drop_index("ix_releases_env_status", "releases")
    op.drop_index("ix_versions_created", "versions")
    op.drop_index("ix_versions_model_created", "versions")
    op.create_index("ix_versions_model_created", "versions", ["model_id", "created_at"])
