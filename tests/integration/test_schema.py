"""The schema: migrations match the metadata, go down and up again, and a stale schema is refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from registry.api import Registry
from registry.errors import NotInitialised, SchemaOutOfDate
from registry.store.sql import Store, migrate
from registry.store.sql.schema import SCHEMA_HEAD, metadata

REGISTRY = str(Path(sys.executable).with_name("registry"))


def _differences(store: Store) -> list:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)


def test_metadata_matches_the_migrated_database(reg):
    assert _differences(reg.store) == []


def test_schema_head_is_the_migrations_head():
    assert SCHEMA_HEAD == migrate.head()


def test_downgrade_to_base_and_upgrade_again(reg, model_dir):
    reg.push(model_dir.manifest)
    migrate.downgrade(reg.store, "base")
    with reg.store.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(reg.store)
    assert _differences(reg.store) == []
    assert reg.store.schema_revision() == SCHEMA_HEAD


def test_each_migration_steps_down_and_up_again(reg):
    """Every migration's downgrade undoes it (one step at a time, from the head down to base)."""
    from alembic.script import ScriptDirectory

    revisions = [s.revision for s in ScriptDirectory.from_config(migrate._config()).walk_revisions()]
    for below in [*revisions[1:], "base"]:
        migrate.downgrade(reg.store, below)
        assert reg.store.schema_revision() == (None if below == "base" else below)
    for rev in reversed(revisions):
        migrate.upgrade(reg.store, rev)
        assert reg.store.schema_revision() == rev
    assert _differences(reg.store) == []
    with reg.store.engine.connect() as conn:  # the one-deployed index stays partial through it all
        assert "uq_releases_one_deployed" in {i["name"] for i in inspect(conn).get_indexes("releases")}


def test_an_out_of_date_schema_is_refused_until_db_upgrade(home, reg):
    migrate.downgrade(reg.store, "base")
    with pytest.raises(SchemaOutOfDate, match="registry db upgrade"):
        Registry.open(home)
    done = subprocess.run([REGISTRY, "list"], capture_output=True, text=True)
    assert done.returncode == 1 and "run `registry db upgrade`" in done.stderr
    fixed = subprocess.run([REGISTRY, "db", "upgrade"], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert f"-> {SCHEMA_HEAD}" in fixed.stdout
    Registry.open(home).close()
    again = subprocess.run([REGISTRY, "db", "upgrade"], capture_output=True, text=True)
    assert again.returncode == 0 and f"already at {SCHEMA_HEAD}" in again.stdout


def test_a_newer_schema_is_refused(home, reg):
    with reg.store.write() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    newer = "this database was migrated by a newer Cellar (schema 9999); upgrade Cellar"
    with pytest.raises(SchemaOutOfDate, match=re.escape(newer)):
        Registry.open(home)
    for command in (["db", "upgrade"], ["list"], ["init"]):
        done = subprocess.run([REGISTRY, *command], capture_output=True, text=True)
        assert (done.returncode, done.stderr) == (1, f"error: {newer}\n")
    assert reg.store.schema_revision() == "9999"


def test_a_missing_registry_says_run_init(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotInitialised, match="run `registry init`"):
        Registry.open()
    done = subprocess.run([REGISTRY, "list"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and "run `registry init`" in done.stderr


def test_an_empty_database_says_run_init(tmp_path, db_url, monkeypatch):
    (tmp_path / "h").mkdir()
    monkeypatch.setenv("REGISTRY_DB_URL", db_url)
    with pytest.raises(NotInitialised, match="run `registry init`"):
        Registry.open(tmp_path / "h")


def test_init_is_idempotent_and_upgrades(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("REGISTRY_DB_URL", db_url)
    first = Registry.init(tmp_path / "h")
    second = Registry.init(tmp_path / "h")
    for reg, _ in (first, second):
        reg.close()
    assert first[1].created and not second[1].created
    with Registry.open(tmp_path / "h") as reg, reg.store.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 1
