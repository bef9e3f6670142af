"""Promote and rollback: run a ledger plan against the store and a container engine.

Each action takes the environment's lock and writes its pending revision in one short
write transaction, does the Docker work outside any transaction, and settles the rows,
the audit event and the lock release in one more. A crash in between leaves a pending row
and a lock whose owner is gone; ``registry.deploy.recover`` completes or reverts it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from registry import audit, clock, ledger, snapshots
from registry.deploy import records
from registry.deploy.engine import ContainerSpec, Engine, StepFailed, container_name, labels_for, redact
from registry.deploy.models import DeployResult, Environment, FailedDeploy, Lock, Step
from registry.errors import (CellarError, EngineError, HealthGateFailed, InvalidInput, Interrupted, NotFound,
                             OperationInProgress, VersionConflict)
from registry.faults import crashpoint
from registry.ledger import Plan, Release, Target
from registry.models import Runtime, is_secret_key
from registry.store.blobs import BlobStore
from registry.store.sql import Store

OnStep = Callable[[str, float, bool], None]  # (step, seconds, succeeded)


@dataclass
class Context:
    """The ports an action runs with: the metadata store, blobs, snapshots and engines."""

    store: Store
    blobs: BlobStore
    snapshots: Path
    engine_for: Callable[[Environment], Engine]
    environ: Mapping[str, str]
    on_step: OnStep | None = None
    steps: list[Step] = field(default_factory=list)
    # Values of the secrets handed to containers in this run: scrubbed from any error text.
    secret_values: set[str] = field(default_factory=set, repr=False)
    lock: Lock | None = None  # the environment lock this run holds
    _registry_id: str | None = field(default=None, repr=False)

    @property
    def registry_id(self) -> str:
        """This registry's identity (label ``cellar.registry``), read once per run."""
        if self._registry_id is None:
            with self.store.read() as conn:
                self._registry_id = records.registry_id(conn)
        return self._registry_id

    def scrub(self, text: str) -> str:
        """Text bound for the user or the audit log, with every known secret value as ***."""
        return redact(text, self.secret_values | _secret_like(self.environ))

    def remember_secrets(self, runtime: Runtime, *, container_env: Mapping[str, str] | None = None) -> None:
        """Note the values of ``runtime.secrets``: the caller's, and a kept container's own
        (exported with another value back then) so a rollback scrubs them too."""
        for source in (self.environ, container_env or {}):
            self.secret_values.update(v for k, v in source.items() if k in runtime.secrets and v)

    @contextmanager
    def step(self, name: str):
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            if self.on_step:
                self.on_step(name, time.perf_counter() - started, False)
            raise
        self.steps.append(Step(name=name, seconds=round(time.perf_counter() - started, 4)))
        if self.on_step:
            self.on_step(name, time.perf_counter() - started, True)


@dataclass
class Prepared:
    """A version made ready to run: its runtime, pinned image, snapshot and container env."""

    target: Target
    runtime: Runtime
    image: str
    snapshot: Path
    env: dict[str, str] = field(repr=False)


# --- promote ----------------------------------------------------------------------------


def promote(ctx: Context, *, env_name: str | None, model: str, version: str, actor: str,
            reason: str | None, allow_retag: bool = False) -> DeployResult:
    """Put model@version into an environment: stop-first switch, health gate, auto-rollback."""
    env = resolve_env(ctx, env_name, reason)
    engine = ctx.engine_for(env)  # unreachable Docker fails here, before anything is recorded
    with nothing_changed(f"{model}@{version}", env):
        ready = prepare(ctx, engine, env=env, model=model, version=version, allow_retag=allow_retag)
    plan = begin(ctx, engine, env, operation="promote", target=version, actor=actor,
                 make_plan=lambda rows: ledger.plan_promote(rows, ready.target, env=env.name, actor=actor,
                                                            reason=reason, at=clock.now()))
    crashpoint("promote:pending")
    return switch(ctx, engine, env, plan, runtime=ready.runtime,
                  make_container=lambda: (create_container(ctx, engine, env, plan, ready), True))


