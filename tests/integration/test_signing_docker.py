"""Trust policy against the real Docker engine: each version that falls short of the policy is
refused before anything changes (no new container, the old release still answering), then the
one that meets it is promoted; a rollback onto a version that no longer meets it is refused."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from registry.errors import AuditBroken, CorruptBlob, PolicyNotMet
from tests.conftest import free_port, sql
from tests.integration.test_deploy_docker import answer, running
from tests.integration.test_signing import make_key

pytestmark = pytest.mark.docker


def test_promote_and_rollback_refuse_what_the_policy_does_not_allow(docker_env, tmp_path, frozen_clock):
    reg, env = docker_env
    keys = {name: make_key(tmp_path, name) for name in ("alice", "bob", "carol")}
    for name, (_, pub) in keys.items():
        reg.add_key(name, pub)
    reg.add_env("elsewhere", port=free_port())
    reg.promote("v1.0", env=env)  # no policy yet
    serving = answer(reg, env)
    reg.set_trust(env, trust=["alice", "bob"], require_signatures=2)

    def refused(match: str) -> None:
        history = reg.history(env)
        with pytest.raises(PolicyNotMet, match=match):
            reg.promote("v1.1", env=env)
        assert reg.history(env) == history and answer(reg, env) == serving
        assert [c.labels["cellar.version"] for c in running(env)] == ["v1.0"]

    refused(r"has none; missing 2 more from: alice, bob")
    reg.sign("v1.1", key=keys["alice"][0])
    reg.sign("v1.1", key=keys["carol"][0])
    refused(r"has 1 \(alice\).*carol's signature: the key carol is not trusted")
    reg.approve("v1.1", env=env, key=keys["alice"][0])
    refused(r"has 1 \(alice\).*alice: the same key again")
    reg.approve("v1.1", env="elsewhere", key=keys["bob"][0])
    refused(f"bob's approval is for elsewhere, not {env}")
    reg.approve("v1.1", env=env, key=keys["bob"][0], expires="1h")
    frozen_clock.tick(timedelta(hours=2).total_seconds())
    refused(f"bob's approval for {env} expired at")

    reg.approve("v1.1", env=env, key=keys["bob"][0], expires="1h")  # approved again, in time
    reg.promote("v1.1", env=env, reason="four eyes: alice and bob")
    assert answer(reg, env).startswith("prompt=prompt-v1.1")
    assert sorted(reg.audit(action="promote", env=env, limit=1)[0].detail["signed_by"]) == ["alice", "bob"]
    who = reg.approvals(env)
    assert who.release is not None and who.release.version == "v1.1"
    assert {(s.signer, s.env) for s in who.signatures if s.verified} >= {("alice", None), ("bob", env)}

    # signed versions whose bytes or record changed since: refused like a damaged blob
    serving = answer(reg, env)
    for version in ("v1.4", "v1.5"):
        reg.sign(version, key=keys["alice"][0])
        reg.sign(version, key=keys["bob"][0])
    blob = reg.blobs.path(reg.show("v1.5").prompts[0].digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + bytes([blob.read_bytes()[-1] ^ 0x01]))
    sql(reg, "UPDATE versions SET manifest = replace(manifest, :was, :now) WHERE version = 'v1.4'",
        was='"MAX_TOKENS":"64"', now='"MAX_TOKENS":"65"')
    history = reg.history(env)
    for version, match in (("v1.5", "is corrupt .its bytes no longer match its digest"), ("v1.4", "support-bot@v1.4")):
        with pytest.raises((CorruptBlob, AuditBroken), match=match):
            reg.promote(version, env=env)
        assert reg.history(env) == history and answer(reg, env) == serving
        assert [c.labels["cellar.version"] for c in running(env)] == ["v1.1"]

    # v1.0 was deployed before the policy and was never signed: going back to it is refused too
    history = reg.history(env)
    with pytest.raises(PolicyNotMet, match=f"support-bot@v1.0 does not meet {env}'s trust policy"):
        reg.rollback(env=env)
    assert reg.history(env) == history and answer(reg, env).startswith("prompt=prompt-v1.1")
