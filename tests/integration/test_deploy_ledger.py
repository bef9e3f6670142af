"""Promote, rollback, locks and recovery against the real database (SQLite and PostgreSQL),
with the in-library fake engine standing in for Docker (the real engine: test_deploy_docker)."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from registry.api import Registry
from registry.deploy import ownership
from registry.engines.engine import container_name
from registry.engines.fake import FakeEngine
from registry.errors import (
    CellarError,
    CorruptBlob,
    HealthGateFailed,
    ImageMoved,
    InvalidInput,
    NotFound,
    OperationInProgress,
)
from registry.store.sql import events, locks, releases
from registry.store.sql import schema as t
from tests.conftest import FAKE_TOKEN, IMAGE, on_fake, push_versions


@pytest.fixture
def reg(home, fake):
    with on_fake(home, fake) as r:
        r.add_env("staging", port=18080, default=True)
        yield r


@pytest.fixture
def versions(reg, fake, model_dir):
    push_versions(reg, model_dir, "v1.0", "v1.1", "v1.2", "v1.3", image=IMAGE)
    return reg


def cname(reg, revision, env="staging", model="support-bot"):
    """The container name Cellar gives a revision in this registry."""
    with reg.store.read() as conn:
        rid = events.registry_id(conn)
    return container_name(env=env, model=model, revision=revision, registry=rid)


def locks_seen_by_find(reg, fake, env: str) -> list:
    """Make ``fake.find_labelled`` note the environment's lock each time it is called; the list of locks."""
    seen = []
    real_find = fake.find_labelled

    def find(**labels):
        with reg.store.read() as conn:
            seen.append(locks.get(conn, env))
        return real_find(**labels)

    fake.find_labelled = find
    return seen


def half_promote(reg, env_name: str, version: str):
    """A promote stopped right after its lock and pending row were written: (action, plan, ready)."""
    from registry import clock, ledger
    from registry.deploy.promote import Promote

    action = Promote(reg.cfg, actor="x")
    action.open_env(env_name, reason=None)
    ready = action.make_ready("support-bot", version)
    action._claim(version)
    plan = action.open_revision(lambda rows: ledger.plan_promote(
        rows, ready.target, env=env_name, actor="x", reason=None, at=clock.now()))
    return action, plan, ready


def statuses(reg, env="staging"):
    return [(r.revision, r.version, str(r.status)) for r in reg.history(env)]


def test_promote_then_promote_supersedes(versions, fake):
    reg = versions
    first = reg.promote("v1.0")
    assert first.release.revision == 1 and str(first.release.status) == "deployed"
    assert [s.name for s in first.steps][:3] == ["verify blobs", "pin image", "snapshot"]
    second = reg.promote("v1.1", reason="new prompt")
    assert second.previous.version == "v1.0" and str(second.previous.status) == "superseded"  # as recorded
    assert statuses(reg) == [(1, "v1.0", "superseded"), (2, "v1.1", "deployed")]
    (running,) = fake.running()
    assert running.labels["cellar.version"] == "v1.1" and running.name == cname(reg, 2)
    assert fake.calls.index(f"stop {cname(reg, 1)}") < fake.calls.index(f"start {cname(reg, 2)}")


def test_failed_promote_rolls_back_automatically(versions, fake):
    reg = versions
    reg.promote("v1.0")
    fake.unhealthy["v1.1"] = "health check timed out after 1 s"
    with pytest.raises(HealthGateFailed, match="timed out.*rolled back automatically to support-bot@v1.0"):
        reg.promote("v1.1")
    rows = reg.history("staging")
    assert statuses(reg) == [(1, "v1.0", "superseded"), (2, "v1.1", "failed"), (3, "v1.0", "deployed")]
    assert rows[2].rollback_of == 1 and str(rows[2].operation) == "auto-rollback"
    assert rows[1].error.startswith("health check timed out")
    (running,) = fake.running()
    assert running.id == rows[0].container_id
    assert not any(c.labels["cellar.revision"] == "2" for c in fake.find_labelled(env="staging"))
    with reg.store.read() as conn:
        actions = [r.action for r in conn.execute(select(t.events).order_by(t.events.c.id))]
        assert locks.get(conn, "staging") is None
    assert actions[-3:] == ["promote", "promote", "rollback"]


