"""``Registry``: everything a user can do, without the CLI. The CLI calls one method a command."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from registry import actor as actor_mod
from registry import audit, canonical, clock, home as home_mod, manifest as manifest_mod
from registry.faults import crashpoint
from registry.errors import CellarError, CorruptBlob, InvalidInput, NotFound, VersionConflict
from registry.models import (
    ImageRef,
    InitResult,
    Probe,
    PromptFile,
    Provenance,
    PushResult,
    Runtime,
    Tensor,
    VersionInfo,
    VersionSummary,
    WeightFile,
    check_name,
    check_version,
)
from registry.safetensors_index import is_safetensors, read_index
from registry.store import schema as t
from registry.store.blobs import BlobStore, Ingested, digest_of_bytes, hash_file
from registry.store.sql import Store
from registry.store.statcache import StatCache

if TYPE_CHECKING:
    from registry.blame import BlameLine, LogEntry
    from registry.diffing import Diff

Progress = Callable[[str, int, int], None]  # (file name, bytes done in this call, file size)


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
        # git's identity, probed once per Registry: two subprocesses per push add up (bench/api_push.py).
        self._git_user = functools.cache(actor_mod.git_user)
        self._stat_cache = StatCache(home.stat_cache, tmp=self.blobs.tmp)  # loaded once per Registry

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
        home.path.mkdir(parents=True, exist_ok=True)
        BlobStore(home.blobs).create()
        store = Store(home.db_url)
        before = store.schema_revision()
        migrate.upgrade(store)
        created = before is None
        if created:
            with store.write() as conn:
                audit.append(conn, actor=actor_mod.resolve(actor), action="init", object=str(home.path),
                             detail={"db": _redact(home.db_url)}, db_user=store.db_user(conn))
        return cls(home, store), InitResult(home=str(home.path), db_url=_redact(home.db_url), created=created)

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
        self._stat_cache.save()
        if self._engine is not None:
            self._engine.close()
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
        m = resolved.manifest
        who = actor_mod.resolve(actor, git_identity=self._git_user)
        existing = self._summary(m.model, m.version)
        # An existing version only needs digests to compare against: store nothing new.
        stored, record, digest, warnings = self._prepare(resolved, write=existing is None, progress=progress)
        if existing:
            return self._same_or_conflict(existing, digest, warnings)
        provenance = _provenance(resolved)
        crashpoint("push:blobs-stored")
        with self.store.write() as conn:
            raced = _find_version(conn, m.model, m.version)
            if raced:
                return self._same_or_conflict(raced, digest, warnings)
            prompts_changed = audit.prompts_changed(conn, model=m.model, prompts=record["prompts"])
            _insert_version(conn, resolved, stored, record, digest, who, provenance)
            audit.append(
                conn, actor=who, action="push", object=f"{m.model}@{m.version}", model=m.model,
                detail={"manifest_digest": digest, "image": record["image"],
                        "files": sorted(f"{k}:{n}" for k, n in stored), "message": m.message,
                        "prompts_changed": prompts_changed},
                db_user=self.store.db_user(conn),
            )
            crashpoint("push:before-commit")
        return PushResult(
            model=m.model, version=m.version, manifest_digest=digest, created=True,
            bytes_ingested=sum(s.size for s in stored.values() if s.written),
            files=len(stored), warnings=warnings,
        )

    def _same_or_conflict(self, existing: VersionSummary, digest: str, warnings: list[str]) -> PushResult:
        ref = f"{existing.model}@{existing.version}"
        if existing.manifest_digest != digest:
            raise VersionConflict(
                f"{ref} already exists with other content ({existing.manifest_digest[:19]}); "
                "versions are immutable: push under a new version"
            )
        return PushResult(model=existing.model, version=existing.version, manifest_digest=digest,
                          created=False, warnings=warnings)

    def _prepare(self, resolved: manifest_mod.Resolved, *, write: bool, progress: Progress | None = None):
        """Hash (and, if ``write``, store) a manifest's files; return (stored, record, digest, warnings)."""
        image, warnings = self._pin_image(resolved.manifest.image)
        stored = self._store_files(resolved, write=write, progress=progress)
        record = _canonical_manifest(resolved, stored, image)
        return stored, record, canonical.digest(record), warnings

    def _store_files(
        self, resolved: manifest_mod.Resolved, *, write: bool, progress: Progress | None
    ) -> dict[tuple[str, str], Ingested]:
        cache = self._stat_cache
        out: dict[tuple[str, str], Ingested] = {}
        try:
            for f in resolved.files:
                out[(f.kind, f.name)] = self._store_file(f, cache, write=write, progress=progress)
        finally:
            cache.save(unless_within=1.0)  # close() saves the rest
        return out

    def _store_file(self, f: manifest_mod.SourceFile, cache: StatCache, *, write: bool,
                    progress: Progress | None) -> Ingested:
        before = os.stat(f.path)
        known = cache.lookup(f.path)
        if known and self.blobs.has(known):
            return Ingested(digest=known, size=before.st_size, tensor_digests=self._known_tensors(known, f))
        tick = (lambda n: progress(f.name, n, before.st_size)) if progress else None
        try:
            got = (self.blobs.ingest(f.path, tensors=f.tensors, progress=tick) if write
                   else hash_file(f.path, f.tensors))
        except FileNotFoundError:
            raise InvalidInput(f"{f.path} disappeared during the push; nothing was recorded") from None
        cache.record(f.path, before, got.digest)
        return got

    def _known_tensors(self, digest: str, f: manifest_mod.SourceFile) -> dict[str, str]:
        """Tensor digests of a stored blob: from the index, else hashed from the blob itself."""
        if not f.tensors:
            return {}
        with self.store.read() as conn:
            rows = conn.execute(select(t.tensors.c.name, t.tensors.c.digest)
                                .where(t.tensors.c.blob_digest == digest)).all()
        if rows:
            return dict(rows)
        path = self.blobs.path(digest)
        return hash_file(path, read_index(path)).tensor_digests

    def _pin_image(self, ref: str | None) -> tuple[ImageRef, list[str]]:
        if not ref:
            return ImageRef(), []
        try:
            return ImageRef(ref=ref, digest=self.engine().image_digest(ref)), []
        except CellarError as exc:
            return ImageRef(ref=ref), [f"image {ref} recorded unresolved: {exc}"]

    def engine(self):
        """The Docker engine ($DOCKER_HOST or the local socket), connected on first use."""
        if self._engine is None:
            from registry.deploy.docker import DockerEngine

            self._engine = DockerEngine()
        return self._engine

    # --- reading -------------------------------------------------------------------------

    def versions(self, model: str | None = None, *, limit: int | None = None) -> list[VersionSummary]:
        """Versions, newest first; all models unless ``model`` is given."""
        query = _summary_query().order_by(t.versions.c.created_at.desc(), t.versions.c.id.desc())
        if model:
            query = query.where(t.models.c.name == _valid_model(model))
        if limit:
            query = query.limit(limit)
        with self.store.read() as conn:
            rows = conn.execute(query).all()
            if model and not rows and not _model_id(conn, model):
                raise NotFound(f"no model named {model!r}: see `registry list`")
        return [_to_summary(r) for r in rows]

    def count_versions(self, model: str | None = None) -> int:
        query = select(func.count()).select_from(t.versions.join(t.models))
        if model:
            query = query.where(t.models.c.name == model)
        with self.store.read() as conn:
            return conn.execute(query).scalar_one()

    def models(self) -> list[str]:
        with self.store.read() as conn:
            return list(conn.execute(select(t.models.c.name).order_by(t.models.c.name)).scalars())

    def resolve_ref(self, ref: str) -> tuple[str, str]:
        """``model@version`` or ``version`` -> (model, version), guessing the model when unique."""
        model, sep, version = ref.rpartition("@")
        if not version:
            raise InvalidInput(f"{ref!r} is not a version reference: write v1.3 or model@v1.3")
        try:
            check_version(version)
            model = check_name(model, "model") if sep else self._default_model(ref)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return model, version

    def _default_model(self, ref: str) -> str:
        names = self.models()
        if len(names) == 1:
            return names[0]
        here = Path.cwd() / manifest_mod.DEFAULT_NAME
        if here.is_file():
            try:
                import yaml

                named = (yaml.safe_load(here.read_text()) or {}).get("model")
            except Exception:  # an unreadable manifest just does not help guess
                named = None
            if isinstance(named, str) and named in names:
                return named
        if not names:
            raise NotFound("the registry holds no models yet: push one with `registry push`")
        raise InvalidInput(f"which model? write MODEL@{ref} (models: {', '.join(names[:5])})")

    def show(self, ref: str) -> VersionInfo:
        """Everything recorded about one version."""
        model, version = self.resolve_ref(ref)
        with self.store.read() as conn:
            row = conn.execute(_summary_query(full=True).where(
                t.models.c.name == model, t.versions.c.version == version)).first()
            if row is None:
                raise NotFound(f"no version {model}@{version}: see `registry list {model}`")
            record = json.loads(row.manifest)
            digests = [w["digest"] for w in record["weights"]]
            tensors = _tensors_of(conn, digests)
        provenance = Provenance.model_validate_json(row.provenance) if row.provenance else None
        return _version_info(_to_summary(row), record, tensors, provenance)

    def _summary(self, model: str, version: str) -> VersionSummary | None:
        with self.store.read() as conn:
            return _find_version(conn, model, version)

    # --- diff, blame, audit --------------------------------------------------------------

    def diff(self, a: str, b: str) -> Diff:
        """What changed from ``a`` to ``b``: each a version ref, an unpushed manifest path, or an
        environment (its deployed version). Tensors come from recorded digests, never weight bytes."""
        from registry import diffing

        (old, old_texts, warn_a), (new, new_texts, warn_b) = self._diff_side(a), self._diff_side(b)
        local = {**old_texts, **new_texts}
        # Only prompts that differ are read; equal digests need no text.
        before, after = ({p.name: p.digest for p in v.prompts} for v in (old, new))
        wanted = {d for n, d in before.items() if after.get(n) != d} | {d for n, d in after.items() if before.get(n) != d}
        texts = {d: local[d] if d in local else self._prompt_text(d) for d in wanted}
        result = diffing.diff(old, new, texts=texts, refs=(a, b))
        result.warnings = warn_a + warn_b
        return result

    def _diff_side(self, ref: str) -> tuple[VersionInfo, dict[str, str], list[str]]:
        """A version, the texts of its unstored prompts (by digest), and warnings, for one side."""
        if _is_manifest_path(ref):
            return self._manifest_info(ref)
        try:
            info = self.show(ref)
        except (NotFound, InvalidInput):
            target = self._deployed_ref(ref)
            if not target:
                raise
            info = self.show(target)
        return info, {}, []

    def _manifest_info(self, path: str) -> tuple[VersionInfo, dict[str, str], list[str]]:
        """A manifest not pushed yet, described as push would record it, without storing anything."""
        resolved = manifest_mod.load(path)
        m = resolved.manifest
        stored, record, digest, warnings = self._prepare(resolved, write=False)
        tensors = {stored[("weight", f.name)].digest: [
            Tensor(name=tr.name, dtype=tr.dtype, shape=list(tr.shape),
                   digest=stored[("weight", f.name)].tensor_digests[tr.name]) for tr in f.tensors]
            for f in resolved.weights if f.tensors}
        summary = VersionSummary(model=m.model, version=m.version, manifest_digest=digest,
                                 created_at=clock.now(), actor=actor_mod.resolve(), message=m.message)
        texts = {stored[("prompt", f.name)].digest: f.path.read_text(encoding="utf-8") for f in resolved.prompts}
        return _version_info(summary, record, tensors, _provenance(resolved)), texts, warnings

    def _prompt_text(self, digest: str) -> str:
        """A stored prompt's text, checked against its digest (prompt blobs are small)."""
        try:
            data = self.blobs.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from {self.blobs.root}; restore it from a backup") from None
        if digest_of_bytes(data) != digest:
            raise CorruptBlob(f"blob {digest} is corrupt (its bytes no longer match its digest); "
                              "restore it from a backup")
        return data.decode("utf-8")

    def blame(self, prompt: str, *, at: str | None = None, model: str | None = None) -> list[BlameLine]:
        """For each line of ``prompt`` at ``at`` (default: the model's newest version), the version
        that introduced it, who pushed it, when, and the git commit and author where known."""
        from registry import blame as blame_mod

        if at:
            model, version = self.resolve_ref(at if "@" in at or not model else f"{model}@{at}")
        else:
            model = model or self._default_model("VERSION")
            version = self.versions(model, limit=1)[0].version
        with self.store.read() as conn:
            walk = blame_mod.steps(conn, model=model, prompt=prompt, upto=version)
        texts = {d: self._prompt_text(d) for d in {s.digest for s in walk if s.digest}}
        return blame_mod.attribute(walk, texts, prompt=prompt)

    def changelog(self, model: str | None = None, *, limit: int | None = None) -> list[LogEntry]:
        """Versions newest first, each with its git provenance (what ``registry log`` shows)."""
        from registry import blame as blame_mod
        from registry.blame import LogEntry

        rows = self.versions(model, limit=limit)
        with self.store.read() as conn:
            found = blame_mod.provenance_of(conn, [(r.model, r.version) for r in rows])
        return [LogEntry(**r.model_dump(), provenance=found.get((r.model, r.version))) for r in rows]

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

    def _engine_for(self, env):
        factory = getattr(self, "engine_factory", None)
        if factory is not None:
            return factory(env)
        if not env.docker_host:
            return self.engine()
        engines = self.__dict__.setdefault("_env_engines", {})
        if env.docker_host not in engines:
            from registry.deploy.docker import DockerEngine

            engines[env.docker_host] = DockerEngine(env.docker_host)
        return engines[env.docker_host]

    def add_env(self, name: str, *, port: int, actor: str | None = None, **settings):
        """Add an environment (deploy target). Settings: docker_host, health_timeout_s, keep,
        protected, default, bind_addr."""
        from registry import environments

        return environments.add(self._deploy_ctx(), name=name, port=port, actor=actor_mod.resolve(actor), **settings)

    def environments(self):
        """All environments, by name."""
        from registry.deploy import records

        with self.store.read() as conn:
            return records.environments(conn)

    def environment(self, name: str | None = None):
        """One environment (the default one when ``name`` is None)."""
        from registry.deploy import records

        with self.store.read() as conn:
            return records.find_env(conn, name)

    def remove_env(self, name: str, *, reason: str | None = None, force: bool = False, actor: str | None = None):
        """Forget an environment (its history stays); ``force`` when something is deployed."""
        from registry import environments

        return environments.remove(self._deploy_ctx(), name=name, actor=actor_mod.resolve(actor),
                                   reason=reason, force=force)

    def promote(self, ref: str, *, env: str | None = None, reason: str | None = None, actor: str | None = None,
                allow_retag: bool = False, on_step=None):
        """Deploy a version (or what environment ``ref`` runs) into ``env``; HealthGateFailed
        (exit 4) after an automatic rollback when the new release does not come up healthy."""
        from registry.deploy import actions

        model, version = self._promote_source(ref, env)
        return actions.promote(self._deploy_ctx(on_step), env_name=env, model=model, version=version,
                               actor=actor_mod.resolve(actor), reason=reason, allow_retag=allow_retag)

    def _promote_source(self, ref: str, env: str | None) -> tuple[str, str]:
        if "@" not in ref and (running := self._deployed_ref(ref)) is not None:
            if env == ref:
                raise InvalidInput(f"cannot promote {ref} into itself: pass --to ENV")
            return self.resolve_ref(running)
        return self.resolve_ref(ref)

    def _deployed_ref(self, env: str) -> str | None:
        """``model@version`` running in environment ``env``; None if ``env`` is no environment."""
        from registry import ledger
        from registry.deploy import records

        with self.store.read() as conn:
            if not any(e.name == env for e in records.environments(conn)):
                return None
            running = ledger.current(records.ledger(conn, env))
        if running is None:
            raise NotFound(f"nothing is deployed in {env}")
        return f"{running.model}@{running.version}"

    def rollback(self, *, env: str | None = None, to: str | None = None, revision: int | None = None,
                 reason: str | None = None, actor: str | None = None, on_step=None):
        """Go back to an earlier healthy release: the newest by default, or ``to``/``revision``."""
        from registry.deploy import rollback

        if to is not None and revision is not None:
            raise InvalidInput("give --to or --revision, not both")
        return rollback.rollback(self._deploy_ctx(on_step), env_name=env, to=to, revision=revision,
                                 actor=actor_mod.resolve(actor), reason=reason)

    def history(self, env: str | None = None):
        """The release ledger: one environment's, or all of them, oldest revision first."""
        from registry import environments

        return environments.history(self._deploy_ctx(), env)

    def status(self):
        """Each environment: what is deployed, its container's state and health, pending work."""
        from registry import environments

        return environments.status(self._deploy_ctx())

    def recover(self, *, env: str | None = None, actor: str | None = None, force: bool = False):
        """Reconcile ledgers with the containers found by label; complete or revert pending work
        (``force``: also when the lock's owner cannot be proven gone, e.g. on another host)."""
        from registry.deploy import recover

        return recover.recover(self._deploy_ctx(), env_name=env, actor=actor_mod.resolve(actor), force=force)


