"""Input rules end to end, alike on SQLite and PostgreSQL, and a home that remembers its database.

PostgreSQL enforces VARCHAR lengths and SQLite does not: every case here pushes through
``Registry.push`` on both (the ``reg`` fixture) and expects the same refusal, or the same success
right at the limit.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from registry import home as home_mod
from registry.api import Registry
from registry.errors import CellarError, InvalidInput, ManifestError, NotInitialised
from registry.store.sql import urls
from tests.unit.test_manifest_hostile import laughs, write_raw_safetensors


def refusal(reg: Registry, model_dir, **fields) -> str:
    """The message push refuses ``fields`` with, the manifest's path cut off."""
    model_dir.write_manifest(**fields)
    with pytest.raises(InvalidInput) as err:
        reg.push(model_dir.manifest)
    return str(err.value).replace(str(model_dir.manifest), "cellar.yaml")


def incompressible(n: int, lo: int, hi: int) -> str:
    """``n`` random characters from U+lo..U+hi: PostgreSQL cannot compress them below the index limit."""
    rng = random.Random(n)
    return "".join(chr(rng.randrange(lo, hi)) for _ in range(n))


CJK_1000 = incompressible(1000, 0x4E00, 0x9FFF)  # 3000 bytes: over PostgreSQL's btree limit
TWO_BYTE_1024 = incompressible(1024, 0x100, 0x4FF)  # 2048 bytes: inside it


def blob_count(reg: Registry) -> int:
    return sum(1 for p in reg.home.blobs.rglob("*") if p.is_file() and "tmp" not in p.parts)


# --- tensors and paths: VARCHAR columns ---------------------------------------------------


@pytest.mark.parametrize(("tensors", "expected"), [
    ({"t" * 1025: ("F32", [1], 4)},
     "cellar.yaml: weights[0]: weights/model.safetensors: tensor name: 1025 characters, over the limit of 1024"),
    ({"é" * 1025: ("F32", [1], 4)},
     "cellar.yaml: weights[0]: weights/model.safetensors: tensor name: 1025 characters, over the limit of 1024"),
    ({CJK_1000: ("F32", [1], 4)},
     "cellar.yaml: weights[0]: weights/model.safetensors: tensor name: 3000 bytes as UTF-8, over the limit of 2048"),
    ({"x": ("F32", [1] * 100, 4)},
     ("cellar.yaml: weights[0]: weights/model.safetensors: tensor 'x' has a shape of 300 characters as text, "
      "over the limit of 255")),
])
def test_long_tensor_fields_are_refused_alike_on_both_databases(reg, model_dir, tensors, expected):
    write_raw_safetensors(model_dir.root / "weights" / "model.safetensors", tensors)
    assert refusal(reg, model_dir) == expected
    assert reg.versions() == [] and blob_count(reg) == 0


def test_a_long_dtype_is_refused_alike_on_both_databases(reg, model_dir):
    write_raw_safetensors(model_dir.root / "weights" / "model.safetensors", {"x": ("F" * 40, [1], 4)})
    assert "dtype" in refusal(reg, model_dir)
    assert reg.versions() == []


@pytest.mark.parametrize("name", ["t" * 1024, TWO_BYTE_1024])
def test_tensor_names_right_at_the_limit_are_stored_on_both_databases(reg, model_dir, name):
    write_raw_safetensors(model_dir.root / "weights" / "model.safetensors", {name: ("F32", [1], 4)})
    reg.push(model_dir.manifest)
    assert [t.name for t in reg.show("v1.0").weights[0].tensors] == [name]


def test_weight_paths_at_and_over_the_limit_on_both_databases(reg, model_dir):
    deep = model_dir.root / "weights" / "/".join(["d" * 200] * 5)
    deep.mkdir(parents=True)
    (deep / ("w" * 11)).write_bytes(b"w")  # weights/ + 5 x 201 + 11 = 1024 characters
    reg.push(model_dir.manifest)
    assert max(len(w.path) for w in reg.show("v1.0").weights) == 1024
    (deep / ("w" * 12)).write_bytes(b"w")
    assert refusal(reg, model_dir, version="v1.1") == (
        "cellar.yaml: weights[0]: file name: 1025 characters, over the limit of 1024")


# --- hostile manifests through push and diff ------------------------------------------------


def test_an_alias_bomb_in_a_warmup_body_leaves_nothing_behind(reg, model_dir):
    model_dir.manifest.write_text(
        "model: support-bot\nversion: v1.0\nweights: [weights]\nprompts: {system: prompts/system}\n"
        "runtime:\n  warmup:\n    - method: POST\n      path: /w\n      json:\n" + laughs(3, indent="        "))
    with pytest.raises(ManifestError, match=r"cellar\.yaml:10:13: anchors and aliases"):
        reg.push(model_dir.manifest)
    assert reg.versions() == [] and blob_count(reg) == 0


