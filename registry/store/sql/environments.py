"""Environments (deploy targets) in SQL. Functions take the caller's connection."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from registry import clock
from registry.errors import NotFound
from registry.formats import canonical
from registry.models import Environment
from registry.models.resources import EnvRuntime
from registry.store.sql import schema as t
from registry.store.sql.sealing import require_rows, sealed
from registry.trust import seals


def all_(conn: Connection) -> list[Environment]:
    """Every environment, by name."""
    return _checked(conn, conn.execute(select(t.environments).order_by(t.environments.c.name)).all())


def get(conn: Connection, name: str) -> Environment | None:
    found = _checked(conn, conn.execute(select(t.environments).where(t.environments.c.name == name)).all())
    return found[0] if found else None


def named_or_default(conn: Connection, name: str | None) -> Environment:
    """The named environment, or the default one (or the only one) when ``name`` is None."""
    if name is not None:
        found = get(conn, name)
        if found is None:
            raise NotFound(f"no environment named {name!r}: add it with `registry env add {name} --port N`")
        return found
    envs = all_(conn)
    chosen = [e for e in envs if e.is_default] or (envs if len(envs) == 1 else [])
    if not chosen:
        what = ", ".join(e.name for e in envs) or "none yet: add one with `registry env add NAME --port N`"
        raise NotFound(f"which environment? pass --env, or mark one with --default (environments: {what})")
    return chosen[0]


def insert_(conn: Connection, env: Environment) -> list[Environment]:
    """Record ``env``; a new default takes the flag from the old one. Returns every row written."""
    written = [env]
    if env.is_default:
        for old in all_(conn):
            if old.is_default:
                written.append(old.model_copy(update={"is_default": False}))
                conn.execute(update(t.environments).where(t.environments.c.name == old.name)
                             .values(**sealed(conn, "environment", columns(written[-1]))))
    conn.execute(insert(t.environments).values(**sealed(conn, "environment", columns(env))))
    return written


def delete_(conn: Connection, name: str) -> None:
    conn.execute(delete(t.environments).where(t.environments.c.name == name))


def bindings(written: list[Environment], *, deleted: Sequence[Environment] = ()) -> dict:
    """``{row name: digest}`` of the environment rows a change wrote or deleted, for its event."""
    return seals.bindings("environment", [columns(e) for e in written],
                            deleted=[columns(e) for e in deleted])


def update_(conn: Connection, env: Environment) -> list[Environment]:
    """Rewrite ``env``'s row (its settings changed). Returns the rows written."""
    conn.execute(update(t.environments).where(t.environments.c.name == env.name)
                 .values(**sealed(conn, "environment", columns(env))))
    return [env]


def columns(env: Environment) -> dict:
    """The row's columns: the runtime overrides and a fleet's hosts as canonical JSON text (None
    when there are none)."""
    values = env.model_dump(exclude={"runtime", "hosts"})
    values["runtime"] = canonical.dumps(env.runtime.model_dump(mode="json")) if env.runtime and \
        not env.runtime.is_empty() else None
    values["hosts"] = canonical.dumps(env.hosts) if env.hosts else None
    return values


def _checked(conn: Connection, rows) -> list[Environment]:
    require_rows(conn, "environment", [r._mapping for r in rows])
    return [_env(r) for r in rows]


def _env(row) -> Environment:
    return Environment(name=row.name, port=row.port, bind_addr=row.bind_addr, docker_host=row.docker_host,
                       health_timeout_s=row.health_timeout_s, keep=row.keep, protected=row.protected,
                       is_default=row.is_default, gate=row.gate, created_at=clock.utc(row.created_at),
                       runtime=EnvRuntime.model_validate_json(row.runtime) if row.runtime else None,
                       hosts=json.loads(row.hosts) if row.hosts else None)
