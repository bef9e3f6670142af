"""What every deploy action shares (Helm's ``pkg/action`` shape): one object per run, built from
the ``Configuration``, whose state (environment, engine, steps timed, secrets to scrub, the lock
held) lives on the object, so helpers take only what they use.

    DeployAction           base: environment, engine, steps, secrets, versions made ready
    ├── Recover            reconcile a ledger with Docker (registry.deploy.recover)
    └── Switching          take the lock, switch containers, settle (registry.deploy.switching)
        ├── Promote        registry.deploy.promote
        └── Rollback       registry.deploy.rollback
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from registry import ledger
from registry.action import Action
from registry.configuration import Configuration
from registry.deploy import hosting, snapshots
from registry.engines.engine import ContainerSpec, Engine, container_name, labels_for
from registry.errors import CellarError, ImageMoved, Interrupted, InvalidInput, NotFound, StepFailed
from registry.ledger import Release, Target, short_host
from registry.models import Environment, Lock, Runtime, Step
from registry.models.resources import Resources
from registry.store.sql import environments, releases, versions
from registry.trust.secrets import Scrubber, from_environ, mask_urls_in, secret_values

OnStep = Callable[[str, float, bool], None]  # (step, seconds, succeeded)


class StepWatcher(Protocol):
    """An ``on_step`` that also wants to know while a step runs (a spinner during a health wait).
    Any plain ``OnStep`` callable still works: ``started`` is looked up, not required."""

    def __call__(self, name: str, seconds: float, ok: bool) -> None:
        """The step ended after ``seconds``; ``ok`` is False when it raised."""

    def started(self, name: str, detail: str | None) -> None:
        """The step started (``detail`` None), or noted a detail while it runs."""


@dataclass
class Ready:
    """A version made ready to run: its runtime, pinned image, files and container variables.
    ``snapshot`` is the hard-linked folder where the engine shares this disk; otherwise
    ``files`` maps each path under /model to its blob in the host's cache (registry.hosts)."""

    target: Target
    runtime: Runtime
    image: str
    snapshot: Path | None
    env_vars: dict[str, str] = field(repr=False)
    resources: Resources = field(default_factory=Resources)  # the runtime's host settings, env overrides on top
    files: dict[str, str] = field(default_factory=dict)


