"""``Registry``: everything a user can do, without the CLI. The CLI calls one method a command."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from registry import actor as actor_mod
from registry import audit, home as home_mod, inspection, manifest as manifest_mod, pushing, refs
from registry import versions as versions_mod
from registry.errors import InvalidInput, StorageError
from registry.models import InitResult, PushResult, VersionInfo, VersionSummary
from registry.pushing import Progress
from registry.store.blobs import BlobStore
from registry.store.sql import Store, redact
from registry.store.statcache import StatCache

if TYPE_CHECKING:
    from registry.blame import BlameLine, LogEntry
    from registry.deploy.engine import Engine
    from registry.deploy.models import DeployResult, Environment, EnvStatus, RecoverResult
    from registry.ledger import Release
    from registry.diffing import Diff

__all__ = ["Progress", "Registry"]


class Registry:
    """A registry home: its metadata database and blob store.

    >>> reg = Registry.open()            # nearest .cellar/ or $REGISTRY_HOME
    >>> reg.push("examples/support-bot/v1.0/cellar.yaml")
    """

    def __init__(self, home: home_mod.Home, store: Store):
        self.home = home
        self.store = store
        self.blobs = BlobStore(home.blobs)
        self._engine = None
        self._env_engines: dict[str, Engine] = {}  # docker_host -> engine, for environments on other hosts
        self.engine_factory: Callable[[Environment], Engine] | None = None  # tests plug in a FakeEngine
        # git's identity, probed once per Registry: two subprocesses per push add up (bench/api_push.py).
        self._git_user = functools.cache(actor_mod.git_user)
        self._stat_cache = StatCache(home.stat_cache, tmp=self.blobs.tmp)  # loaded once per Registry
        self._tensor_index: dict[str, dict[str, str]] = {}  # see pushing.Context.tensor_index

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | None = None) -> Registry:
        """Open an existing registry; refuses a missing or out-of-date schema."""
        home = home_mod.find(path)
        store = Store(home.db_url)
        store.check_schema()
        reg = cls(home, store)
        reg.blobs.sweep_tmp()
        return reg

    @classmethod
    def init(cls, path: str | Path | None = None, *, actor: str | None = None) -> tuple[Registry, InitResult]:
        """Create (or bring up to date) a registry home. Idempotent."""
        from registry.store import migrate

        home = home_mod.for_init(path)
        store = Store(home.db_url)  # a malformed URL is refused before any folder exists
        _create_folders(home)
        before = store.schema_revision()
        migrate.upgrade(store)
        created = before is None
        if created:
            with store.write() as conn:
                audit.append(conn, actor=actor_mod.resolve(actor), action="init", object=str(home.path),
                             detail={"db": redact(home.db_url)}, db_user=store.db_user(conn))
        return cls(home, store), InitResult(home=str(home.path), db_url=redact(home.db_url), created=created)

    @classmethod
    def upgrade_schema(cls, path: str | Path | None = None, *, actor: str | None = None) -> tuple[str | None, str]:
        """Migrate the database to the schema this program needs; return (before, after)."""
        from registry.store import migrate

        home = home_mod.find(path)
        store = Store(home.db_url)
        try:
            before = store.schema_revision()
            migrate.upgrade(store)
            after = store.schema_revision()
            if before != after:
                with store.write() as conn:
                    audit.append(conn, actor=actor_mod.resolve(actor), action="db-upgrade", object="schema",
                                 detail={"from": before, "to": after}, db_user=store.db_user(conn))
            return before, after
        finally:
            store.close()

    def close(self) -> None:
        """Save the stat cache and close the database and every Docker engine opened."""
        try:
            self._stat_cache.save()
            for engine in [self._engine, *self._env_engines.values()]:
                if engine is not None:
                    engine.close()
        finally:
            self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- push ----------------------------------------------------------------------------

    def push(
        self,
        source: str | Path | manifest_mod.Resolved,
        *,
        version: str | None = None,
        message: str | None = None,
        actor: str | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        """Record a version: store its files as blobs, then its rows and event in one transaction.

        Versions are immutable: pushing the same content again is a no-op, other content
        under an existing model@version is refused.
        """
        resolved = (
            source if isinstance(source, manifest_mod.Resolved)
            else manifest_mod.load(source, version=version, message=message)
        )
        who = actor_mod.resolve(actor, git_identity=self._git_user)
        return pushing.push(self._push_ctx(), resolved, actor=who, progress=progress)

    def _push_ctx(self) -> pushing.Context:
        return pushing.Context(store=self.store, blobs=self.blobs, stat_cache=self._stat_cache,
                               engine=self.engine, tensor_index=self._tensor_index)

    def engine(self):
        """The Docker engine ($DOCKER_HOST or the local socket), connected on first use."""
        if self._engine is None:
            from registry.deploy.docker import DockerEngine

            self._engine = DockerEngine()
        return self._engine

    # --- reading -------------------------------------------------------------------------

    def versions(self, model: str | None = None, *, limit: int | None = None) -> list[VersionSummary]:
        """Versions, newest first; all models unless ``model`` is given."""
        return versions_mod.summaries(self.store, model, limit=limit)

    def count_versions(self, model: str | None = None) -> int:
        """How many versions there are (of ``model``, or in all)."""
        with self.store.read() as conn:
            return versions_mod.count(conn, model)

    def models(self) -> list[str]:
        """Model names, sorted."""
        with self.store.read() as conn:
            return versions_mod.model_names(conn)

    def resolve_ref(self, ref: str) -> tuple[str, str]:
        """``model@version`` or ``version`` -> (model, version), guessing the model when unique."""
        return refs.resolve(self.store, ref)

    def show(self, ref: str) -> VersionInfo:
        """Everything recorded about one version."""
        return inspection.show(self.store, ref)

    # --- diff, blame, audit --------------------------------------------------------------

    def diff(self, a: str, b: str) -> Diff:
        """What changed from ``a`` to ``b``: each a version ref, an unpushed manifest path, or an
        environment (its deployed version). Tensors come from recorded digests, never weight bytes."""
        return inspection.diff(self._push_ctx(), a, b)

    def blame(self, prompt: str, *, at: str | None = None, model: str | None = None) -> list[BlameLine]:
        """For each line of ``prompt`` at ``at`` (default: the model's newest version), the version
        that introduced it, who pushed it, when, and the git commit and author where known."""
        return inspection.blame(self.store, self.blobs, prompt, at=at, model=model)

    def changelog(self, model: str | None = None, *, limit: int | None = None) -> list[LogEntry]:
        """Versions newest first, each with its git provenance (what ``registry log`` shows)."""
        return inspection.changelog(self.store, model, limit=limit)

    def audit(self, *, since: str | datetime | None = None, **filters) -> list[audit.Event]:
        """Audit events newest first, narrowed by ``AuditFilter`` fields (action, actor, env, model,
        prompt, limit); ``since`` takes a datetime, an ISO date or an age like ``7d``."""
        flt = audit.filter_of(since=since, **filters)
        with self.store.read() as conn:
            return audit.query(conn, flt)

    def verify_audit(self, *, checkpoint: str | audit.Checkpoint | None = None) -> audit.Verification:
        """Recompute the audit hash chain; ``checkpoint`` (HASH:COUNT) also catches a truncated tail."""
        if isinstance(checkpoint, str):
            checkpoint = audit.parse_checkpoint(checkpoint)
        with self.store.read() as conn:
            return audit.verify(conn, against=checkpoint)

    def audit_checkpoint(self) -> audit.Checkpoint:
        """The audit log's head hash and event count, to keep somewhere else."""
        with self.store.read() as conn:
            return audit.checkpoint(conn)

    # --- environments, promote, rollback -------------------------------------------------

    def _deploy_ctx(self, on_step=None):
        """The ports promote/rollback run with; ``engine_factory`` (env -> engine) lets tests
        plug in ``registry.deploy.fake.FakeEngine``."""
        from registry.deploy.actions import Context

        return Context(store=self.store, blobs=self.blobs, snapshots=self.home.snapshots,
                       engine_for=self._engine_for, environ=os.environ, on_step=on_step)

    def _engine_for(self, env: Environment) -> Engine:
        if self.engine_factory is not None:
            return self.engine_factory(env)
        if not env.docker_host:
            return self.engine()
        if env.docker_host not in self._env_engines:
            from registry.deploy.docker import DockerEngine

            self._env_engines[env.docker_host] = DockerEngine(env.docker_host)
        return self._env_engines[env.docker_host]

    def add_env(self, name: str, *, port: int, actor: str | None = None, **settings) -> Environment:
        """Add an environment (deploy target). Settings: docker_host, health_timeout_s, keep,
        protected, default, bind_addr."""
        from registry import environments

        return environments.add(self._deploy_ctx(), name=name, port=port, actor=actor_mod.resolve(actor), **settings)

    def environments(self) -> list[Environment]:
        """All environments, by name."""
        from registry.deploy import records

        with self.store.read() as conn:
            return records.environments(conn)

    def environment(self, name: str | None = None) -> Environment:
        """One environment (the default one when ``name`` is None)."""
        from registry.deploy import records

        with self.store.read() as conn:
            return records.find_env(conn, name)

    def remove_env(self, name: str, *, reason: str | None = None, force: bool = False,
                   actor: str | None = None) -> Environment:
        """Forget an environment (its history stays); ``force`` when something is deployed."""
        from registry import environments

        return environments.remove(self._deploy_ctx(), name=name, actor=actor_mod.resolve(actor),
                                   reason=reason, force=force)

    def promote(self, ref: str, *, env: str | None = None, reason: str | None = None, actor: str | None = None,
                allow_retag: bool = False, on_step=None) -> DeployResult:
        """Deploy a version (or what environment ``ref`` runs) into ``env``; HealthGateFailed
        (exit 4) after an automatic rollback when the new release does not come up healthy."""
        from registry.deploy import actions

        model, version = refs.promote_source(self.store, ref, env)
        return actions.promote(self._deploy_ctx(on_step), env_name=env, model=model, version=version,
                               actor=actor_mod.resolve(actor), reason=reason, allow_retag=allow_retag)

    def rollback(self, *, env: str | None = None, to: str | None = None, revision: int | None = None,
                 reason: str | None = None, actor: str | None = None, on_step=None) -> DeployResult:
        """Go back to an earlier healthy release: the newest by default, or ``to``/``revision``."""
        from registry.deploy import rollback

        if to is not None and revision is not None:
            raise InvalidInput("give --to or --revision, not both")
        return rollback.rollback(self._deploy_ctx(on_step), env_name=env, to=to, revision=revision,
                                 actor=actor_mod.resolve(actor), reason=reason)

    def history(self, env: str | None = None) -> list[Release]:
        """The release ledger: one environment's, or all of them, oldest revision first."""
        from registry import environments

        return environments.history(self._deploy_ctx(), env)

    def status(self) -> list[EnvStatus]:
        """Each environment: what is deployed, its container's state and health, pending work."""
        from registry import environments

        return environments.status(self._deploy_ctx())

    def recover(self, *, env: str | None = None, actor: str | None = None,
                force: bool = False) -> RecoverResult:
        """Reconcile ledgers with the containers found by label; complete or revert pending work
        (``force``: also when the lock's owner cannot be proven gone, e.g. on another host)."""
        from registry.deploy import recover

        return recover.recover(self._deploy_ctx(), env_name=env, actor=actor_mod.resolve(actor), force=force)


def _create_folders(home: home_mod.Home) -> None:
    try:
        home.path.mkdir(parents=True, exist_ok=True)
        BlobStore(home.blobs).create()
    except OSError as exc:
        where = exc.filename or home.path
        raise StorageError(f"cannot create the registry folder {where} ({exc.strerror or exc}): "
                           "pick a writable place with REGISTRY_HOME or `registry init PATH`") from None
