"""The deploy orchestration (switch, failure path, Ctrl-C) on the in-library fake engine and a
SQLite file: feedback in about a second. The same paths run on PostgreSQL in
tests/integration/test_deploy_ledger.py and against the real engine in test_deploy_docker.py."""

from __future__ import annotations

import pytest

from registry import HealthGateFailed, Interrupted, Registry
from registry.engines.fake import FakeEngine

IMAGE = "example:latest"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-value-123")
    return FakeEngine(images={IMAGE: "sha256:" + "cd" * 32})


@pytest.fixture
def reg(sqlite_home, fake, model_dir):
    with Registry.open(sqlite_home, engine_factory=lambda host: fake, checks=fake.checks) as r:
        for i, version in enumerate(["v1", "v2"]):
            model_dir.set_prompt(f"prompt {i}\n")
            model_dir.write_manifest(version=version, image=IMAGE)
            r.push(model_dir.manifest)
        r.add_env("staging", port=18080, default=True)
        yield r


def ledger(reg):
    return [(r.revision, r.version, str(r.status)) for r in reg.history("staging")]


def test_switch_stops_the_old_container_before_starting_the_new_one(reg, fake):
    reg.promote("v1")
    result = reg.promote("v2")
    assert ledger(reg) == [(1, "v1", "superseded"), (2, "v2", "deployed")]
    assert [s.name for s in result.steps] == ["verify blobs", "pin image", "snapshot", "create container",
                                              "stop old container", "start container", "health check", "record"]
    first, second = (fake.inspect(r.container_id) for r in reg.history("staging"))
    assert not first.running and second.running
    assert fake.calls.index(f"stop {first.name}") < fake.calls.index(f"start {second.name}")


def test_a_failing_release_puts_the_old_one_back(reg, fake):
    reg.promote("v1")
    fake.unhealthy["v2"] = "HTTP 503 canary-value-123"
    with pytest.raises(HealthGateFailed) as err:
        reg.promote("v2")
    assert "canary-value-123" not in str(err.value) and "***" in str(err.value)
    assert ledger(reg) == [(1, "v1", "superseded"), (2, "v2", "failed"), (3, "v1", "deployed")]
    assert [c.labels["cellar.version"] for c in fake.running()] == ["v1"]
    assert err.value.result.rollback.revision == 3


def test_ctrl_c_while_starting_restores_the_old_release(reg, fake):
    reg.promote("v1")
    fake.fail_on["start"] = KeyboardInterrupt()
    with pytest.raises(Interrupted, match="v1 was restored"):
        reg.promote("v2")
    assert ledger(reg)[-1] == (3, "v1", "deployed")
    assert [c.labels["cellar.version"] for c in fake.running()] == ["v1"]