def test_an_alias_bomb_in_the_manifest_diff_reads(reg, model_dir, tmp_path):
    reg.push(model_dir.manifest)
    model_dir.manifest.write_text("model: support-bot\nversion: v2\nweights: [weights]\n" + laughs(3))
    with pytest.raises(ManifestError, match=r"cellar\.yaml:4:5: anchors and aliases"):
        reg.diff("v1.0", str(model_dir.root))


def test_a_duplicate_key_is_refused_on_push(reg, model_dir):
    model_dir.manifest.write_text(model_dir.manifest.read_text() + "version: v9\n")
    with pytest.raises(ManifestError, match=r"duplicate key 'version' \(first on line 2\); keep one"):
        reg.push(model_dir.manifest)


def test_push_message_with_escapes_is_refused_on_both_databases(reg, model_dir):
    with pytest.raises(ManifestError, match=r"cellar\.yaml: message: control character U\+001B"):
        reg.push(model_dir.manifest, message="all good\x1b[1A\x1b[2K")
    reg.push(model_dir.manifest, message="Friendlier persona\n\n- shorter answers")
    assert reg.versions()[0].message == "Friendlier persona\n\n- shorter answers"


def test_an_env_value_with_a_password_is_refused_on_push(reg, model_dir):
    message = refusal(reg, model_dir, runtime={"env": {"UPSTREAM": "https://bot:hunter2@api.internal/v1"}})
    assert "UPSTREAM is a URL carrying a password" in message and "hunter2" not in message


# --- a home remembers its database ----------------------------------------------------------


def _password_from_environment(monkeypatch, db_url: str, how: str, tmp_path: Path) -> None:
    """Make the password of ``db_url`` reachable the way libpq finds it when the URL has none."""
    url = make_url(db_url)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    if url.password is None:
        return
    if how == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", url.password)
    else:
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"{url.host}:{url.port or 5432}:{url.database}:{url.username}:{url.password}\n")
        pgpass.chmod(0o600)  # libpq ignores a pgpass others can read
        monkeypatch.setenv("PGPASSFILE", str(pgpass))


@pytest.mark.parametrize("how", ["PGPASSWORD", "pgpass"])
def test_a_home_remembers_its_database_without_the_password(tmp_path, db_url, monkeypatch, model_dir, how):
    path = tmp_path / "team-home"
    path.mkdir()
    # what `registry init --db-url URL` does: remember the URL, then create the schema through it
    stored = home_mod.write_config(path, db_url)
    config = (path / "config.json").read_text()
    password = make_url(db_url).password
    assert json.loads(config) == {"db_url": stored}
    assert make_url(stored).password is None and not urls.has_password(stored)
    assert password is None or (f":{password}@" not in config and urls.has_password(db_url))
    _password_from_environment(monkeypatch, db_url, how, tmp_path)
    reg, result = Registry.init(path)
    reg.close()
    assert result.db_url == stored
    with Registry.open(path) as reg:  # no REGISTRY_DB_URL: the config says where
        assert reg.home.db_source == str(path / "config.json")
        reg.push(model_dir.manifest)
        assert [v.version for v in reg.versions()] == ["v1.0"]
    assert not (path / "registry.db").exists() or db_url.startswith("sqlite")


def test_the_environment_overrides_the_config(tmp_path, monkeypatch):
    path = tmp_path / "h"
    path.mkdir()
    home_mod.write_config(path, "postgresql+psycopg://cellar@127.0.0.1:1/remembered")
    monkeypatch.setenv("REGISTRY_DB_URL", f"sqlite:///{tmp_path / 'other.db'}")
    reg, _ = Registry.init(path)
    reg.close()
    assert Registry.open(path).home.db_source == "REGISTRY_DB_URL"


def test_an_unreachable_configured_server_is_an_error_naming_it(tmp_path):
    path = tmp_path / "h"
    path.mkdir()
    home_mod.write_config(path, "postgresql+psycopg://cellar:hunter2@127.0.0.1:1/team")
    with pytest.raises(CellarError) as err:
        Registry.open(path)
    assert not isinstance(err.value, NotInitialised)
    assert "postgresql+psycopg://cellar@127.0.0.1:1/team" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert sorted(os.listdir(path)) == ["config.json"]  # no stray registry.db, nothing else


def test_a_home_without_its_database_never_creates_one(tmp_path):
    path = tmp_path / "h"
    path.mkdir()
    with pytest.raises(NotInitialised, match=r"no registry database in .*: run `registry init` \(for PostgreSQL"):
        Registry.open(path)
    assert os.listdir(path) == []


def test_a_broken_config_names_the_file(tmp_path):
    path = tmp_path / "h"
    path.mkdir()
    (path / "config.json").write_text("{db_url: nope")
    with pytest.raises(InvalidInput, match=r"config\.json: cannot read the registry's configuration"):
        Registry.open(path)
