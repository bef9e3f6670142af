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

from registry import audit, clock, ledger
from registry.deploy import records
from registry.deploy.actions import (Context, base_url, busy_message, create_container, prepare, runtime_of,
                                     start_and_check)
from registry.deploy.engine import ContainerInfo, Engine, StepFailed
from registry.deploy.models import Environment, RecoverAction, RecoverResult
from registry.errors import CellarError
from registry.ledger import Plan, Release, Settlement, Target

INTERRUPTED = "interrupted: the process running it died; reverted by `registry recover`"


def recover(ctx: Context, *, env_name: str | None, actor: str, force: bool = False) -> RecoverResult:
    """Reconcile one environment (or all) with Docker; complete or revert pending operations.

    A lock held by a process that may still run (alive here, or on another host) is left
    alone unless ``force``: only the caller can know that the other host's process is gone.
    """
    with ctx.store.read() as conn:
        envs = [records.find_env(conn, env_name)] if env_name else records.environments(conn)
    out = RecoverResult()
    for env in envs:
        out.actions += recover_env(ctx, ctx.engine_for(env), env, actor=actor, force=force)
    return out


def recover_env(ctx: Context, engine: Engine, env: Environment, *, actor: str,
                force: bool = False) -> list[RecoverAction]:
    """Reconcile one environment. Its lock is claimed first, so a second recoverer (or an
    operation started meanwhile) finds a live owner instead of redoing the same work."""
    with ctx.store.write() as conn:
        held = records.get_lock(conn, env.name)
        if held and not force and not records.holder_gone(held):
            return [RecoverAction(env=env.name, action="skipped", detail=busy_message(held))]
        if held:
            records.drop_lock(conn, held)  # raises if it changed hands since it was read
        mine = records.new_lock(env.name, operation="recover", target=env.name, actor=actor)
        records.take_lock(conn, mine)
        rows = records.ledger(conn, env.name)
    try:
        return _reconcile(ctx, engine, env, rows, held, mine, actor=actor)
    finally:
        with ctx.store.write() as conn:  # still ours only if _reconcile failed half-way
            records.drop_lock(conn, mine, missing_ok=True)


def _reconcile(ctx: Context, engine: Engine, env: Environment, rows: list[Release], held, mine,
               *, actor: str) -> list[RecoverAction]:
    stuck = ledger.pending(rows)
    if stuck is None:
        return _without_pending(ctx, engine, env, rows, held, mine, actor=actor)
    plan = Plan(pending=stuck, current=ledger.current(rows),
                target=Target(model=stuck.model, version=stuck.version, manifest_digest=stuck.manifest_digest))
    info = _pending_container(ctx, engine, env.name, stuck)
    if info is not None and info.running and _answers(ctx, engine, env, stuck, info.id):
        for other in engine.find(env=env.name, registry=ctx.registry_id):
            if other.running and other.id != info.id:
                engine.stop(other.id)
        settled = ledger.settle(plan, ok=True, at=clock.now(), container_id=info.id)
        action = RecoverAction(env=env.name, action="completed",
                               detail=f"revision {stuck.revision} ({stuck.ref}) runs and answers: deployed")
    else:
        settled, action = _revert(ctx, engine, env, plan, info)
    _commit(ctx, env, settled, action, mine, actor=actor)
    return [action]


def _revert(ctx: Context, engine: Engine, env: Environment, plan: Plan,
            info: ContainerInfo | None) -> tuple[Settlement, RecoverAction]:
    stuck = plan.pending
    if info is not None:
        engine.stop(info.id, timeout=2)
        if info.revision == stuck.revision:  # created for this operation, not a kept one
            engine.remove(info.id)
    previous = _bring_back(ctx, engine, env, plan.current)
    settled = ledger.settle(plan, ok=False, at=clock.now(), error=INTERRUPTED, previous=previous)
    now = settled.deployed
    detail = (f"revision {stuck.revision} ({stuck.ref}) reverted; "
              + (f"{now.ref} deployed (revision {now.revision})" if now else "nothing is deployed"))
    return settled, RecoverAction(env=env.name, action="reverted", detail=detail)


def _bring_back(ctx: Context, engine: Engine, env: Environment, current: Release | None) -> str:
    """Make sure the release deployed before the interrupted operation serves again."""
    if current is None or not current.container_id:
        return "untouched"
    info = engine.inspect(current.container_id)
    if info is None:
        return "lost"
    if info.running and _answers(ctx, engine, env, current, info.id):
        return "untouched"
    try:
        if info.running:
            engine.stop(info.id, timeout=2)
        start_and_check(ctx, engine, env, current)
    except StepFailed:
        return "lost"
    return "restored"


