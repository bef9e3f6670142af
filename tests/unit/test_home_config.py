"""Where the database URL comes from: REGISTRY_DB_URL, else <home>/config.json, else registry.db."""

from __future__ import annotations

import json

import pytest

from registry import home as home_mod
from registry.errors import InvalidInput, NotInitialised
from registry.store.sql import urls


def test_the_default_is_a_sqlite_file_in_the_home(tmp_path):
    assert home_mod.resolve_db_url(tmp_path) == (f"sqlite:///{tmp_path / 'registry.db'}", "default")


def test_the_config_then_the_environment(tmp_path, monkeypatch):
    home_mod.write_config(tmp_path, "postgresql+psycopg://team@db.internal/cellar")
    assert home_mod.resolve_db_url(tmp_path) == ("postgresql+psycopg://team@db.internal/cellar",
                                                 str(tmp_path / "config.json"))
    monkeypatch.setenv("REGISTRY_DB_URL", "sqlite:////elsewhere.db")
    assert home_mod.resolve_db_url(tmp_path) == ("sqlite:////elsewhere.db", "REGISTRY_DB_URL")


@pytest.mark.parametrize(("url", "stored"), [
    ("postgresql+psycopg://team:hunter2@db:5433/cellar", "postgresql+psycopg://team@db:5433/cellar"),
    ("postgresql+psycopg://team@db/cellar?password=hunter2&sslmode=require",
     "postgresql+psycopg://team@db/cellar?sslmode=require"),
    ("postgresql://team:p%40ss@db/cellar", "postgresql://team@db/cellar"),
    ("sqlite:////srv/cellar/registry.db", "sqlite:////srv/cellar/registry.db"),
])
def test_the_password_is_never_stored(tmp_path, url, stored):
    assert home_mod.write_config(tmp_path, url) == stored
    text = (tmp_path / "config.json").read_text()
    assert json.loads(text) == {"db_url": stored} and "hunter2" not in text and "p%40ss" not in text
    assert urls.has_password(url) == (url != stored)


def test_writing_again_replaces_the_url_and_keeps_other_settings(tmp_path):
    (tmp_path / "config.json").write_text('{"db_url": "sqlite:////a.db", "later": 1}')
    home_mod.write_config(tmp_path, "sqlite:////b.db")
    assert json.loads((tmp_path / "config.json").read_text()) == {"db_url": "sqlite:////b.db", "later": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left


def test_a_url_that_is_not_one_is_refused_masked(tmp_path):
    with pytest.raises(InvalidInput, match=r"is not a database URL") as err:
        home_mod.write_config(tmp_path, "team:hunter2@db")
    assert "hunter2" not in str(err.value) and not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("text", ["{not json", "[1]", '{"db_url": 7}', "\xff"])
def test_a_broken_config_names_its_file(tmp_path, text):
    (tmp_path / "config.json").write_text(text, encoding="latin-1")
    with pytest.raises(InvalidInput, match=rf"^{tmp_path / 'config.json'}: "):
        home_mod.resolve_db_url(tmp_path)


def test_init_takes_db_url_first(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_DB_URL", "sqlite:////env.db")
    home = home_mod.for_init(tmp_path, db_url="postgresql+psycopg://team@db/cellar")
    assert (home.db_url, home.db_source) == ("postgresql+psycopg://team@db/cellar", "--db-url")
    assert home_mod.for_init(tmp_path).db_source == "REGISTRY_DB_URL"


def test_finding_a_home_never_creates_its_sqlite_file(tmp_path, monkeypatch):
    (tmp_path / ".cellar").mkdir()
    with pytest.raises(NotInitialised, match="run `registry init`"):
        home_mod.locate(start=tmp_path)
    monkeypatch.setenv("REGISTRY_DB_URL", f"sqlite:///{tmp_path / 'typo.db'}")
    with pytest.raises(NotInitialised, match=r"typo\.db \(named by REGISTRY_DB_URL\): run `registry init`"):
        home_mod.locate(start=tmp_path)
    assert not (tmp_path / "typo.db").exists() and list((tmp_path / ".cellar").iterdir()) == []
