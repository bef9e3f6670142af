"""The CLI for verify, gc, backup, restore, export, import, deprecate, delete and list --all:
output, --json keys, exit codes."""

from __future__ import annotations

import json
import os

from tests.conftest import as_json, cli


def _two_versions(model_dir) -> None:
    for version in ("v1.0", "v1.1"):
        model_dir.set_prompt(f"prompt of {version}\n")
        model_dir.write_manifest(version=version)
        cli("push", str(model_dir.manifest))


def test_verify_exit_codes_and_problems_naming_digest_and_versions(sqlite_home, model_dir):
    _two_versions(model_dir)
    assert "intact" in cli("verify").stdout
    assert as_json("verify")["ok"] is True
    shown = json.loads(cli("show", "v1.0", "--json").stdout)
    weights = shown["weights"][0]["digest"]
    blob = sqlite_home / "blobs" / "sha256" / weights[7:9] / weights[9:]
    os.chmod(blob, 0o644)
    blob.write_bytes(b"x" + blob.read_bytes()[1:])
    out = cli("verify", code=1).stdout
    assert f"DAMAGE  corrupt  {weights} used by support-bot@v1.0, support-bot@v1.1" in out
    report = as_json("verify", code=1)
    [problem] = report["problems"]
    assert problem["kind"] == "corrupt" and problem["versions"] == ["support-bot@v1.0", "support-bot@v1.1"]


def test_deprecate_list_all_delete_gc(sqlite_home, model_dir):
    _two_versions(model_dir)
    assert "deprecated support-bot@v1.0" in cli("deprecate", "v1.0", "--reason", "old").stdout
    assert [r["version"] for r in as_json("list")] == ["v1.1"]
    listed = as_json("list", "--all")
    assert [r["version"] for r in listed] == ["v1.1", "v1.0"]
    assert listed[0]["deprecated_at"] is None and listed[1]["deprecated_at"]  # JSON says which
    assert as_json("show", "v1.0")["deprecated_at"] == listed[1]["deprecated_at"]
    assert "(deprecated) " in cli("list", "--all").stdout
    assert "error: deleting support-bot@v1.1 cannot be undone: pass --force" in cli("delete", "v1.1", code=1).stderr
    deleted = as_json("delete", "v1.1", "--force")
    assert deleted["version"] == "v1.1" and len(deleted["blobs_released"]) == 1
    plan = as_json("gc", "--dry-run")
    assert plan["dry_run"] is True and plan["kept_fresh"] == deleted["blobs_released"]  # within the grace period
    assert "0 B freed" in cli("gc").stdout
    audit = cli("audit", "--limit", "3").stdout  # each maintenance event says what it did
    assert "delete" in audit and "reason: " not in audit.split("delete")[0]
    assert "gc" in audit and "0 blobs" in audit


def test_backup_restore_export_import(sqlite_home, model_dir, tmp_path, monkeypatch):
    _two_versions(model_dir)
    backup = as_json("backup", str(tmp_path / "bk"))
    assert backup["blobs_total"] == 3 and backup["problems"] == []
    assert "backed up" in cli("backup", str(tmp_path / "bk")).stdout
    exported = as_json("export", "v1.1", "-o", str(tmp_path / "v1.1.tar"))
    assert exported["blobs"] == 2 and not exported["with_image"]
    audit = cli("audit", "--limit", "2").stdout
    assert "export" in audit and "to /" in audit and "3 blobs (0 copied)" in audit  # incremental

    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path / "restored"))
    restored = as_json("restore", str(tmp_path / "bk"))
    assert restored["ok"] and restored["verify"]["ok"] and restored["blobs_restored"] == 3
    assert [r["version"] for r in as_json("list")] == ["v1.1", "v1.0"]

    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path / "site"))
    cli("init")
    assert "imported support-bot@v1.1" in cli("import", str(tmp_path / "v1.1.tar")).stdout
    assert "already here with identical content" in cli("import", str(tmp_path / "v1.1.tar")).stdout
    assert as_json("import", str(tmp_path / "v1.1.tar"))["created"] is False
    hostile = tmp_path / "hostile.tar"
    hostile.write_bytes(b"\0" * 10240)
    assert "refusing to import" in cli("import", str(hostile), code=1).stderr
