"""Environments (deploy targets) and what runs in them: add, remove, history, status."""

from __future__ import annotations

import ipaddress
import posixpath
from urllib.parse import urlsplit

from registry import clock, inputs, ledger
from registry.deploy import drift, hosting, ownership
from registry.deploy.action import DeployAction, base_url
from registry.errors import (
    AlreadyExists,
    CellarError,
    EngineError,
    InvalidInput,
    NotFound,
    OperationInProgress,
)
from registry.ledger import Release
from registry.models import Environment, EnvStatus, HostStatus, Lock, check_name
from registry.models.resources import env_runtime
from registry.store.sql import environments, events, locks, releases
from registry.trust.secrets import mask_url


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
                if other.port == env.port and hosting.same_host(other, env):
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
            share_gpus: bool = False, hosts: list[str] | None = None) -> Environment:
    """An environment's settings, checked where pydantic cannot say what to type instead.
    ``runtime``: host settings that win over the versions' here (``{"gpus": [1], "memory": "16g"}``).
    ``hosts``: several Docker hosts (a fleet, the first is the canary); one is ``docker_host``.
    ``bind_addr`` defaults to 127.0.0.1 on the local engine, and to 0.0.0.0 on a tcp:// or
    ssh:// host or in a fleet: health checks and probes are sent from this machine to that
    host's address, which its loopback never answers."""
    if hosts and docker_host:
        raise InvalidInput("--docker-host names one host and --host one or more: use one of them")
    if hosts and len(hosts) == 1:
        docker_host, hosts = hosts[0], None
    if bind_addr is None:
        bind_addr = "0.0.0.0" if hosts or is_remote(docker_host) else "127.0.0.1"
    return Environment(name=name, port=port, bind_addr=bind_addr, docker_host=hosts[0] if hosts else docker_host,
                       health_timeout_s=health_timeout_s, keep=keep, protected=protected,
                       is_default=default, gate=gate, created_at=clock.now(),
                       runtime=env_runtime(None, runtime or {}, share_gpus=share_gpus or None), hosts=hosts)


class EnvHosts(DeployAction):
    """``EnvHosts(cfg, actor=...).run(name, add=URL)`` or ``remove=URL``: change the Docker hosts
    of an environment (two or more make it a fleet). Under the environment's lock, refused while
    an operation is unfinished. A host added runs nothing until the next promote, rollback or
    ``registry recover`` (which starts the deployed release there); a host removed has this
    environment's containers taken away (with ``force``, skipped when it cannot be reached)."""

    def run(self, name: str, *, add: str | None = None, remove: str | None = None, force: bool = False,
            reason: str | None = None) -> Environment:
        if bool(add) == bool(remove):
            raise InvalidInput("name one Docker host to add or to remove")
        with self.cfg.store.write() as conn:
            env = environments.named_or_default(conn, name)
            if env.protected and not (reason and reason.strip()):
                raise InvalidInput(f"{env.name} is protected: say why with --reason")
            changed = _rehosted(env, add=add, remove=remove)
            _check_settings(changed)
            if add and is_remote(add) and ipaddress.ip_address(env.bind_addr).is_loopback:
                raise InvalidInput(
                    f"{env.name} publishes on {env.bind_addr}, each host's own loopback, which the health checks "
                    f"sent from here cannot reach on {add}: a fleet publishes on its hosts' addresses; add a new "
                    f"environment with `registry env add NAME --port {env.port} --bind 0.0.0.0 --host ... --host ...`")
            for other in environments.all_(conn):
                if other.name != env.name and other.port == env.port and hosting.same_host(other, changed):
                    raise AlreadyExists(f"port {env.port} is already used by environment {other.name!r} on "
                                        f"{add}: give {env.name} another port, or pick another host")
            if (held := locks.get(conn, env.name)) is not None:
                raise OperationInProgress(ownership.busy_message(held))
            if ledger.pending(releases.current_and_pending(conn, env.name)):
                raise OperationInProgress(f"{env.name} has an unfinished operation that no process owns: "
                                          f"run `registry recover --env {env.name}` first")
            self.lock = ownership.new_lock(env.name, operation="env-host", target=add or remove or "", actor=self.actor)
            locks.take(conn, self.lock)
        try:
            if add:
                self.on_host(add)  # reachable now, or refused before anything is recorded
            else:
                self._clear(env, remove, force=force)
        except BaseException:
            with self.cfg.store.write() as conn:
                locks.drop(conn, self.lock, missing_ok=True)
            raise
        with self.cfg.store.write() as conn:
            locks.drop(conn, self.lock)
            written = environments.update_(conn, changed)
            events.append(conn, actor=self.actor, action="env-host-add" if add else "env-host-remove",
                          object=env.name, env=env.name, reason=reason,
                          detail={"host": mask_url(add or remove or ""),
                                  "hosts": [mask_url(h or "") for h in changed.fleet],
                                  "before": [mask_url(h or "") for h in env.fleet],
                                  "rows": environments.bindings(written)},
                          db_user=self.cfg.store.db_user(conn))
        return changed

    def _clear(self, env: Environment, host: str | None, *, force: bool) -> None:
        """Take this environment's containers off ``host``, which leaves it."""
        try:
            self.on_host(host)
            found = self.engine.find_labelled(env=env.name, registry=self.cfg.registry_id)
        except CellarError as exc:
            if force:
                return  # a dead host leaves the fleet; its containers are its own business now
            raise EngineError(f"{exc}; to take {host} out of {env.name} anyway (its containers left as they are), "
                              "pass --force") from None
        for c in found:
            self.engine.remove(c.id)