class DeployAction(Action):
    """One run of an operation on one environment."""

    def __init__(self, cfg: Configuration, *, actor: str, on_step: OnStep | None = None):
        super().__init__(cfg, actor=actor)
        self.on_step = on_step
        self.steps: list[Step] = []
        # Every secret this run knows (the caller's *_TOKEN-like variables, URL passwords, and
        # later the version's runtime.secrets): scrubbed from any text before it is cut or kept.
        self.scrubber: Scrubber = from_environ(cfg.environ, urls=[cfg.store.url])
        # Who vouched for the version (issue 25): {name: key fingerprint} of the signatures the
        # environment's trust policy counted, recorded in the promote or rollback event.
        self.signed_by: dict[str, str] = {}
        # Set before use: env, host and engine by use_env (open_env), lock when the run takes it.
        self.lock: Lock
        self.env: Environment
        self.host: str | None = None  # the environment's first host until use_env or on_host says
        self.engine: Engine

    # --- the environment ---------------------------------------------------------------

    def use_env(self, env: Environment) -> None:
        """Work on ``env``; the engine of each of its hosts connects now, so an unreachable one
        fails (naming it) before anything is recorded. The first host is the one worked on."""
        self.env = env
        for host in reversed(env.fleet):
            self.on_host(host)

    def on_host(self, host: str | None) -> None:
        """Work on ``host``, one of the environment's Docker hosts, from now on."""
        self.host = host
        self.engine = self.cfg.engine(host)

    def host_label(self, host: str | None) -> str:
        """How a step names a fleet's host ("" for an environment of one host)."""
        return f" on {short_host(host)}" if self.env.hosts else ""

    def open_env(self, name: str | None, *, reason: str | None) -> Environment:
        """Find the environment (the default one when ``name`` is None) and work on it; a
        protected one needs a reason."""
        with self.cfg.store.read() as conn:
            env = environments.named_or_default(conn, name)
        if env.protected and not (reason and reason.strip()):
            raise InvalidInput(f"{env.name} is protected: say why with --reason")
        self.use_env(env)
        return env

    @property
    def base_url(self) -> str:
        """Where the environment's published port answers on the host worked on: its address."""
        return base_url(self.env, self.host)

    # --- steps and secrets ---------------------------------------------------------------

    _running: list | None = None  # [name, detail] of the step in progress

    @contextmanager
    def step(self, name: str, *, on_host: bool = True):
        """Time a step; report it to ``on_step`` (e.g. the CLI's progress lines). An ``on_step``
        with a ``started(name, detail)`` method (see ``StepWatcher``) also hears when the step
        starts, and again when it notes a detail (the health timeout and where it came from).
        In a fleet, a step done ``on_host`` names the host worked on ("health check on gpu-2")."""
        if on_host and getattr(self, "env", None) is not None and self.env.hosts:
            name += self.host_label(self.host)
        self._running = [name, None]
        self._tell_started()
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            _, detail = self._running
            self._running = None
            # a failed step is listed too (``--json`` of a failed promote shows where it stopped)
            self.steps.append(Step(name=name, seconds=round(time.perf_counter() - started, 4), detail=detail, ok=ok))
            if self.on_step:
                self.on_step(name, time.perf_counter() - started, ok)

    def _note(self, detail: str) -> None:
        """Attach ``detail`` to the running step (none running: nobody is shown it)."""
        if self._running is not None:
            self._running[1] = detail
            self._tell_started()

    def _tell_started(self) -> None:
        started = getattr(self.on_step, "started", None)
        if started is not None and self._running is not None:
            started(*self._running)

    def scrub(self, text: str) -> str:
        """Text bound for the user or the audit log, with every known secret (in any encoding, or
        a fragment of one a cut left at an end) as *** and URL passwords masked."""
        return mask_urls_in(self.scrubber.scrub(text))

    def untrusted(self, text: str, limit: int = 200) -> str:
        """Text a container sent (a health body, a warm-up answer): scrubbed, then cut, escaped."""
        return self.scrubber.untrusted(text, limit)

    def remember_secrets(self, runtime: Runtime, *, container_env: dict[str, str] | None = None) -> None:
        """Note the values of ``runtime.secrets``: the caller's, and a kept container's own
        (exported with another value back then) so a rollback scrubs them too."""
        self.scrubber = self.scrubber.extended(
            secret_values(self.cfg.environ, declared=runtime.secrets, container_env=container_env))

    @contextmanager
    def nothing_changed(self, ref: str):
        """Ctrl-C before the ledger changes: say so (exit 130), rather than a bare "interrupted"."""
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: {ref} was not deployed to {self.env.name}; "
                              "nothing was changed") from None

    # --- versions and containers ---------------------------------------------------------

    def runtime_of(self, release: Release) -> Runtime:
        with self.cfg.store.read() as conn:
            stored = versions.record_of(conn, release.model, release.version)
        return Runtime.model_validate(stored.record["runtime"])

    def make_ready(self, model: str, version: str, *, allow_retag: bool = False,
                   image_digest: str | None = None) -> Ready:
        """Everything checked before the ledger changes: secrets, blobs, image, snapshot."""
        with self.cfg.store.read() as conn:
            stored = versions.record_of(conn, model, version)
        record, ref = stored.record, f"{model}@{version}"
        runtime = Runtime.model_validate(record["runtime"])
        resources = self.claim_host(runtime, ref)
        secret_env = _secrets(runtime, self.cfg.environ, ref)
        self.remember_secrets(runtime)
        # The server can tell which version it is (CELLAR_MODEL, CELLAR_VERSION); labels say it to Docker.
        env_vars = {**runtime.env, "CELLAR_MODEL": model, "CELLAR_VERSION": version, **secret_env}
        with self.step("verify blobs"):
            self._verify_blobs(model, version, record)
        with self.step("pin image"):
            image = (self.engine.image_digest(image_digest) if image_digest else
                     pin_image(self.engine, record["image"], ref=ref, allow_retag=allow_retag))
        snap, files = self.place_files(stored.digest, record, image=image)
        target = Target(model=model, version=version, manifest_digest=stored.digest, image_digest=image)
        return Ready(target=target, runtime=runtime, image=image, snapshot=snap, env_vars=env_vars,
                     resources=resources, files=files)

    def ready_everywhere(self, model: str, version: str, *, allow_retag: bool = False,
                         image_digest: str | None = None) -> dict[str | None, Ready]:
        """``make_ready`` on each of the environment's hosts (a fleet's all get the same image and
        files, each checked there), before anything changes; {host: Ready}."""
        out: dict[str | None, Ready] = {}
        for host in self.env.fleet:
            self.on_host(host)
            try:
                out[host] = self.make_ready(model, version, allow_retag=allow_retag, image_digest=image_digest)
            except CellarError as exc:  # in a fleet, say where (a moved tag, a missing image, no room)
                if self.env.hosts and not str(exc).startswith("on "):
                    exc.args = (f"on {short_host(host)}: {exc}", *exc.args[1:])
                raise
            first = out[self.env.fleet[0]].image
            if out[host].image != first:
                raise InvalidInput(f"{model}@{version}'s image is {out[host].image[:19]} on {short_host(host)} but "
                                   f"{first[:19]} on {short_host(self.env.fleet[0])}: a fleet runs one image; load "
                                   "the recorded one on every host (docker save | docker load)")
        self.on_host(self.env.fleet[0])
        return out

    def claim_host(self, runtime: Runtime, ref: str) -> Resources:
        """The host settings ``ref`` gets in this environment; Conflict (nothing recorded yet) when
        its GPUs are held by another environment's deployed release on the same Docker host."""
        wanted = hosting.effective(runtime, self.env)
        hosting.check_sizes(wanted)
        if wanted.gpus is not None:
            hosting.check_gpu_collision(self.env, wanted, ref, self._gpu_holders())
        return wanted

    def _gpu_holders(self) -> list[hosting.GpuHolder]:
        """Other environments' releases on this Docker host that hold GPUs: the deployed one, and one
        being deployed (pending) there, which will hold them in a moment."""
        out = []
        with self.cfg.store.read() as conn:
            others = [e for e in environments.all_(conn) if e.name != self.env.name and hosting.same_host(e, self.env)]
            rows = [(e, releases.current_and_pending(conn, e.name)) for e in others]
        for env, found in rows:
            for release in {r.revision: r for r in (ledger.current(found), ledger.pending(found)) if r}.values():
                gpus = hosting.effective(self.runtime_of(release), env).gpus
                if gpus is not None:
                    out.append(hosting.GpuHolder(env=env, ref=release.ref, gpus=gpus))
        return out

    def restart_policy(self, runtime: Runtime) -> str:
        """The restart policy a deployed container of ``runtime`` gets in this environment."""
        return hosting.host_settings(hosting.effective(runtime, self.env)).restart

    def place_files(self, manifest_digest: str, record: dict, *, image: str) -> tuple[Path | None, dict[str, str]]:
        """Where the container's /model comes from: a hard-linked snapshot when the engine
        provably shares this disk, else the host's cache, sent only what it lacks and checked
        there (registry.hosts). Raises before the ledger changes when the transfer fails."""
        from registry.hosts import sharing  # docker-py: loaded only by commands that deploy
        from registry.hosts.cache import HostCache

        with self.step("snapshot"):
            if sharing.shares_disk(self.engine, self.cfg.snapshots, image=image, registry_id=self.cfg.registry_id,
                                   proofs=self.cfg.home.path / "host-stamps" / "shared-disk.json"):
                return snapshots.materialise(self.cfg.snapshots, self.cfg.blobs, manifest_digest=manifest_digest,
                                             record=record), {}
            self._note(f"{self.engine.base_url} does not share this disk")
        with self.step("send weights"):
            delivery = HostCache(self.engine, registry_id=self.cfg.registry_id, image=image,
                                 stamps=self.cfg.home.path / "host-stamps").deliver(
                self.cfg.blobs, record, on_progress=self._progress())
            self._note(delivery.summary())
        return None, delivery.files

    def _progress(self) -> Callable[[int, int], None]:
        """Bytes sent, of how many, and the rate, as the running step's detail (5 times a second)."""
        started, shown = time.monotonic(), [0.0]

        def show(sent: int, total: int) -> None:
            now = time.monotonic()
            if now - shown[0] >= 0.2 or sent == total:
                shown[0] = now
                rate = sent / max(now - started, 1e-3) / 1e6
                self._note(f"{sent / 1e6:.1f} of {total / 1e6:.1f} MB, {rate:.0f} MB/s")
        return show

    def prove_files(self, release: Release) -> None:
        """Before a kept container serves again: its version's blobs are intact and its snapshot
        (what the container mounts) is exactly those blobs, rebuilt if a file was replaced in it.
        CorruptBlob (naming the blob) when the recorded bytes themselves are gone."""
        with self.cfg.store.read() as conn:
            stored = versions.record_of(conn, release.model, release.version)
        with self.step("verify files"):
            self._verify_blobs(release.model, release.version, stored.record)
        self.place_files(stored.digest, stored.record, image=release.image_digest or stored.record["image"]["digest"])

    def _verify_blobs(self, model: str, version: str, record: dict) -> None:
        # A blob whose stat key is unchanged since its bytes were verified is trusted (a write
        # changes its mtime/ctime); any other is re-read: rollback stays fast on big weights.
        if self.cfg.fetch_blobs is not None:  # a home whose blob store is a remote: fetch what is missing
            self.cfg.fetch_blobs(model, version)
        for item in [*record["weights"], *record["prompts"]]:
            self.cfg.blobs.check(item["digest"], trust_stamp=True)

    def create_container(self, release: Release, ready: Ready) -> str:
        """Create (stopped) the container of ``release``, labelled so state can be rebuilt."""
        rid, env = self.cfg.registry_id, self.env
        spec = ContainerSpec(
            name=container_name(env=env.name, model=release.model, revision=release.revision, registry=rid),
            image=ready.image,
            labels=labels_for(model=release.model, env=env.name, version=release.version,
                              revision=release.revision, manifest_digest=release.manifest_digest, registry=rid),
            env=ready.env_vars, snapshot=str(ready.snapshot or ""), files=ready.files,
            container_port=ready.runtime.port, host_port=env.port, bind_addr=env.bind_addr,
            command=ready.runtime.command, host=hosting.host_settings(ready.resources))
        return self.engine.create(spec)

    def wait_healthy(self, container_id: str, runtime: Runtime) -> None:
        """Wait until the container answers its health path; StepFailed when it does not (saying
        where the requests went, when nothing answered there)."""
        shown: list[str] = []

        def show(answer: str) -> None:  # while a server loads: its last answer on the spinner line
            started = getattr(self.on_step, "started", None)
            if started is not None and self._running is not None:
                name, detail = self._running
                started(name, f"{detail + '; ' if detail else ''}last answer: {answer}")
                shown.append(answer)

        try:
            self.cfg.checks.wait_healthy(self.base_url + runtime.health.path, timeout=self.health_timeout(runtime),
                                         exited=lambda: self._exit_reason(container_id), untrusted=self.untrusted,
                                         on_answer=show)
        except StepFailed as exc:
            if not any(words in str(exc) for words in ("no answer", "last answer: connection")):
                raise  # a server answered (an HTTP status), or the container exited: nothing to say where
            raise StepFailed(f"{exc}; {where_checks_go(self.env, self.host)}") from None
        finally:
            if shown:
                self._tell_started()  # the step's line keeps its recorded detail, not a passing answer

    def health_timeout(self, runtime: Runtime) -> float:
        """The environment's setting when it has one, else the version's own; the running step
        notes which applied, e.g. "timeout 2.5 s from environment staging"."""
        if self.env.health_timeout_s:
            timeout, source = self.env.health_timeout_s, f"environment {self.env.name}"
        else:
            timeout, source = runtime.health.timeout_s, "the version's runtime.health"
        self._note(f"timeout {timeout:g} s from {source}")
        return timeout

    def start_and_check(self, release: Release) -> None:
        """Start a release's existing container and wait until its own health path answers."""
        assert release.container_id is not None, f"{release.ref} has no container to start"
        self.engine.start(release.container_id)
        runtime = self.runtime_of(release)
        self.wait_healthy(release.container_id, runtime)
        self.engine.set_restart(release.container_id, self.restart_policy(runtime))

    def _exit_reason(self, container_id: str) -> str | None:
        info = self.engine.inspect(container_id)
        if info is None:
            return "the container disappeared while starting"
        if info.running:
            return None
        # Log text leaves the engine here: scrub the container's own secret values at once, then
        # keep the end of it (the lines before the exit say why).
        scrubber = self.scrubber.extended(secret_values({}, container_env=info.env))
        tail = scrubber.untrusted(self.engine.logs(container_id, tail=10), 2000, keep="tail", newlines=True)
        lines = ("; last log lines:\n" + tail) if tail else " (no log output)"
        return f"container exited with code {info.exit_code}{lines}"


