"""The switch promote and rollback share: take the environment's lock, decide under it (read the
ledger, choose the target, make it ready) and append the pending revision, do the Docker work
outside any transaction (stop the old container, start the new one, gate on health and
warm-up), then settle the rows, the audit event and the lock release in one transaction. A
failure (Ctrl-C included) puts the old container back and records both revisions. A crash in
between leaves a pending row and a lock whose owner is gone; ``registry.deploy.recover``
completes or reverts it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from registry import clock, ledger
from registry.deploy import ownership
from registry.deploy.action import DeployAction
from registry.deploy.recover import Recover
from registry.engines.engine import LABEL
from registry.engines.http import WARMUP_TIMEOUT_S
from registry.errors import (
    CellarError,
    EngineError,
    HealthGateFailed,
    Interrupted,
    InvalidInput,
    OperationInProgress,
    StepFailed,
)
from registry.faults import crashpoint
from registry.ledger import HostState, Plan, Release, short_host
from registry.models import DeployResult, FailedDeploy, Runtime
from registry.store.sql import events, locks, releases
from registry.trust.secrets import cut

ERROR_LIMIT = 2000  # characters of an error kept on the release row and its event
MakePlan = Callable[[list[Release]], Plan]  # the ledger as it is under the lock -> the plan
MakeContainer = Callable[[Plan, str | None], tuple[str, bool]]  # (plan, host) -> (container id, created for it)


@dataclass
class Slot:
    """One Docker host of the environment during a switch: the previous release's container
    there, the new one, and how far the switch got on it."""

    host: str | None
    old: str | None  # the deployed release's container on this host
    new: str | None = None
    created: bool = False  # the new container was created for this run (a kept one is reused)
    old_stopped: bool = False
    state: str = "pending"


def batches(slots: list[Slot], size: int | None) -> list[list[Slot]]:
    """The order a fleet switches in: the first host alone (the canary), then the rest ``size``
    at a time (default: a quarter of the fleet, at least one host)."""
    size = size or max(1, -(-len(slots) // 4))
    rest = slots[1:]
    return [slots[:1], *(rest[i:i + size] for i in range(0, len(rest), size))]


class Switching(DeployAction):
    """Base of the actions that replace what an environment runs."""

    operation = ""  # "promote" or "rollback": the lock's and the crash points' name
    gate = False  # run the probe suite after warm-up (promote --gate): ``probe_gate``
    batch: int | None = None  # a fleet's hosts switched at once after the canary (None: a quarter)

    @contextmanager
    def deciding(self, *, target: str):
        """Hold the environment's lock while the action reads the ledger and chooses what to do,
        so no other operation can change the ledger between the decision and the new revision.
        If anything fails before the revision is written, the lock is released again."""
        self._claim(target)
        try:
            yield
        except BaseException:
            with self.cfg.store.write() as conn:
                locks.drop(conn, self.lock, missing_ok=True)
            raise

    def _claim(self, target: str) -> None:
        """Take the environment's lock; a lock whose owner provably died is reconciled first
        (``registry recover``), then taken."""
        env = self.env
        for _attempt in range(2):
            with self.cfg.store.write() as conn:
                held = locks.get(conn, env.name)
                if held is None:
                    self.lock = ownership.new_lock(env.name, operation=self.operation, target=target,
                                                    actor=self.actor)
                    locks.take(conn, self.lock)
                    return
            if not ownership.holder_gone(held):
                raise OperationInProgress(ownership.busy_message(held))
            Recover(self.cfg, actor=self.actor).reconcile(env)
        assert held is not None  # an attempt that found the lock free returned
        raise OperationInProgress(ownership.busy_message(held))

    def probe_gate(self, release: Release) -> None:
        """With ``gate`` set: StepFailed unless ``release`` passes its probes (``Promote``)."""
        raise NotImplementedError

    def open_revision(self, make_plan: MakePlan, *, still_allowed: Callable[[Any], None] | None = None) -> Plan:
        """Append the pending revision, planned from the ledger as it is now (under our lock);
        ``still_allowed(conn)`` checks, in that same write, what another command may have
        changed since (a version deprecated meanwhile) and raises to write nothing."""
        self._refuse_foreign()
        with self.cfg.store.write() as conn:
            if still_allowed is not None:
                still_allowed(conn)
            plan = make_plan(releases.working_set(conn, self.env.name)[0])  # current, pending, newest revision
            releases.insert_(conn, plan.pending)
        return plan

    def _refuse_foreign(self) -> None:
        """The deployed container must be this registry's own before it is stopped: a copy of a
        home restored with ``--new-identity`` has the original's ledger, whose container serves
        for the original (stopping it would switch the live environment from the copy)."""
        with self.cfg.store.read() as conn:
            now = ledger.current(releases.current_and_pending(conn, self.env.name))
        for host in self.env.fleet:
            self.on_host(host)
            cid = now.container_on(host, self.env.fleet[0]) if now else None
            info = self.engine.inspect(cid) if cid else None
            owner = info.labels.get(f"{LABEL}.registry", self.cfg.registry_id) if info else self.cfg.registry_id
            if owner != self.cfg.registry_id:
                raise InvalidInput(
                    f"the container of {now.ref if now else '?'} in {self.env.name}{self.host_label(host)} belongs "
                    f"to another registry ({owner[:12]}; this one is {self.cfg.registry_id[:12]}): this home is a "
                    "copy with its own identity, so it leaves that container alone: give "
                    f"{self.env.name} another port or Docker host here (`registry env remove` and "
                    "`env add`), or act from the original home")
        self.on_host(self.env.fleet[0])

    def switch(self, plan: Plan, *, runtime: Runtime, make_container: MakeContainer,
               container_step: Callable[[str | None], str] = lambda host: "create container") -> DeployResult:
        """Stop the current container, start the new one, gate on health; roll back on failure.

        In a fleet this rolls: the first host (the canary: health, warm-up and the probe gate)
        alone, then the others in batches (``batch`` hosts at a time); a failure on any host puts
        the previous release back on every host already switched."""
        first, now = self.env.fleet[0], plan.current
        slots = [Slot(host, now.container_on(host, first) if now else None) for host in self.env.fleet]
        try:
            for number, batch in enumerate(batches(slots, self.batch)):
                self._switch_batch(plan, slots, batch, runtime=runtime, make_container=make_container,
                                   container_step=container_step, canary=number == 0)
                if number == 0 and len(slots) > 1:
                    crashpoint(f"{plan.pending.operation}:canary-healthy")  # the new release on one host only
            if len(slots) > 1:
                crashpoint(f"{plan.pending.operation}:all-healthy")  # on every host, not recorded yet
        except BaseException as exc:  # Ctrl-C too: production must not stay down with the old container stopped
            self._fail(plan, exc, slots)
            raise
        return self._succeed(plan, slots)

    def _switch_batch(self, plan: Plan, slots: list[Slot], batch: list[Slot], *, runtime: Runtime,
                      make_container: MakeContainer, container_step: Callable[[str | None], str],
                      canary: bool) -> None:
        """Switch the hosts of one batch together: each step on every host of the batch before
        the next step, so their servers load at the same time."""
        op = plan.pending.operation
        for s in batch:
            with self._on(s, container_step(s.host)):
                s.new, s.created = make_container(plan, s.host)
            self._note_container(plan, slots)
        crashpoint(f"{op}:created")
        for s in batch:
            if s.old and s.old != s.new:
                with self._on(s, "stop old container"):
                    s.old_stopped = True
                    self.engine.stop(s.old)  # kept for rollback: stopped, without a restart policy
        crashpoint(f"{op}:old-stopped")
        for s in batch:
            assert s.new is not None  # made above
            with self._on(s, "start container"):
                self.engine.start(s.new)
        crashpoint(f"{op}:started")
        for s in batch:
            assert s.new is not None
            with self._on(s, "health check"):
                self.wait_healthy(s.new, runtime)
            if runtime.warmup:
                with self._on(s, "warm-up"):
                    self.cfg.checks.warm_up(self.base_url, runtime.warmup, untrusted=self.untrusted,
                                            timeout=runtime.warmup_timeout_s or WARMUP_TIMEOUT_S)
            if self.gate and canary:
                with self._on(s, "probe gate"):
                    self.probe_gate(plan.pending)
            # only now: a server that exits while it loads fails the promote rather than restart in a loop
            self.engine.set_restart(s.new, self.restart_policy(runtime))
            s.state = "healthy"
        if self.env.hosts:
            self._note_container(plan, slots)  # which hosts serve the new release already
        crashpoint(f"{op}:healthy")

    @contextmanager
    def _on(self, slot: Slot, step: str):
        """A step on one host: worked on, named in the step (in a fleet), blamed if it fails."""
        self.on_host(slot.host)
        self._at = slot
        with self.step(step):
            yield

    _at: Slot | None = None  # the host whose step ran last (the one that failed, on failure)

    def _fleet(self, slots: list[Slot], state=None) -> list[HostState] | None:
        """Each host's container and state, for a fleet's row (None for one host)."""
        if not self.env.hosts:
            return None
        return [HostState(host=s.host or "", container_id=s.new, state=state(s) if state else s.state)
                for s in slots]

    def _note_container(self, plan: Plan, slots: list[Slot]) -> None:
        """Record the containers on the pending row first, so recovery finds them after a crash."""
        plan.pending = plan.pending.model_copy(update={"container_id": slots[0].new, "hosts": self._fleet(slots)})
        with self.cfg.store.write() as conn:
            releases.update_(conn, plan.pending)

    def _succeed(self, plan: Plan, slots: list[Slot]) -> DeployResult:
        env = self.env
        with self.step("record", on_host=False), self.cfg.store.write() as conn:
            settled = ledger.settle(plan, ok=True, at=clock.now(), container_id=slots[0].new,
                                    hosts=self._fleet(slots))
            deployed = settled.deployed
            assert deployed is not None  # an ok settlement deploys the pending revision
            releases.apply(conn, settled)
            self._event(conn, plan, deployed, written=settled)
        # Still under the lock, so no concurrent promote has a fresh (not yet running) container here.
        removed, warnings = [], []
        for host in env.fleet:
            self.on_host(host)
            gone, problems = self._retain()
            removed += gone
            warnings += [p + self.host_label(host) for p in problems]
        with self.cfg.store.write() as conn:
            locks.drop(conn, self.lock)
        previous = settled.updates[1] if len(settled.updates) > 1 else None  # as recorded: superseded
        return DeployResult(env=env.name, operation=str(plan.pending.operation), release=deployed,
                            previous=previous, steps=list(self.steps), removed_containers=removed,
                            warnings=warnings)

    def _fail(self, plan: Plan, exc: BaseException, slots: list[Slot]) -> None:
        """Stop (and remove) the new containers, restart the old ones, record both; raise exit 4.

        Each step is tried on each host even when the one before it failed; when the outcome
        cannot be known the pending row and lock stay for ``registry recover`` and the error says so."""
        # scrubbed before it is cut: a cut first would turn a known secret into an unknown fragment
        env, error = self.env, cut(self.scrub(str(exc) or type(exc).__name__), ERROR_LIMIT)
        failed_on = self._at if self.env.hosts and self._at is not None and self._at.state != "healthy" else None
        if failed_on is not None:
            error = cut(f"on {short_host(failed_on.host)}: {error}", ERROR_LIMIT)
        touched = [s for s in reversed(slots) if s.new or s.old_stopped]
        problems, halted, outcomes = [], True, {}
        for s in touched:
            self.on_host(s.host)
            cleanup, stopped = self._drop_new(s)
            halted = halted and stopped
            if cleanup:
                problems.append(cleanup + self.host_label(s.host))
        for s in touched:
            self.on_host(s.host)
            try:
                outcomes[id(s)] = self._restore(plan, s)
            except CellarError as lost:
                problems.append(self.scrub(str(lost)) + self.host_label(s.host))
                halted = False
        cleanup = "; ".join(problems)
        if not halted:  # the engine is gone too: only a later reconcile can tell what runs
            raise EngineError(f"{plan.pending.ref} failed on {env.name} ({error}) and the previous state could "
                              f"not be restored ({cleanup}): run `registry recover --env {env.name}` "
                              "once Docker answers") from None
        previous, note = self._restored(plan, slots, outcomes)
        if cleanup:
            note += f"; the failed container was left behind ({cleanup})"
        failed_hosts = self._fleet(slots, state=lambda s: (
            "failed" if s is failed_on else "reverted" if s.new else "skipped"))
        back = self._fleet([Slot(s.host, s.old, new=s.old, state=(
            "dark" if outcomes.get(id(s), ("", ""))[0] == "lost" or not s.old else "healthy")) for s in slots])
        with self.cfg.store.write() as conn:
            settled = ledger.settle(plan, ok=False, at=clock.now(), error=error, previous=previous,
                                    hosts=failed_hosts, previous_hosts=back)
            releases.apply(conn, settled)
            self._event(conn, plan, settled.updates[0], error=error, written=settled)
            if settled.appended:
                self._event(conn, plan, settled.appended[0], automatic=True, written=settled)
            locks.drop(conn, self.lock)
        if isinstance(exc, StepFailed):
            raise HealthGateFailed(f"{plan.pending.ref} failed on {env.name} (revision {plan.pending.revision}): "
                                   f"{error}; {note}", result=self._failure(plan, settled, error)) from None
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(self._interrupted(plan, previous, note)) from None
        if isinstance(exc, CellarError) and str(exc) != error:
            exc.args = (error,)  # re-raised by switch: never with a secret in it

    def _restored(self, plan: Plan, slots: list[Slot], outcomes: dict[int, tuple[str, str]]) -> tuple[str, str]:
        """What became of the previous release, over every host: ``untouched`` (stopped nowhere),
        ``restored`` (it serves again, on at least one host) or ``lost``; and the note saying so."""
        results = [outcomes[id(s)] for s in slots if id(s) in outcomes]
        if not results:
            return self._restore(plan, Slot(self.env.fleet[0], None))
        if not self.env.hosts:
            return results[0]
        current = plan.current
        assert current is not None  # a host was touched, so something was deployed before
        stopped = [r for r in results if r[0] != "untouched"]
        if not stopped:
            return "untouched", f"{current.ref} kept running on every host"
        lost = [short_host(s.host) for s in slots if outcomes.get(id(s), ("",))[0] == "lost"]
        new = [short_host(s.host) for s in slots if not s.old]  # added to the fleet since: nothing to go back to
        if len(lost) + len(new) == len(slots):
            return "lost", next(note for what, note in stopped if what == "lost")
        note = (f"rolled back automatically to {current.ref} (revision {plan.pending.revision + 1}) on every host "
                "switched, where it answers again")
        if lost:
            note += (f"; {', '.join(lost)} did not come back and serve nothing: free what kept "
                     f"{current.ref} from answering there, then `registry recover --env {self.env.name}`")
        if new:
            note += (f"; {', '.join(new)} had no earlier release and serve nothing (`registry recover --env "
                     f"{self.env.name}` starts {current.ref} there)")
        return "restored", note

    def _failure(self, plan: Plan, settled: ledger.Settlement, error: str) -> FailedDeploy:
        """The rows a failed operation settled, for ``--json`` on exit 4."""
        before = settled.updates[1] if len(settled.updates) > 1 else plan.current
        return FailedDeploy(env=self.env.name, operation=str(plan.pending.operation), error=error,
                            failed=settled.updates[0], rollback=settled.deployed if settled.appended else None,
                            previous=before, steps=list(self.steps))

    def _interrupted(self, plan: Plan, previous: str, note: str) -> str:
        """Ctrl-C's one line: what was not deployed and what serves now."""
        what, current = f"interrupted: {plan.pending.ref} was not deployed to {self.env.name}", plan.current
        if current is None or not current.container_id:
            return f"{what}; nothing was deployed before"
        if previous == "restored":
            return f"{what}; {current.ref} was restored (revision {plan.pending.revision + 1})"
        if previous == "untouched":
            return f"{what}; {current.ref} kept running"
        return f"{what}; {note}"

    def _drop_new(self, slot: Slot) -> tuple[str | None, bool]:
        """Remove (or stop, for a kept one) the failed container on the host worked on: (scrubbed
        error if any, whether it is at least stopped). Removal failing falls back to stopping, so
        the old one gets the port back."""
        if not slot.new or slot.new == slot.old:
            return None, True
        problem = None
        with self.step("remove failed container" if slot.created else "stop failed container"):
            if slot.created:
                try:
                    self.engine.remove(slot.new)
                    return None, True
                except CellarError as exc:
                    problem = self.scrub(str(exc))
            try:  # a failed container is not worth a graceful stop: the old one is waiting
                self.engine.stop(slot.new, timeout=2)
            except CellarError as exc:
                return problem or self.scrub(str(exc)), False
        return problem, True

    def _restore(self, plan: Plan, slot: Slot) -> tuple[str, str]:
        """Start the previous release again on the host worked on, if it was stopped there."""
        current, env = plan.current, self.env
        if current is None or not current.container_id:
            return "untouched", "nothing was deployed before, nothing to roll back to"
        if not slot.old_stopped:
            return "untouched", f"{current.ref} kept running"
        try:
            with self.step("restart previous"):
                self.start_and_check(current.model_copy(update={"container_id": slot.old}))
        except StepFailed as exc:
            return "lost", (f"rolling back to {current.ref} failed too ({self.scrub(str(exc))}); {env.name} is "
                            f"dark (nothing serves) and {current.ref} stays the last known good: free what kept "
                            f"it from answering, then `registry rollback --env {env.name}`")
        return "restored", (f"rolled back automatically to {current.ref} "
                            f"(revision {plan.pending.revision + 1}), which answers again")

    def _event(self, conn, plan: Plan, row: Release, *, written: ledger.Settlement, error: str | None = None,
               automatic: bool = False) -> None:
        action = "rollback" if automatic or row.operation != ledger.Operation.PROMOTE else "promote"
        detail = {"revision": row.revision, "status": str(row.status), "manifest_digest": row.manifest_digest,
                  "image_digest": row.image_digest, "container": (row.container_id or "")[:12],
                  "previous": plan.current.ref if plan.current else None, "rollback_of": row.rollback_of}
        if row.hosts:  # a fleet: each host's container and how it ended there
            detail["hosts"] = [{"host": h.host, "container": (h.container_id or "")[:12], "state": h.state}
                               for h in row.hosts]
        if error:
            detail["error"] = error
        if automatic:
            detail["automatic"] = True
        elif self.signed_by:
            detail["signed_by"] = self.signed_by
        detail["rows"] = releases.bindings([*written.updates, *written.appended])  # what this change wrote
        events.append(conn, actor=row.actor, action=action, object=row.ref, model=row.model, env=self.env.name,
                      reason=row.reason, detail=self.scrubber.scrub_json(detail), db_user=self.cfg.store.db_user(conn))

    def _retain(self) -> tuple[list[str], list[str]]:
        """Remove stopped containers beyond the environment's ``keep``; never one a rollback needs.
        Best effort: the release is already recorded, so a Docker error is a warning, not a failure.

        Decided on the releases that ran the containers found, the deployed one and the default
        rollback target (``releases.working_set``), not the whole ledger: protecting a container
        that no longer exists changes nothing."""
        removed, warnings = [], []
        try:
            found = self.engine.find_labelled(env=self.env.name, registry=self.cfg.registry_id)
        except CellarError as exc:
            return [], [f"old containers were not cleaned up: {self.scrub(str(exc))}"]
        with self.cfg.store.read() as conn:
            rows, _ = releases.working_set(conn, self.env.name, containers=[c.id for c in found])
        keepers = ledger.keep_containers(rows, keep=self.env.keep, host=self.host, first=self.env.fleet[0])
        for c in found:
            if c.running or c.id in keepers:
                continue
            try:
                self.engine.remove(c.id)
                removed.append(c.name)
            except CellarError as exc:
                warnings.append(f"could not remove old container {c.name}: {self.scrub(str(exc))}")
        return removed, warnings
