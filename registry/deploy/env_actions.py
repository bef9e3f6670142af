"""Environments (deploy targets) and what runs in them: add, remove, history, status."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from registry import clock, inputs, ledger
from registry.deploy import drift, hosting, ownership
from registry.deploy.action import DeployAction, base_url
from registry.errors import (
    AlreadyExists,
    CellarError,
    InvalidInput,
    OperationInProgress,
)
from registry.ledger import Release
from registry.models import Environment, EnvStatus, Lock, check_name
from registry.models.resources import env_runtime
from registry.store.sql import environments, events, locks, releases


class AddEnv(DeployAction):
    """``AddEnv(cfg, actor=...).run(env)``: record a new environment."""

    def run(self, env: Environment) -> Environment:
        """Refuses a name or host port already taken."""
        try:
            check_name(env.name, "environment name")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        _check_settings(env)
        with self.cfg.store.write() as conn:
            for other in environments.all_(conn):
                if other.name == env.name:
                    raise AlreadyExists(f"environment {env.name!r} already exists: "
                                        f"see `registry env show {env.name}`")
                if other.port == env.port and other.docker_host == env.docker_host:
                    raise AlreadyExists(f"port {env.port} is already used by environment {other.name!r}: "
                                        "pick another")
            written = environments.insert_(conn, env)
            events.append(conn, actor=self.actor, action="env-add", object=env.name, env=env.name,
                          detail={**env.model_dump(mode="json", exclude={"created_at"}),
                                  "rows": environments.bindings(written)},
                          db_user=self.cfg.store.db_user(conn))
        return env


def new_env(name: str, *, port: int, docker_host: str | None = None, health_timeout_s: float | None = None,
            keep: int = 3, protected: bool = False, default: bool = False,
            bind_addr: str | None = None, gate: bool = False, runtime: dict | None = None,
            share_gpus: bool = False) -> Environment:
    """An environment's settings, checked where pydantic cannot say what to type instead.
    ``runtime``: host settings that win over the versions' here (``{"gpus": [1], "memory": "16g"}``).
    ``bind_addr`` defaults to 127.0.0.1 on the local engine, and to 0.0.0.0 on a tcp:// or
    ssh:// host: health checks and probes are sent from this machine to that host's address,
    which its loopback never answers."""
    if bind_addr is None:
        bind_addr = "0.0.0.0" if is_remote(docker_host) else "127.0.0.1"
    return Environment(name=name, port=port, bind_addr=bind_addr, docker_host=docker_host,
                       health_timeout_s=health_timeout_s, keep=keep, protected=protected,
                       is_default=default, gate=gate, created_at=clock.now(),
                       runtime=env_runtime(None, runtime or {}, share_gpus=share_gpus or None))


class SetEnv(DeployAction):
    """``SetEnv(cfg, actor=...).run(name, runtime={...}, share_gpus=..., reason=...)``: change an
    environment's runtime overrides (a None value clears one). They apply from the next promote or
    rollback; what runs now is left alone."""

    def run(self, name: str, *, runtime: dict | None = None, share_gpus: bool | None = None,
            reason: str | None = None) -> Environment:
        with self.cfg.store.write() as conn:
            env = environments.named_or_default(conn, name)
            if env.protected and not (reason and reason.strip()):
                raise InvalidInput(f"{env.name} is protected: say why with --reason")
            changed = env.model_copy(update={"runtime": env_runtime(env.runtime, runtime or {},
                                                                    share_gpus=share_gpus)})
            written = environments.update_(conn, changed)
            events.append(conn, actor=self.actor, action="env-set", object=env.name, env=env.name, reason=reason,
                          detail={"runtime": changed.runtime.model_dump(mode="json") if changed.runtime else None,
                                  "before": env.runtime.model_dump(mode="json") if env.runtime else None,
                                  "rows": environments.bindings(written)},
                          db_user=self.cfg.store.db_user(conn))
        return changed


def is_remote(docker_host: str | None) -> bool:
    """Whether the engine URL names another machine (tcp://, ssh://): where the published port
    answers on that machine's address, not on this one's loopback."""
    return bool(docker_host) and urlsplit(docker_host or "").scheme in ("tcp", "ssh", "http", "https")


def _check_settings(env: Environment) -> None:
    if not 1 <= env.port <= 65535:
        raise InvalidInput(f"--port {env.port} is not a TCP port (1-65535)")
    if env.keep < 0:
        raise InvalidInput("--keep must be 0 or more")
    if env.health_timeout_s is not None and not 0 < env.health_timeout_s <= 3600:
        raise InvalidInput("--health-timeout must be between 0 and 3600 seconds")
    inputs.check_docker_host(env.docker_host)
    try:
        ipaddress.ip_address(inputs.check_text(env.bind_addr, "bind_addr", 64))
    except ValueError:
        raise InvalidInput(f"--bind {env.bind_addr!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None
    if env.docker_host:
        _check_docker_host(env.docker_host)


def _check_docker_host(docker_host: str) -> None:
    parts = urlsplit(docker_host)
    if parts.scheme not in ("unix", "tcp", "ssh", "http", "https"):
        raise InvalidInput(f"--docker-host {docker_host!r} must be a unix://, tcp:// or ssh:// URL")
    # Never echo the URL here: it would print the password this check exists to keep out.
    if parts.password is not None or (parts.username is not None and parts.scheme != "ssh"):
        raise InvalidInput("--docker-host must not carry a user or password (it would be stored and shown): "
                           "use TLS certificates (DOCKER_CERT_PATH) or an ssh://user@host with keys")


class RemoveEnv(DeployAction):
    """``RemoveEnv(cfg, actor=...).run(name, reason=..., force=...)``: forget an environment.

    Its ledger stays (history is never rewritten). With something deployed this needs
    ``force``; its containers, running or kept, are removed either way. The environment's lock is taken
    in the first write transaction, before Docker is touched, so no promote can start a
    container that the removal then misses or deletes."""

    def run(self, name: str, *, reason: str | None = None, force: bool = False) -> Environment:
        env, now = self._claim(name, reason=reason, force=force)
        try:
            # Its stopped (kept) containers go too, deployed or not: nothing can roll back to them
            # once the environment is gone, and left behind they would hold disk for nobody.
            self.use_env(env)
            for c in self.engine.find_labelled(env=name, registry=self.cfg.registry_id):
                self.engine.remove(c.id)
        except BaseException:
            with self.cfg.store.write() as conn:
                locks.drop(conn, self.lock, missing_ok=True)
            raise
        with self.cfg.store.write() as conn:
            superseded = [now.model_copy(update={"status": ledger.ReleaseStatus.SUPERSEDED})] if now else []
            for row in superseded:
                releases.update_(conn, row)
            locks.drop(conn, self.lock)  # raises (and keeps the environment) if it changed hands
            environments.delete_(conn, name)
            rows = {**releases.bindings(superseded), **environments.bindings([], deleted=[env])}
            events.append(conn, actor=self.actor, action="env-remove", object=name, env=name, reason=reason,
                          detail={"undeployed": now.ref if now else None, "rows": rows},
                          db_user=self.cfg.store.db_user(conn))
        return env

    def _claim(self, name: str, *, reason: str | None, force: bool) -> tuple[Environment, Release | None]:
        with self.cfg.store.write() as conn:
            env = environments.named_or_default(conn, name)
            rows = releases.current_and_pending(conn, name)
            held = locks.get(conn, name)
            if held:  # says, by case, whether to wait, recover, or (another host's lock) recover --force
                raise OperationInProgress(ownership.busy_message(held))
            if ledger.pending(rows):
                raise OperationInProgress(f"{name} has an unfinished operation that no process owns: "
                                          f"run `registry recover --env {name}` first")
            if env.protected and not reason:
                raise InvalidInput(f"{name} is protected: say why with --reason")
            now = ledger.current(rows)
            if now and not force:
                raise InvalidInput(f"{now.ref} is deployed in {name}: pass --force to stop and remove its "
                                   "containers too")
            self.lock = ownership.new_lock(name, operation="env-remove", target=name, actor=self.actor)
            locks.take(conn, self.lock)
        return env, now


def dark(cfg, out: EnvStatus) -> EnvStatus:
    """``out`` (nothing deployed) with since when, why and the last known good, when something
    served in that environment before: an environment gone dark, the worst state there is."""
    with cfg.store.read() as conn:
        dark = ledger.went_dark(releases.last_known_good(conn, out.env))
    if dark is None:
        return out
    last, good = dark
    why = "; ".join(e for e in (last.error, good.error if good is not last else None) if e)
    out.dark_since = last.finished_at or last.started_at
    out.dark_reason = f"revision {last.revision} ({last.ref}) {last.status}" + (f": {why}" if why else "")
    out.last_good = good
    return out


def history(cfg, env_name: str | None = None, *, limit: int | None = None) -> list[Release]:
    """The newest ``limit`` releases (all when None), oldest first: one environment's, or every
    environment's."""
    with cfg.store.read() as conn:
        rows = releases.newest(conn, env_name, limit=limit)
        if env_name and not rows:  # a removed environment keeps its ledger: only a name never deployed is unknown
            environments.named_or_default(conn, env_name)
        return rows


def count_history(cfg, env_name: str | None = None) -> int:
    with cfg.store.read() as conn:
        return releases.count(conn, env_name)


class Status(DeployAction):
    """``Status(cfg, actor=...).run()``: each environment's deployed release, its container's
    state and health, pending work."""

    def run(self) -> list[EnvStatus]:
        with self.cfg.store.read() as conn:
            envs = environments.all_(conn)
            rows = {e.name: releases.current_and_pending(conn, e.name) for e in envs}
            held = {lock.env: lock for lock in locks.all_(conn)}
        return [self._one(env, rows[env.name], held.get(env.name)) for env in envs]

    def _one(self, env: Environment, rows: list[Release], lock: Lock | None) -> EnvStatus:
        now = ledger.current(rows)
        out = EnvStatus(env=env.name, port=env.port, deployed=now, container_id=now.container_id if now else None,
                        pending=lock, pending_release=ledger.pending(rows))
        if now is None and out.pending_release is None:
            out = dark(self.cfg, out)
        if (now is None or not now.container_id) and not out.dark_since:
            return out
        try:
            self.use_env(env)
            info = self.engine.inspect(now.container_id) if now and now.container_id else None
            found = [] if lock else self.engine.find_labelled(env=env.name, registry=self.cfg.registry_id)
        except CellarError as exc:
            out.note = str(exc)
            return out
        # found is empty under a lock: a switch in progress is not drift
        out.drift = drift.differences(now, info, found, registry=self.cfg.registry_id)
        if now is None or not now.container_id:
            return out
        out.container_state = info.status if info else "missing"
        runtime = self.runtime_of(now)
        out.gpus = hosting.effective(runtime, env).gpus
        if info is not None:
            out.restarts = info.restart_count
            if info.restart_count:
                out.last_exit_code = self.engine.last_exit_code(now.container_id)
        if info and info.running:
            out.healthy = self.cfg.checks.answers(base_url(env) + runtime.health.path)
        return out
