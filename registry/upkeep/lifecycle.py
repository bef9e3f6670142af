"""``registry deprecate`` and ``delete``: hide a version, or remove one no release ever named."""

from __future__ import annotations

from registry import clock
from registry.action import Action
from registry.errors import Conflict, InvalidInput
from registry.models.upkeep import (
    DeleteResult,
    Deprecation,
)
from registry.store.sql import events, versions
from registry.store.sql import upkeep as store

# --- deprecate and delete ----------------------------------------------------------------------


class Deprecate(Action):
    """``Deprecate(cfg, actor=...).run(...)``: Hide ``model@version`` from listings and refuse to
    promote it; already deprecated: no-op."""

    def run(self, model: str, version: str, *, reason: str | None) -> Deprecation:
        cfg = self.cfg
        actor = self.actor
        with cfg.store.write() as conn:
            if (was := store.deprecation(conn, model, version)) is not None:
                return was.model_copy(update={"changed": False})
            at = clock.now()
            store.deprecate(conn, model, version, at=at, reason=reason)
            events.append(conn, actor=actor, action="deprecate", object=f"{model}@{version}", model=model,
                          reason=reason, detail={}, db_user=cfg.store.db_user(conn))
        return Deprecation(model=model, version=version, deprecated_at=at, reason=reason)


class Delete(Action):
    """``Delete(cfg, actor=...).run(...)``: Remove a version that no release ever named (``force``
    required); gc reclaims its blobs."""

    def run(self, model: str, version: str, *, force: bool, reason: str | None = None) -> DeleteResult:
        cfg = self.cfg
        actor = self.actor
        if not force:
            raise InvalidInput(f"deleting {model}@{version} cannot be undone: pass --force "
                               "(or `registry deprecate` to hide it instead)")
        with cfg.store.write() as conn:
            stored = versions.record_of(conn, model, version)
            if named := store.releases_naming(conn, model, version):
                env, revision = named[-1]
                raise Conflict(f"{model}@{version} was deployed ({env} revision {revision}) and the ledger needs it: "
                               "deprecate it instead (`registry deprecate`)")
            digests = store.delete_version(conn, model, version)
            released = sorted(set(digests) - store.referenced_digests(conn))
            events.append(conn, actor=actor, action="delete", object=f"{model}@{version}", model=model, reason=reason,
                          detail={"manifest_digest": stored.digest, "blobs_released": len(released)},
                          db_user=cfg.store.db_user(conn))
        return DeleteResult(model=model, version=version, manifest_digest=stored.digest, blobs_released=released)


