"""Migration 0002 (environments, releases, env_locks) on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from registry.store import migrate
from registry.store.schema import SCHEMA_HEAD, metadata
from registry.store.sql import Store

NEW = {"environments", "releases", "env_locks"}


def test_head_matches_the_code(db_url):
    assert migrate.head() == SCHEMA_HEAD == "0002"


def test_migrated_schema_matches_metadata_and_downgrades(db_url):
    store = Store(db_url)
    try:
        migrate.upgrade(store)
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
        assert diff == []
        assert NEW <= set(inspect(store.engine).get_table_names())
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("releases")}
        assert "uq_releases_one_deployed" in indexes
        migrate.downgrade(store, "0001")
        assert not NEW & set(inspect(store.engine).get_table_names())
        assert store.schema_revision() == "0001"
        migrate.upgrade(store)
        assert store.schema_revision() == "0002"
    finally:
        store.close()
