"""Recovery: reconcile an environment's ledger with the containers Docker has, by label.

A promote or rollback killed half-way leaves a pending revision and a lock whose owner is
gone. If the pending release's container runs and answers its health path, the operation
is completed; otherwise it is reverted: that container is stopped (and removed when it was
created for the operation), the previous release's container is started again, and the
pending revision is marked failed. Either way one release ends up deployed and the lock is
released, in one transaction with a ``recover`` event. With nothing pending, a deployed
release whose container is stopped is started again, and one whose container is gone is
recreated from its version (same revision, same labels).
"""

from __future__ import annotations

from registry import clock, ledger
from registry.deploy import drift, ownership
from registry.deploy.action import DeployAction
from registry.engines.engine import LABEL, ContainerInfo
from registry.errors import CellarError, StepFailed
from registry.ledger import HostState, Plan, Release, Settlement, Target, short_host
from registry.models import Environment, Lock, RecoverAction, RecoverResult
from registry.store.sql import environments, events, locks, releases

INTERRUPTED = "interrupted: the process running it died; reverted by `registry recover`"


class Recover(DeployAction):
    """``Recover(cfg, actor=...).run(env_name=None, force=False)``: every environment, or one."""

    adopt = False  # record a container started by hand as a new revision, rather than put the recorded one back

    def run(self, *, env_name: str | None = None, force: bool = False, adopt: bool = False) -> RecoverResult:
        """Reconcile one environment (or all) with Docker; complete or revert pending operations.

        A lock held by a process that may still run (alive here, or on another host) is left
        alone unless ``force``: only the caller can know that the other host's process is gone.
        """
        self.adopt = adopt
        with self.cfg.store.read() as conn:
            envs = [environments.named_or_default(conn, env_name)] if env_name else environments.all_(conn)
        out = RecoverResult()
        for env in envs:
            out.actions += self.reconcile(env, force=force)
        return out

    def reconcile(self, env: Environment, *, force: bool = False) -> list[RecoverAction]:
        """Reconcile one environment. Its lock is claimed first, so a second recoverer (or an
        operation started meanwhile) finds a live owner instead of redoing the same work."""
        self.use_env(env)
        with self.cfg.store.write() as conn:
            held = locks.get(conn, env.name)
            if held and not force and not ownership.holder_gone(held):
                return [RecoverAction(env=env.name, action="skipped", detail=ownership.busy_message(held))]
            if held:
                locks.drop(conn, held)  # raises if it changed hands since it was read
            self.lock = ownership.new_lock(env.name, operation="recover", target=env.name, actor=self.actor)
            locks.take(conn, self.lock)
            rows = releases.ledger(conn, env.name)
        try:
            return self._reconcile(rows, held)
        finally:
            with self.cfg.store.write() as conn:  # still ours only if _reconcile failed half-way
                locks.drop(conn, self.lock, missing_ok=True)

    def _reconcile(self, rows: list[Release], held: Lock | None) -> list[RecoverAction]:
        if self.env.hosts:
            return self._reconcile_fleet(rows, held)
        stuck = ledger.pending(rows)
        if stuck is None:
            return self._without_pending(rows, held)
        env = self.env
        plan = Plan(pending=stuck, current=ledger.current(rows),
                    target=Target(model=stuck.model, version=stuck.version, manifest_digest=stuck.manifest_digest))
        info = self._pending_container(stuck)
        if info is not None and info.running and self._answers(stuck, info.id):
            for other in self.engine.find_labelled(env=env.name, registry=self.cfg.registry_id):
                if other.running and other.id != info.id:
                    self.engine.stop(other.id)
            settled = ledger.settle(plan, ok=True, at=clock.now(), container_id=info.id)
            action = RecoverAction(env=env.name, action="completed",
                                   detail=f"revision {stuck.revision} ({stuck.ref}) runs and answers: deployed")
        else:
            settled, action = self._revert(plan, info)
        self._commit(settled, action)
        return [action]

    def _revert(self, plan: Plan, info: ContainerInfo | None) -> tuple[Settlement, RecoverAction]:
        stuck = plan.pending
        if info is not None:
            self.engine.stop(info.id, timeout=2)
            if info.revision == stuck.revision:  # created for this operation, not a kept one
                self.engine.remove(info.id)
        previous = self._bring_back(plan.current)
        settled = ledger.settle(plan, ok=False, at=clock.now(), error=INTERRUPTED, previous=previous)
        now = settled.deployed
        detail = (f"revision {stuck.revision} ({stuck.ref}) reverted; "
                  + (f"{now.ref} deployed (revision {now.revision})" if now else "nothing is deployed"))
        return settled, RecoverAction(env=self.env.name, action="reverted", detail=detail)

    def _bring_back(self, current: Release | None) -> str:
        """Make sure the release deployed before the interrupted operation serves again."""
        if current is None or not current.container_id:
            return "untouched"
        info = self.engine.inspect(current.container_id)
        if info is None:
            return "lost"
        if info.running and self._answers(current, info.id):
            return "untouched"
        try:
            if info.running:
                self.engine.stop(info.id, timeout=2)
            self.start_and_check(current)
        except StepFailed:
            return "lost"
        return "restored"

    def _without_pending(self, rows: list[Release], held: Lock | None) -> list[RecoverAction]:
        env, out, settled = self.env, [], Settlement()
        now = ledger.current(rows)
        info = self.engine.inspect(now.container_id) if now and now.container_id else None
        others_running = drift.strays(now, self.engine.find_labelled(env=env.name, registry=self.cfg.registry_id))
        if others_running and self.adopt:  # what runs becomes the record (or, refused, stays as it is)
            action, settled = self._adopt(rows, others_running)
            out.append(action)
        elif others_running and now is not None:  # the default: the recorded release gets the port back
            out.append(self._stop_strays(now, others_running))
            others_running = []
        if now is not None and info is not None and not info.running and not others_running:
            self.remember_secrets(self.runtime_of(now), container_env=info.env)  # its logs may print them
            out.append(self._restart(now))
        elif info is None and now is not None and now.container_id and not others_running:
            action, settled = self._recreate(now)
            out.append(action)
        if held:
            out.append(RecoverAction(env=env.name, action="unlocked",
                                     detail=f"released the lock of a dead process ({held.operation} {held.target}, "
                                            f"pid {held.pid})"))
        for action in out:
            self._commit(settled, action)
            settled = Settlement()  # the row changes once, with the first action
        adopted = any(a.action == "adopted" for a in out)
        if not adopted and (dark := ledger.went_dark(rows)) is not None:  # reported: a rollback is a new revision
            out.append(self._dark(*dark))
        return out

    def _dark(self, last: Release, good: Release) -> RecoverAction:
        env, since = self.env.name, (last.finished_at or last.started_at).strftime("%Y-%m-%d %H:%M:%S UTC")
        return RecoverAction(env=env, action="dark", detail=(
            f"nothing serves since {since}, when revision {last.revision} ({last.ref}) {last.status}"
            + (f": {last.error}" if last.error else "") + f"; the last known good is {good.ref} (revision "
            f"{good.revision}): free what kept it from answering (e.g. the port), then "
            f"`registry rollback --env {env}`"))

    def _stop_strays(self, now: Release, strays: list[ContainerInfo]) -> RecoverAction:
        """Containers started by hand in place of the deployed one are stopped (kept, not removed:
        retention decides), so the recorded release can have the port back."""
        for c in strays:
            self.engine.stop(c.id)
        return RecoverAction(env=self.env.name, action="drift", detail=(
            f"stopped {', '.join(drift.describe(c) for c in strays)}, running in place of the recorded {now.ref} "
            f"(revision {now.revision}); to keep what ran instead: `registry recover --env {self.env.name} --adopt`"))

    def _adopt(self, rows: list[Release], strays: list[ContainerInfo]) -> tuple[RecoverAction, Settlement]:
        """``--adopt``: record the one container that runs as a new revision copying its release."""
        env = self.env.name
        by_revision = {r.revision: r for r in rows}
        source = by_revision.get(strays[0].revision or 0) if len(strays) == 1 else None
        labels = strays[0].labels
        if source is None or (source.model, source.version) != (labels.get(f"{LABEL}.model"),
                                                               labels.get(f"{LABEL}.version")):
            return RecoverAction(env=env, action="skipped", detail=(
                f"not adopted: {', '.join(drift.describe(c) for c in strays)} run, and --adopt records exactly one "
                "container that a release of this ledger made")), Settlement()
        if not self._answers(source, strays[0].id):
            return RecoverAction(env=env, action="skipped", detail=(
                f"not adopted: {drift.describe(strays[0])} does not answer its health path")), Settlement()
        reason = f"recover --adopt: recorded {drift.describe(strays[0])}, started outside Cellar"
        settled = ledger.adopt(rows, source, container_id=strays[0].id, image_digest=strays[0].image or None,
                               actor=self.actor, reason=reason, at=clock.now())
        new = settled.appended[0]
        return RecoverAction(env=env, action="adopted", detail=(
            f"{new.ref} runs (container {strays[0].id[:12]}): recorded as revision {new.revision}, a copy of "
            f"revision {source.revision}")), settled

    def _restart(self, now: Release) -> RecoverAction:
        """The deployed release's container exists but is stopped (e.g. the host rebooted)."""
        try:
            self.start_and_check(now)
        except StepFailed as exc:
            return RecoverAction(env=self.env.name, action="unhealthy",
                                 detail=f"{now.ref} does not answer: {self.scrub(str(exc))}")
        return RecoverAction(env=self.env.name, action="restarted",
                             detail=f"{now.ref} (revision {now.revision}) was stopped; started again")

    def _recreate(self, now: Release, *, gone: str | None = None) -> tuple[RecoverAction, Settlement]:
        """The deployed release's container is gone (``docker rm -f``): create it again from the
        version, with the same revision's labels (as a rollback's recreate does), and start it.
        ``gone`` says why there is none when it is not that (a fleet's host added since)."""
        env = self.env.name
        if gone is None:
            assert now.container_id is not None  # _without_pending recreates only a recorded container
            gone = f"{now.ref} (revision {now.revision}): its container {now.container_id[:12]} was gone"
        new_id = None
        try:
            ready = self.make_ready(now.model, now.version, image_digest=now.image_digest)
            new_id = self.create_container(now, ready)
            self.start_and_check(now.model_copy(update={"container_id": new_id}))
        except CellarError as exc:
            if new_id:  # a container that does not answer must not hold the port
                self._discard(new_id)
            return RecoverAction(env=env, action="missing", detail=(
                f"{gone} and could not be recreated ({self.scrub(str(exc))}): fix that and run "
                f"`registry recover --env {env}` again, or `registry rollback --env {env}`")), Settlement()
        row = now.model_copy(update={"container_id": new_id})
        return (RecoverAction(env=env, action="recreated", detail=f"{gone}; recreated and started, it answers"),
                Settlement(updates=[row]))

    def _discard(self, container_id: str) -> None:
        try:
            self.engine.remove(container_id)
        except CellarError:
            pass  # best effort: the report already says it did not come up

    def _pending_container(self, stuck: Release) -> ContainerInfo | None:
        if stuck.container_id:
            return self.engine.inspect(stuck.container_id)
        # Killed between creating the container and noting its id: find it by its labels.
        found = self.engine.find_labelled(env=self.env.name, revision=str(stuck.revision),
                                          registry=self.cfg.registry_id)
        return found[0] if found else None

    def _answers(self, release: Release, container_id: str) -> bool:
        try:
            self.wait_healthy(container_id, self.runtime_of(release))
        except StepFailed:
            return False
        return True

    # --- fleets: the same, host by host, into one row -------------------------------------

    def _here(self, release: Release | None, host: str | None) -> Release | None:
        """``release`` as seen on ``host``: its container there as ``container_id``."""
        if release is None:
            return None
        return release.model_copy(update={"container_id": release.container_on(host, self.env.fleet[0])})

    def _reconcile_fleet(self, rows: list[Release], held: Lock | None) -> list[RecoverAction]:
        """A fleet: a pending revision is completed when its container runs and answers on every
        host, else reverted on every host; with nothing pending, each host's container of the
        deployed release is started again or recreated (a host added since gets it too)."""
        env, stuck, now = self.env, ledger.pending(rows), ledger.current(rows)
        if self.adopt:
            return [RecoverAction(env=env.name, action="skipped", detail=(
                f"not adopted: --adopt records the one container that runs, and {env.name} is a fleet of "
                f"{len(env.fleet)} hosts: `registry recover --env {env.name}` puts the recorded release back on "
                "each, or promote what should run"))]
        if stuck is not None:
            plan = Plan(pending=stuck, current=now, target=Target(model=stuck.model, version=stuck.version,
                                                                  manifest_digest=stuck.manifest_digest))
            infos = {}
            for host in env.fleet:
                self.on_host(host)
                here = self._here(stuck, host)
                assert here is not None
                infos[host] = self._pending_container(here)
            if all(i is not None and i.running and self._answers_on(stuck, h, i.id) for h, i in infos.items()):
                hosts = [HostState(host=h or "", container_id=i.id, state="healthy")
                         for h, i in infos.items() if i is not None]
                for host, info in infos.items():
                    self.on_host(host)
                    for other in self.engine.find_labelled(env=env.name, registry=self.cfg.registry_id):
                        if other.running and info is not None and other.id != info.id:
                            self.engine.stop(other.id)
                settled = ledger.settle(plan, ok=True, at=clock.now(), container_id=hosts[0].container_id,
                                        hosts=hosts)
                action = RecoverAction(env=env.name, action="completed", detail=(
                    f"revision {stuck.revision} ({stuck.ref}) runs and answers on every host: deployed"))
            else:
                settled, action = self._revert_fleet(plan, infos)
            self._commit(settled, action)
            return [action]
        out: list[RecoverAction] = []
        if now is not None:
            states = []
            for host in env.fleet:
                self.on_host(host)
                state, did = self._one_host(now, host)
                states.append(state)
                out += did
            settled = Settlement()
            if states != (now.hosts or []):  # the row says what runs on each host now
                settled.updates.append(now.model_copy(update={"hosts": states,
                                                              "container_id": states[0].container_id}))
                out = out or [RecoverAction(env=env.name, action="recorded",
                                            detail=f"{now.ref}: each host's container recorded as it is")]
            for action in out:
                self._commit(settled, action)
                settled = Settlement()  # the row changes once, with the first action
        if held:
            unlocked = RecoverAction(env=env.name, action="unlocked", detail=(
                f"released the lock of a dead process ({held.operation} {held.target}, pid {held.pid})"))
            self._commit(Settlement(), unlocked)
            out.append(unlocked)
        if (dark := ledger.went_dark(rows)) is not None:
            out.append(self._dark(*dark))
        return out

    def _one_host(self, now: Release, host: str | None) -> tuple[HostState, list[RecoverAction]]:
        """The deployed release on one host of a fleet: strays stopped, its container started
        again, or recreated when gone (or never made there: a host added since)."""
        here = self._here(now, host)
        assert here is not None
        name, out = host or "", []
        info = self.engine.inspect(here.container_id) if here.container_id else None
        strays = drift.strays(here, self.engine.find_labelled(env=self.env.name, registry=self.cfg.registry_id))
        if strays:
            out.append(self._stop_strays(here, strays))
        if info is not None and info.running:
            ok = self._answers(now, info.id)
            return HostState(host=name, container_id=info.id, state="healthy" if ok else "dark"), self._on(out, host)
        if info is not None:
            self.remember_secrets(self.runtime_of(now), container_env=info.env)
            out.append(self._restart(here))
            state = "healthy" if out[-1].action == "restarted" else "dark"
            return HostState(host=name, container_id=info.id, state=state), self._on(out, host)
        gone = None if here.container_id else f"{now.ref} (revision {now.revision}) never ran there"
        done, settled = self._recreate(here, gone=gone)
        out.append(done)
        new_id = settled.updates[0].container_id if settled.updates else here.container_id
        return (HostState(host=name, container_id=new_id, state="healthy" if settled.updates else "dark"),
                self._on(out, host))

    @staticmethod
    def _on(actions: list[RecoverAction], host: str | None) -> list[RecoverAction]:
        """Each action naming the host it was taken on."""
        return [a.model_copy(update={"detail": f"on {short_host(host)}: {a.detail}"}) for a in actions]

    def _revert_fleet(self, plan: Plan, infos: dict) -> tuple[Settlement, RecoverAction]:
        """Revert an interrupted operation on every host of a fleet."""
        stuck, outcomes, back = plan.pending, [], []
        for host, info in infos.items():
            self.on_host(host)
            if info is not None:
                self.engine.stop(info.id, timeout=2)
                if info.revision == stuck.revision:
                    self.engine.remove(info.id)
            here = self._here(plan.current, host)
            outcome = self._bring_back(here)
            outcomes.append(outcome)
            back.append(HostState(host=host or "", container_id=here.container_id if here else None,
                                  state="dark" if outcome == "lost" or here is None or not here.container_id
                                  else "healthy"))
        previous = ("untouched" if all(o == "untouched" for o in outcomes) else
                    "lost" if all(b.state == "dark" for b in back) else "restored")
        failed = [HostState(host=h or "", container_id=i.id if i else None, state="reverted")
                  for h, i in infos.items()]
        settled = ledger.settle(plan, ok=False, at=clock.now(), error=INTERRUPTED, previous=previous,
                                hosts=failed, previous_hosts=back)
        now = settled.deployed
        detail = (f"revision {stuck.revision} ({stuck.ref}) reverted on every host; "
                  + (f"{now.ref} deployed (revision {now.revision})" if now else "nothing is deployed"))
        return settled, RecoverAction(env=self.env.name, action="reverted", detail=detail)

    def _answers_on(self, release: Release, host: str | None, container_id: str) -> bool:
        self.on_host(host)
        return self._answers(release, container_id)

    def _commit(self, settled: Settlement, action: RecoverAction) -> None:
        env = self.env.name
        with self.cfg.store.write() as conn:
            releases.apply(conn, settled)
            locks.drop(conn, self.lock, missing_ok=True)  # one commit per action: the first releases it
            changed = [r.ref + f" r{r.revision}:{r.status}" for r in [*settled.updates, *settled.appended]]
            events.append(conn, actor=self.actor, action="recover", object=env, env=env,
                          reason=action.detail,
                          detail={"action": action.action, "releases": changed,
                                  "rows": releases.bindings([*settled.updates, *settled.appended])},
                          db_user=self.cfg.store.db_user(conn))
