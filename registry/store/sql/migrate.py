"""Run the Alembic migrations in ``migrations/`` against a ``registry.store.sql.Store``.

Imported only when needed (alembic costs ~100 ms). It takes the store as an argument and
never imports ``registry.store.sql``, which imports this module lazily: no cycle.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations
from registry.errors import SchemaOutOfDate


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head() -> str:
    current = ScriptDirectory.from_config(_config()).get_current_head()
    assert current is not None  # migrations/versions is never empty
    return current


def refuse_newer(rev: str | None) -> None:
    """SchemaOutOfDate when ``rev`` is no revision of ours: a newer Cellar migrated the database."""
    if rev is None:
        return
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if rev not in known:
        raise SchemaOutOfDate(f"this database was migrated by a newer Cellar (schema {rev}); upgrade Cellar")


def upgrade(store, revision: str = "head") -> None:
    """Migrate to ``revision`` inside one serialised write transaction."""
    refuse_newer(store.schema_revision())
    cfg = _config()
    with store.schema_change() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(store, revision: str) -> None:
    refuse_newer(store.schema_revision())
    cfg = _config()
    with store.schema_change() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
