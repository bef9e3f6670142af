"""``Registry``: everything a user can do, without the CLI. The CLI calls one method a command.

Each method resolves the actor, then hands the work to one function or action object built
from the registry's ``Configuration``; nothing here talks to SQL or Docker itself.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from registry import actor as actor_mod
from registry import clock, inputs
from registry import home as home_mod
from registry.configuration import Configuration, EngineFactory
from registry.engines.engine import Engine
from registry.engines.http import Checks
from registry.errors import InvalidInput
from registry.ledger import Release
from registry.models import (
    DeployResult,
    Environment,
    EnvStatus,
    InitResult,
    LogEntry,
    PushResult,
    RecoverResult,
    VersionInfo,
    VersionSummary,
)
from registry.models.probes import HealthReport, MetricsSnapshot, ProbeRun, WatchSummary
from registry.remotes.facade import RemoteCommands
from registry.store.files.blobs import BlobStore
from registry.store.sql import Store, events, versions
from registry.trust import audit, seals
from registry.trust.audit import Checkpoint, Event, Verification
from registry.versions import asof, inspection, pushing, refs
from registry.versions import manifest as manifest_mod
from registry.versions.asof import AsOf
from registry.versions.blame import BlameLine
from registry.versions.diffing import Diff
from registry.versions.pushing import Progress

if TYPE_CHECKING:  # the models load with the maintenance commands, not on every command's start-up (~12 ms)
    from registry.models.hooks import Delivery, DeliveryPass, Hook
    from registry.models.signing import (
        ApprovalRecord,
        CheckoutResult,
        PolicyCheck,
        SignatureInfo,
        SigningKey,
        TrustPolicy,
    )
    from registry.models.upkeep import (
        BackupResult,
        DeleteResult,
        Deprecation,
        ExportResult,
        GcResult,
        ImportResult,
        RestoreResult,
        VerifyReport,
    )

__all__ = ["Progress", "Registry"]

VerifyProgress = Callable[[int, int], None]  # (bytes hashed since the last call, bytes to hash in all)


class Registry(RemoteCommands):
    """A registry home: its metadata database, blob store and the engines it deploys to.

    >>> reg = Registry.open()            # nearest .cellar/ or $REGISTRY_HOME
    >>> reg.push("examples/support-bot/v1.0/cellar.yaml")

    ``engine_factory`` (docker host -> ``Engine``) and ``checks`` replace Docker and HTTP, e.g.
    with ``registry.engines.fake.FakeEngine`` and its ``.checks`` in tests.
    """

    def __init__(self, home: home_mod.Home, store: Store, *, engine_factory: EngineFactory | None = None,
                 checks: Checks | None = None):
        self.home = home
        self.cfg = Configuration.for_home(home, store, engine_factory=engine_factory, checks=checks)
        self.cfg.fetch_blobs = self._cache  # deploys fetch what a blob-store home lacks (a no-op elsewhere)
        # git's identity, probed once per Registry: two subprocesses per push add up (bench/api_push.py).
        self._git_user = functools.cache(actor_mod.git_user)

    @property
    def store(self) -> Store:
        return self.cfg.store

    @property
    def blobs(self) -> BlobStore:
        return self.cfg.blobs

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | None = None, *, engine_factory: EngineFactory | None = None,
             checks: Checks | None = None) -> Registry:
        """Open an existing registry; refuses a missing or out-of-date schema."""
        home = home_mod.locate(path)
        store = Store(home.db_url, source=home.db_source)
        store.check_schema()
        store.key = seals.load_or_create_key(home.path, create=False)
        reg = cls(home, store, engine_factory=engine_factory, checks=checks)
        reg.blobs.sweep_tmp()
        return reg

    @classmethod
    def init(cls, path: str | Path | None = None, *, actor: str | None = None,
             db_url: str | None = None) -> tuple[Registry, InitResult]:
        """Create (or bring up to date) a registry home. Idempotent. ``db_url`` (e.g. PostgreSQL)
        is remembered in the home's config file, without its password, for later commands."""
        from registry.upkeep import schema

        home, store, result = schema.init(path, actor=actor_mod.identify(actor), db_url=db_url)
        return cls(home, store), result

    @classmethod
    def upgrade_schema(cls, path: str | Path | None = None, *, actor: str | None = None) -> tuple[str | None, str]:
        """Migrate the database to the schema this program needs; return (before, after)."""
        from registry.upkeep import schema

        return schema.upgrade(path, actor=actor_mod.identify(actor))

    def close(self) -> None:
        """Save the stat cache and close the database and every Docker engine opened."""
        self.cfg.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- push ----------------------------------------------------------------------------

    def push(self, source: str | Path | manifest_mod.Resolved, *, version: str | None = None,
             message: str | None = None, actor: str | None = None, progress: Progress | None = None,
             sign_key: str | Path | None = None) -> PushResult:
        """Record a version: store its files as blobs, then its rows and event in one transaction.

        ``source`` is a manifest file or folder, or what ``load_manifest``/``manifest_from_flags``
        return; ``sign_key``: also sign it with that private key file (see ``sign``). Versions are
        immutable: pushing the same content again is a no-op, other content
        under an existing model@version is refused.
        """
        if isinstance(source, manifest_mod.Resolved):
            if version is not None or message is not None:  # used or refused, never dropped
                raise InvalidInput("version and message go to load_manifest(...) or manifest_from_flags(...) "
                                   "with the files; this manifest is loaded already: nothing was pushed")
            resolved = source
        else:
            resolved = manifest_mod.load(source, version=version, message=message)
        who = actor_mod.identify(actor, git_identity=self._git_user)
        if sign_key is not None:
            from registry.signing.actions import check_signer

            check_signer(self.cfg, sign_key)  # a key that cannot sign refuses the push, not after it
        result = pushing.Push(self.cfg, actor=who).run(resolved, progress=progress)
        if sign_key is not None:
            from registry.signing.actions import Sign

            Sign(self.cfg, actor=who).run(result.model, result.version, key_file=sign_key)
        if self._blob_store():  # a remote is this home's blob store: the version goes there too
            from registry.remotes import store

            result = store.publish(self.cfg, result, actor=who)
        return result

    # --- signatures and trust (registry.signing) -----------------------------------------

    def add_key(self, name: str, public_key_file: str | Path, *, actor: str | None = None) -> SigningKey:
        """Name a public key (EC, PEM) so its signatures can be recorded and trusted (audited)."""
        from registry.signing.actions import AddKey

        return AddKey(self.cfg, actor=actor_mod.identify(actor)).run(name, public_key_file)

    def keys(self) -> list[SigningKey]:
        """Registered keys by name, each with the environments that trust it."""
        from registry.store.sql import signatures

        return self.store.read_once(signatures.keys)

    def remove_key(self, name: str, *, reason: str | None = None, actor: str | None = None) -> SigningKey:
        """Forget a key: its signatures stop counting everywhere (audited)."""
        from registry.signing.actions import RemoveKey

        inputs.check_reason(reason)
        return RemoveKey(self.cfg, actor=actor_mod.identify(actor)).run(name, reason=reason)

    def set_trust(self, env: str, *, trust: list[str] | None = None, require_signatures: int | None = None,
                  reason: str | None = None, actor: str | None = None) -> TrustPolicy:
        """Set ``env``'s trust policy: the key names it trusts and how many distinct ones must have
        signed (or approved for ``env``) a version before promote or rollback puts it there.
        None keeps a setting as it was."""
        from registry.signing.actions import SetTrust

        inputs.check_reason(reason)
        return SetTrust(self.cfg, actor=actor_mod.identify(actor)).run(
            env, trusted=trust, require_signatures=require_signatures, reason=reason)

    def trust_policy(self, env: str | None = None) -> TrustPolicy:
        """``env``'s trust policy (requires nothing until one is set)."""
        from registry.store.sql import environments, signatures

        with self.store.read() as conn:
            return signatures.policy(conn, environments.named_or_default(conn, env).name)

    def sign(self, ref: str, *, key: str | Path, actor: str | None = None) -> SignatureInfo:
        """Sign a version with a private key file whose public key is registered: an OpenSSF
        model-signing bundle over its files and record, recorded and audited. A passphrase comes
        from $REGISTRY_SIGN_PASSPHRASE."""
        from registry.signing.actions import Sign

        model, version = refs.resolve(self.store, ref)
        return Sign(self.cfg, actor=actor_mod.identify(actor)).run(model, version, key_file=key)

    def approve(self, ref: str, *, env: str, key: str | Path, expires: str | datetime | None = None,
                actor: str | None = None) -> SignatureInfo:
        """Approve a version for one environment: a signature bound to ``env``, until ``expires``
        (a datetime, an ISO date/time or an age like ``7d``) when given."""
        from registry.signing.actions import Sign, parse_expiry

        if isinstance(expires, str):
            expires = parse_expiry(expires)

        model, version = refs.resolve(self.store, ref)
        return Sign(self.cfg, actor=actor_mod.identify(actor)).run(model, version, key_file=key, env=env,
                                                                   expires=expires)

    def signatures(self, ref: str) -> list[SignatureInfo]:
        """A version's signatures and approvals, each verified now (``verified``, ``problem``)."""
        from registry.signing.actions import signatures_of

        return signatures_of(self.cfg, *refs.resolve(self.store, ref))

    def check_policy(self, ref: str, *, env: str | None = None) -> PolicyCheck:
        """Whether a version meets ``env``'s trust policy now, and what is missing if not."""
        from registry.signing.actions import check_policy

        model, version = refs.resolve(self.store, ref)
        return check_policy(self.cfg, model, version, self.environment(env).name)

    def write_signature(self, ref: str, *, signer: str, out: str | Path, env: str | None = None) -> SignatureInfo:
        """Write ``signer``'s bundle (their approval for ``env`` when given) to ``out``, for
        ``model_signing verify key DIR --signature OUT --public_key PUB`` on a checkout."""
        from registry.signing.actions import write_signature

        model, version = refs.resolve(self.store, ref)
        return write_signature(self.cfg, model, version, signer=signer, env=env, out=out)

    def checkout(self, ref: str, dest: str | Path) -> CheckoutResult:
        """Write a version's files and its record (``cellar-record.json``) into a new folder."""
        from registry.signing.actions import checkout

        return checkout(self.cfg, *refs.resolve(self.store, ref), dest)

    def approvals(self, env: str | None = None, *, at: str | datetime | None = None) -> ApprovalRecord:
        """Who signed and approved what ran in ``env`` at ``at`` (default now), verified now."""
        from registry.signing.actions import approvals_at

        when = audit.parse_since(at) if isinstance(at, str) else at
        return approvals_at(self.cfg, env, when or clock.now())

    def engine(self, docker_host: str | None = None) -> Engine:
        """The Docker engine ($DOCKER_HOST or the local socket, or ``docker_host``), connected on first use."""
        return self.cfg.engine(docker_host)

    # --- reading -------------------------------------------------------------------------

    def versions(self, model: str | None = None, *, limit: int | None = None,
                 offset: int = 0, include_deprecated: bool = False) -> list[VersionSummary]:
        """Versions, newest first; all models unless ``model`` is given; ``offset`` skips the first
        ones; deprecated ones only with ``include_deprecated``."""
        return versions.summaries(self.store, model, limit=limit, offset=offset,
                                  include_deprecated=include_deprecated)

    def count_versions(self, model: str | None = None, *, include_deprecated: bool = False) -> int:
        """How many versions there are (of ``model``, or in all)."""
        return self.store.read_once(versions.count, model, include_deprecated=include_deprecated)

    def model_counts(self) -> list[tuple[str, int]]:
        """(model name, number of versions) for every model, sorted by name (one query)."""
        return self.store.read_once(versions.model_counts)

    def models(self) -> list[str]:
        """Model names, sorted."""
        return self.store.read_once(versions.model_names)

    def resolve_ref(self, ref: str) -> tuple[str, str]:
        """``model@version`` or ``version`` -> (model, version), guessing the model when unique."""
        return refs.resolve(self.store, ref)

    def show(self, ref: str) -> VersionInfo:
        """Everything recorded about one version; ``ENV@TIME``: the one serving there then."""
        if "@" in ref and (then := asof.split_ref(ref, asof.env_names(self.cfg))) is not None:
            ref = asof.served(self.cfg, *then).ref
        return inspection.show(self.store, ref)

    def status_at(self, at: str | datetime, *, env: str | None = None) -> AsOf:
        """What served in ``env`` (the default environment when None) at ``at``: a datetime, an
        ISO 8601 time (no zone means UTC) or an age like ``2h``. Read from the sealed ledger, and
        refused (AuditBroken) when a row it rests on is not what Cellar wrote."""
        return asof.as_of(self.cfg, env, asof.parse_time(at))

    # --- diff, blame, audit --------------------------------------------------------------

    def diff(self, a: str, b: str) -> Diff:
        """What changed from ``a`` to ``b``: each a version ref, an unpushed manifest path, an
        environment (its deployed version) or ``ENV@TIME`` (what served there then). Tensors come
        from recorded digests, never weight bytes."""
        return inspection.diff(self.cfg, a, b)

    def blame(self, prompt: str, *, at: str | None = None, model: str | None = None) -> list[BlameLine]:
        """For each line of ``prompt`` at ``at`` (default: the model's newest version), the version
        that introduced it, who pushed it, when, and the git commit and author where known."""
        return inspection.blame(self.store, self.blobs, prompt, at=at, model=model)

    def prompt_text(self, prompt: str, *, at: str | None = None, model: str | None = None) -> str:
        """The text of ``prompt`` at ``at`` (default: the model's newest version), as pushed."""
        return inspection.prompt_at(self.store, self.blobs, prompt, at=at, model=model)

    def changelog(self, model: str | None = None, *, limit: int | None = None) -> list[LogEntry]:
        """Versions newest first, each with its git provenance (what ``registry log`` shows)."""
        return inspection.changelog(self.store, model, limit=limit)

    def audit(self, *, since: str | datetime | None = None, **filters) -> list[Event]:
        """Audit events newest first, narrowed by ``AuditFilter`` fields (action, actor, env, model,
        prompt, limit); ``since`` takes a datetime, an ISO date or an age like ``7d``."""
        flt = audit.filter_of(since=since, **filters)
        return self.store.read_once(events.query, flt)

    def verify_audit(self, *, checkpoint: str | Checkpoint | None = None) -> Verification:
        """Recompute the audit hash chain; ``checkpoint`` (HASH:COUNT) also catches a truncated tail."""
        if isinstance(checkpoint, str):
            checkpoint = audit.parse_checkpoint(checkpoint)
        return self.store.read_once(events.check_chain, against=checkpoint)

    def audit_checkpoint(self) -> Checkpoint:
        """The audit log's head hash and event count, to keep somewhere else."""
        return self.store.read_once(events.checkpoint)

    # --- maintenance: verify, gc, backup, export -----------------------------------------

    def verify(self, *, progress: VerifyProgress | None = None, hosts: bool = False) -> VerifyReport:
        """Re-hash every blob on all cores, resolve every recorded reference, check snapshots,
        the audit chain and the database's own integrity; ``ok`` when nothing is damaged.
        ``progress(bytes, total)`` is called as blobs are hashed. ``hosts``: also hash, on each
        Docker host that caches blobs (one not sharing this disk), the cached blobs versions use."""
        from registry.upkeep.verify import Verify

        return Verify(self.cfg).run(progress=progress, hosts=hosts)

    def gc(self, *, dry_run: bool = False, actor: str | None = None, grace: timedelta | None = None) -> GcResult:
        """Remove what nothing needs: unreferenced blobs older than ``grace`` (1 hour), stale temp
        files, snapshots no release needs, stopped containers beyond retention, and blobs in
        Docker hosts' caches no kept release needs. The dry run
        returns the same set the real run removes."""
        from registry.upkeep import gc_plan
        from registry.upkeep.gc import Gc

        return Gc(self.cfg, actor=actor_mod.identify(actor)).run(
            dry_run=dry_run, grace=gc_plan.GRACE if grace is None else grace)

    def backup(self, dest: str | Path, *, actor: str | None = None, hard_links: bool = False) -> BackupResult:
        """A consistent online backup (database and blobs, MANIFEST.json last) into ``dest``;
        a second backup to the same place copies only new blobs. Blobs are independent copies;
        ``hard_links`` links them where ``dest`` shares the store's filesystem (no space, but
        a byte damaged in one is damaged in both)."""
        from registry.upkeep.backup import Backup

        return Backup(self.cfg, actor=actor_mod.identify(actor)).run(Path(dest), link=hard_links)

    @classmethod
    def restore(cls, src: str | Path, path: str | Path | None = None, *, actor: str | None = None,
                engine_factory: EngineFactory | None = None, checks: Checks | None = None,
                new_identity: bool = False) -> RestoreResult:
        """Restore the backup in ``src`` into a new or empty home (``path``, else $REGISTRY_HOME
        or ./.cellar) and database ($REGISTRY_DB_URL, else the home's SQLite file), then verify it.
        The copy keeps the original's identity (it acts on the same containers: a replacement)
        unless ``new_identity`` (a copy that lives beside the original)."""
        from registry.upkeep import backup

        home = home_mod.for_init(path)
        result = backup.restore_with_key(Path(src), home=home.path, db_url=home.db_url)
        if home.db_source == home_mod.DB_URL_VAR:
            home_mod.write_config(home, home.db_url)
        with cls.open(home.path, engine_factory=engine_factory, checks=checks) as reg:
            result = backup.record_restore(reg.cfg, result, src=Path(src), actor=actor_mod.identify(actor),
                                           new_identity=new_identity)
            return result.model_copy(update={"verify": reg.verify()})

    def export(self, ref: str, out: str | Path, *, with_image: bool = False, actor: str | None = None,
               progress=None) -> ExportResult:
        """Write one version (and, ``with_image``, its pinned container image) to one tar file."""
        from registry.upkeep import transfer

        model, version = refs.resolve(self.store, ref)
        self._cache(model, version)
        return transfer.Export(self.cfg, actor=actor_mod.identify(actor)).run(
            model, version, Path(out), with_image=with_image, progress=progress)

    def import_archive(self, path: str | Path, *, actor: str | None = None, progress=None) -> ImportResult:
        """Record the version in an export file after checking every member and digest; the
        same file again is a no-op."""
        from registry.upkeep import transfer

        return transfer.Import(self.cfg, actor=actor_mod.identify(actor)).run(Path(path), progress=progress)

    def deprecate(self, ref: str, *, reason: str | None = None, actor: str | None = None) -> Deprecation:
        """Hide a version from ``versions()`` and refuse to promote it; diff, show and audit still work."""
        from registry.upkeep.lifecycle import Deprecate

        inputs.check_reason(reason)
        model, version = refs.resolve(self.store, ref)
        return Deprecate(self.cfg, actor=actor_mod.identify(actor)).run(model, version, reason=reason)

    def deprecations(self, model: str | None = None) -> list[Deprecation]:
        """The deprecated versions (of ``model``)."""
        from registry.store.sql import upkeep as maintenance_store

        return self.store.read_once(maintenance_store.deprecations, model)

    def delete(self, ref: str, *, force: bool = False, reason: str | None = None,
               actor: str | None = None) -> DeleteResult:
        """Remove a version no release ever named (``force`` required); ``gc`` then reclaims its blobs."""
        from registry.upkeep.lifecycle import Delete

        inputs.check_reason(reason)
        model, version = refs.resolve(self.store, ref)
        return Delete(self.cfg, actor=actor_mod.identify(actor)).run(model, version, force=force, reason=reason)

    # --- environments, promote, rollback -------------------------------------------------

    def add_env(self, name: str, *, port: int, actor: str | None = None, **settings) -> Environment:
        """Add an environment (deploy target). Settings: docker_host, health_timeout_s, keep,
        protected, default, bind_addr, gate (promotes run the probe suite as a gate), runtime
        (host settings that win over the versions', e.g. ``{"gpus": [1]}``), share_gpus, hosts
        (several Docker hosts: a fleet, the first one the canary)."""
        from registry.deploy.env_actions import AddEnv, new_env

        return AddEnv(self.cfg, actor=actor_mod.identify(actor)).run(new_env(name, port=port, **settings))

    def set_env(self, name: str, *, runtime: dict | None = None, share_gpus: bool | None = None,
                reason: str | None = None, actor: str | None = None) -> Environment:
        """Change an environment's runtime overrides (``{"gpus": "all", "memory": None}``: None clears
        one) and whether it shares its GPUs with other environments; from the next promote on."""
        from registry.deploy.env_actions import SetEnv

        return SetEnv(self.cfg, actor=actor_mod.identify(actor)).run(name, runtime=runtime, share_gpus=share_gpus,
                                                                      reason=reason)

    def environments(self) -> list[Environment]:
        """All environments, by name."""
        from registry.store.sql import environments

        return self.store.read_once(environments.all_)

    def environment(self, name: str | None = None) -> Environment:
        """One environment (the default one when ``name`` is None)."""
        from registry.store.sql import environments

        return self.store.read_once(environments.named_or_default, name)

    def remove_env(self, name: str, *, reason: str | None = None, force: bool = False,
                   actor: str | None = None) -> Environment:
        """Forget an environment (its history stays); ``force`` when something is deployed."""
        from registry.deploy.env_actions import RemoveEnv

        inputs.check_reason(reason)
        return RemoveEnv(self.cfg, actor=actor_mod.identify(actor)).run(name, reason=reason, force=force)

    def promote(self, ref: str, *, env: str | None = None, reason: str | None = None, actor: str | None = None,
                allow_retag: bool = False, on_step=None, gate: bool | None = None,
                batch: int | None = None) -> DeployResult:
        """Deploy a version (or what environment ``ref`` runs) into ``env``; HealthGateFailed
        (exit 4) after an automatic rollback when the new release does not come up healthy.
        ``gate``: also run its probes after warm-up, any fail or error failing the promote
        (None: the environment's ``gate`` setting). In a fleet the first host goes first (the
        canary), then the others ``batch`` at a time (None: a quarter of the fleet)."""
        from registry.deploy.promote import Promote

        inputs.check_reason(reason)
        model, version = refs.promote_source(self.store, ref, env)
        action = Promote(self.cfg, actor=actor_mod.identify(actor), on_step=on_step)
        action.batch = _batch(batch)
        return action.run(model, version, env_name=env, reason=reason, allow_retag=allow_retag, gate=gate)

    def rollback(self, *, env: str | None = None, to: str | None = None, revision: int | None = None,
                 reason: str | None = None, actor: str | None = None, on_step=None,
                 batch: int | None = None) -> DeployResult:
        """Go back to an earlier healthy release: the newest by default, or ``to``/``revision``;
        on every host of a fleet (canary first, then ``batch`` hosts at a time)."""
        from registry.deploy.rollback import Rollback

        if to is not None and revision is not None:
            raise InvalidInput("give --to or --revision, not both")
        inputs.check_reason(reason)
        action = Rollback(self.cfg, actor=actor_mod.identify(actor), on_step=on_step)
        action.batch = _batch(batch)
        return action.run(env_name=env, to=to, revision=revision, reason=reason)

    def add_env_host(self, name: str, host: str, *, reason: str | None = None,
                     actor: str | None = None) -> Environment:
        """Add a Docker host to environment ``name`` (two or more make a fleet); it runs nothing
        until the next promote, rollback or ``recover``, which starts the deployed release there."""
        from registry.deploy.env_actions import EnvHosts

        inputs.check_reason(reason)
        return EnvHosts(self.cfg, actor=actor_mod.identify(actor)).run(name, add=host, reason=reason)

    def remove_env_host(self, name: str, host: str, *, force: bool = False, reason: str | None = None,
                        actor: str | None = None) -> Environment:
        """Take a Docker host out of environment ``name``, and this environment's containers off it
        (``force``: even when that host cannot be reached, its containers then left as they are)."""
        from registry.deploy.env_actions import EnvHosts

        inputs.check_reason(reason)
        return EnvHosts(self.cfg, actor=actor_mod.identify(actor)).run(name, remove=host, force=force, reason=reason)

    def history(self, env: str | None = None, *, limit: int | None = None, since: str | datetime | None = None,
                until: str | datetime | None = None) -> list[Release]:
        """The release ledger, oldest revision first: one environment's, or all of them; the
        newest ``limit`` releases only when given; ``since``/``until`` (datetimes, ISO times or
        ages like ``3d``): only releases started in that window."""
        from registry.deploy.env_actions import history

        if since is None and until is None:
            return history(self.cfg, env, limit=limit)
        start, end = asof.window(since, until)
        rows = [r for r in history(self.cfg, env) if (start is None or r.started_at >= start)
                and (end is None or r.started_at <= end)]
        return rows[-limit:] if limit else rows

    def count_releases(self, env: str | None = None) -> int:
        """How many releases there are (in ``env``, or in all)."""
        from registry.deploy.env_actions import count_history

        return count_history(self.cfg, env)

    def status(self) -> list[EnvStatus]:
        """Each environment: what is deployed, its container's state and health, pending work."""
        from registry.deploy.env_actions import Status

        return Status(self.cfg, actor="status").run()

    def recover(self, *, env: str | None = None, actor: str | None = None,
                force: bool = False, adopt: bool = False) -> RecoverResult:
        """Reconcile ledgers with the containers found by label; complete or revert pending work
        (``force``: also when the lock's owner cannot be proven gone, e.g. on another host). A
        container started by hand in place of the deployed one is stopped and the recorded
        release started again; with ``adopt`` what runs is recorded instead, as a new revision."""
        from registry.deploy.recover import Recover

        return Recover(self.cfg, actor=actor_mod.identify(actor)).run(env_name=env, force=force, adopt=adopt)

    # --- probes and health ---------------------------------------------------------------

    def probe(self, env: str | None = None, *, csv: str | Path | None = None, actor: str | None = None,
              timeout_s: float | None = None) -> ProbeRun:
        """Send the deployed version's probe suite once to ``env``'s published port and store the
        run (env, model, version, revision, time, actor). Nothing deployed, no container or the
        engine down give ``error`` results, not an exception; ``csv`` appends one row per result
        (header when the file is new). OperationInProgress while a promote or rollback runs."""
        from registry.health import monitoring
        from registry.probes import probing

        action = monitoring.ProbeEnv(self.cfg, actor=actor_mod.identify(actor))
        if timeout_s is not None:
            action.timeout_s = timeout_s
        run = action.run(env)
        if csv is not None:
            probing.append_csv(csv, run)
        return run

    def probe_runs(self, env: str | None = None, *, since: str | datetime | None = None,
                   limit: int | None = None) -> list[ProbeRun]:
        """Stored probe runs, oldest first (``since``: a datetime, ISO date or age like ``7d``;
        ``limit``: the newest N)."""
        from registry.store.sql import probes

        return self.store.read_once(probes.runs, env, _since(since), limit=limit)

    def health(self, env: str | None = None, *, since: str | datetime | None = None,
               runs: list[ProbeRun] | None = None, until: str | datetime | None = None) -> HealthReport:
        """Per version deployed in the window: runs, pass rate, p50/p95 latency; and each change
        point: the release after which latency or pass rate moved, with its actor, reason and a
        one-line summary of its diff from the version before. ``runs``: the window's runs when
        already read with ``probe_runs`` (they are not read again); ``until``: only runs up to then."""
        from registry.health import monitoring

        if until is not None and runs is None:
            start, end = asof.window(since, until)
            runs = [r for r in self.probe_runs(env, since=start) if end is None or r.started_at <= end]
            return monitoring.Health(self.cfg).run(env, since=start, runs=runs)
        return monitoring.Health(self.cfg).run(env, since=_since(since), runs=runs)

    def watch(self, env: str | None = None, *, every_s: float, failures: int = 3,
              notify: Callable[[str], object] | None = None, auto_rollback: bool = False,
              max_runs: int | None = None, should_stop: Callable[[], bool] | None = None,
              sleep: Callable[[float], None] | None = None, on_run: Callable[[ProbeRun], None] | None = None,
              actor: str | None = None) -> WatchSummary:
        """Probe ``env`` every ``every_s`` seconds. After ``failures`` failing runs in a row: one
        alert through ``notify`` (e.g. ``Webhook(url).send``) and, with ``auto_rollback`` (unless
        the version says ``no_auto_rollback``), one rollback through the normal path with reason
        "automatic: N consecutive failing probe runs"; a failing target alerts "degraded" once and
        the watch stops acting. Error runs alert, never roll back; a held lock skips a run. Ends
        after ``max_runs`` or when ``should_stop()`` (e.g. a ``StopFlag`` set by SIGTERM)."""
        from registry.health import monitoring

        if every_s < 0 or failures < 1 or (max_runs is not None and max_runs < 1):
            raise InvalidInput("--every must be 0 or more, --failures and --max-runs 1 or more")
        from registry.hooks import delivery

        watch = monitoring.Watch(self.cfg, actor=actor_mod.identify(actor), env_name=env, failures=failures)
        # Hooks go out meanwhile, from a thread of their own: a slow receiver never delays a probe.
        done = threading.Event()
        hooks = delivery.start_thread(
            self.cfg, should_stop=lambda: done.is_set() or bool(should_stop and should_stop()), wait=done.wait)
        try:
            return watch.run(every_s=every_s, notify=notify or _log_alert, auto_rollback=auto_rollback,
                             max_runs=max_runs, should_stop=should_stop, sleep=sleep, on_run=on_run)
        finally:
            done.set()
            if hooks is not None:
                hooks.join(timeout=delivery.TIMEOUT_S + 5)

    def metrics_snapshot(self) -> MetricsSnapshot:
        """What the metrics page shows now, read from the database (so cron's runs count too)."""
        from registry.health import monitoring

        return monitoring.MetricsScrape(self.cfg).run()

    def metrics_text(self) -> str:
        """The Prometheus page as a scrape would see it."""
        from registry.health import metrics

        return metrics.render(self.metrics_snapshot)

    def serve_metrics(self, listen: str):
        """Serve the Prometheus page on ``HOST:PORT`` in a daemon thread, read from the database
        on every scrape; returns (server, thread)."""
        from registry.health import metrics

        return metrics.serve(self.metrics_snapshot, listen)

    # --- hooks: audit events POSTed to other tools (registry.hooks) ----------------------------

    def add_hook(self, name: str, url: str | None = None, *, url_env: str | None = None,
                 events: list[str] | None = None, secret_env: str | None = None, format: str = "json",
                 web_url: str | None = None, actor: str | None = None) -> Hook:
        """Send every matching audit event from now on to ``url`` (or the URL in ``$url_env``),
        signed with the secret in ``$secret_env``; a URL carrying a credential is refused."""
        from registry.hooks.settings import AddHook

        return AddHook(self.cfg, actor=actor_mod.identify(actor)).run(
            name, url=url, url_env=url_env, events_=events, secret_env=secret_env, fmt=format, web_url=web_url)

    def hooks(self) -> list[Hook]:
        """The hooks, each with how many matching events it has still to deliver."""
        from registry.hooks import settings

        return settings.hooks(self.cfg)

    def remove_hook(self, name: str, *, actor: str | None = None) -> Hook:
        from registry.hooks.settings import RemoveHook

        return RemoveHook(self.cfg, actor=actor_mod.identify(actor)).run(name)

    def hook_deliveries(self, name: str, *, limit: int | None = None) -> list[Delivery]:
        """Hook ``name``'s delivery attempts, newest first."""
        from registry.store.sql import hooks as hooks_store

        return self.store.read_once(hooks_store.deliveries, name, limit=limit)

    def deliver_hooks(self, *, budget_s: float = 30.0, hook: str | None = None) -> DeliveryPass:
        """One delivery pass: each hook's due events in order, for about ``budget_s`` seconds."""
        from registry.hooks.delivery import Deliver

        if budget_s < 0:
            raise InvalidInput("--timeout must be 0 or more seconds")
        return Deliver(self.cfg).run(budget_s=budget_s, only=hook)

    def run_hooks(self, *, should_stop: Callable[[], bool], wait: Callable[[float], object], every_s: float = 2.0,
                  on_pass: Callable[[DeliveryPass], None] | None = None) -> None:
        """Delivery passes every ``every_s`` seconds until ``should_stop()`` (``registry hook run``)."""
        from registry.hooks import delivery

        if every_s <= 0:
            raise InvalidInput("--every must be more than 0 seconds")
        delivery.keep_delivering(self.cfg, should_stop=should_stop, wait=wait, every_s=every_s, on_pass=on_pass)

    def test_hook(self, name: str, *, actor: str | None = None) -> tuple[bool, str]:
        """Send hook ``name`` a test event now: (delivered, what happened)."""
        from registry.hooks import delivery

        return delivery.send_test(self.cfg, name, actor=actor_mod.identify(actor))


def _since(since: str | datetime | None) -> datetime | None:
    return audit.parse_since(since) if isinstance(since, str) else since


def _log_alert(text: str) -> None:
    logging.getLogger("registry.health.watching").warning("alert: %s", text)


def _batch(batch: int | None) -> int | None:
    if batch is not None and batch < 1:
        raise InvalidInput("--batch must be 1 or more (hosts switched at once after the canary)")
    return batch
