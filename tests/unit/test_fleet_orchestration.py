"""A fleet's rolling switch (issue 22) on in-library fake engines, one per host: the canary
first, batches after it, a failure or Ctrl-C on a later host putting every switched host back,
a rollback reusing each host's kept container. The same paths run against the local and the
second Docker engine in tests/integration/test_fleets.py."""

from __future__ import annotations

import pytest

from registry import HealthGateFailed, Interrupted
from registry.engines.fake import FakeEngine, FakeFleet
from tests.conftest import FAKE_TOKEN, IMAGE, IMAGE_ID, push_versions

HOSTS = ["unix:///var/run/docker.sock", "tcp://gpu-2:2376", "tcp://gpu-3:2376", "tcp://gpu-4:2376"]


@pytest.fixture
def fleet(sqlite_home, model_dir, monkeypatch):
    from registry.api import Registry

    monkeypatch.setenv("SUPPORT_API_TOKEN", FAKE_TOKEN)
    fakes = FakeFleet({h: FakeEngine(base_url=h, images={IMAGE: IMAGE_ID}) for h in HOSTS})
    with Registry.open(sqlite_home, engine_factory=fakes.engine, checks=fakes.checks) as reg:
        push_versions(reg, model_dir, "v1", "v2", image=IMAGE)
        reg.add_env("prod", port=18080, hosts=HOSTS, default=True)
        yield reg, fakes


def running(fakes: FakeFleet) -> list[list[str]]:
    return [sorted(c.labels["cellar.version"] for c in fakes.engines[h].running()) for h in HOSTS]


def test_the_canary_switches_alone_then_the_rest_a_batch_at_a_time(fleet):
    reg, fakes = fleet
    reg.promote("v1")
    result = reg.promote("v2", batch=3)
    names = [s.name for s in result.steps]
    assert names.index("health check on local") < names.index("create container on gpu-2")
    # the batch after the canary: every container started before any health check waits
    assert names.index("start container on gpu-4") < names.index("health check on gpu-2")
    assert running(fakes) == [["v2"]] * 4
    assert [h.state for h in result.release.hosts] == ["healthy"] * 4
    assert [h.host for h in result.release.hosts] == HOSTS


def test_a_later_host_failing_puts_every_switched_host_back(fleet):
    reg, fakes = fleet
    reg.promote("v1")
    fakes.engines[HOSTS[2]].unhealthy["v2"] = f"HTTP 503 {FAKE_TOKEN}"
    with pytest.raises(HealthGateFailed) as err:
        reg.promote("v2", batch=1)
    assert "on gpu-3:" in str(err.value) and FAKE_TOKEN not in str(err.value)
    assert running(fakes) == [["v1"]] * 4
    failed, back = reg.history("prod")[-2:]
    assert [h.state for h in failed.hosts] == ["reverted", "reverted", "failed", "skipped"]
    assert back.version == "v1" and [h.state for h in back.hosts] == ["healthy"] * 4
    assert "create container on gpu-4" not in [s.name for s in err.value.result.steps]  # never touched


def test_ctrl_c_on_a_later_host_restores_every_host(fleet):
    reg, fakes = fleet
    reg.promote("v1")
    fakes.engines[HOSTS[1]].fail_on["start"] = KeyboardInterrupt()
    with pytest.raises(Interrupted, match="v1 was restored"):
        reg.promote("v2")
    assert running(fakes) == [["v1"]] * 4
    assert str(reg.history("prod")[-1].status) == "deployed"


def test_rollback_returns_every_host_to_its_kept_container(fleet):
    reg, fakes = fleet
    first = reg.promote("v1").release
    reg.promote("v2")
    back = reg.rollback()
    assert [h.container_id for h in back.release.hosts] == [h.container_id for h in first.hosts]
    assert all(s.name.startswith("reuse kept container") for s in back.steps if "container" in s.name
               and "stop" not in s.name and "start" not in s.name)
    assert running(fakes) == [["v1"]] * 4


def test_a_host_that_cannot_be_reached_fails_before_anything_is_recorded(fleet):
    from registry.errors import EngineError

    reg, fakes = fleet
    del fakes.engines[HOSTS[3]]
    with pytest.raises(EngineError, match="tcp://gpu-4:2376"):
        reg.promote("v1")
    assert reg.history("prod") == [] and all(not e.running() for e in fakes.engines.values())