# --- helpers: rows in, domain objects out -------------------------------------------------


def _valid_model(name: str) -> str:
    try:
        return check_name(name, "model")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _redact(url: str) -> str:
    from registry.store.sql import redact

    return redact(url)


def _canonical_manifest(resolved: manifest_mod.Resolved, stored: dict, image: ImageRef) -> dict:
    """The content a version pins; its sha256 is the manifest digest."""
    m = resolved.manifest
    return {
        "image": image.model_dump(),
        "weights": [{"path": f.name, "digest": stored[("weight", f.name)].digest,
                     "size": stored[("weight", f.name)].size}
                    for f in sorted(resolved.weights, key=lambda f: f.name)],
        "prompts": [{"name": f.name, "digest": stored[("prompt", f.name)].digest,
                     "size": stored[("prompt", f.name)].size}
                    for f in sorted(resolved.prompts, key=lambda f: f.name)],
        "runtime": m.runtime.model_dump(mode="json", by_alias=True),
        "probes": [p.model_dump(mode="json", by_alias=True) for p in m.probes],
    }


def _version_info(summary: VersionSummary, record: dict, tensors: dict[str, list[Tensor]],
                  provenance: Provenance | None) -> VersionInfo:
    """A version's full description from its canonical record (stored, or built from a manifest)."""
    return VersionInfo(
        **summary.model_dump(),
        image=ImageRef(**record["image"]),
        weights=[WeightFile(**w, tensors=tensors.get(w["digest"], [])) for w in record["weights"]],
        prompts=[PromptFile(**p) for p in record["prompts"]],
        runtime=Runtime.model_validate(record["runtime"]),
        probes=[Probe.model_validate(p) for p in record["probes"]],
        provenance=provenance,
    )