def test_first_promote_failing_leaves_nothing_deployed(versions, fake):
    fake.unhealthy["v1.0"] = "container exited with code 3"
    with pytest.raises(HealthGateFailed, match="nothing was deployed before"):
        versions.promote("v1.0")
    assert statuses(versions) == [(1, "v1.0", "failed")]
    assert fake.running() == []


def test_rollback_skips_failed_and_same_version(versions, fake):
    reg = versions
    reg.promote("v1.0")
    reg.promote("v1.1")
    fake.unhealthy["v1.2"] = "broken"
    with pytest.raises(HealthGateFailed):
        reg.promote("v1.2")
    # now: r4 v1.1 (auto-rollback) deployed; the default rollback goes to v1.0, never v1.2
    result = reg.rollback(reason="back to the first")
    assert result.release.version == "v1.0" and result.release.rollback_of == 1
    assert statuses(reg)[-1] == (5, "v1.0", "deployed")
    # v1.0's kept container was started again, not recreated
    assert result.release.container_id == reg.history("staging")[0].container_id
    with pytest.raises(InvalidInput, match="never deployed healthily"):
        reg.rollback(to="v1.2")


def test_rollback_to_a_chosen_revision_recreates_a_removed_container(versions, fake):
    reg = versions
    for v in ("v1.0", "v1.1", "v1.2"):
        reg.promote(v)
    first = reg.history("staging")[0]
    fake.remove(first.container_id)
    result = reg.rollback(revision=1)
    assert result.release.version == "v1.0" and result.release.container_id != first.container_id
    assert result.release.rollback_of == 1
    assert fake.running()[0].labels["cellar.revision"] == "4"
    with pytest.raises(NotFound):
        reg.rollback(revision=42)


def test_retention_keeps_k_and_what_rollback_needs(versions, fake, reg):
    reg.add_env("tight", port=18081, keep=1)
    for v in ("v1.0", "v1.1", "v1.2", "v1.3"):
        reg.promote(v, env="tight")
    names = sorted(c.name for c in fake.find_labelled(env="tight"))
    # deployed (r4) and one stopped (keep=1): the default rollback target (r3), which counts within keep
    assert names == [cname(reg, i, env="tight") for i in (3, 4)]


def test_second_operation_is_refused_while_one_holds_the_lock(versions, reg):
    with reg.store.write() as conn:
        lock = ownership.new_lock("staging", operation="promote", target="v1.4", actor="alice")
        locks.take(conn, lock)
    with pytest.raises(OperationInProgress, match=r"another operation \(promote v1.4 by alice, \d+ s ago\)"):
        reg.promote("v1.0")
    assert reg.history("staging") == []


def test_a_dead_holder_is_recovered_automatically(versions, fake, reg):
    reg.promote("v1.0")
    dead = ownership.new_lock("staging", operation="promote", target="v1.1", actor="bob").model_copy(
        update={"pid": 2**22 + 12345})
    with reg.store.write() as conn:
        locks.take(conn, dead)
    result = reg.promote("v1.1")
    assert result.release.version == "v1.1"
    with reg.store.read() as conn:
        assert "recover" in [r.action for r in conn.execute(select(t.events))]


def test_only_one_deployed_release_per_environment(versions, reg):
    reg.promote("v1.0")
    row = reg.history("staging")[0]
    values = {**json.loads(row.model_dump_json()), "revision": 2}
    values["started_at"] = row.started_at
    values["finished_at"] = row.finished_at
    with pytest.raises(IntegrityError), reg.store.write() as conn:
        conn.execute(insert(t.releases).values(**values))


def test_recover_reverts_an_interrupted_promote(versions, fake, reg):
    reg.promote("v1.0")
    action, plan, ready = half_promote(reg, "staging", "v1.1")
    new_id = action.create_container(plan.pending, ready)
    fake.stop(reg.history("staging")[0].container_id)  # "killed" after stopping the old one
    with reg.store.write() as conn:  # the dead process's lock
        conn.execute(update(t.env_locks).values(pid=2**22 + 54321))
    result = reg.recover()
    assert [a.action for a in result.actions] == ["reverted"]
    assert statuses(reg) == [(1, "v1.0", "superseded"), (2, "v1.1", "failed"), (3, "v1.0", "deployed")]
    assert new_id not in fake.containers
    assert [c.labels["cellar.version"] for c in fake.running()] == ["v1.0"]


def test_protected_environment_needs_a_reason(versions, reg):
    reg.add_env("production", port=18090, protected=True)
    with pytest.raises(InvalidInput, match="protected"):
        reg.promote("v1.0", env="production")
    assert reg.promote("v1.0", env="production", reason="release day").release.reason == "release day"


