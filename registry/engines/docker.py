"""The Docker Engine adapter (docker-py) of the ``Engine`` port. Imported only by commands that
talk to Docker: docker-py and requests cost ~50 ms of start-up."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.errors import NotFound as DockerNotFound
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit
from docker.utils import kwargs_from_env

from registry.engines.engine import LABEL, STOP_TIMEOUT_S, ContainerInfo, ContainerSpec, HostSettings
from registry.errors import EngineError, NotFound, StepFailed
from registry.trust.secrets import mask_url


def describe_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _source(base_url: str | None) -> tuple[str, str]:
    """Where the engine URL came from, and what to fix: the environment's --docker-host
    (the only URL passed in), $DOCKER_HOST, or the local socket."""
    if base_url:
        return "the environment's --docker-host", "start dockerd there, or check the URL with `registry env list`"
    if os.environ.get("DOCKER_HOST"):
        return "$DOCKER_HOST", "start dockerd there, or fix DOCKER_HOST"
    return "the local socket", "start dockerd, or set DOCKER_HOST"


def _client(base_url: str | None, timeout: int) -> docker.DockerClient:
    """A docker-py client. A tcp:// host with $DOCKER_CERT_PATH (and $DOCKER_TLS_VERIFY) set is
    reached over TLS with those certificates, as the docker CLI would. requests' environment
    (whose $REQUESTS_CA_BUNDLE would replace the CA given) is not used: the API version is then
    asked for once the client exists."""
    if not base_url:
        return docker.from_env(timeout=timeout)
    tls = None
    if base_url.startswith("tcp://") and os.environ.get("DOCKER_CERT_PATH"):
        tls = kwargs_from_env().get("tls")
    # ssh:// goes through the system's ssh client, as the docker CLI does: all of ~/.ssh/config
    # (ProxyJump, Match, options paramiko does not read), the agent and known_hosts apply
    ssh = base_url.startswith("ssh://")
    if ssh:
        _ssh_preflight(base_url, timeout)
    client = docker.DockerClient(base_url=base_url, timeout=timeout, tls=tls or False, version="1.24",
                                 use_ssh_client=ssh)
    client.api.trust_env = False
    client.api._version = client.api.version(api_version=False)["ApiVersion"]  # type: ignore[attr-defined]
    return client


class DockerEngine:
    """A connection to one Docker engine (an environment's --docker-host, $DOCKER_HOST or the local socket)."""

    def __init__(self, base_url: str | None = None, *, timeout: int = 30):
        # for messages only: a tcp://user:password@host must never be printed or stored
        self.base_url = mask_url(base_url or describe_host())
        try:
            self.client = _client(base_url, timeout)
            self.client.ping()
        except Exception as exc:  # docker-py, and for ssh:// paramiko's own errors (OSError, SSHException)
            source, fix = _source(base_url)
            raise EngineError(f"cannot reach the Docker engine at {self.base_url} ({_short(exc)}; "
                              f"from {source}): {fix}") from None
        self.api = self.client.api

    def close(self) -> None:
        self.client.close()

    def image_digest(self, ref: str) -> str:
        """The image ID (``sha256:...``) that ``ref`` names on this engine now."""
        try:
            return self.api.inspect_image(ref)["Id"]
        except ImageNotFound:
            raise NotFound(f"image {ref!r} is not on the Docker engine at {self.base_url}; "
                           "build or load it first") from None
        except DockerException as exc:
            raise EngineError(f"Docker engine error for image {ref!r}: {_short(exc)}") from None

    def save_image(self, digest: str, dest_file: Path) -> None:
        """``docker save`` of the image ID, streamed to ``dest_file`` (untagged, see Engine)."""
        try:
            chunks = self.client.images.get(digest).save(chunk_size=4 << 20, named=False)
            with open(dest_file, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
        except ImageNotFound:
            raise NotFound(f"image {digest} is not on the Docker engine at {self.base_url}; "
                           "load or pull it there, or export without --with-image") from None
        except DockerException as exc:
            raise EngineError(f"cannot save image {digest[:19]}: {_short(exc)}") from None

    def load_image(self, path: Path) -> str:
        """``docker load`` of a saved tar; the image ID it holds."""
        try:
            with open(path, "rb") as f:
                images = self.client.images.load(f)
        except DockerException as exc:
            raise EngineError(f"cannot load the image from {path}: {_short(exc)}") from None
        if not images or images[0].id is None:
            raise EngineError(f"the Docker engine at {self.base_url} loaded no image from {path}")
        return images[0].id

    def push_image(self, image_id: str, repository: str, tag: str, auth: dict | None) -> str:
        ref = f"{repository}:{tag}"
        try:
            before = self.api.inspect_image(image_id).get("RepoTags") or []
            self.api.tag(image_id, repository, tag)
            try:
                digest = ""
                for line in self.api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
                    if line.get("error"):
                        raise EngineError(f"the Docker engine could not push {ref}: {line['error']}")
                    digest = (line.get("aux") or {}).get("Digest", digest)
            finally:
                if before and ref not in before:  # untag; the last tag would take the image with it
                    self.api.remove_image(ref, noprune=True)
        except DockerException as exc:
            raise EngineError(f"the Docker engine could not push {ref}: {_short(exc)}") from None
        return digest

    def pull_image(self, repository: str, tag: str, auth: dict | None) -> str:
        ref = f"{repository}:{tag}"
        try:
            for line in self.api.pull(repository, tag=tag, auth_config=auth, stream=True, decode=True):
                if line.get("error"):
                    raise EngineError(f"the Docker engine could not pull {ref}: {line['error']}")
            image_id = self.api.inspect_image(ref)["Id"]
        except DockerException as exc:
            raise EngineError(f"the Docker engine could not pull {ref}: {_short(exc)}") from None
        return image_id

    def create(self, spec: ContainerSpec) -> str:
        port = f"{spec.container_port}/tcp"
        host_config = self.api.create_host_config(
            init=True, privileged=False,
            port_bindings={port: (spec.bind_addr, spec.host_port)},
            **_model_mounts(spec),
            **_host_options(spec.host),
        )
        try:
            created = self.api.create_container(
                spec.image, command=spec.command, name=spec.name, labels=spec.labels,
                environment=spec.env, ports=[spec.container_port], host_config=host_config, detach=True)
        except ImageNotFound:
            raise StepFailed(f"image {spec.image} is missing from the Docker engine at {self.base_url}") from None
        except DockerException as exc:
            raise EngineError(f"cannot create container {spec.name}: {_short(exc)}") from None
        return created["Id"]

    def start(self, container_id: str) -> None:
        try:
            self.api.start(container_id)
        except APIError as exc:
            raise StepFailed(_start_error(exc)) from None

    def stop(self, container_id: str, *, timeout: float = STOP_TIMEOUT_S) -> None:
        self.set_restart(container_id, "no")  # whatever its policy, it stays stopped after a reboot
        with _ignore_missing():
            self.api.stop(container_id, timeout=int(timeout))

    def remove(self, container_id: str) -> None:
        with _ignore_missing():
            self.api.remove_container(container_id, force=True)

    def inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            return _info(self.api.inspect_container(container_id))
        except DockerNotFound:
            return None
        except DockerException as exc:
            raise EngineError(f"Docker engine error: {_short(exc)}") from None

    def set_restart(self, container_id: str, policy: str) -> None:
        name, _, retries = policy.partition(":")
        wanted: Any = {"Name": name, "MaximumRetryCount": int(retries or 0)}
        try:
            self.api.update_container(container_id, restart_policy=wanted)
        except DockerNotFound:
            return  # like stop: a missing container needs no policy
        except DockerException as exc:
            raise EngineError(f"cannot set the restart policy of {container_id[:12]}: {_short(exc)}") from None

    def last_exit_code(self, container_id: str) -> int | None:
        """From the engine's event log (``die`` events), which it keeps in memory: a restart resets
        the container state's exit code to 0."""
        info = self.inspect(container_id)
        if info is None:
            return None
        try:
            now = time.time()  # a fraction of a second as nanoseconds: Docker reads "1.5" as 1 s + 5 ns
            until: Any = f"{int(now)}.{int(now % 1 * 1e9):09d}"  # docker-py passes a string through
            found = self.api.events(since=_epoch(info.created), until=until, decode=True,
                                    filters={"container": container_id, "event": "die"})
            codes = [e.get("Actor", {}).get("Attributes", {}).get("exitCode") for e in found]
        except DockerException:
            codes = []
        known = [int(c) for c in codes if c is not None and str(c).lstrip("-").isdigit()]
        return known[-1] if known else (info.exit_code if not info.running else None)

    def find_labelled(self, **labels: str) -> list[ContainerInfo]:
        """Containers (running or not) carrying the cellar labels given, e.g. ``env="prod"``."""
        filters = {"label": [f"{LABEL}.{k.replace('_', '-')}={v}" for k, v in labels.items()] or [LABEL + ".env"]}
        try:
            found = self.api.containers(all=True, filters=filters)
        except DockerException as exc:
            raise EngineError(f"Docker engine error: {_short(exc)}") from None
        return [ContainerInfo(id=c["Id"], name=(c.get("Names") or ["?"])[0].lstrip("/"),
                              labels=c.get("Labels") or {}, running=c.get("State") == "running",
                              status=c.get("State") or "", created=str(c.get("Created", "")),
                              image=c.get("ImageID") or "")
                for c in found]

    def logs(self, container_id: str, *, tail: int = 10) -> str:
        try:
            return self.api.logs(container_id, tail=tail).decode("utf-8", "replace")
        except DockerException:
            return ""


def _model_mounts(spec: ContainerSpec) -> dict:
    """/model: the snapshot folder bound read-only, or (a host that does not share the registry's
    disk) a read-only tmpfs holding exactly the version's files, each its cached blob bound read-only."""
    if not spec.files:  # a bind mount: a snapshot missing on the engine fails, never an empty /model
        return {"mounts": [Mount("/model", spec.snapshot, type="bind", read_only=True)]}
    return {"mounts": [Mount("/model", None, type="tmpfs", read_only=True),
                       *(Mount(path, source, type="bind", read_only=True)
                         for path, source in sorted(spec.files.items()))]}


class _ignore_missing:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, DockerNotFound):
            return exc is not None
        if isinstance(exc, DockerException):
            raise EngineError(f"Docker engine error: {_short(exc)}") from None
        return False


def _host_options(host: HostSettings) -> dict:
    """``create_host_config`` keywords for the runtime settings; restart comes later (set_restart)."""
    out: dict = {"log_config": LogConfig(type=host.log_driver, config=host.log_options)}
    if host.gpus is not None:
        which: Any = ({"count": -1} if host.gpus == "all" else
                      {"count": host.gpus} if isinstance(host.gpus, int) else {"device_ids": list(host.gpus)})
        out["device_requests"] = [DeviceRequest(driver="", capabilities=[["gpu"]], **which)]
    for key, value in (("shm_size", host.shm_size), ("mem_limit", host.memory), ("ipc_mode", host.ipc),
                       ("nano_cpus", host.nano_cpus)):
        if value is not None:
            out[key] = value
    if host.ulimits:
        out["ulimits"] = [Ulimit(name=n, soft=soft, hard=hard) for n, (soft, hard) in sorted(host.ulimits.items())]
    return out


def _epoch(created: str) -> int:
    """Docker's ``Created`` (RFC 3339 with nanoseconds) as Unix seconds; 0 when unreadable."""
    try:
        return int(datetime.fromisoformat(created[:19] + "+00:00").timestamp())
    except ValueError:
        return 0


def _info(data: dict) -> ContainerInfo:
    state = data.get("State") or {}
    policy = ((data.get("HostConfig") or {}).get("RestartPolicy") or {})
    name, retries = policy.get("Name") or "no", policy.get("MaximumRetryCount") or 0
    return ContainerInfo(
        id=data["Id"], name=data.get("Name", "").lstrip("/"),
        labels=(data.get("Config") or {}).get("Labels") or {},
        running=bool(state.get("Running")), status=state.get("Status", ""),
        exit_code=state.get("ExitCode"), created=data.get("Created", ""), image=data.get("Image") or "",
        env=dict(item.partition("=")[::2] for item in (data.get("Config") or {}).get("Env") or []),
        restart_count=int(data.get("RestartCount") or 0), finished_at=state.get("FinishedAt", ""),
        restart_policy=f"{name}:{retries}" if name == "on-failure" and retries else name)


def _start_error(exc: APIError) -> str:
    text = _short(exc)
    low = text.lower()
    if "port is already allocated" in low or "address already in use" in low:
        return f"the host port is already in use by another process ({text})"
    if "no such image" in low:
        return f"image missing ({text})"
    if "could not select device driver" in low or "nvidia-container-cli" in low:
        return f"this Docker host has no NVIDIA runtime: install nvidia-container-toolkit ({text})"
    if "setting rlimit" in low:
        return ("the Docker host does not allow the runtime.ulimits asked for (a limit above its own hard "
                f"limit): lower them, or raise the host's limits for dockerd ({text})")
    return f"the container did not start ({text})"


# Connection failures as docker-py, urllib3 and paramiko word them, in a few plain words.
_REASONS = [
    ("filenotfounderror", "no such socket"), ("no such file or directory", "no such socket"),
    ("connection refused", "connection refused"), ("permission denied", "permission denied"),
    ("failed to resolve", "unknown host"), ("name or service not known", "unknown host"),
    ("timed out", "timed out"), ("unable to connect to port", "connection refused"),
    ("install paramiko", "ssh:// hosts need the ssh extra: pip install 'cellar-registry[ssh]'"),
    ("authentication failed", "ssh authentication failed"), ("connection aborted", "connection aborted"),
]


def _ssh_preflight(base_url: str, timeout: int) -> None:
    """Ask the ssh host for its engine's version once, through the system ssh client, before
    docker-py opens its connections: ssh's own reason for a failure (refused, unknown host key,
    no docker CLI there) becomes the error, rather than ssh printing it past us to the terminal.
    BatchMode: never a password prompt (a key or the agent logs in, as for every connection after)."""
    if shutil.which("ssh") is None:
        raise EngineError("no `ssh` client on this machine (install openssh-client)")
    parts = urlsplit(base_url)
    args = ["ssh", "-o", "BatchMode=yes"]
    if parts.username:
        args += ["-l", parts.username]
    if parts.port:
        args += ["-p", str(parts.port)]
    try:
        done = subprocess.run([*args, "--", parts.hostname or "", "docker version --format '{{.Server.Version}}'"],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EngineError(f"ssh did not answer within {timeout} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise EngineError(lines[-1].strip()[:300] if lines else f"ssh exited with code {done.returncode}")


def _short(exc: Exception) -> str:
    """docker-py's error as one short line: a known connection failure in plain words."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip() or type(exc).__name__
    low = text.lower()
    for needle, reason in _REASONS:
        if needle in low:
            return reason
    return text.removeprefix("Error while fetching server API version: ").splitlines()[0][:300]
