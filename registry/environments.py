"""Environments (deploy targets) and what runs in them: add, list, remove, history, status."""

from __future__ import annotations

from registry import audit, clock, ledger
from registry.deploy import records
from registry.deploy.actions import Context, base_url, busy_message, runtime_of
from registry.deploy.models import Environment, EnvStatus
from registry.errors import CellarError, InvalidInput, OperationInProgress, VersionConflict
from registry.ledger import Release
from registry.models import check_name


def add(ctx: Context, *, name: str, port: int, actor: str, docker_host: str | None = None,
        health_timeout_s: float | None = None, keep: int = 3, protected: bool = False,
        default: bool = False, bind_addr: str = "127.0.0.1") -> Environment:
    """Record a new environment; refuses a name or host port already taken."""
    try:
        check_name(name, "environment name")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    _check_settings(port=port, keep=keep, health_timeout_s=health_timeout_s)
    _check_address(bind_addr=bind_addr, docker_host=docker_host)
    env = Environment(name=name, port=port, bind_addr=bind_addr, docker_host=docker_host,
                      health_timeout_s=health_timeout_s, keep=keep, protected=protected,
                      is_default=default, created_at=clock.now())
    with ctx.store.write() as conn:
        for other in records.environments(conn):
            if other.name == name:
                raise VersionConflict(f"environment {name!r} already exists: see `registry env show {name}`")
            if other.port == port and other.docker_host == docker_host:
                raise VersionConflict(f"port {port} is already used by environment {other.name!r}: pick another")
        records.insert_env(conn, env)
        audit.append(conn, actor=actor, action="env-add", object=name, env=name,
                     detail=env.model_dump(mode="json", exclude={"created_at"}), db_user=ctx.store.db_user(conn))
    return env


def _check_settings(*, port: int, keep: int, health_timeout_s: float | None) -> None:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"--port {port} is not a TCP port (1-65535)")
    if keep < 0:
        raise InvalidInput("--keep must be 0 or more")
    if health_timeout_s is not None and not 0 < health_timeout_s <= 3600:
        raise InvalidInput("--health-timeout must be between 0 and 3600 seconds")


def _check_address(*, bind_addr: str, docker_host: str | None) -> None:
    import ipaddress
    from urllib.parse import urlsplit

    try:
        ipaddress.ip_address(bind_addr)
    except ValueError:
        raise InvalidInput(f"--bind {bind_addr!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None
    if not docker_host:
        return
    parts = urlsplit(docker_host)
    if parts.scheme not in ("unix", "tcp", "ssh", "http", "https"):
        raise InvalidInput(f"--docker-host {docker_host!r} must be a unix://, tcp:// or ssh:// URL")
    # Never echo the URL here: it would print the password this check exists to keep out.
    if parts.password is not None or (parts.username is not None and parts.scheme != "ssh"):
        raise InvalidInput("--docker-host must not carry a user or password (it would be stored and shown): "
                           "use TLS certificates (DOCKER_CERT_PATH) or an ssh://user@host with keys")


def remove(ctx: Context, *, name: str, actor: str, reason: str | None, force: bool = False) -> Environment:
    """Forget an environment. Its ledger stays (history is never rewritten). With something
    deployed this needs ``force``, which also removes the environment's containers.

    The environment's lock is taken in the first write transaction, before Docker is touched,
    so no promote can start a container that the removal then misses or deletes."""
    env, now = _claim_for_removal(ctx, name=name, actor=actor, reason=reason, force=force)
    try:
        if now or force:
            engine = ctx.engine_for(env)
            for c in engine.find(env=name, registry=ctx.registry_id):
                engine.remove(c.id)
    except BaseException:
        with ctx.store.write() as conn:
            records.drop_lock(conn, ctx.lock, missing_ok=True)
        raise
    with ctx.store.write() as conn:
        if now:
            records.update_release(conn, now.model_copy(update={"status": ledger.ReleaseStatus.SUPERSEDED}))
        records.drop_lock(conn, ctx.lock)  # raises (and keeps the environment) if it changed hands
        records.delete_env(conn, name)
        audit.append(conn, actor=actor, action="env-remove", object=name, env=name, reason=reason,
                     detail={"undeployed": now.ref if now else None}, db_user=ctx.store.db_user(conn))
    return env


def _claim_for_removal(ctx: Context, *, name: str, actor: str, reason: str | None,
                       force: bool) -> tuple[Environment, Release | None]:
    with ctx.store.write() as conn:
        env = records.find_env(conn, name)
        rows = records.ledger(conn, name)
        held = records.get_lock(conn, name)
        if held:  # says, by case, whether to wait, recover, or (another host's lock) recover --force
            raise OperationInProgress(busy_message(held))
        if ledger.pending(rows):
            raise OperationInProgress(f"{name} has an unfinished operation that no process owns: "
                                      f"run `registry recover --env {name}` first")
        if env.protected and not reason:
            raise InvalidInput(f"{name} is protected: say why with --reason")
        now = ledger.current(rows)
        if now and not force:
            raise InvalidInput(f"{now.ref} is deployed in {name}: pass --force to stop and remove its containers too")
        ctx.lock = records.new_lock(name, operation="env-remove", target=name, actor=actor)
        records.take_lock(conn, ctx.lock)
    return env, now


def history(ctx: Context, env: str | None = None) -> list[Release]:
    """Releases, oldest first: one environment's, or every environment's."""
    with ctx.store.read() as conn:
        if env is None:
            return records.all_releases(conn)
        rows = records.ledger(conn, env)
        if not rows:  # a removed environment keeps its ledger: only a name never deployed is unknown
            records.find_env(conn, env)
        return rows


def status(ctx: Context) -> list[EnvStatus]:
    """Each environment: deployed release, its container's state and health, pending work."""
    with ctx.store.read() as conn:
        envs = records.environments(conn)
        rows = {e.name: records.ledger(conn, e.name) for e in envs}
        held = {lock.env: lock for lock in records.locks(conn)}
    return [_status(ctx, env, rows[env.name], held.get(env.name)) for env in envs]


def _status(ctx: Context, env, rows: list[Release], lock) -> EnvStatus:
    now = ledger.current(rows)
    out = EnvStatus(env=env.name, port=env.port, deployed=now, container_id=now.container_id if now else None,
                    pending=lock, pending_release=ledger.pending(rows))
    if now is None or not now.container_id:
        return out
    try:
        info = ctx.engine_for(env).inspect(now.container_id)
    except CellarError as exc:
        out.note = str(exc)
        return out
    out.container_state = info.status if info else "missing"
    if info and info.running:
        out.healthy = ctx.engine_for(env).answers(url=base_url(env) + runtime_of(ctx, now).health.path)
    return out
