"""The deploy orchestration (switch, failure path, Ctrl-C) on the in-library fake engine and a
SQLite file: feedback in about a second. The same paths run on PostgreSQL in
tests/integration/test_deploy_ledger.py and against the real engine in test_deploy_docker.py."""

from __future__ import annotations

import pytest

from registry import HealthGateFailed, Interrupted
from tests.conftest import FAKE_TOKEN, IMAGE, on_fake, push_versions


@pytest.fixture
def reg(sqlite_home, fake, model_dir):
    with on_fake(sqlite_home, fake) as r:
        push_versions(r, model_dir, "v1", "v2", image=IMAGE)
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
    fake.unhealthy["v2"] = f"HTTP 503 {FAKE_TOKEN}"
    with pytest.raises(HealthGateFailed) as err:
        reg.promote("v2")
    assert FAKE_TOKEN not in str(err.value) and "***" in str(err.value)
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
