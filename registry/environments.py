"""Environments (deploy targets) and what runs in them: add, list, remove, history, status."""

from __future__ import annotations

from registry import audit, clock, ledger
from registry.deploy import records
from registry.deploy.actions import Context, base_url, runtime_of
from registry.deploy.models import Environment, EnvStatus
from registry.errors import CellarError, InvalidInput, VersionConflict
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
    if docker_host and urlsplit(docker_host).scheme not in ("unix", "tcp", "ssh", "http", "https"):
        raise InvalidInput(f"--docker-host {docker_host!r} must be a unix://, tcp:// or ssh:// URL")


def remove(ctx: Context, *, name: str, actor: str, reason: str | None, force: bool = False) -> Environment:
    """Forget an environment. Its ledger stays (history is never rewritten). With something
    deployed this needs ``force``, which also removes the environment's containers."""
    with ctx.store.read() as conn:
        env = records.find_env(conn, name)
        now = ledger.current(records.ledger(conn, name))
        busy = records.get_lock(conn, name)
    if busy:
        raise InvalidInput(f"{name} has an operation in progress: wait for it or run `registry recover`")
    if env.protected and not reason:
        raise InvalidInput(f"{name} is protected: say why with --reason")
    if now and not force:
        raise InvalidInput(f"{now.ref} is deployed in {name}: pass --force to stop and remove its containers too")
    if now or force:
        engine = ctx.engine_for(env)
        for c in engine.find(env=name):
            engine.remove(c.id)
    with ctx.store.write() as conn:
        if now:
            records.update_release(conn, now.model_copy(update={"status": ledger.ReleaseStatus.SUPERSEDED}))
        records.delete_env(conn, name)
        audit.append(conn, actor=actor, action="env-remove", object=name, env=name, reason=reason,
                     detail={"undeployed": now.ref if now else None}, db_user=ctx.store.db_user(conn))
    return env


def history(ctx: Context, env: str | None = None) -> list[Release]:
    """Releases, oldest first: one environment's, or every environment's."""
    with ctx.store.read() as conn:
        if env is None:
            return records.all_releases(conn)
        records.find_env(conn, env)
        return records.ledger(conn, env)


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