def base_url(env: Environment, host: str | None = None) -> str:
    """Where ``env``'s published port answers on ``host`` (default: its first Docker host): on
    that host's address."""
    host = env.docker_host if host is None else host
    addr = "127.0.0.1" if env.bind_addr in ("0.0.0.0", "::", "") else env.bind_addr
    if host and urlsplit(host).scheme in ("tcp", "ssh", "http", "https"):
        addr = urlsplit(host).hostname or addr
    return f"http://{addr}:{env.port}"


def where_checks_go(env: Environment, host: str | None = None) -> str:
    """Where health and probe requests for ``env`` on ``host`` go, and from where: for the error
    when nothing answers there."""
    host = env.docker_host if host is None else host
    text = (f"health and probe requests go from this machine to {base_url(env, host)} "
            f"(the port published on {env.bind_addr} by the engine at {host or 'the local socket'})")
    if host and urlsplit(host).scheme in ("tcp", "ssh") and env.bind_addr.startswith("127."):
        text += (f"; {env.bind_addr} there is that host's own loopback, which this machine cannot reach: "
                 "publish on the host's address instead (env add --bind 0.0.0.0)")
    return text


def pin_image(engine: Engine, image: dict, *, ref: str, allow_retag: bool) -> str:
    """The image ID to run: the digest recorded at push, unless the tag moved and that is allowed."""
    tag, pinned = image.get("ref"), image.get("digest")
    if not tag and not pinned:
        raise InvalidInput(f"{ref} has no container image: push a version with `image:` in its manifest")
    try:
        now = engine.image_digest(tag) if tag else None
    except NotFound:
        now = None
    if pinned and now and now != pinned:
        if not allow_retag:
            raise ImageMoved(
                f"image {tag} now points to {now[:19]}, not {pinned[:19]} recorded for {ref}: "
                "restore that image, or pass --allow-retag to run what the tag names now")
        return now
    if pinned:
        return engine.image_digest(pinned)  # NotFound names the missing image: nothing changed yet
    if now is None:
        raise NotFound(f"image {tag} is not on the Docker engine at {engine.base_url}; build or load it first")
    return now


def _secrets(runtime: Runtime, environ, ref: str) -> dict[str, str]:
    missing = [name for name in runtime.secrets if not environ.get(name)]
    if missing:
        raise InvalidInput(f"{ref} needs the secret {', '.join(missing)}: export it in this shell first "
                           "(its value is passed to the container only, never stored or shown)")
    return {name: environ[name] for name in runtime.secrets}