def _is_manifest_path(ref: str) -> bool:
    """A manifest file, or a folder holding one (a folder named like a version without one is not)."""
    path = Path(ref)
    return path.is_file() or (path / manifest_mod.DEFAULT_NAME).is_file()


def _provenance(resolved: manifest_mod.Resolved) -> Provenance | None:
    if not _maybe_in_git(resolved.root):
        return None  # and GitPython (~70 ms to import) is never loaded
    from registry import provenance

    return provenance.collect(resolved.root, {f.name: f.path for f in resolved.prompts})


def _maybe_in_git(root: Path) -> bool:
    """A cheap look for ``.git`` walking up, as git does (or a $GIT_DIR)."""
    return bool(os.environ.get("GIT_DIR")) or any((p / ".git").exists() for p in (root, *root.parents))


def _model_id(conn: Connection, name: str) -> int | None:
    return conn.execute(select(t.models.c.id).where(t.models.c.name == name)).scalar()


@functools.cache  # built once: a statement is immutable, and building it costs more than running it
def _summary_query(full: bool = False):
    cols = [t.models.c.name.label("model"), t.versions.c.version, t.versions.c.manifest_digest,
            t.versions.c.created_at, t.versions.c.actor, t.versions.c.message]
    if full:
        cols += [t.versions.c.manifest, t.versions.c.provenance]
    return select(*cols).select_from(t.versions.join(t.models))