def test_promote_what_another_environment_runs(versions, reg):
    reg.add_env("production", port=18090)
    reg.promote("v1.1")
    result = reg.promote("staging", env="production")
    assert result.release.version == "v1.1" and result.env == "production"


def test_missing_secret_changes_nothing(versions, reg, monkeypatch):
    monkeypatch.delenv("SUPPORT_API_TOKEN")
    with pytest.raises(InvalidInput, match="SUPPORT_API_TOKEN"):
        reg.promote("v1.0")
    assert reg.history("staging") == []


def test_env_add_list_remove(reg, fake):
    reg.add_env("qa", port=18085, keep=5, health_timeout_s=3)
    assert [e.name for e in reg.environments()] == ["qa", "staging"]
    assert reg.environment().name == "staging"
    with pytest.raises(Exception, match="already used"):
        reg.add_env("qa2", port=18085)
    reg.remove_env("qa")
    assert [e.name for e in reg.environments()] == ["staging"]
    with reg.store.read() as conn:
        actions = [r.action for r in conn.execute(select(t.events))]
    assert actions.count("env-add") == 2 and actions.count("env-remove") == 1


def test_removing_an_environment_with_a_deployment_needs_force(versions, fake, reg):
    reg.promote("v1.0")
    with pytest.raises(InvalidInput, match="--force"):
        reg.remove_env("staging")
    reg.remove_env("staging", force=True)
    assert fake.containers == {} and reg.environments() == []
    with reg.store.read() as conn:  # the ledger outlives the environment; nothing stays deployed
        assert [r.status for r in releases.ledger(conn, "staging")] == ["superseded"]
    assert statuses(reg) == [(1, "v1.0", "superseded")]  # history of a removed environment, from the ledger
    with pytest.raises(NotFound, match="no environment named 'qa'"):
        reg.history("qa")


def test_status_shows_deployed_container_health_and_pending_work(versions, fake, reg):
    reg.promote("v1.0")
    with reg.store.write() as conn:
        locks.take(conn, ownership.new_lock("staging", operation="rollback", target="v0.9", actor="eve"))
    (state,) = reg.status()
    assert state.deployed.version == "v1.0" and state.container_state == "running" and state.healthy
    assert state.pending.actor == "eve" and state.pending.operation == "rollback"


def test_image_tag_that_moved_is_refused_unless_allowed(versions, fake, reg):
    fake.images[IMAGE] = "sha256:" + "cd" * 32  # rebuilt under the same tag since the push
    with pytest.raises(ImageMoved, match="--allow-retag"):
        reg.promote("v1.0")
    assert reg.history("staging") == []
    result = reg.promote("v1.0", allow_retag=True)
    assert result.release.image_digest == "sha256:" + "cd" * 32


def test_corrupt_blob_refuses_the_version(versions, reg):
    info = reg.show("v1.0")
    blob = reg.blobs.path(info.prompts[0].digest)
    blob.chmod(0o644)
    blob.write_text("tampered")
    with pytest.raises(CorruptBlob):
        reg.promote("v1.0")
    assert reg.history("staging") == []


def test_concurrent_promotes_exactly_one_wins(versions, fake, home):
    fake.slow.update({"v1.0": 0.5, "v1.1": 0.5})
    outcomes: list[object] = []

    def attempt(version: str) -> None:
        with on_fake(home, fake) as mine:
            try:
                outcomes.append(mine.promote(version).release.version)
            except OperationInProgress as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=attempt, args=(v,)) for v in ("v1.0", "v1.1")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["OperationInProgress", "str"]
    (deployed,) = [r for r in versions.history("staging") if str(r.status) == "deployed"]
    (running,) = fake.running()
    assert running.labels["cellar.version"] == deployed.version


def test_recover_leaves_a_live_holder_alone_unless_forced(versions, reg):
    with reg.store.write() as conn:
        locks.take(conn, ownership.new_lock("staging", operation="promote", target="v1.4", actor="alice")
                          .model_copy(update={"host": "another-host"}))
    assert [a.action for a in reg.recover().actions] == ["skipped"]
    assert [a.action for a in reg.recover(force=True).actions] == ["unlocked"]
    assert reg.promote("v1.0").release.revision == 1


