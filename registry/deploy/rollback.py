"""Rollback: append a revision that copies an earlier healthy release, and switch to it.

The kept (stopped) container of that release is started again when it still exists and its
labels say it is that release; otherwise it is recreated from the version.
"""

from __future__ import annotations

from registry import clock, ledger
from registry.deploy import records
from registry.deploy.actions import (Context, begin, create_container, nothing_changed, prepare, resolve_env,
                                     runtime_of, switch)
from registry.deploy.engine import LABEL, ContainerInfo, Engine
from registry.deploy.models import DeployResult
from registry.ledger import Release


def rollback(ctx: Context, *, env_name: str | None, to: str | None, revision: int | None, actor: str,
             reason: str | None) -> DeployResult:
    """Go back to an earlier healthy release (the newest one by default)."""
    env = resolve_env(ctx, env_name, reason)
    engine = ctx.engine_for(env)
    with ctx.store.read() as conn:
        chosen = ledger.rollback_target(records.ledger(conn, env.name), version=to, revision=revision)
    runtime = runtime_of(ctx, chosen)
    kept = kept_container(engine, env.name, chosen, registry=ctx.registry_id)
    # prepare() notes the secrets only when it runs; a reused container needs them scrubbed too.
    ctx.remember_secrets(runtime, container_env=kept.env if kept else None)
    ready = None
    if kept is None:
        with nothing_changed(chosen.ref, env):
            ready = prepare(ctx, engine, env=env, model=chosen.model, version=chosen.version,
                            image_digest=chosen.image_digest)
    plan = begin(ctx, engine, env, operation="rollback", target=chosen.version, actor=actor,
                 make_plan=lambda rows: ledger.plan_rollback(rows, chosen, env=env.name, actor=actor,
                                                             reason=reason, at=clock.now()))
    return switch(ctx, engine, env, plan, runtime=runtime,
                  make_container=lambda: (kept.id, False) if kept else (
                      create_container(ctx, engine, env, plan, ready), True),
                  container_step="reuse kept container" if kept else "create container")


def kept_container(engine: Engine, env: str, release: Release, *, registry: str) -> ContainerInfo | None:
    """The release's container if it still exists and its labels prove it is that release."""
    if not release.container_id:
        return None
    info = engine.inspect(release.container_id)
    if info is None:
        return None
    want = {"env": env, "model": release.model, "version": release.version,
            "manifest-digest": release.manifest_digest}
    if any(info.labels.get(f"{LABEL}.{k}") != v for k, v in want.items()):
        return None
    # The id comes from this registry's own ledger, so a container created before the registry
    # label existed (none set) is still ours; one labelled for another registry is not.
    if info.labels.get(f"{LABEL}.registry", registry) != registry:
        return None
    return info