def test_status_shows_each_host_and_names_the_one_that_needs_attention(fleet):
    reg, fakes = fleet
    reg.promote("v1")
    [status] = reg.status()
    assert [(h.host, h.container_state, h.healthy) for h in status.hosts] == [(h, "running", True) for h in HOSTS]
    assert status.problem is None and status.healthy is True
    fakes.engines[HOSTS[1]].unhealthy["v1"] = "HTTP 500"
    fakes.engines[HOSTS[3]].stop(status.hosts[3].container_id)
    [status] = reg.status()
    assert status.problem == "on gpu-2: not answering its health path; on gpu-4: container exited"
    assert status.healthy is False


def test_recover_starts_the_deployed_release_on_a_host_added_since_and_puts_a_stray_back(fleet, sqlite_home):
    reg, fakes = fleet
    reg.promote("v1")
    reg.promote("v2")
    fakes.engines["tcp://gpu-5:2376"] = FakeEngine(base_url="tcp://gpu-5:2376", images={IMAGE: IMAGE_ID})
    reg.add_env_host("prod", "tcp://gpu-5:2376")
    # on gpu-2, v1's kept container started by hand in place of v2's
    gpu2 = fakes.engines[HOSTS[1]]
    v1, v2 = (r.container_on(HOSTS[1], HOSTS[0]) for r in reg.history("prod")[:2])
    gpu2.stop(v2)
    gpu2.start(v1)
    actions = reg.recover(env="prod").actions
    assert [a.action for a in actions] == ["drift", "restarted", "recreated"]
    assert "on gpu-2" in actions[0].detail and "on gpu-5" in actions[2].detail
    now = reg.history("prod")[-1]
    assert [h.host for h in now.hosts] == [*HOSTS, "tcp://gpu-5:2376"] and {h.state for h in now.hosts} == {"healthy"}
    assert [sorted(c.labels["cellar.version"] for c in e.running()) for e in fakes.engines.values()] == [["v2"]] * 5


@pytest.mark.parametrize("again", ["tcp://GPU-2:2376", "tcp://gpu-2:2376/", "http://gpu-2:2376",
                                   "unix:///var/run//docker.sock/", "unix:/var/run/docker.sock"])
def test_a_host_named_twice_in_any_spelling_is_refused(fleet, again):
    from registry.errors import InvalidInput

    reg, fakes = fleet
    with pytest.raises(InvalidInput, match="named twice"):
        reg.add_env("other", port=18090, hosts=[HOSTS[0], HOSTS[1], again])
    with pytest.raises(InvalidInput, match="named twice"):
        reg.add_env_host("prod", again)
    assert [e.name for e in reg.environments()] == ["prod"] and reg.environment("prod").hosts == HOSTS
    # another port is another engine
    fakes.engines["tcp://gpu-2:2377"] = FakeEngine(base_url="tcp://gpu-2:2377", images={IMAGE: IMAGE_ID})
    assert reg.add_env_host("prod", "tcp://gpu-2:2377").hosts == [*HOSTS, "tcp://gpu-2:2377"]


def test_a_host_whose_image_differs_is_named_before_anything_changes(fleet, sqlite_home, model_dir):
    from registry.api import Registry
    from registry.errors import ImageMoved, InvalidInput

    reg, fakes = fleet
    with Registry.open(sqlite_home, engine_factory=lambda host: fakes.engines[HOSTS[0]]) as pusher:
        push_versions(pusher, model_dir, "v3", image=IMAGE)  # its image pinned at push
    assert reg.show("v1").image.digest is None and reg.show("v3").image.digest == IMAGE_ID
    fakes.engines[HOSTS[2]].images[IMAGE] = "sha256:" + "cd" * 32  # another build under the same tag
    for version, retag, error in (("v3", False, ImageMoved), ("v3", True, InvalidInput), ("v1", False, InvalidInput)):
        with pytest.raises(error, match="gpu-3"):
            reg.promote(version, allow_retag=retag)
    assert reg.history("prod") == [] and all(not e.running() for e in fakes.engines.values())