def test_env_settings_are_validated(reg, fake):
    for settings, message in (({"port": 0}, "not a TCP port"), ({"port": 18086, "keep": -1}, "--keep"),
                              ({"port": 18086, "bind_addr": "localhost; rm"}, "not an IP address"),
                              ({"port": 18086, "docker_host": "file:///etc"}, "unix://")):
        with pytest.raises(InvalidInput, match=message):
            reg.add_env("qa", **settings)
    assert [e.name for e in reg.environments()] == ["staging"]


def test_recover_holds_the_lock_while_it_works(versions, fake, reg):
    reg.promote("v1.0")
    with reg.store.write() as conn:
        locks.take(conn, ownership.new_lock("staging", operation="promote", target="v1.1", actor="bob")
                          .model_copy(update={"pid": 2**22 + 777}))
    seen = locks_seen_by_find(reg, fake, "staging")
    reg.recover()
    assert seen and all(lock.operation == "recover" and lock.actor == "tester" for lock in seen)
    with reg.store.read() as conn:
        assert locks.get(conn, "staging") is None


def test_recover_starts_a_deployed_container_found_stopped(versions, fake, reg):
    deployed = reg.promote("v1.0").release
    fake.stop(deployed.container_id)  # e.g. the host rebooted
    assert [a.action for a in reg.recover().actions] == ["restarted"]
    assert [c.id for c in fake.running()] == [deployed.container_id]
    assert reg.recover().actions == []
    with reg.store.read() as conn:
        assert [r.action for r in conn.execute(select(t.events))].count("recover") == 1


# --- review fixes: secrets, failure paths, locks, identity --------------------------------

CANARY = FAKE_TOKEN  # the fixture's SUPPORT_API_TOKEN


def event_texts(reg) -> str:
    with reg.store.read() as conn:
        return " ".join(f"{r.reason} {r.detail}" for r in conn.execute(select(t.events)))


def test_recover_scrubs_secrets_from_an_unhealthy_detail(versions, fake, reg):
    deployed = reg.promote("v1.0").release
    fake.stop(deployed.container_id)
    fake.unhealthy["v1.0"] = f"exited; last log lines: token {CANARY}"
    (action,) = reg.recover().actions
    assert action.action == "unhealthy" and "token ***" in action.detail and CANARY not in action.detail
    assert CANARY not in event_texts(reg)


def test_failed_restore_message_is_scrubbed(versions, fake, reg):
    reg.promote("v1.0")
    fake.unhealthy.update({"v1.1": "broken", "v1.0": f"exited; log: token {CANARY}"})
    with pytest.raises(HealthGateFailed, match=r"failed too \(exited; log: token \*\*\*\)") as err:
        reg.promote("v1.1")
    assert CANARY not in str(err.value) and CANARY not in event_texts(reg)


def test_container_logs_are_scrubbed_where_they_leave_the_engine(versions, fake, reg):
    from registry.engines.engine import ContainerInfo

    class Exited(FakeEngine):
        def inspect(self, cid):
            return ContainerInfo(id=cid, name="c", labels={}, running=False, status="exited", exit_code=3,
                                 env={"OPENAI_API_KEY": "sk-live-1234", "MAX_TOKENS": "64"})

        def logs(self, cid, *, tail=10):
            return "loaded key sk-live-1234, MAX_TOKENS=64"

    fake.unhealthy["v1.0"] = ""  # no answer: the check asks the engine why
    with Registry.open(reg.home.path, engine_factory=lambda host: Exited(images=fake.images),
                       checks=fake.checks) as other:
        with pytest.raises(HealthGateFailed, match=r"loaded key \*\*\*, MAX_TOKENS=64"):
            other.promote("v1.0")


def test_rollback_reusing_a_kept_container_scrubs_its_own_secret(versions, fake, reg, monkeypatch):
    reg.promote("v1.0")
    reg.promote("v1.1")
    monkeypatch.setenv("SUPPORT_API_TOKEN", "rotated-token-value")  # v1.0's container still has the old one
    fake.unhealthy["v1.0"] = f"exited; log: token {CANARY}"
    with pytest.raises(HealthGateFailed, match=r"token \*\*\*") as err:
        reg.rollback()
    assert CANARY not in str(err.value) and CANARY not in event_texts(reg)
    assert statuses(reg)[-2:] == [(3, "v1.0", "failed"), (4, "v1.1", "deployed")]