def _rehosted(env: Environment, *, add: str | None, remove: str | None) -> Environment:
    """``env`` with ``add`` appended to its hosts, or ``remove`` taken out of them."""
    fleet = [h or hosting.local_engine() for h in env.fleet]
    if add:
        if add in fleet:
            raise AlreadyExists(f"{add} is already one of {env.name}'s Docker hosts")
        fleet.append(add)
    elif remove not in fleet:
        raise NotFound(f"{remove} is not one of {env.name}'s Docker hosts ({', '.join(fleet)})")
    else:
        if len(fleet) == 1:
            raise InvalidInput(f"{remove} is {env.name}'s only Docker host: remove the environment instead")
        fleet.remove(remove)
    return env.model_copy(update={"docker_host": fleet[0], "hosts": fleet if len(fleet) > 1 else None})


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
    for host in env.fleet:
        inputs.check_docker_host(host)
        if host:
            _check_docker_host(host)
    if env.hosts and len({_same_engine(host) for host in env.hosts}) != len(env.hosts):
        raise InvalidInput("a Docker host is named twice (perhaps spelled two ways): name each host of a fleet once")
    try:
        ipaddress.ip_address(inputs.check_text(env.bind_addr, "bind_addr", 64))
    except ValueError:
        raise InvalidInput(f"--bind {env.bind_addr!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None


def _same_engine(docker_host: str) -> tuple[str, str, int | None]:
    """What tells two spellings of one engine apart from two engines: the transport, the machine
    (case aside) and the port (ssh's 22 when none is given; a user is not part of it), or a
    socket's normalised path. ``unix:///run/docker.sock/`` and ``TCP://Gpu-1:2375`` name the
    engines ``unix:///run/docker.sock`` and ``tcp://gpu-1:2375`` name."""
    parts = urlsplit(docker_host.strip())
    scheme = parts.scheme.lower()
    if scheme == "unix":
        return scheme, posixpath.normpath("/" + (parts.netloc + parts.path).lstrip("/")), None
    try:
        port = parts.port
    except ValueError:  # not a port: refused by its own check
        port = None
    return ("tcp" if scheme == "http" else scheme, (parts.hostname or "").lower(),
            port if port is not None or scheme != "ssh" else 22)


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
            for host in env.fleet:
                self.on_host(host)
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
        if (now is None or not now.container_id) and not out.dark_since and not env.hosts:
            return out
        self.env = env
        parts = [self._on_host(env, now, lock, host) for host in env.fleet]
        first = parts[0]
        out.container_state, out.healthy, out.note, out.gpus = (first.container_state, first.healthy, first.note,
                                                                 self._gpus(env, now))
        out.restarts, out.last_exit_code = first.restarts, first.last_exit_code
        if env.hosts:
            out.hosts = parts
            out.container_id = first.container_id
            answers = [h.healthy for h in parts]
            out.healthy = None if all(a is None for a in answers) else all(answers)
        else:
            out.drift = first.drift
        return out

    def _gpus(self, env: Environment, now: Release | None):
        return hosting.effective(self.runtime_of(now), env).gpus if now is not None and now.container_id else None

    def _on_host(self, env: Environment, now: Release | None, lock: Lock | None, host: str | None) -> HostStatus:
        """The deployed release's container on one host: state, restarts, health, drift."""
        cid = now.container_on(host, env.fleet[0]) if now else None
        out = HostStatus(host=host or "", container_id=cid)
        try:
            self.on_host(host)
            info = self.engine.inspect(cid) if cid else None
            found = [] if lock else self.engine.find_labelled(env=env.name, registry=self.cfg.registry_id)
        except CellarError as exc:
            out.note = str(exc)
            return out
        # found is empty under a lock: a switch in progress is not drift
        here = now.model_copy(update={"container_id": cid}) if now else None
        out.drift = drift.differences(here, info, found, registry=self.cfg.registry_id)
        if now is None or not cid:
            return out
        out.container_state = info.status if info else "missing"
        if info is not None:
            out.restarts = info.restart_count
            if info.restart_count:
                out.last_exit_code = self.engine.last_exit_code(cid)
        if info and info.running:
            out.healthy = self.cfg.checks.answers(base_url(env, host) + self.runtime_of(now).health.path)
        return out