@contextmanager
def nothing_changed(ref: str, env: Environment):
    """Ctrl-C before the ledger changes: say so (exit 130), rather than a bare "interrupted"."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {ref} was not deployed to {env.name}; nothing was changed") from None


def prepare(ctx: Context, engine: Engine, *, env: Environment, model: str, version: str,
            allow_retag: bool = False, image_digest: str | None = None) -> Prepared:
    """Everything checked before the ledger changes: secrets, blobs, image, snapshot."""
    with ctx.store.read() as conn:
        record, digest = records.version_record(conn, model, version)
    runtime = Runtime.model_validate(record["runtime"])
    secret_env = _secrets(runtime, ctx.environ, f"{model}@{version}")
    ctx.remember_secrets(runtime)
    # The server can tell which version it is (CELLAR_MODEL, CELLAR_VERSION); labels say it to Docker.
    env_vars = {**runtime.env, "CELLAR_MODEL": model, "CELLAR_VERSION": version, **secret_env}
    with ctx.step("verify blobs"):
        for item in [*record["weights"], *record["prompts"]]:
            ctx.blobs.verify(item["digest"])
    with ctx.step("pin image"):
        image = (engine.image_digest(image_digest) if image_digest else
                 pin_image(engine, record["image"], ref=f"{model}@{version}", allow_retag=allow_retag))
    with ctx.step("snapshot"):
        snap = snapshots.materialise(ctx.snapshots, ctx.blobs, manifest_digest=digest, record=record)
    target = Target(model=model, version=version, manifest_digest=digest, image_digest=image)
    return Prepared(target=target, runtime=runtime, image=image, snapshot=snap, env=env_vars)


def pin_image(engine: Engine, image: dict, *, ref: str, allow_retag: bool) -> str:
    """The image ID to run: the digest recorded at push, unless the tag moved and that is allowed."""
    tag, pinned = image.get("ref"), image.get("digest")
    if not tag and not pinned:
        raise InvalidInput(f"{ref} has no container image: push a version with `image:` in its manifest")
    try:
        now = engine.image_digest(tag) if tag else None
    except NotFound:
        now = None
    if pinned and now and now != pinned:
        if not allow_retag:
            raise VersionConflict(
                f"image {tag} now points to {now[:19]}, not {pinned[:19]} recorded for {ref}: "
                "restore that image, or pass --allow-retag to run what the tag names now")
        return now
    if pinned:
        return engine.image_digest(pinned)  # NotFound names the missing image: nothing changed yet
    if now is None:
        raise NotFound(f"image {tag} is not on the Docker engine at {engine.base_url}; build or load it first")
    return now


def _secrets(runtime: Runtime, environ: Mapping[str, str], ref: str) -> dict[str, str]:
    missing = [name for name in runtime.secrets if not environ.get(name)]
    if missing:
        raise InvalidInput(f"{ref} needs the secret {', '.join(missing)}: export it in this shell first "
                           "(its value is passed to the container only, never stored or shown)")
    return {name: environ[name] for name in runtime.secrets}


def create_container(ctx: Context, engine: Engine, env: Environment, plan: Plan, ready: Prepared) -> str:
    p, rid = plan.pending, ctx.registry_id
    spec = ContainerSpec(
        name=container_name(env=env.name, model=p.model, revision=p.revision, registry=rid), image=ready.image,
        labels=labels_for(model=p.model, env=env.name, version=p.version, revision=p.revision,
                          manifest_digest=p.manifest_digest, registry=rid),
        env=ready.env, snapshot=str(ready.snapshot), container_port=ready.runtime.port,
        host_port=env.port, bind_addr=env.bind_addr, command=ready.runtime.command)
    return engine.create(spec)


# --- the shared begin / switch / settle -------------------------------------------------


def begin(ctx: Context, engine: Engine, env: Environment, *, operation: str, target: str, actor: str,
          make_plan: Callable[[list[Release]], Plan]) -> Plan:
    """Take the environment's lock and append the pending revision, in one write transaction.

    A lock whose owner provably died is reconciled first (``registry recover``), then taken.
    """
    from registry.deploy import recover

    for _attempt in range(2):
        with ctx.store.write() as conn:
            held = records.get_lock(conn, env.name)
            if held is None:
                plan = make_plan(records.ledger(conn, env.name))
                ctx.lock = records.new_lock(env.name, operation=operation, target=target, actor=actor)
                records.take_lock(conn, ctx.lock)
                records.insert_release(conn, plan.pending)
                return plan
        if not records.holder_gone(held):
            raise OperationInProgress(busy_message(held))
        recover.recover_env(ctx, engine, env, actor=actor)
    raise OperationInProgress(busy_message(held))


def busy_message(lock: Lock) -> str:
    """Who holds the environment, and what to do: only a lock from another host needs --force,
    since this host can tell a dead pid itself (and promote recovers a dead owner on its own)."""
    ago = max(0, int((clock.now() - lock.started_at).total_seconds()))
    held = (f"another operation ({lock.operation} {lock.target} by {lock.actor}, {ago} s ago) is in progress "
            f"on {lock.env} (pid {lock.pid} on {lock.host})")
    if lock.host != socket.gethostname():
        return (f"{held}; wait for it, or if that process on {lock.host} is gone "
                f"run `registry recover --env {lock.env} --force`")
    if records.holder_gone(lock):
        return f"{held}, which has exited; run `registry recover --env {lock.env}`"
    return (f"{held}; wait for it, or if it hangs stop it (kill {lock.pid}), "
            f"then run `registry recover --env {lock.env}`")


def switch(ctx: Context, engine: Engine, env: Environment, plan: Plan, *, runtime: Runtime,
           make_container: Callable[[], tuple[str, bool]], container_step: str = "create container") -> DeployResult:
    """Stop the current container, start the new one, gate on health; roll back on failure."""
    url = base_url(env) + runtime.health.path
    timeout = env.health_timeout_s or runtime.health.timeout_s
    new_id, created, old_stopped = None, False, False
    try:
        with ctx.step(container_step):
            new_id, created = make_container()
        _note_container(ctx, plan, new_id)
        crashpoint(f"{plan.pending.operation}:created")
        old = plan.current.container_id if plan.current else None
        if old and old != new_id:
            with ctx.step("stop old container"):
                old_stopped = True
                engine.stop(old)
        crashpoint(f"{plan.pending.operation}:old-stopped")
        with ctx.step("start container"):
            engine.start(new_id)
        crashpoint(f"{plan.pending.operation}:started")
        with ctx.step("health check"):
            engine.wait_healthy(new_id, url=url, timeout=timeout)
        if runtime.warmup:
            with ctx.step("warm-up"):
                engine.warm_up(base_url=base_url(env), requests=runtime.warmup)
        crashpoint(f"{plan.pending.operation}:healthy")
    except BaseException as exc:  # Ctrl-C too: production must not stay down with the old container stopped
        _fail(ctx, engine, env, plan, exc, new_id=new_id, remove=created, old_stopped=old_stopped)
        raise
    return _succeed(ctx, engine, env, plan, new_id)


def _note_container(ctx: Context, plan: Plan, container_id: str) -> None:
    """Record the container on the pending row first, so recovery finds it after a crash."""
    plan.pending = plan.pending.model_copy(update={"container_id": container_id})
    with ctx.store.write() as conn:
        records.update_release(conn, plan.pending)


def _succeed(ctx: Context, engine: Engine, env: Environment, plan: Plan, new_id: str) -> DeployResult:
    with ctx.step("record"), ctx.store.write() as conn:
        settled = ledger.settle(plan, ok=True, at=clock.now(), container_id=new_id)
        records.apply(conn, settled)
        event(ctx, conn, plan, settled.deployed, env=env.name)
        rows = records.ledger(conn, env.name)
    # Still under the lock, so no concurrent promote has a fresh (not yet running) container here.
    removed, warnings = retain(ctx, engine, env, rows)
    with ctx.store.write() as conn:
        records.drop_lock(conn, ctx.lock)
    previous = settled.updates[1] if len(settled.updates) > 1 else None  # as recorded: superseded
    return DeployResult(env=env.name, operation=str(plan.pending.operation), release=settled.deployed,
                        previous=previous, steps=list(ctx.steps), removed_containers=removed,
                        warnings=warnings)


def _fail(ctx: Context, engine: Engine, env: Environment, plan: Plan, exc: BaseException, *, new_id: str | None,
          remove: bool, old_stopped: bool) -> None:
    """Stop (and remove) the new container, restart the old one, record both; raise exit 4.

    Each step is tried even when the one before it failed; when the outcome cannot be known the
    pending row and lock stay for ``registry recover`` and the error says so."""
    error = ctx.scrub(str(exc) or type(exc).__name__)
    cleanup, halted = _drop_new(ctx, engine, plan, new_id=new_id, remove=remove)
    try:
        previous, note = _restore(ctx, engine, env, plan, old_stopped=old_stopped)
    except CellarError as lost:
        cleanup, halted = ctx.scrub(str(lost)), False
    if not halted:  # the engine is gone too: only a later reconcile can tell what runs
        raise EngineError(f"{plan.pending.ref} failed on {env.name} ({error}) and the previous state could "
                          f"not be restored ({cleanup}): run `registry recover --env {env.name}` "
                          "once Docker answers") from None
    if cleanup:
        note += f"; the failed container was left behind ({cleanup})"
    with ctx.store.write() as conn:
        settled = ledger.settle(plan, ok=False, at=clock.now(), error=error, previous=previous)
        records.apply(conn, settled)
        event(ctx, conn, plan, settled.updates[0], env=env.name, error=error)
        if settled.appended:
            event(ctx, conn, plan, settled.appended[0], env=env.name, automatic=True)
        records.drop_lock(conn, ctx.lock)
    if isinstance(exc, StepFailed):
        raise HealthGateFailed(f"{plan.pending.ref} failed on {env.name} (revision {plan.pending.revision}): "
                         f"{error}; {note}", result=_failure(ctx, env, plan, settled, error)) from None
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted(_interrupted(env, plan, previous, note)) from None
    if isinstance(exc, CellarError) and str(exc) != error:
        exc.args = (error,)  # re-raised by switch: never with a secret in it


def _failure(ctx: Context, env: Environment, plan: Plan, settled: ledger.Settlement, error: str) -> FailedDeploy:
    """The rows a failed operation settled, for ``--json`` on exit 4."""
    before = settled.updates[1] if len(settled.updates) > 1 else plan.current
    return FailedDeploy(env=env.name, operation=str(plan.pending.operation), error=error,
                        failed=settled.updates[0], rollback=settled.deployed if settled.appended else None,
                        previous=before, steps=list(ctx.steps))


def _interrupted(env: Environment, plan: Plan, previous: str, note: str) -> str:
    """Ctrl-C's one line: what was not deployed and what serves now."""
    what, current = f"interrupted: {plan.pending.ref} was not deployed to {env.name}", plan.current
    if current is None or not current.container_id:
        return f"{what}; nothing was deployed before"
    if previous == "restored":
        return f"{what}; {current.ref} was restored (revision {plan.pending.revision + 1})"
    if previous == "untouched":
        return f"{what}; {current.ref} kept running"
    return f"{what}; {note}"


