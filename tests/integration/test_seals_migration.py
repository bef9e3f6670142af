"""Migration 0004 (seals) on SQLite and PostgreSQL: columns and table added, a real downgrade.

Until the probe-runs migration (0003) lands, 0004's down_revision names a placeholder; this
test runs a copy of migrations/ in which 0004 follows whatever the newest other revision is.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

import migrations
from registry.store.sql import Store

SEALED = ("events", "versions", "releases", "environments")


@pytest.fixture
def script_location(tmp_path) -> Path:
    copy = tmp_path / "migrations"
    shutil.copytree(Path(migrations.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    seals = copy / "versions" / "0004_seals.py"
    revisions = set()
    for path in (copy / "versions").glob("*.py"):
        if path != seals and (m := re.search(r'^revision = "([^"]+)"', path.read_text(), re.M)):
            revisions.add(m[1])
    source = seals.read_text()
    declared = re.search(r'^down_revision = "([^"]+)"', source, re.M)[1]
    if declared not in revisions:  # the placeholder: chain after the newest revision there is
        source = source.replace(f'down_revision = "{declared}"', f'down_revision = "{max(revisions)}"')
        seals.write_text(source)
    return copy


def _run(store: Store, location: Path, action, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, revision)


def _columns(store: Store, table: str) -> set[str]:
    return {c["name"] for c in inspect(store.engine).get_columns(table)}


def test_seals_upgrade_and_downgrade_keep_data_and_the_one_deployed_index(db_url, script_location):
    store = Store(db_url)
    try:
        _run(store, script_location, command.upgrade, "0002")
        now = datetime.now(UTC)
        with store.write() as conn:
            for revision, status in ((1, "superseded"), (2, "deployed")):
                conn.execute(text(
                    "INSERT INTO releases (env, revision, operation, model, version, manifest_digest, status, actor, "
                    "started_at, healthy) VALUES ('prod', :r, 'promote', 'bot', 'v1', 'sha256:x', :s, 'a', :t, true)"),
                    {"r": revision, "s": status, "t": now})
        _run(store, script_location, command.upgrade, "0004")
        for table in SEALED:
            assert "mac" in _columns(store, table)
        assert {"id", "count", "head", "mac"} == _columns(store, "audit_head")
        with store.write() as conn:
            conn.execute(text("INSERT INTO audit_head (id, count, head, mac) VALUES (1, 0, 'h', 'm')"))
        with pytest.raises(Exception), store.write() as conn:  # one row only
            conn.execute(text("INSERT INTO audit_head (id, count, head, mac) VALUES (2, 0, 'h', 'm')"))

        _run(store, script_location, command.downgrade, "0002")
        for table in SEALED:
            assert "mac" not in _columns(store, table)
        assert "audit_head" not in inspect(store.engine).get_table_names()
        with store.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM releases")).scalar() == 2
        with pytest.raises(Exception), store.write() as conn:  # still one deployed release per env
            conn.execute(text("UPDATE releases SET status = 'deployed' WHERE revision = 1"))
        with store.write() as conn:  # and the index is still partial: many superseded are fine
            conn.execute(text("UPDATE releases SET status = 'superseded' WHERE revision = 2"))
        _run(store, script_location, command.upgrade, "0004")
        assert "mac" in _columns(store, "releases")
    finally:
        store.close()
