"""Signatures and trust (issue 25) on both databases: sign, check out and verify with the
upstream model_signing CLI (offline, in a network namespace without a route where possible),
and each way a version can fail an environment's trust policy, refused with its reason.

The promote cases against the real Docker engine are in test_signing_docker.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import AlreadyExists, AuditBroken, CorruptBlob, KeyFileError, NotFound, PolicyNotMet
from registry.signing import bundles
from registry.signing import keys as signing_keys
from tests.conftest import IMAGE, cli, need, on_fake, push_versions, sql

UPSTREAM = Path(sys.executable).with_name("model_signing")
REGISTRY = [sys.executable, "-m", "cli.main"]


def make_key(folder: Path, name: str, *, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """An EC P-256 key pair made here: (private key file, public key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    crypt = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def offline(argv: list[str]) -> list[str]:
    """``argv`` in a new network namespace (no route anywhere) when this machine allows one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *argv]
    if subprocess.run([unshare or "unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare or "unshare", "-rn", *argv]
    return argv


def upstream_verify(folder: Path, sig: Path, pub: Path, *, in_process: bool = True) -> subprocess.CompletedProcess:
    """``model_signing verify key FOLDER --signature SIG --public_key PUB``: the upstream CLI's own
    command (its click group, same arguments, same code path) run here, or, with ``in_process=False``,
    as its console script in a network namespace without a route. In-process saves an interpreter
    that imports sigstore per call (0.8 s of CPU); the end-to-end test runs the real process."""
    argv = ["verify", "key", str(folder), "--signature", str(sig), "--public_key", str(pub)]
    if not in_process:
        return subprocess.run(offline([str(UPSTREAM), *argv]), capture_output=True, text=True, timeout=60)
    from click.testing import CliRunner
    from model_signing._cli import main as upstream_main

    done = CliRunner().invoke(upstream_main, argv, prog_name="model_signing")
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return subprocess.CompletedProcess(argv, done.exit_code, done.stdout, done.stderr)


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: make_key(folder, name) for name in ("alice", "bob", "carol")}


@pytest.fixture
def signed(home, model_dir, fake, keys):
    """v1.0 and v1.1 pushed (image pinned through the fake engine); alice, bob, carol registered;
    env staging and prod (prod trusts alice and bob, requires 2)."""
    reg = on_fake(home, fake)
    push_versions(reg, model_dir, "v1.0", "v1.1", image=IMAGE)
    for name, (_, pub) in keys.items():
        reg.add_key(name, pub)
    reg.add_env("staging", port=18081)
    reg.add_env("prod", port=18082)
    reg.set_trust("prod", trust=["alice", "bob"], require_signatures=2)
    yield reg
    reg.close()


# --- sign, check out, verify upstream ---------------------------------------------------------


def test_sign_checkout_and_the_upstream_tool_verifies_offline(sqlite_home, model_dir, tmp_path, monkeypatch):
    """Every step as a user runs it, each process in a network namespace without a route."""
    alice_key, alice_pub = make_key(tmp_path, "alice", passphrase=b"correct horse")
    monkeypatch.setenv("REGISTRY_SIGN_PASSPHRASE", "correct horse")

    def registry(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(offline([*REGISTRY, *args]), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out

    registry("key", "add", "alice", str(alice_pub))
    registry("push", str(model_dir.manifest), "--sign-key", str(alice_key))
    out, sig = tmp_path / "checkout", tmp_path / "alice.sig"
    registry("checkout", "support-bot@v1.0", str(out))
    registry("signature", "support-bot@v1.0", "--signer", "alice", "-o", str(sig))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "cellar-record.json", "prompts/system", "weights/model.safetensors"]
    record = json.loads((out / "cellar-record.json").read_text())
    assert record["runtime"]["port"] == 8080 and "probes" in record and "image" in record

    ok = upstream_verify(out, sig, alice_pub, in_process=False)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stderr
    # the audit log names the signer and the key
    events = json.loads(registry("audit", "--action", "sign", "--json").stdout)
    assert events[0]["detail"]["signer"] == "alice" and events[0]["detail"]["fingerprint"].startswith("sha256:")


@pytest.mark.parametrize("path", ["weights/model.safetensors", "prompts/system", "cellar-record.json"])
def test_the_upstream_tool_refuses_a_checkout_with_a_flipped_byte(reg, model_dir, keys, tmp_path, path):
    alice_key, alice_pub = keys["alice"]
    reg.push(model_dir.manifest)
    reg.add_key("alice", alice_pub)
    reg.sign("v1.0", key=alice_key)
    out, sig = tmp_path / "co", tmp_path / "alice.sig"
    reg.checkout("v1.0", out)
    reg.write_signature("v1.0", signer="alice", out=sig)
    original = (out / path).read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    (out / path).write_bytes(bytes(data))
    bad = upstream_verify(out, sig, alice_pub)
    assert bad.returncode == 1 and "Hash mismatch for" in bad.stderr and path in bad.stderr
    (out / path).write_bytes(original)
    assert upstream_verify(out, sig, alice_pub).returncode == 0
    assert upstream_verify(out, sig, keys["bob"][1]).returncode == 1  # another key does not verify it


def test_an_approval_verifies_upstream_too(signed, keys, tmp_path):
    signed.approve("v1.1", env="prod", key=keys["bob"][0], expires="7d")
    out, sig = tmp_path / "co", tmp_path / "bob.sig"
    signed.checkout("v1.1", out)
    signed.write_signature("v1.1", signer="bob", env="prod", out=sig)
    assert upstream_verify(out, sig, keys["bob"][1]).returncode == 0
    with pytest.raises(NotFound, match="has no signature by bob"):
        signed.write_signature("v1.1", signer="bob", out=tmp_path / "none.sig")  # bob approved, never signed


def test_checkout_refuses_a_folder_with_files_and_leaves_nothing_on_a_damaged_blob(reg, model_dir, tmp_path):
    reg.push(model_dir.manifest)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("mine")
    with pytest.raises(Exception, match="not an empty folder"):
        reg.checkout("v1.0", busy)
    weight = reg.show("v1.0").weights[0].digest
    blob = reg.blobs.path(weight)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(Exception, match="no longer matches its digest"):
        reg.checkout("v1.0", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() and not list(tmp_path.glob(".fresh.tmp-*"))


# --- keys -----------------------------------------------------------------------------------


def test_keys_are_named_once_and_private_keys_never_stored(reg, keys, tmp_path, monkeypatch):
    alice_key, alice_pub = keys["alice"]
    added = reg.add_key("alice", alice_pub)
    assert added.fingerprint.startswith("sha256:") and "PRIVATE" not in added.public_key
    with pytest.raises(AlreadyExists, match="registered already, as 'alice'"):
        reg.add_key("alice2", alice_pub)  # the same key under a second name would count twice
    with pytest.raises(KeyFileError, match="is a private key"):
        reg.add_key("oops", alice_key)
    enc, _ = make_key(tmp_path, "enc", passphrase=b"pw")
    with pytest.raises(KeyFileError, match="export its passphrase as .REGISTRY_SIGN_PASSPHRASE"):
        signing_keys.load_private(enc, {})
    with pytest.raises(KeyFileError, match="does not open it"):
        signing_keys.load_private(enc, {"REGISTRY_SIGN_PASSPHRASE": "no"})
    assert signing_keys.load_private(enc, {"REGISTRY_SIGN_PASSPHRASE": "pw"}).passphrase == b"pw"
    removed = reg.remove_key("alice", reason="rotated")
    assert removed.name == "alice" and reg.keys() == []
    assert [e.action for e in reg.audit(limit=2)] == ["key-remove", "key-add"]


def test_signing_needs_a_registered_key(reg, model_dir, keys):
    reg.push(model_dir.manifest)
    with pytest.raises(NotFound, match="is not registered: add its public key first"):
        reg.sign("v1.0", key=keys["carol"][0])
    assert reg.signatures("v1.0") == []


# --- the trust policy ---------------------------------------------------------------------


def test_two_trusted_keys_meet_the_policy_and_show_lists_them(signed, keys):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.approve("v1.1", env="prod", key=keys["bob"][0])
    check = signed.check_policy("v1.1", env="prod")
    assert check.ok and sorted(check.counted) == ["alice", "bob"]
    result = signed.promote("v1.1", env="prod")
    assert result.release.version == "v1.1"
    event = signed.audit(action="promote", limit=1)[0]  # the deploy's own event names who vouched
    assert sorted(event.detail["signed_by"]) == ["alice", "bob"]
    assert event.detail["signed_by"]["alice"] == signed.keys()[0].fingerprint
    shown = {(s.signer, s.env, s.verified) for s in signed.signatures("v1.1")}
    assert shown == {("alice", None, True), ("bob", "prod", True)}
    text = cli("show", "support-bot@v1.1").stdout
    assert "signed" in text and "approved for prod" in text and "verified" in text
    record = signed.approvals("prod")
    assert record.release is not None and record.release.version == "v1.1"
    assert {s.signer for s in record.signatures} == {"alice", "bob"}


def refused(reg, ref: str, env: str, match: str) -> None:
    before = reg.history(env)
    with pytest.raises(PolicyNotMet, match=match):
        reg.promote(ref, env=env)
    assert reg.history(env) == before  # nothing recorded, nothing deployed


def test_an_untrusted_key_does_not_count(signed, keys):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.sign("v1.1", key=keys["carol"][0])
    refused(signed, "v1.1", "prod", r"has 1 \(alice\); missing 1 more from: bob; .*carol's signature: the key "
                                    r"carol is not trusted by prod")


def test_the_same_key_twice_counts_once(signed, keys):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.approve("v1.1", env="prod", key=keys["alice"][0])
    refused(signed, "v1.1", "prod", r"has 1 \(alice\); missing 1 more from: bob; not counted: alice: "
                                    r"the same key again")


def test_an_approval_for_another_environment_does_not_count(signed, keys):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.approve("v1.1", env="staging", key=keys["bob"][0])
    refused(signed, "v1.1", "prod", "bob's approval is for staging, not prod")


def test_an_expired_approval_does_not_count(signed, keys, frozen_clock):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.approve("v1.1", env="prod", key=keys["bob"][0], expires="2h")
    assert signed.check_policy("v1.1", env="prod").ok
    frozen_clock.tick(timedelta(hours=3).total_seconds())
    refused(signed, "v1.1", "prod", "bob's approval for prod expired at")


def test_a_signature_edited_in_the_database_is_refused(signed, keys):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.approve("v1.1", env="staging", key=keys["bob"][0])
    sql(signed, "UPDATE signatures SET env = 'prod' WHERE signer = 'bob'")  # move staging's approval to prod
    refused(signed, "v1.1", "prod", "bob's approval is refused: its recorded version, environment or expiry is "
                                    "not what was signed")
    sql(signed, "UPDATE signatures SET bundle = replace(bundle, substr(bundle, 200, 8), 'AAAAAAAA') "
                "WHERE signer = 'alice'")
    refused(signed, "v1.1", "prod", "alice's signature is refused: the signature does not verify")


def test_an_edited_record_is_refused(signed, keys):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.sign("v1.1", key=keys["bob"][0])
    assert signed.check_policy("v1.1", env="prod").ok
    sql(signed, "UPDATE versions SET manifest = replace(manifest, :was, :now) WHERE version = 'v1.1'",
        was='"port":8080', now='"port":8081')
    with pytest.raises(AuditBroken, match="support-bot@v1.1"):
        signed.promote("v1.1", env="prod")
    assert signed.history("prod") == []


def test_a_record_that_is_not_what_was_signed_is_named():
    """Below the seals (a record edited with its digest, by someone with the key): the signature
    names what no longer matches."""
    want = {"weights/w": "sha256:" + "a" * 64, "cellar-record.json": "sha256:" + "b" * 64}
    signed = {**want, "cellar-record.json": "sha256:" + "c" * 64}
    assert bundles.mismatch(signed, want) == "the record (image, runtime, probes) is not what was signed"
    assert bundles.mismatch({"weights/w": want["weights/w"]}, want) == "cellar-record.json is not covered by " \
                                                                      "the signature"


@pytest.mark.parametrize("kind", ["weights", "prompts"])
def test_a_flipped_byte_in_a_signed_weight_or_prompt_refuses_the_promote(signed, keys, kind):
    signed.sign("v1.1", key=keys["alice"][0])
    signed.sign("v1.1", key=keys["bob"][0])
    blob = signed.blobs.path(getattr(signed.show("v1.1"), kind)[0].digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(CorruptBlob, match="is corrupt .its bytes no longer match its digest"):
        signed.promote("v1.1", env="prod")
    assert signed.history("prod") == []


def test_policy_settings_are_checked_and_audited(signed, keys):
    with pytest.raises(Exception, match="needs at least that many trusted keys"):
        signed.set_trust("prod", require_signatures=3)
    with pytest.raises(NotFound, match="no key named dave"):
        signed.set_trust("prod", trust=["dave"])
    policy = signed.trust_policy("prod")
    assert policy.trusted == ["alice", "bob"] and policy.require_signatures == 2
    event = signed.audit(action="env-trust", limit=1)[0]
    assert event.env == "prod" and event.detail["require_signatures"] == 2
    assert {k.name: k.trusted_by for k in signed.keys()} == {"alice": ["prod"], "bob": ["prod"], "carol": []}
    sql(signed, "UPDATE env_trust SET require_signatures = 0")  # the database alone cannot lower it
    with pytest.raises(AuditBroken, match="trust:prod"):
        signed.promote("v1.1", env="prod")


def test_rollback_onto_a_version_that_no_longer_meets_the_policy_is_refused(signed, keys):
    for ref in ("v1.0", "v1.1"):
        signed.sign(ref, key=keys["alice"][0])
        signed.approve(ref, env="prod", key=keys["bob"][0])
    signed.promote("v1.0", env="prod")
    signed.promote("v1.1", env="prod")
    signed.remove_key("bob", reason="left")  # bob's approvals stop counting ...
    signed.set_trust("prod", trust=["alice", "carol"])  # ... and carol has not signed v1.0
    before = signed.history("prod")
    with pytest.raises(PolicyNotMet, match="support-bot@v1.0 does not meet prod's trust policy.*missing 1 more "
                                           "from: carol.*its key sha256:.* is not registered"):
        signed.rollback(env="prod")
    assert signed.history("prod") == before


def test_the_web_view_lists_signatures_and_approvals(signed, keys):
    from starlette.testclient import TestClient

    from registry.web import create_app

    signed.sign("v1.1", key=keys["alice"][0])
    signed.approve("v1.1", env="prod", key=keys["bob"][0])
    with TestClient(create_app(lambda: signed), base_url="http://127.0.0.1:8765") as client:
        page = client.get("/v/support-bot/v1.1").text
    assert "Signatures and approvals" in page and "approval for prod" in page and page.count(">verified<") == 2


@pytest.mark.parametrize("tamper", [
    "DELETE FROM env_trust",  # no policy row: would require nothing
    "UPDATE events SET detail = replace(detail, :strict, :lax) WHERE action = 'env-trust'",
])
def test_a_policy_deleted_or_its_event_edited_in_the_database_is_refused(signed, tamper):
    before = signed.history("prod")
    with pytest.raises(PolicyNotMet):
        signed.promote("v1.1", env="prod")
    sql(signed, tamper, strict='"require_signatures":2', lax='"require_signatures":0')
    with pytest.raises(AuditBroken, match="trust policy|trust:prod"):
        signed.promote("v1.1", env="prod")
    assert signed.history("prod") == before
    assert not signed.verify_audit().ok


def test_an_older_laxer_policy_put_back_is_refused(signed):
    from sqlalchemy import select

    from registry.store.sql import schema as t

    signed.set_trust("prod", require_signatures=0)
    with signed.store.read() as conn:
        lax = dict(conn.execute(select(t.env_trust)).mappings().one())
    signed.set_trust("prod", require_signatures=2)
    sql(signed, "UPDATE env_trust SET require_signatures = 0, mac = :mac", mac=lax["mac"])  # a once-valid row
    with pytest.raises(AuditBroken, match="trust:prod is not the policy event"):
        signed.promote("v1.1", env="prod")
    assert any(p.object == "trust:prod" for p in signed.verify_audit().seals)


SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory):
    """A SoftHSM token ``cellar`` holding the EC P-256 key ``dana``, one per module: SoftHSM reads
    its configuration once per process (a second token folder would stay unseen); returns the
    public key file."""
    try:
        import PyKCS11  # noqa: F401
    except ImportError:
        need("PyKCS11", "the pkcs11 extra is not installed (scripts/bootstrap.sh installs it)")
    if not SOFTHSM.exists() or not shutil.which("softhsm2-util"):
        need("SoftHSM 2", "not installed: scripts/setup-softhsm.sh (apt-get install softhsm2)")
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    private, public = make_key(folder, "dana")
    for argv in (["--init-token", "--free", "--label", "cellar", "--pin", "4321", "--so-pin", "8765"],
                 ["--import", str(private), "--token", "cellar", "--label", "dana", "--id", "01", "--pin", "4321"]):
        subprocess.run(["softhsm2-util", *argv], check=True, capture_output=True, env=env)
    private.unlink()  # from here on the private key lives on the token only
    return conf, public


@pytest.fixture
def token(softhsm, monkeypatch):
    conf, public = softhsm
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv("REGISTRY_PKCS11_MODULE", str(SOFTHSM))
    return public


def test_a_key_on_a_pkcs11_token_signs_and_the_upstream_tool_verifies(reg, model_dir, token, tmp_path, monkeypatch):
    reg.push(model_dir.manifest)
    reg.add_key("dana", token)
    uri = "pkcs11:token=cellar;object=dana"
    with pytest.raises(KeyFileError, match="cannot open the PKCS#11 key pkcs11:token=cellar;object=dana"):
        reg.sign("v1.0", key=uri)  # no PIN given
    monkeypatch.setenv("REGISTRY_PKCS11_PIN", "0000")
    with pytest.raises(KeyFileError) as wrong:
        reg.sign("v1.0", key=uri)
    assert "0000" not in str(wrong.value)
    with pytest.raises(Exception, match="export it as .REGISTRY_PKCS11_PIN"):
        reg.sign("v1.0", key=uri + "?pin-value=4321")
    monkeypatch.setenv("REGISTRY_PKCS11_PIN", "4321")
    sig = reg.sign("v1.0", key=uri)
    assert sig.signer == "dana" and reg.signatures("v1.0")[0].verified
    out, bundle = tmp_path / "co", tmp_path / "dana.sig"
    reg.checkout("v1.0", out)
    reg.write_signature("v1.0", signer="dana", out=bundle)
    assert upstream_verify(out, bundle, token).returncode == 0


def test_deleting_a_version_drops_its_signatures(reg, model_dir, keys):
    reg.push(model_dir.manifest)
    reg.add_key("alice", keys["alice"][1])
    reg.sign("v1.0", key=keys["alice"][0])
    reg.delete("v1.0", force=True, reason="pushed by mistake")
    model_dir.set_prompt("other content, same version name\n")
    reg.push(model_dir.manifest)
    assert reg.signatures("v1.0") == []  # nothing vouches for the new content
    assert reg.audit(action="sign", limit=1)[0].detail["signer"] == "alice"