def _drop_new(ctx: Context, engine: Engine, plan: Plan, *, new_id: str | None,
              remove: bool) -> tuple[str | None, bool]:
    """Remove (or stop, for a kept one) the failed container: (scrubbed error if any, whether it
    is at least stopped). Removal failing falls back to stopping, so the old one gets the port back."""
    if not new_id or new_id == (plan.current.container_id if plan.current else None):
        return None, True
    problem = None
    with ctx.step("remove failed container" if remove else "stop failed container"):
        if remove:
            try:
                engine.remove(new_id)
                return None, True
            except (CellarError, StepFailed) as exc:
                problem = ctx.scrub(str(exc))
        try:  # a failed container is not worth a graceful stop: the old one is waiting
            engine.stop(new_id, timeout=2)
        except (CellarError, StepFailed) as exc:
            return problem or ctx.scrub(str(exc)), False
    return problem, True


def _restore(ctx: Context, engine: Engine, env: Environment, plan: Plan, *, old_stopped: bool) -> tuple[str, str]:
    current = plan.current
    if current is None or not current.container_id:
        return "untouched", "nothing was deployed before, nothing to roll back to"
    if not old_stopped:
        return "untouched", f"{current.ref} kept running"
    try:
        with ctx.step("restart previous"):
            start_and_check(ctx, engine, env, current)
    except StepFailed as exc:
        return "lost", (f"rolling back to {current.ref} failed too ({ctx.scrub(str(exc))}); nothing is deployed: "
                        f"see `registry status`, then `registry rollback --env {env.name}`")
    return "restored", (f"rolled back automatically to {current.ref} "
                        f"(revision {plan.pending.revision + 1}), which answers again")


