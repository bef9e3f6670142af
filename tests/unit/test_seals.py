"""Seals: every edit someone with the database alone can make is found, naming the row."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest

from registry.errors import AuditBroken, KeyFileError, NotInitialised
from registry.formats import canonical
from registry.trust import seals
from registry.trust.seals import Key, check_record, load_or_create_key

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


class Record:
    """A synthetic database written the way the lead wires Cellar: each row sealed on write,
    each change's event carrying the digests of the rows it wrote, the signed head moved on."""

    def __init__(self, key: Key):
        self.key = key
        self.events: list[dict] = []
        self.head: dict | None = None
        self.versions: list[dict] = []
        self.releases: list[dict] = []
        self.environments: list[dict] = []

    def event(self, action: str, obj: str, detail: dict, *, actor: str = "alice") -> None:
        prev = self.events[-1]["hash"] if self.events else "0" * 64
        row = {"id": len(self.events) + 1, "at": T0 + timedelta(seconds=len(self.events)), "actor": actor,
               "action": action, "object": obj, "detail": canonical.dumps(detail), "prev_hash": prev}
        row["hash"] = _chain(prev, row)
        row["mac"] = seals.event_mac(self.key, row["id"], row["hash"])
        self.events.append(row)
        self.head = {"count": row["id"], "head": row["hash"],
                     "mac": seals.head_mac(self.key, row["id"], row["hash"])}

    def push(self, model: str, version: str, env_vars: dict) -> None:
        manifest = canonical.dumps({"model": model, "version": version, "runtime": {"env": env_vars},
                                    "weights": [{"path": "w.safetensors", "digest": "sha256:" + "1" * 64}]})
        row = {"model": model, "version": version, "manifest": manifest,
               "manifest_digest": "sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
               "message": "first", "actor": "alice", "created_at": T0, "provenance": None}
        row["mac"] = seals.version_mac(self.key, row)
        self.versions.append(row)
        self.event("push", f"{model}@{version}", {"manifest_digest": row["manifest_digest"]})

    def env_add(self, name: str, port: int, *, default: bool = False) -> None:
        written = []
        if default:
            for env in self.environments:
                if env["is_default"]:
                    env["is_default"] = False
                    written.append(env)
        row = {"name": name, "port": port, "bind_addr": "127.0.0.1", "docker_host": None, "health_timeout_s": None,
               "keep": 3, "protected": name == "prod", "is_default": default, "created_at": T0}
        self.environments.append(row)
        written.append(row)
        for env in written:
            env["mac"] = seals.row_mac(self.key, "environment", env)
        self.event("env-add", name, {"rows": seals.bindings("environment", written)})

    def promote(self, env: str, version: str, *, actor: str = "alice") -> None:
        revision = sum(r["env"] == env for r in self.releases) + 1
        pending = {"env": env, "revision": revision, "operation": "promote", "model": "bot", "version": version,
                   "manifest_digest": next(v["manifest_digest"] for v in self.versions if v["version"] == version),
                   "image_digest": "sha256:" + "2" * 64, "status": "pending-deploy", "actor": actor,
                   "reason": None, "container_id": None, "started_at": T0, "finished_at": None,
                   "rollback_of": None, "healthy": False, "error": None}
        self._write_release(pending)  # begin: no event yet, the seal alone protects it
        written = [r for r in self.releases if r["env"] == env and r["status"] == "deployed"]
        for r in written:
            r["status"] = "superseded"
        pending.update(status="deployed", healthy=True, container_id="c" * 64, finished_at=T0 + timedelta(seconds=5))
        written.append(pending)
        for r in written:
            r["mac"] = seals.row_mac(self.key, "release", r)
        self.event("promote", f"bot@{version}", {"revision": revision, "rows": seals.bindings("release", written)},
                   actor=actor)

    def _write_release(self, row: dict) -> None:
        row["mac"] = seals.row_mac(self.key, "release", row)
        self.releases.append(row)

    def check(self, key: Key | None = None) -> list[seals.SealProblem]:
        return check_record(key or self.key, events=self.events, head=self.head, versions=self.versions,
                            releases=self.releases, environments=self.environments)


def _chain(prev: str, row: dict) -> str:
    body = {k: row[k] for k in ("id", "actor", "action", "object", "detail")}
    body["at"] = row["at"].isoformat()
    return hashlib.sha256((prev + canonical.dumps(body)).encode()).hexdigest()


def _rehash_from(record: Record, index: int) -> None:
    """What an attacker with the database does: recompute every hash after an edit (no key)."""
    for i in range(index, len(record.events)):
        prev = record.events[i - 1]["hash"] if i else "0" * 64
        record.events[i]["prev_hash"] = prev
        record.events[i]["hash"] = _chain(prev, record.events[i])


