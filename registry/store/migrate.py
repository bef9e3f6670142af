"""Run the Alembic migrations in ``migrations/`` against a Store (imported only when needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations
from registry.errors import SchemaOutOfDate
from registry.store.sql import Store


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def refuse_newer(rev: str | None) -> None:
    """SchemaOutOfDate when ``rev`` is no revision of ours: a newer Cellar migrated the database."""
    if rev is None:
        return
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if rev not in known:
        raise SchemaOutOfDate(f"this database was migrated by a newer Cellar (schema {rev}); upgrade Cellar")


def upgrade(store: Store, revision: str = "head") -> None:
    """Migrate to ``revision`` inside one serialised write transaction."""
    refuse_newer(store.schema_revision())
    cfg = _config()
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(store: Store, revision: str) -> None:
    refuse_newer(store.schema_revision())
    cfg = _config()
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