def _break(fake, monkeypatch, *names, message=f"Docker engine error: 500 {CANARY}"):
    from registry.errors import EngineError

    def broken(*args, **kwargs):
        raise EngineError(message)

    for name in names:
        monkeypatch.setattr(fake, name, broken)


def test_failed_container_not_removable_still_restores_the_old_one(versions, fake, reg, monkeypatch):
    reg.promote("v1.0")
    fake.unhealthy["v1.1"] = "broken"
    _break(fake, monkeypatch, "remove")
    with pytest.raises(HealthGateFailed, match="rolled back automatically.*left behind") as err:
        reg.promote("v1.1")
    assert CANARY not in str(err.value)
    assert statuses(reg) == [(1, "v1.0", "superseded"), (2, "v1.1", "failed"), (3, "v1.0", "deployed")]
    assert [c.labels["cellar.version"] for c in fake.running()] == ["v1.0"]
    with reg.store.read() as conn:
        assert locks.get(conn, "staging") is None


@pytest.mark.parametrize("broken", [("remove", "stop"), ("remove", "stop", "start", "inspect")],
                         ids=["new-not-stoppable", "engine-gone"])
def test_engine_lost_during_cleanup_raises_a_cellar_error_naming_recover(versions, fake, reg, monkeypatch, broken):
    from registry.errors import CellarError, StepFailed

    reg.promote("v1.0")
    real_wait = fake.checks.wait_healthy

    def dies(url, **kwargs):
        if fake.serving(url).info.labels["cellar.version"] == "v1.1":  # Docker goes away right then
            _break(fake, m, *broken)
            raise StepFailed(f"no answer; log: token {CANARY}")
        real_wait(url, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(fake.checks, "wait_healthy", dies)
        with pytest.raises(CellarError, match=r"registry recover --env staging") as err:
            reg.promote("v1.1")
    assert CANARY not in str(err.value) and not isinstance(err.value, HealthGateFailed)
    with reg.store.read() as conn:  # left for recover: the failed container may still run
        assert locks.get(conn, "staging") is not None
    fake.unhealthy["v1.1"] = "still broken"  # Docker is back; the new release still does not answer
    assert [a.action for a in reg.recover(force=True).actions] == ["reverted"]
    assert statuses(reg) == [(1, "v1.0", "superseded"), (2, "v1.1", "failed"), (3, "v1.0", "deployed")]


def test_ctrl_c_during_promote_restores_the_old_container(versions, fake, reg, monkeypatch):
    reg.promote("v1.0")
    real_wait = fake.checks.wait_healthy

    def interrupted(url, **kwargs):
        if fake.serving(url).info.labels["cellar.version"] == "v1.1":
            raise KeyboardInterrupt  # Ctrl-C while the new release comes up
        real_wait(url, **kwargs)

    monkeypatch.setattr(fake.checks, "wait_healthy", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        reg.promote("v1.1")
    monkeypatch.undo()
    # the CLI prints it with exit 130: what was not deployed and what serves again
    assert isinstance(caught.value, CellarError) and caught.value.exit_code == 130
    assert str(caught.value) == ("interrupted: support-bot@v1.1 was not deployed to staging; "
                                 "support-bot@v1.0 was restored (revision 3)")
    monkeypatch.setenv("SUPPORT_API_TOKEN", CANARY)  # undo() above dropped the fixture's too
    monkeypatch.setattr(fake, "image_digest", lambda ref: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt, match="v1.2 was not deployed to staging; nothing was changed"):
        reg.promote("v1.2")  # Ctrl-C before the ledger changed
    monkeypatch.undo()
    assert statuses(reg) == [(1, "v1.0", "superseded"), (2, "v1.1", "failed"), (3, "v1.0", "deployed")]
    assert [c.labels["cellar.version"] for c in fake.running()] == ["v1.0"]
    with reg.store.read() as conn:
        assert locks.get(conn, "staging") is None


def test_retention_is_best_effort_and_runs_under_the_lock(versions, fake, reg, monkeypatch):
    reg.add_env("tight", port=18081, keep=1)
    reg.promote("v1.0", env="tight")
    reg.promote("v1.1", env="tight")
    seen = locks_seen_by_find(reg, fake, "tight")
    _break(fake, monkeypatch, "remove")
    result = reg.promote("v1.2", env="tight")
    assert str(result.release.status) == "deployed" and result.removed_containers == []
    assert len(result.warnings) == 1 and "could not remove old container" in result.warnings[0]
    assert CANARY not in result.warnings[0]
    assert seen and all(lock is not None and lock.target == "v1.2" for lock in seen)
    with reg.store.read() as conn:
        assert locks.get(conn, "tight") is None


def test_env_remove_holds_the_lock_and_refuses_a_pending_row(versions, fake, reg):
    reg.promote("v1.0")
    seen = locks_seen_by_find(reg, fake, "staging")
    reg.add_env("qa", port=18085)
    action, _, _ = half_promote(reg, "qa", "v1.1")
    with reg.store.write() as conn:  # the lock is gone, the pending row is not: still not removable
        locks.drop(conn, action.lock)
    with pytest.raises(OperationInProgress, match="recover --env qa"):
        reg.remove_env("qa", force=True)
    assert "qa" in [e.name for e in reg.environments()]
    reg.remove_env("staging", force=True)
    assert seen and all(lock is not None and lock.operation == "env-remove" for lock in seen)
    with reg.store.read() as conn:
        assert locks.get(conn, "staging") is None


def test_drop_lock_refuses_a_lock_that_changed_hands(reg):
    mine = ownership.new_lock("staging", operation="promote", target="v1.0", actor="alice")
    with reg.store.write() as conn:
        locks.take(conn, mine.model_copy(update={"operation": "recover", "actor": "bob"}))
    with pytest.raises(OperationInProgress, match="taken over"), reg.store.write() as conn:
        locks.drop(conn, mine)
    with reg.store.read() as conn:
        assert locks.get(conn, "staging").actor == "bob"


def test_two_registries_on_one_docker_host_leave_each_other_alone(versions, fake, reg, model_dir, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("REGISTRY_DB_URL", f"sqlite:///{tmp_path / 'other.db'}")
    Registry.init(tmp_path / "other")[0].close()
    with on_fake(tmp_path / "other", fake) as other:
        other.add_env("staging", port=18099)
        model_dir.write_manifest(version="v1.0", image=IMAGE)
        other.push(model_dir.manifest)
        theirs = other.promote("v1.0").release
        reg.promote("v1.0")
        reg.remove_env("staging", force=True)
        assert [c.id for c in fake.running()] == [theirs.container_id]
        assert other.recover().actions == []
    ids = {c.labels["cellar.registry"] for c in fake.find_labelled()}
    assert len(ids) == 1 and len(next(iter(ids))) == 32


def test_container_names_cannot_collide_across_env_and_model(versions, fake, reg, model_dir):
    model_dir.write_manifest(model="bot", version="v1.0", image=IMAGE)
    reg.push(model_dir.manifest)
    reg.add_env("prod-eu", port=18091)
    reg.add_env("prod", port=18092)
    reg.add_env("prod-eu-bot", port=18093)
    assert str(reg.promote("bot@v1.0", env="prod-eu").release.status) == "deployed"
    model_dir.write_manifest(model="eu-bot", version="v1.0", image=IMAGE)
    reg.push(model_dir.manifest)
    assert str(reg.promote("eu-bot@v1.0", env="prod").release.status) == "deployed"
    names = [c.name for c in fake.running()]
    assert len(set(names)) == 2 and all(n.startswith("cellar-prod-eu-bot-r1-") for n in names)


def test_docker_host_with_credentials_is_refused(reg, fake):
    for url in ("tcp://admin:hunter2@docker.example:2376", "https://admin@docker.example:2376",
                "ssh://deploy:hunter2@docker.example"):
        with pytest.raises(InvalidInput, match="TLS certificates") as err:
            reg.add_env("remote", port=18087, docker_host=url)
        assert "hunter2" not in str(err.value) and "admin" not in str(err.value)
    assert reg.add_env("remote", port=18087, docker_host="ssh://deploy@docker.example").docker_host
    with reg.store.read() as conn:
        assert "hunter2" not in " ".join(r.detail for r in conn.execute(select(t.events)))


def test_rollback_reuses_a_kept_container_from_before_the_registry_label(versions, fake, reg):
    first = reg.promote("v1.0").release
    reg.promote("v1.1")
    del fake.containers[first.container_id].info.labels["cellar.registry"]  # created by an older Cellar
    assert reg.rollback().release.container_id == first.container_id
    reg.promote("v1.1")
    fake.containers[first.container_id].info.labels["cellar.registry"] = "another-registry"  # kept, now not ours
    assert reg.rollback().release.container_id != first.container_id  # not ours: recreated instead


# --- review fixes: recover, --json on failure, messages ------------------------------------


def test_recover_recreates_a_deployed_container_that_was_removed(versions, fake, reg):
    deployed = reg.promote("v1.0").release
    fake.remove(deployed.container_id)  # docker rm -f
    (state,) = reg.status()
    assert state.container_state == "missing" and state.problem == "container missing"
    (action,) = reg.recover(env="staging").actions
    assert action.action == "recreated" and "answers" in action.detail
    (running,) = fake.running()
    assert running.labels["cellar.revision"] == "1" and running.name == cname(reg, 1)
    assert reg.history("staging")[0].container_id == running.id and reg.status()[0].problem is None
    assert reg.recover().actions == []
    with reg.store.read() as conn:
        assert [r.action for r in conn.execute(select(t.events))].count("recover") == 1


def test_recover_says_what_to_run_when_a_removed_container_cannot_come_back(versions, fake, reg):
    deployed = reg.promote("v1.0").release
    fake.remove(deployed.container_id)
    fake.unhealthy["v1.0"] = "health check timed out"
    (action,) = reg.recover(env="staging").actions
    assert action.action == "missing" and "could not be recreated (health check timed out)" in action.detail
    assert "`registry rollback --env staging`" in action.detail
    assert fake.containers == {}  # the one that did not answer does not hold the port
    assert reg.history("staging")[0].container_id == deployed.container_id


def test_a_failed_health_gate_carries_the_rows_it_recorded(versions, fake, reg):
    reg.promote("v1.0")
    fake.unhealthy["v1.1"] = "container exited with code 3"
    with pytest.raises(HealthGateFailed) as caught:
        reg.promote("v1.1")
    out = caught.value.result
    assert (out.failed.revision, str(out.failed.status), out.error) == (2, "failed", "container exited with code 3")
    assert (out.rollback.revision, out.rollback.version, str(out.rollback.status)) == (3, "v1.0", "deployed")
    assert str(out.previous.status) == "superseded" and out.operation == "promote"
    fake.unhealthy["v1.0"] = "broken now"
    reg.promote("v1.2")
    with pytest.raises(HealthGateFailed) as caught:  # a rollback can fail its gate too
        reg.rollback(to="v1.0")
    assert caught.value.result.failed.operation == "rollback" and caught.value.result.rollback.version == "v1.2"


def test_lock_held_message_names_the_command_for_each_case(versions, reg):
    from registry.deploy.ownership import busy_message

    mine = ownership.new_lock("staging", operation="promote", target="v1.4", actor="alice")
    alive = busy_message(mine)
    assert f"kill {mine.pid}" in alive and "`registry recover --env staging`" in alive and "--force" not in alive
    dead = busy_message(mine.model_copy(update={"pid": 2**22 + 777}))
    assert "has exited; run `registry recover --env staging`" in dead and "--force" not in dead
    remote = busy_message(mine.model_copy(update={"host": "gpu-1"}))
    assert "on gpu-1 is gone run `registry recover --env staging --force`" in remote
    with reg.store.write() as conn:
        locks.take(conn, mine.model_copy(update={"host": "gpu-1"}))
    with pytest.raises(OperationInProgress, match="gpu-1 is gone run `registry recover --env staging --force`"):
        reg.remove_env("staging", force=True)


def test_rollback_decides_under_the_lock_so_a_racing_promote_exits_3(versions, fake, reg, home, monkeypatch):
    """A rollback that has read the ledger holds the environment: a promote landing while it
    decides is refused (exit 3) instead of being silently replaced by a stale decision."""
    from registry import ledger

    reg.promote("v1.0")
    reg.promote("v1.1")
    deciding, go_on = threading.Event(), threading.Event()
    real_target = ledger.rollback_target

    def slow_target(rows, **kwargs):
        deciding.set()
        go_on.wait(10)
        return real_target(rows, **kwargs)

    monkeypatch.setattr(ledger, "rollback_target", slow_target)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("rollback", reg.rollback()))
    worker.start()
    assert deciding.wait(10)
    with on_fake(home, fake) as other, pytest.raises(OperationInProgress) as err:
        other.promote("v1.2")
    assert err.value.exit_code == 3 and "rollback" in str(err.value)
    go_on.set()
    worker.join(10)
    assert outcome["rollback"].release.version == "v1.0"
    assert statuses(reg)[-1] == (3, "v1.0", "deployed")
