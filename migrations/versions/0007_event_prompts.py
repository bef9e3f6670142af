"""An index of which events changed which prompt, for `registry audit --prompt` and the web
view's prompt filter: a page of matches read through an index instead of a scan of every
event's JSON (100 ms at 100,000 events on PostgreSQL, growing with the log).

Revision ID: 0007
Revises: 0006
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_prompts",
        sa.Column("prompt", sa.String(1024), primary_key=True),
        sa.Column("event_id", sa.Integer, primary_key=True),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, detail FROM events WHERE detail LIKE '%\"prompts_changed\":[\"%'"))
    index = [{"prompt": prompt, "event_id": event_id} for event_id, detail in rows
             for prompt in dict.fromkeys(json.loads(detail).get("prompts_changed") or [])]
    if index:
        op.bulk_insert(sa.table("event_prompts", sa.column("prompt"), sa.column("event_id")), index)


def downgrade() -> None:
    op.drop_table("event_prompts")
