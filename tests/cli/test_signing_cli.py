"""The signing commands from the command line: one-line errors with exit 1, tables, --json."""

from __future__ import annotations

from tests.conftest import as_json, cli
from tests.integration.test_signing import make_key


def test_keys_trust_sign_approve_show_and_audit(sqlite_home, model_dir, tmp_path):
    alice_key, alice_pub = make_key(tmp_path, "alice")
    bob_key, bob_pub = make_key(tmp_path, "bob")
    cli("push", str(model_dir.manifest))
    cli("env", "add", "prod", "--port", "18090")
    cli("key", "add", "alice", str(alice_pub))
    cli("key", "add", "bob", str(bob_pub))
    out = cli("env", "set", "prod", "--trust", "alice", "--trust", "bob", "--require-signatures", "3", code=1)
    assert "needs at least that many trusted keys" in out.stderr and "Traceback" not in out.stderr
    cli("env", "set", "prod", "--trust", "alice", "--trust", "bob", "--require-signatures", "2")
    assert as_json("env", "set", "prod")["trust"] == {"env": "prod", "trusted": ["alice", "bob"],
                                                      "require_signatures": 2}
    assert [(k["name"], k["trusted_by"]) for k in as_json("key", "list")] == [("alice", ["prod"]), ("bob", ["prod"])]
    assert "Signed support-bot@v1.0 as alice" in cli("sign", "v1.0", "--key", str(alice_key)).stdout
    out = cli("approve", "v1.0", "--env", "prod", "--key", str(bob_key), "--expires", "2000-01-01", code=1)
    assert "is in the past" in out.stderr
    assert "for prod as bob until" in cli("approve", "v1.0", "--env", "prod", "--key", str(bob_key),
                                          "--expires", "7d").stdout
    shown = as_json("show", "v1.0")["signatures"]
    assert [(s["signer"], s["env"], s["verified"]) for s in shown] == [("alice", None, True), ("bob", "prod", True)]
    text = cli("show", "v1.0").stdout
    assert "approved for prod bob" in " ".join(text.split()) and "verified" in text
    out = cli("sign", "v1.0", "--key", str(tmp_path / "missing.pem"), code=1)
    assert "cannot read the key file" in out.stderr
    cli("signature", "v1.0", "--signer", "bob", "-o", str(tmp_path / "s.sig"), code=1)
    cli("signature", "v1.0", "--signer", "bob", "--env", "prod", "-o", str(tmp_path / "s.sig"))
    assert (tmp_path / "s.sig").read_text().startswith('{"mediaType"')
    assert "Nothing was running in prod" in cli("audit", "approvals", "--env", "prod").stdout
    assert as_json("audit", "approvals", "--env", "prod")["release"] is None  # the Docker test promotes
    assert [e["action"] for e in as_json("audit", "--limit", "2")] == ["approve", "sign"]
    table = cli("audit", "--limit", "4").stdout
    assert "key bob " in table and "trusts alice, bob; requires 2" in table
    cli("key", "remove", "bob", "--reason", "left")
    out = cli("checkout", "v1.0", str(tmp_path / "co"))
    assert (tmp_path / "co" / "cellar-record.json").exists() and "3 files" in out.stdout