@pytest.fixture
def key(tmp_path) -> Key:
    return load_or_create_key(tmp_path)


@pytest.fixture
def record(key) -> Record:
    rec = Record(key)
    rec.env_add("staging", 8001, default=True)
    rec.env_add("prod", 8002, default=True)
    rec.push("bot", "v1", {"MODE": "safe"})
    rec.push("bot", "v2", {"MODE": "safe"})
    rec.promote("prod", "v1", actor="alice")
    rec.promote("prod", "v2", actor="bob")
    return rec


def _objects(problems) -> set[str]:
    return {p.object for p in problems}


def test_an_untouched_record_has_no_problems(record):
    assert record.check() == []


# --- the key file -----------------------------------------------------------------------


def test_the_key_file_is_created_with_mode_0600_and_loaded_again(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        key = load_or_create_key(tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / seals.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path).secret == key.secret and len(key.secret) == 32
    assert [p.name for p in tmp_path.iterdir()] == [seals.KEY_FILE]  # no temp file left behind
    assert key.secret.hex() not in repr(key)


def test_registry_key_file_points_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv(seals.KEY_ENV, str(tmp_path / "keys" / "cellar.key"))
    (tmp_path / "keys").mkdir()
    key = load_or_create_key(tmp_path / "home")
    assert key.path == tmp_path / "keys" / "cellar.key" and key.path.exists()


def test_a_missing_key_is_not_created_unless_asked(tmp_path):
    with pytest.raises(NotInitialised, match="registry init"):
        load_or_create_key(tmp_path, create=False)
    assert not (tmp_path / seals.KEY_FILE).exists()


def test_a_key_open_to_others_is_refused(tmp_path):
    load_or_create_key(tmp_path)
    (tmp_path / seals.KEY_FILE).chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_a_malformed_key_file_is_refused(tmp_path):
    path = tmp_path / seals.KEY_FILE
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a Cellar signing key"):
        load_or_create_key(tmp_path)


def test_a_second_creation_keeps_the_first_key(tmp_path):
    first = load_or_create_key(tmp_path)
    seals._create(tmp_path / seals.KEY_FILE)  # a racing `registry init` that lost
    assert load_or_create_key(tmp_path).secret == first.secret


def test_verify_compares_in_constant_time(key, monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(seals.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    mac = key.sign(b"data")
    assert key.matches(b"data", mac) and not key.matches(b"datA", mac) and not key.matches(b"data", None)
    assert len(calls) == 2


def test_a_seal_names_its_key_and_only_that_key_verifies_it(key, tmp_path):
    (tmp_path / "other").mkdir()
    other = load_or_create_key(tmp_path / "other")
    mac = key.sign(b"x")
    assert mac.startswith(key.id + ":") and key.id != other.id
    assert not other.matches(b"x", mac)


# --- tampering with the audit log ----------------------------------------------------------


def test_a_rehashed_chain_is_found(record):
    record.events[2]["actor"] = "mallory"
    _rehash_from(record, 2)
    problems = record.check()
    assert {"event:3", "event:4", "event:5", "event:6"} <= _objects(problems)
    assert all(p.kind == "forged" for p in problems if p.object.startswith("event:"))
    assert "event:3 was edited outside Cellar" in problems[0].message


def test_a_forged_appended_event_is_found(record):
    record.event("promote", "bot@v1", {"rows": {}})
    record.events[-1]["mac"] = None  # written without the key
    record.head = copy.deepcopy(record.head)
    problems = record.check()
    assert "event:7" in _objects(problems) and problems[0].kind == "unsealed"


def test_an_appended_event_with_the_head_left_behind_is_found(record):
    head = record.head
    record.event("promote", "bot@v1", {})
    record.events[-1]["mac"] = "0" * 8 + ":" + "0" * 64
    record.head = head
    kinds = {(p.object, p.kind) for p in record.check()}
    assert ("event:7", "other-key") in kinds and ("event:7", "appended") in kinds


def test_deleting_the_newest_events_is_found(record):
    del record.events[-2:]
    problems = record.check()
    assert [(p.object, p.kind) for p in problems if p.kind == "truncated"] == [("event:5", "truncated")]


def test_a_forged_head_is_found(record):
    del record.events[-1]
    record.head = {"count": 5, "head": record.events[-1]["hash"], "mac": "f" * 73}
    assert ("audit:head", "other-key") in {(p.object, p.kind) for p in record.check()}


def test_a_wrong_key_is_told_apart_from_a_forgery(record, tmp_path):
    (tmp_path / "other").mkdir()
    problems = record.check(load_or_create_key(tmp_path / "other"))
    assert problems and all(p.kind == "other-key" for p in problems)
    assert f"this home's key is {load_or_create_key(tmp_path / 'other').id}" in problems[0].message


# --- tampering with versions ------------------------------------------------------------------


def test_an_edited_manifest_is_found_with_or_without_its_digest(record):
    version = record.versions[1]
    manifest = json.loads(version["manifest"])
    manifest["runtime"]["env"]["MODE"] = "attacker-controlled"
    version["manifest"] = canonical.dumps(manifest)
    assert {(p.object, p.kind) for p in record.check()} == {("version:bot@v2", "digest"), ("version:bot@v2", "forged")}
    version["manifest_digest"] = canonical.digest(manifest)  # the digest made to match
    assert {(p.object, p.kind) for p in record.check()} == {("version:bot@v2", "forged")}
    with pytest.raises(AuditBroken, match="bot@v2.*refusing"):
        seals.check_version(record.key, version)


def test_an_edited_version_actor_or_message_is_found(record):
    record.versions[0]["actor"] = "mallory"
    record.versions[1]["message"] = "harmless"
    assert _objects(record.check()) == {"version:bot@v1", "version:bot@v2"}


def test_require_version_passes_an_untouched_version(record):
    seals.check_version(record.key, record.versions[0])


def test_manifest_matches_needs_no_key(record):
    v = record.versions[0]
    assert seals.manifest_matches(v["manifest"], v["manifest_digest"])
    assert not seals.manifest_matches(v["manifest"] + " ", v["manifest_digest"])


# --- tampering with releases and environments ------------------------------------------------


def test_an_edited_release_row_is_found(record):
    record.releases[1]["actor"] = "mallory"  # `history` would show a forged actor
    problems = record.check()
    assert [(p.object, p.kind) for p in problems] == [("release:prod#2", "forged")]
    assert "release:prod#2 was edited outside Cellar" in problems[0].message


def test_a_replayed_older_copy_of_a_release_row_is_found(record, key):
    rec = Record(key)
    rec.env_add("prod", 8002)
    rec.push("bot", "v1", {})
    rec.push("bot", "v2", {})
    rec.promote("prod", "v1")
    old_copy = copy.deepcopy(rec.releases[0])  # deployed, validly sealed back then
    rec.promote("prod", "v2")
    rec.releases[0] = old_copy  # put back: its seal is still valid
    problems = rec.check()
    assert [(p.object, p.kind) for p in problems] == [("release:prod#1", "stale")]


def test_a_deleted_release_row_is_found(record):
    del record.releases[0]
    assert [(p.object, p.kind) for p in record.check()] == [("release:prod#1", "deleted")]


def test_a_seal_moved_to_another_row_is_found(record):
    record.releases[1]["mac"] = record.releases[0]["mac"]
    record.environments[1]["mac"] = record.environments[0]["mac"]
    assert _objects(record.check()) == {"release:prod#2", "environment:prod"}


def test_a_pending_release_rests_on_its_seal(record):
    pending = {**record.releases[0], "revision": 3, "status": "pending-deploy", "mac": None}
    pending["mac"] = seals.row_mac(record.key, "release", pending)
    record.releases.append(pending)
    assert record.check() == []
    pending["actor"] = "mallory"
    assert _objects(record.check()) == {"release:prod#3"}


@pytest.mark.parametrize(("column", "value"), [("port", 9999), ("docker_host", "tcp://evil:2375"),
                                               ("protected", False), ("is_default", True)])
def test_an_edited_environment_row_is_found(record, column, value):
    env = next(e for e in record.environments if e["name"] == ("prod" if column != "is_default" else "staging"))
    env[column] = value
    assert [p.object for p in record.check()] == [f"environment:{env['name']}"]


def test_an_unsealed_row_is_reported_as_such(record):
    record.environments[0]["mac"] = None
    problems = record.check()
    assert [(p.object, p.kind) for p in problems] == [("environment:staging", "unsealed")]


def test_a_removed_environment_that_comes_back_is_found(record):
    gone = record.environments.pop(0)
    record.event("env-remove", "staging", {"rows": seals.bindings("environment", [], deleted=[gone])})
    assert record.check() == []
    record.environments.append(gone)  # restored by hand, seal and all
    assert [(p.object, p.kind) for p in record.check()] == [("environment:staging", "stale")]


# --- what the database hands back ---------------------------------------------------------------


def test_digests_do_not_depend_on_how_the_database_returns_times_and_enums():
    from registry.ledger import ReleaseStatus

    aware = {"env": "prod", "revision": 1, "status": ReleaseStatus.DEPLOYED, "started_at": T0}
    naive = {"env": "prod", "revision": 1, "status": "deployed", "started_at": T0.replace(tzinfo=None), "id": 7}
    assert seals.canonical_row_digest("release", aware) == seals.canonical_row_digest("release", naive)
    assert seals.canonical_row_digest("release", aware) != seals.canonical_row_digest("environment", aware)