def _to_summary(row) -> VersionSummary:
    return VersionSummary(model=row.model, version=row.version, manifest_digest=row.manifest_digest,
                          created_at=clock.utc(row.created_at), actor=row.actor, message=row.message)


def _find_version(conn: Connection, model: str, version: str) -> VersionSummary | None:
    row = conn.execute(_summary_query().where(t.models.c.name == model,
                                              t.versions.c.version == version)).first()
    return _to_summary(row) if row else None


def _tensors_of(conn: Connection, digests: list[str]) -> dict[str, list[Tensor]]:
    if not digests:
        return {}
    rows = conn.execute(select(t.tensors).where(t.tensors.c.blob_digest.in_(digests))
                        .order_by(t.tensors.c.blob_digest, t.tensors.c.position)).all()
    out: dict[str, list[Tensor]] = {}
    for r in rows:
        out.setdefault(r.blob_digest, []).append(
            Tensor(name=r.name, dtype=r.dtype, shape=json.loads(r.shape), digest=r.digest))
    return out


def _insert_version(conn: Connection, resolved: manifest_mod.Resolved, stored: dict, record: dict,
                    digest: str, actor: str, provenance: Provenance | None) -> None:
    m, now = resolved.manifest, clock.now()
    model_id = _model_id(conn, m.model)
    if model_id is None:
        model_id = conn.execute(insert(t.models).values(name=m.model, created_at=now)).inserted_primary_key[0]
    version_id = conn.execute(insert(t.versions).values(
        model_id=model_id, version=m.version, manifest_digest=digest, manifest=canonical.dumps(record),
        message=m.message, actor=actor, created_at=now,
        provenance=provenance.model_dump_json() if provenance else None,
    )).inserted_primary_key[0]
    by_digest = {got.digest: got for got in stored.values()}
    known = set(conn.execute(select(t.blobs.c.digest).where(t.blobs.c.digest.in_(by_digest))).scalars())
    new = [{"digest": d, "size": got.size, "created_at": now} for d, got in by_digest.items() if d not in known]
    if new:
        conn.execute(insert(t.blobs), new)
    conn.execute(insert(t.version_files), [
        {"version_id": version_id, "kind": kind, "name": name, "digest": got.digest}
        for (kind, name), got in stored.items()
    ])
    _insert_tensors(conn, resolved, stored)


def _insert_tensors(conn: Connection, resolved: manifest_mod.Resolved, stored: dict) -> None:
    for f in resolved.weights:
        got = stored[("weight", f.name)]
        if not f.tensors or not is_safetensors(f.name):
            continue
        indexed = conn.execute(select(func.count()).select_from(t.tensors)
                               .where(t.tensors.c.blob_digest == got.digest)).scalar_one()
        if indexed:
            continue
        conn.execute(insert(t.tensors), [
            {"blob_digest": got.digest, "name": tr.name, "position": i, "dtype": tr.dtype,
             "shape": json.dumps(list(tr.shape)), "digest": got.tensor_digests[tr.name]}
            for i, tr in enumerate(f.tensors)
        ])
