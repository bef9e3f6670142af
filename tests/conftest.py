"""Shared fixtures: real SQLite files, a real PostgreSQL server, real git repos, real Docker.

Only the clock is mocked (``frozen_clock``). Tests that need PostgreSQL or Docker skip on a
developer machine without them, and fail under CI=true, where .ci/run starts both.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests import helpers

PG_ADMIN_URL = os.environ.get(
    "CELLAR_TEST_PG_URL", "postgresql+psycopg://cellar:cellar@127.0.0.1:5432/cellar_test"
)
IN_CI = os.environ.get("CI") == "true"


def need(what: str, reason: str):
    """Skip locally, fail in CI: CI must run every test."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's registry, actor or git identity."""
    for var in ("REGISTRY_HOME", "REGISTRY_DB_URL", "REGISTRY_ACTOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("REGISTRY_ACTOR", "tester")


@pytest.fixture
def frozen_clock(monkeypatch):
    """A clock the test moves by hand: ``frozen_clock.tick(seconds)``."""

    class Clock:
        at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

        def now(self):
            return self.at

        def tick(self, seconds: float = 1):
            self.at += timedelta(seconds=seconds)

    clock = Clock()
    monkeypatch.setattr("registry.clock.now", clock.now)
    return clock


def _pg_database():
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cellar_t_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server down, driver missing, bad credentials
        admin.dispose()
        need("PostgreSQL", f"{PG_ADMIN_URL}: {str(exc).splitlines()[0]} (run scripts/setup-postgres.sh)")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    return admin, name, url


@contextlib.contextmanager
def database_like(kind: str, sqlite_file: Path):
    """A new, empty database of ``kind`` (a URL or "sqlite"/"postgresql"): the SQLite file
    ``sqlite_file``, or a new PostgreSQL database, dropped afterwards."""
    if kind.startswith("sqlite"):
        yield f"sqlite:///{sqlite_file}"
        return
    from sqlalchemy import text

    admin, name, url = _pg_database()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    with database_like(request.param, tmp_path / "registry.db") as url:
        yield url


@pytest.fixture
def home(tmp_path, db_url, monkeypatch) -> Path:
    """An initialised registry home on the parametrised database; REGISTRY_HOME points at it."""
    from registry.api import Registry

    path = tmp_path / "home"
    monkeypatch.setenv("REGISTRY_HOME", str(path))
    monkeypatch.setenv("REGISTRY_DB_URL", db_url)
    reg, _ = Registry.init(path)
    reg.close()
    return path


@pytest.fixture
def reg(home):
    from registry.api import Registry

    with Registry.open(home) as r:
        yield r


@pytest.fixture
def sqlite_home(tmp_path, monkeypatch) -> Path:
    """An initialised registry on SQLite only (for tests that are about files, not databases)."""
    from registry.api import Registry

    path = tmp_path / "home"
    monkeypatch.setenv("REGISTRY_HOME", str(path))
    reg, _ = Registry.init(path)
    reg.close()
    return path


@pytest.fixture
def model_dir(tmp_path) -> helpers.ModelDir:
    """A folder with a safetensors file, a prompt and a cellar.yaml, ready to push."""
    return helpers.ModelDir.create(tmp_path / "model")


@pytest.fixture
def git_repo(tmp_path):
    """A real git repository with an identity, for provenance tests."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    return repo