def start_and_check(ctx: Context, engine: Engine, env: Environment, release: Release) -> None:
    """Start a release's existing container and wait until its own health path answers."""
    runtime = runtime_of(ctx, release)
    engine.start(release.container_id)
    engine.wait_healthy(release.container_id, url=base_url(env) + runtime.health.path,
                        timeout=env.health_timeout_s or runtime.health.timeout_s)


def runtime_of(ctx: Context, release: Release) -> Runtime:
    with ctx.store.read() as conn:
        record, _ = records.version_record(conn, release.model, release.version)
    return Runtime.model_validate(record["runtime"])


def event(ctx: Context, conn, plan: Plan, row: Release, *, env: str, error: str | None = None,
           automatic: bool = False) -> None:
    action = "rollback" if automatic or row.operation != ledger.Operation.PROMOTE else "promote"
    detail = {"revision": row.revision, "status": str(row.status), "manifest_digest": row.manifest_digest,
              "image_digest": row.image_digest, "container": (row.container_id or "")[:12],
              "previous": plan.current.ref if plan.current else None, "rollback_of": row.rollback_of}
    if error:
        detail["error"] = error
    if automatic:
        detail["automatic"] = True
    audit.append(conn, actor=row.actor, action=action, object=row.ref, model=row.model, env=env,
                 reason=row.reason, detail=detail, db_user=ctx.store.db_user(conn))


