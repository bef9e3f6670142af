"""Signing keys, trust policies and signatures in SQL (registry.signing says what they mean).

Key and trust rows are sealed like environments (kinds ``signing_key`` and ``trust``) and
checked as they are read: someone with the database alone cannot add a trusted key or lower a
policy. Signature rows need no seal: what counts is the bundle, checked against a sealed key.
"""

from __future__ import annotations

import json

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.engine import Connection

from registry import clock
from registry.errors import AuditBroken
from registry.models.signing import SignatureInfo, SigningKey, TrustPolicy
from registry.store.sql import schema as t
from registry.store.sql.sealing import key_of, require_rows, sealed
from registry.trust import audit, seals

# --- keys ---------------------------------------------------------------------------------


def keys(conn: Connection) -> list[SigningKey]:
    """Every registered key by name, with the environments that trust it."""
    rows = conn.execute(select(t.signing_keys).order_by(t.signing_keys.c.name)).mappings().all()
    require_rows(conn, "signing_key", rows)
    trusting: dict[str, list[str]] = {}
    for policy in policies(conn):
        for name in policy.trusted:
            trusting.setdefault(name, []).append(policy.env)
    return [SigningKey(name=r["name"], fingerprint=r["fingerprint"], public_key=r["public_key"], actor=r["actor"],
                       created_at=clock.utc(r["created_at"]), trusted_by=trusting.get(r["name"], []))
            for r in rows]


def add_key(conn: Connection, key: SigningKey) -> dict:
    """Record ``key``; returns its row bindings for the event."""
    values = _key_row(key)
    conn.execute(insert(t.signing_keys).values(**sealed(conn, "signing_key", values)))
    return seals.bindings("signing_key", [values])


def remove_key(conn: Connection, key: SigningKey) -> dict:
    conn.execute(delete(t.signing_keys).where(t.signing_keys.c.name == key.name))
    return seals.bindings("signing_key", [], deleted=[_key_row(key)])


def _key_row(key: SigningKey) -> dict:
    return {"name": key.name, "fingerprint": key.fingerprint, "public_key": key.public_key, "actor": key.actor,
            "created_at": key.created_at}


# --- trust policies -------------------------------------------------------------------------


def policies(conn: Connection) -> list[TrustPolicy]:
    rows = conn.execute(select(t.env_trust).order_by(t.env_trust.c.env)).mappings().all()
    require_rows(conn, "trust", rows)
    return [TrustPolicy(env=r["env"], trusted=json.loads(r["trusted"]), require_signatures=r["require_signatures"])
            for r in rows]


def policy(conn: Connection, env: str) -> TrustPolicy:
    """``env``'s policy (none recorded: trust nobody, require nothing). AuditBroken when the row's
    seal fails, or when it is not the row the newest ``env-trust`` event wrote: a seal alone cannot
    tell a deleted policy, or an older laxer copy put back, from the current one."""
    rows = conn.execute(select(t.env_trust).where(t.env_trust.c.env == env)).mappings().all()
    require_rows(conn, "trust", rows)
    _as_last_set(conn, env, rows[0] if rows else None)
    if not rows:
        return TrustPolicy(env=env)
    return TrustPolicy(env=env, trusted=json.loads(rows[0]["trusted"]),
                       require_signatures=rows[0]["require_signatures"])


def _as_last_set(conn: Connection, env: str, row) -> None:
    e = t.events.c
    last = conn.execute(select(t.events).where(e.action == "env-trust", e.env == env)
                        .order_by(e.id.desc()).limit(1)).mappings().first()
    if last is None:
        return  # never set through Cellar: the row (if any) rests on its seal
    if audit.chain_hash(last["prev_hash"], audit.event_body(last)) != last["hash"]:
        raise AuditBroken(f"event {last['id']} (the last change of {env}'s trust policy) was edited in the "
                          "database; refusing to act on it (run `registry audit verify`)")
    key = key_of(conn)
    if key is not None and (problem := seals.event_problem(key, last)) is not None:
        raise AuditBroken(f"{problem.message}; refusing to act on {env}'s trust policy (run `registry audit verify`)")
    name = seals.row_key("trust", {"env": env})
    written = (json.loads(last["detail"]).get("rows") or {}).get(name)
    now = seals.canonical_row_digest("trust", row) if row is not None else None
    if written != now:
        raise AuditBroken(f"{name} is not the policy event {last['id']} set (deleted, edited or replaced by an "
                          "older copy in the database); refusing to act on it (run `registry audit verify`)")


def set_policy(conn: Connection, new: TrustPolicy) -> dict:
    """Replace ``new.env``'s policy; returns the row bindings for the event."""
    conn.execute(delete(t.env_trust).where(t.env_trust.c.env == new.env))
    values = {"env": new.env, "trusted": json.dumps(new.trusted), "require_signatures": new.require_signatures}
    conn.execute(insert(t.env_trust).values(**sealed(conn, "trust", values)))
    return seals.bindings("trust", [values])


# --- signatures ------------------------------------------------------------------------------


def signatures(conn: Connection, model: str, version: str) -> list[tuple[SignatureInfo, str]]:
    """``model@version``'s signatures and approvals, oldest first, each with its bundle."""
    s = t.signatures.c
    rows = conn.execute(select(t.signatures).where(s.model == model, s.version == version)
                        .order_by(s.created_at, s.id)).mappings().all()
    return [(_info(r), r["bundle"]) for r in rows]


def add_signature(conn: Connection, info: SignatureInfo, bundle: str) -> None:
    """Record a signature; one by the same key for the same purpose (and environment) is replaced."""
    s = t.signatures.c
    same_env = s.env.is_(None) if info.env is None else s.env == info.env
    conn.execute(delete(t.signatures).where(and_(s.model == info.model, s.version == info.version,
                                                 s.fingerprint == info.fingerprint, same_env)))
    conn.execute(insert(t.signatures).values(
        model=info.model, version=info.version, signer=info.signer, fingerprint=info.fingerprint, env=info.env,
        expires_at=info.expires_at, actor=info.actor, created_at=info.created_at, bundle=bundle))


def _info(r) -> SignatureInfo:
    return SignatureInfo(model=r["model"], version=r["version"], signer=r["signer"], fingerprint=r["fingerprint"],
                         env=r["env"], expires_at=clock.utc(r["expires_at"]) if r["expires_at"] else None,
                         actor=r["actor"], created_at=clock.utc(r["created_at"]))
