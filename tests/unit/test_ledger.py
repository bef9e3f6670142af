"""The release state machine alone: seed a ledger, plan, settle, assert the transitions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from registry import ledger
from registry.errors import InvalidInput, NotFound, OperationInProgress
from registry.ledger import Operation, Release, Target
from registry.ledger import ReleaseStatus as S

AT = datetime(2026, 11, 1, tzinfo=UTC)


def row(revision: int, version: str, status: S, *, healthy: bool | None = None, **kw) -> Release:
    return Release(env="prod", revision=revision, operation=kw.pop("operation", Operation.PROMOTE),
                   model="bot", version=version, manifest_digest=f"sha256:{version}", status=status,
                   actor="ann", started_at=AT, container_id=kw.pop("container_id", f"c{revision}"),
                   healthy=status is not S.FAILED if healthy is None else healthy, **kw)


def target(version: str) -> Target:
    return Target(model="bot", version=version, manifest_digest=f"sha256:{version}")


def test_promote_appends_pending_and_success_supersedes():
    rows = [row(1, "v1", S.SUPERSEDED), row(2, "v2", S.DEPLOYED)]
    plan = ledger.plan_promote(rows, target("v3"), env="prod", actor="bo", reason="why", at=AT)
    assert (plan.pending.revision, plan.pending.status, plan.current.revision) == (3, S.PENDING_DEPLOY, 2)
    settled = ledger.settle(plan, ok=True, at=AT, container_id="c3")
    assert [(r.revision, r.status) for r in settled.updates] == [(3, S.DEPLOYED), (2, S.SUPERSEDED)]
    assert settled.deployed.container_id == "c3" and settled.deployed.healthy


def test_failure_after_restore_appends_an_automatic_rollback():
    plan = ledger.plan_promote([row(1, "v1", S.DEPLOYED)], target("v2"), env="prod", actor="bo", reason=None, at=AT)
    settled = ledger.settle(plan, ok=False, at=AT, error="health check timed out", previous="restored")
    assert [(r.revision, r.status) for r in settled.updates] == [(2, S.FAILED), (1, S.SUPERSEDED)]
    (auto,) = settled.appended
    assert (auto.revision, auto.version, auto.status, auto.rollback_of) == (3, "v1", S.DEPLOYED, 1)
    assert auto.operation is Operation.AUTO_ROLLBACK and auto.container_id == "c1"


def test_failure_before_the_old_one_stopped_leaves_it_deployed():
    plan = ledger.plan_promote([row(1, "v1", S.DEPLOYED)], target("v2"), env="prod", actor="bo", reason=None, at=AT)
    settled = ledger.settle(plan, ok=False, at=AT, error="image missing", previous="untouched")
    assert [(r.revision, r.status) for r in settled.updates] == [(2, S.FAILED)]
    assert settled.deployed is None and settled.appended == []


def test_failure_when_the_old_one_does_not_come_back():
    plan = ledger.plan_promote([row(1, "v1", S.DEPLOYED)], target("v2"), env="prod", actor="bo", reason=None, at=AT)
    settled = ledger.settle(plan, ok=False, at=AT, error="x", previous="lost")
    assert [(r.revision, r.status) for r in settled.updates] == [(2, S.FAILED), (1, S.SUPERSEDED)]
    # it served until the switch: still the last known good, the default rollback target
    rows = [settled.updates[1], settled.updates[0]]
    assert ledger.went_dark(rows) == (settled.updates[0], settled.updates[1])
    assert ledger.rollback_target(rows).revision == 1


def test_the_default_rollback_skips_versions_whose_last_probe_run_failed():
    rows = [row(1, "v1", S.SUPERSEDED), row(2, "v2", S.SUPERSEDED), row(3, "v3", S.DEPLOYED)]
    assert ledger.rollback_target(rows).version == "v2"
    assert ledger.rollback_target(rows, probes_failed=frozenset({"v2"})).version == "v1"
    assert ledger.rollback_target(rows, version="v2", probes_failed=frozenset({"v2"})).version == "v2"
    with pytest.raises(NotFound, match="v1, v2 failed their last probe run"):
        ledger.rollback_target(rows, probes_failed=frozenset({"v1", "v2"}))


def test_a_pending_revision_blocks_new_operations():
    rows = [row(1, "v1", S.DEPLOYED), row(2, "v2", S.PENDING_DEPLOY)]
    with pytest.raises(OperationInProgress, match="registry recover"):
        ledger.plan_promote(rows, target("v3"), env="prod", actor="bo", reason=None, at=AT)
    with pytest.raises(OperationInProgress):
        ledger.plan_rollback(rows, rows[0], env="prod", actor="bo", reason=None, at=AT)


def test_rollback_default_skips_failed_and_the_current_version():
    rows = [row(1, "v1", S.SUPERSEDED), row(2, "v2", S.SUPERSEDED), row(3, "v3", S.FAILED),
            row(4, "v2", S.DEPLOYED, operation=Operation.AUTO_ROLLBACK, rollback_of=2)]
    chosen = ledger.rollback_target(rows)
    assert chosen.revision == 1
    plan = ledger.plan_rollback(rows, chosen, env="prod", actor="bo", reason="r", at=AT)
    assert (plan.pending.revision, plan.pending.status, plan.pending.rollback_of) == (5, S.PENDING_ROLLBACK, 1)
    assert plan.pending.version == "v1" and plan.current.revision == 4


def test_rollback_to_a_version_or_revision():
    rows = [row(1, "v1", S.SUPERSEDED), row(2, "v2", S.SUPERSEDED), row(3, "v3", S.DEPLOYED)]
    assert ledger.rollback_target(rows, version="v1").revision == 1
    assert ledger.rollback_target(rows, version="bot@v2").revision == 2
    assert ledger.rollback_target(rows, revision=2).version == "v2"
    with pytest.raises(NotFound):
        ledger.rollback_target(rows, version="v9")
    with pytest.raises(InvalidInput, match="what runs now"):
        ledger.rollback_target(rows, version="v3")


def test_rollback_never_targets_a_failed_release():
    rows = [row(1, "v1", S.FAILED), row(2, "v2", S.DEPLOYED)]
    with pytest.raises(NotFound, match="no earlier healthy release"):
        ledger.rollback_target(rows)
    with pytest.raises(InvalidInput, match="never deployed healthily"):
        ledger.rollback_target(rows, revision=1)


def test_retention_keeps_deployed_and_k_stopped_the_rollback_target_first():
    rows = [row(i, f"v{i}", S.SUPERSEDED) for i in range(1, 6)] + [row(6, "v6", S.DEPLOYED)]
    rows[3] = row(4, "v4", S.FAILED)
    assert ledger.keep_containers(rows, keep=2) == {"c6", "c5", "c3"}  # --keep 2: two stopped, not three
    assert ledger.keep_containers(rows, keep=1) == {"c6", "c5"}  # c5 is what a rollback needs
    assert ledger.keep_containers(rows, keep=0) == {"c6"}


def test_statuses_are_strings():
    assert S.PENDING_DEPLOY == "pending-deploy" and S.PENDING_ROLLBACK.pending and not S.DEPLOYED.pending


def _deploy_chain() -> list[Release]:
    return [row(1, "v1.0", S.SUPERSEDED), row(2, "v1.1", S.SUPERSEDED), row(3, "v1.2", S.DEPLOYED)]


def _roll_back(rows: list[Release]) -> list[Release]:
    """Plan the default rollback and settle it as a success, as the deploy actions would."""
    plan = ledger.plan_rollback(rows, ledger.rollback_target(rows), env="prod", actor="bo", reason=None, at=AT)
    settled = ledger.settle(plan, ok=True, at=AT, container_id=f"c{plan.pending.revision}")
    changed = {r.revision: r for r in [*settled.updates, *settled.appended]}
    return [changed.get(r.revision, r) for r in rows] + [changed[plan.pending.revision]]


def test_repeated_rollbacks_step_back_instead_of_flipping():
    rows = _roll_back(_deploy_chain())
    assert ledger.current(rows).version == "v1.1"
    rows = _roll_back(rows)
    assert (ledger.current(rows).version, ledger.current(rows).rollback_of) == ("v1.0", 1)
    with pytest.raises(NotFound, match="no earlier healthy release"):
        ledger.rollback_target(rows)


def test_after_an_automatic_rollback_the_next_one_goes_behind_what_it_copied():
    rows = [row(1, "v1.0", S.SUPERSEDED), row(2, "v1.1", S.SUPERSEDED), row(3, "v1.2", S.SUPERSEDED),
            row(4, "v1.3", S.FAILED),
            row(5, "v1.2", S.DEPLOYED, operation=Operation.AUTO_ROLLBACK, rollback_of=3)]
    assert ledger.rollback_target(rows).version == "v1.1"


def test_a_promote_after_rollbacks_steps_back_to_the_newest_other_release():
    rows = _roll_back(_deploy_chain()) + [row(5, "v1.3", S.DEPLOYED)]
    rows[3] = rows[3].model_copy(update={"status": S.SUPERSEDED})
    assert ledger.rollback_target(rows).revision == 4


def test_revision_refuses_what_is_deployed_now():
    rows = _deploy_chain()
    with pytest.raises(InvalidInput, match="what runs now"):
        ledger.rollback_target(rows, revision=3)
    assert ledger.rollback_target(rows, revision=1).version == "v1.0"


# --- fleets (issue 22): each host's container on one row -----------------------------------

A, B = "unix:///var/run/docker.sock", "tcp://gpu-2:2376"


def hosts(*pairs) -> list[ledger.HostState]:
    return [ledger.HostState(host=h, container_id=c, state=s) for h, c, s in pairs]


def test_a_fleet_row_names_each_host_s_container_and_an_older_row_its_first_host_s():
    fleet = row(2, "v2", S.DEPLOYED, hosts=hosts((A, "a2", "healthy"), (B, "b2", "healthy")))
    assert (fleet.container_on(A, A), fleet.container_on(B, A), fleet.containers()) == ("a2", "b2", ["a2", "b2"])
    single = row(1, "v1", S.SUPERSEDED, container_id="c1")  # written before the environment became a fleet
    assert (single.container_on(A, A), single.container_on(B, A)) == ("c1", None)
    assert ledger.short_host(A) == "local" and ledger.short_host(B) == "gpu-2"


def test_a_fleet_settles_with_each_host_s_state_and_restores_the_previous_hosts():
    before = row(1, "v1", S.DEPLOYED, hosts=hosts((A, "a1", "healthy"), (B, "b1", "healthy")))
    plan = ledger.plan_promote([before], target("v2"), env="prod", actor="bo", reason=None, at=AT)
    failed = hosts((A, "a2", "reverted"), (B, "b2", "failed"))
    back = hosts((A, "a1", "healthy"), (B, "b1", "dark"))
    settled = ledger.settle(plan, ok=False, at=AT, error="on gpu-2: no answer", previous="restored",
                            hosts=failed, previous_hosts=back)
    assert settled.updates[0].hosts == failed and settled.appended[0].hosts == back
    assert settled.deployed.operation is Operation.AUTO_ROLLBACK and settled.deployed.container_on(B, A) == "b1"


def test_retention_keeps_per_host_what_a_rollback_needs():
    rows = [row(1, "v1", S.SUPERSEDED, hosts=hosts((A, "a1", "healthy"), (B, "b1", "healthy"))),
            row(2, "v2", S.DEPLOYED, hosts=hosts((A, "a2", "healthy"), (B, "b2", "healthy")))]
    assert ledger.keep_containers(rows, keep=1, host=B, first=A) == {"b1", "b2"}
    assert ledger.keep_containers(rows, keep=0, host=A, first=A) == {"a2"}


def test_a_fleet_switches_its_canary_alone_then_a_quarter_at_a_time():
    from registry.deploy.switching import Slot, batches

    slots = [Slot(f"h{i}", None) for i in range(9)]
    assert [len(b) for b in batches(slots, None)] == [1, 3, 3, 2]
    assert [len(b) for b in batches(slots[:2], None)] == [1, 1]
    assert [len(b) for b in batches(slots, 4)] == [1, 4, 4]
    assert [len(b) for b in batches(slots[:1], None)] == [1]
