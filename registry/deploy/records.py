"""Rows in, domain objects out: environments, the release ledger and operation locks in SQL.

Every function takes the caller's connection, so a ledger change, its lock and its audit
event share one transaction.
"""

from __future__ import annotations

import os
import socket

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from registry import clock
from registry.deploy.models import Environment, Lock
from registry.errors import NotFound, OperationInProgress
from registry.ledger import Operation, Release, ReleaseStatus, Settlement
from registry.store import schema as t

# --- environments -----------------------------------------------------------------------


def _env(row) -> Environment:
    return Environment(name=row.name, port=row.port, bind_addr=row.bind_addr, docker_host=row.docker_host,
                       health_timeout_s=row.health_timeout_s, keep=row.keep, protected=row.protected,
                       is_default=row.is_default, created_at=clock.utc(row.created_at))


def environments(conn: Connection) -> list[Environment]:
    return [_env(r) for r in conn.execute(select(t.environments).order_by(t.environments.c.name))]


def find_env(conn: Connection, name: str | None) -> Environment:
    """The named environment, or the default one (or the only one) when ``name`` is None."""
    envs = environments(conn)
    if name is not None:
        found = next((e for e in envs if e.name == name), None)
        if found is None:
            raise NotFound(f"no environment named {name!r}: add it with `registry env add {name} --port N`")
        return found
    chosen = [e for e in envs if e.is_default] or (envs if len(envs) == 1 else [])
    if not chosen:
        what = ", ".join(e.name for e in envs) or "none yet: add one with `registry env add NAME --port N`"
        raise NotFound(f"which environment? pass --env/--to, or mark one with --default (environments: {what})")
    return chosen[0]


def insert_env(conn: Connection, env: Environment) -> None:
    if env.is_default:
        conn.execute(update(t.environments).values(is_default=False))
    conn.execute(insert(t.environments).values(**env.model_dump()))


def delete_env(conn: Connection, name: str) -> None:
    conn.execute(delete(t.environments).where(t.environments.c.name == name))


# --- releases ---------------------------------------------------------------------------

_COLUMNS = [c.name for c in t.releases.columns if c.name != "id"]


def _release(row) -> Release:
    data = {c: getattr(row, c) for c in _COLUMNS}
    for key in ("started_at", "finished_at"):
        if data[key] is not None:
            data[key] = clock.utc(data[key])
    data["status"], data["operation"] = ReleaseStatus(row.status), Operation(row.operation)
    return Release(**data)


def ledger(conn: Connection, env: str) -> list[Release]:
    """An environment's releases, oldest revision first."""
    rows = conn.execute(select(t.releases).where(t.releases.c.env == env).order_by(t.releases.c.revision))
    return [_release(r) for r in rows]


def all_releases(conn: Connection) -> list[Release]:
    rows = conn.execute(select(t.releases).order_by(t.releases.c.env, t.releases.c.revision))
    return [_release(r) for r in rows]


def _values(r: Release) -> dict:
    data = r.model_dump(include=set(_COLUMNS))
    data["status"], data["operation"] = str(r.status), str(r.operation)
    return data


def insert_release(conn: Connection, r: Release) -> None:
    conn.execute(insert(t.releases).values(**_values(r)))


def update_release(conn: Connection, r: Release) -> None:
    conn.execute(update(t.releases).values(**_values(r))
                 .where(t.releases.c.env == r.env, t.releases.c.revision == r.revision))


def apply(conn: Connection, settlement: Settlement) -> None:
    """Write a settlement; rows leaving ``deployed`` first, so the one-deployed index holds
    after every statement (SQLite checks it per statement)."""
    rows = [*settlement.updates, *settlement.appended]
    appended = {id(r) for r in settlement.appended}
    for r in sorted(rows, key=lambda r: r.status is ReleaseStatus.DEPLOYED):
        (insert_release if id(r) in appended else update_release)(conn, r)


# --- operation locks --------------------------------------------------------------------


def get_lock(conn: Connection, env: str) -> Lock | None:
    row = conn.execute(select(t.env_locks).where(t.env_locks.c.env == env)).first()
    if row is None:
        return None
    return Lock(**{**row._mapping, "started_at": clock.utc(row.started_at)})


def locks(conn: Connection) -> list[Lock]:
    return [Lock(**{**r._mapping, "started_at": clock.utc(r.started_at)}) for r in conn.execute(select(t.env_locks))]


def new_lock(env: str, *, operation: str, target: str, actor: str) -> Lock:
    return Lock(env=env, operation=operation, target=target, actor=actor, host=socket.gethostname(),
                pid=os.getpid(), started_at=clock.now())


def take_lock(conn: Connection, lock: Lock) -> None:
    conn.execute(insert(t.env_locks).values(**lock.model_dump()))


def drop_lock(conn: Connection, lock: Lock, *, missing_ok: bool = False) -> None:
    """Release exactly this lock (same env, owner and operation). Raises when it is no longer
    there, e.g. a forced recover took the environment over: the caller must not carry on as owner."""
    c = t.env_locks.c
    gone = conn.execute(delete(t.env_locks).where(
        c.env == lock.env, c.pid == lock.pid, c.host == lock.host, c.operation == lock.operation,
        c.actor == lock.actor, c.target == lock.target)).rowcount
    if gone != 1 and not missing_ok:
        raise OperationInProgress(f"the lock on {lock.env} ({lock.operation} {lock.target}) was taken over by "
                                  f"another process meanwhile: run `registry status`, then "
                                  f"`registry recover --env {lock.env}` if the state looks wrong")


def holder_gone(lock: Lock) -> bool:
    """True when the lock's owner provably no longer runs: same host and its pid is dead."""
    if lock.host != socket.gethostname():
        return False
    try:
        os.kill(lock.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: gone all the same
        with open(f"/proc/{lock.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# --- registry identity ------------------------------------------------------------------


def registry_id(conn: Connection) -> str:
    """This registry's identity, labelled on its containers: the hash of the first audit event.

    Derived from the database rather than a file in the home, so every home sharing one database
    (one ledger) sees the same containers, and two registries never do; the hash covers the init
    event's time and path, and the audit chain makes it immutable."""
    first = conn.execute(select(t.events.c.hash).order_by(t.events.c.id).limit(1)).scalar()
    if first is None:  # a database nobody initialised through `registry init`: derive from its URL
        import hashlib

        first = hashlib.sha256(str(conn.engine.url.render_as_string(hide_password=True)).encode()).hexdigest()
    return first[:32]


# --- versions ---------------------------------------------------------------------------


def version_record(conn: Connection, model: str, version: str) -> tuple[dict, str]:
    """The canonical manifest of model@version and its digest."""
    import json

    row = conn.execute(select(t.versions.c.manifest, t.versions.c.manifest_digest)
                       .select_from(t.versions.join(t.models))
                       .where(t.models.c.name == model, t.versions.c.version == version)).first()
    if row is None:
        raise NotFound(f"no version {model}@{version}: see `registry list {model}`")
    return json.loads(row.manifest), row.manifest_digest