def retain(ctx: Context, engine: Engine, env: Environment, rows: list[Release]) -> tuple[list[str], list[str]]:
    """Remove stopped containers beyond the environment's ``keep``; never one a rollback needs.
    Best effort: the release is already recorded, so a Docker error is a warning, not a failure."""
    keepers = ledger.keep_containers(rows, keep=env.keep)
    removed, warnings = [], []
    try:
        found = engine.find(env=env.name, registry=ctx.registry_id)
    except CellarError as exc:
        return [], [f"old containers were not cleaned up: {ctx.scrub(str(exc))}"]
    for c in found:
        if c.running or c.id in keepers:
            continue
        try:
            engine.remove(c.id)
            removed.append(c.name)
        except CellarError as exc:
            warnings.append(f"could not remove old container {c.name}: {ctx.scrub(str(exc))}")
    return removed, warnings


def base_url(env: Environment) -> str:
    """Where the published port answers: on the Docker host's address."""
    host = "127.0.0.1" if env.bind_addr in ("0.0.0.0", "::", "") else env.bind_addr
    if env.docker_host and urlsplit(env.docker_host).scheme in ("tcp", "ssh", "http", "https"):
        host = urlsplit(env.docker_host).hostname or host
    return f"http://{host}:{env.port}"


def _secret_like(environ: Mapping[str, str]) -> set[str]:
    """Values of the caller's variables named like secrets (*_TOKEN, *_KEY ...): a kept
    container started again by a rollback got its secrets earlier, and may log them."""
    return {v for k, v in environ.items() if is_secret_key(k) and len(v) >= 4}


def resolve_env(ctx: Context, name: str | None, reason: str | None) -> Environment:
    with ctx.store.read() as conn:
        env = records.find_env(conn, name)
    if env.protected and not (reason and reason.strip()):
        raise InvalidInput(f"{env.name} is protected: say why with --reason")
    return env