def _without_pending(ctx: Context, engine: Engine, env: Environment, rows: list[Release], held, mine,
                     *, actor: str) -> list[RecoverAction]:
    out, settled = [], Settlement()
    now = ledger.current(rows)
    info = engine.inspect(now.container_id) if now and now.container_id else None
    others_running = [c for c in engine.find(env=env.name, registry=ctx.registry_id)
                      if c.running and (not info or c.id != info.id)]
    if info is not None and not info.running and not others_running:
        ctx.remember_secrets(runtime_of(ctx, now), container_env=info.env)  # its logs may print them
        out.append(_restart(ctx, engine, env, now))
    elif info is None and now is not None and now.container_id and not others_running:
        action, settled = _recreate(ctx, engine, env, now)
        out.append(action)
    if held:
        out.append(RecoverAction(env=env.name, action="unlocked",
                                 detail=f"released the lock of a dead process ({held.operation} {held.target}, "
                                        f"pid {held.pid})"))
    for action in out:
        _commit(ctx, env, settled, action, mine, actor=actor)
        settled = Settlement()  # the row changes once, with the first action
    return out


def _restart(ctx: Context, engine: Engine, env: Environment, now: Release) -> RecoverAction:
    """The deployed release's container exists but is stopped (e.g. the host rebooted)."""
    try:
        start_and_check(ctx, engine, env, now)
    except StepFailed as exc:
        return RecoverAction(env=env.name, action="unhealthy",
                             detail=f"{now.ref} does not answer: {ctx.scrub(str(exc))}")
    return RecoverAction(env=env.name, action="restarted",
                         detail=f"{now.ref} (revision {now.revision}) was stopped; started again")


def _recreate(ctx: Context, engine: Engine, env: Environment, now: Release) -> tuple[RecoverAction, Settlement]:
    """The deployed release's container is gone (``docker rm -f``): create it again from the
    version, with the same revision's labels (as a rollback's recreate does), and start it."""
    gone = f"{now.ref} (revision {now.revision}): its container {now.container_id[:12]} was gone"
    new_id = None
    try:
        ready = prepare(ctx, engine, env=env, model=now.model, version=now.version, image_digest=now.image_digest)
        plan = Plan(pending=now, current=None, target=ready.target)
        new_id = create_container(ctx, engine, env, plan, ready)
        start_and_check(ctx, engine, env, now.model_copy(update={"container_id": new_id}))
    except (CellarError, StepFailed) as exc:
        if new_id:  # a container that does not answer must not hold the port
            _discard(engine, new_id)
        return RecoverAction(env=env.name, action="missing", detail=(
            f"{gone} and could not be recreated ({ctx.scrub(str(exc))}): fix that and run "
            f"`registry recover --env {env.name}` again, or `registry rollback --env {env.name}`")), Settlement()
    row = now.model_copy(update={"container_id": new_id})
    return (RecoverAction(env=env.name, action="recreated", detail=f"{gone}; recreated and started, it answers"),
            Settlement(updates=[row]))


def _discard(engine: Engine, container_id: str) -> None:
    try:
        engine.remove(container_id)
    except (CellarError, StepFailed):
        pass  # best effort: the report already says it did not come up


def _pending_container(ctx: Context, engine: Engine, env: str, stuck: Release) -> ContainerInfo | None:
    if stuck.container_id:
        return engine.inspect(stuck.container_id)
    # Killed between creating the container and noting its id: find it by its labels.
    found = engine.find(env=env, revision=str(stuck.revision), registry=ctx.registry_id)
    return found[0] if found else None


def _answers(ctx: Context, engine: Engine, env: Environment, release: Release, container_id: str) -> bool:
    runtime = runtime_of(ctx, release)
    try:
        engine.wait_healthy(container_id, url=base_url(env) + runtime.health.path,
                            timeout=env.health_timeout_s or runtime.health.timeout_s)
    except StepFailed:
        return False
    return True


def _commit(ctx: Context, env: Environment, settled: Settlement, action: RecoverAction, mine,
            *, actor: str) -> None:
    with ctx.store.write() as conn:
        records.apply(conn, settled)
        records.drop_lock(conn, mine, missing_ok=True)  # one commit per action: the first releases it
        changed = [r.ref + f" r{r.revision}:{r.status}" for r in [*settled.updates, *settled.appended]]
        audit.append(conn, actor=actor, action="recover", object=env.name, env=env.name,
                     reason=action.detail, detail={"action": action.action, "releases": changed},
                     db_user=ctx.store.db_user(conn))


