"""Pydantic models: the manifest a user writes, and the results Cellar returns.

Results are what the Python API hands back and what ``--json`` prints, so their field
names are part of the public interface.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from registry import inputs
from registry.formats.safetensors_index import TensorRange
from registry.ledger import Release, short_host
from registry.models.resources import EnvRuntime, Resources

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
VERSION_RE = re.compile(r"[a-z0-9][a-z0-9._+-]{0,62}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
SECRET_KEY_RE = re.compile(r".*(_TOKEN|_KEY|_PASSWORD|_SECRET)$|^(TOKEN|KEY|PASSWORD|SECRET)$", re.I)


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe model, environment or prompt name, else raise ValueError."""
    return _check(value, NAME_RE, what, "'.', '_', '-'")


def check_version(value: str) -> str:
    """Return ``value`` if it is a safe version string, else raise ValueError."""
    return _check(value, VERSION_RE, "version", "'.', '_', '+', '-'", example=" (e.g. v1.3)")


def _check(value: str, pattern: re.Pattern, what: str, punctuation: str, example: str = "") -> str:
    # ".." never reaches a path or a container name, even where the pattern would allow it
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} is not allowed: use 1-63 characters of a-z, 0-9, {punctuation}, "
                         f"starting with a letter or digit{example}")
    return value


def check_url_path(value: str) -> str:
    """Return ``value`` if it is an absolute URL path such as ``/health``, else raise ValueError."""
    # promote builds http://host:port + path: "healthz" would end as a ValueError at deploy time
    if not value.startswith("/") or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{value!r} must be a URL path starting with '/' (e.g. /health), without spaces")
    return value


def is_secret_key(key: str) -> bool:
    """True for variable names that must never be stored or shown (``*_TOKEN``, ``*_KEY`` ...)."""
    return bool(SECRET_KEY_RE.fullmatch(key))


def _check_env_key(key: str) -> None:
    if not ENV_KEY_RE.fullmatch(key):
        raise ValueError(f"{key!r} is not a valid environment variable name")


Name = Annotated[str, AfterValidator(check_name)]
VersionStr = Annotated[str, AfterValidator(check_version)]


def _new_url_path(value: str, info: ValidationInfo) -> str:
    # Checked when a manifest is pushed (manifest.validate passes this context); versions
    # stored before the check existed still load, so `show` and `diff` keep working on them.
    return check_url_path(value) if (info.context or {}).get("new_manifest") else value


UrlPath = Annotated[str, AfterValidator(_new_url_path)]

# Docker's reference grammar (distribution/reference): [registry[:port]/]name[:tag][@digest],
# name components lowercase. The registry host may have capitals; "localhost" needs no dot.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# a first component is a registry host only with a dot or a port, or as "localhost" (as docker reads it)
_HOST = rf"(?:localhost(?::[0-9]+)?|{_LABEL}(?:\.{_LABEL})+(?::[0-9]+)?|{_LABEL}:[0-9]+)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF_RE = re.compile(
    rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")


def check_image_ref(value: str) -> str:
    """Return ``value`` if it is a well-formed image reference, else raise ValueError."""
    if not isinstance(value, str) or not IMAGE_REF_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an image reference: write [registry[:port]/]name[:tag][@sha256:hex] "
            "with a lowercase name, e.g. ghcr.io/acme/support-bot:1.3"
        )
    return value


def _new_image_ref(value: str | None, info: ValidationInfo) -> str | None:
    # Like UrlPath: checked on push only, so versions recorded before the check still load.
    if value is None or not (info.context or {}).get("new_manifest"):
        return value
    return check_image_ref(value)


ImageRefStr = Annotated[str, AfterValidator(_new_image_ref)]


def _on_push(problem_of: Callable[[Any], str | None]) -> AfterValidator:
    """A check run when a manifest is pushed only (like UrlPath): recorded versions still load."""
    def check(value: Any, info: ValidationInfo) -> Any:
        if (info.context or {}).get("new_manifest") and (problem := problem_of(value)):
            raise ValueError(problem)
        return value

    return AfterValidator(check)


# probes and warm-ups send this verbatim: CR/LF in it would inject into the HTTP request
HttpMethod = Annotated[str, _on_push(inputs.method_error)]
Message = Annotated[str, _on_push(lambda v: inputs.text_error(v, inputs.MESSAGE_MAX, multiline=True))]
JsonBody = Annotated[Any, _on_push(inputs.json_error)]
# free text a manifest passes to the container or a probe (runtime.command, expect.regex,
# expect.not_contains): may span lines; no bidi override or other control character
FieldText = Annotated[str, _on_push(lambda v: inputs.text_error(v, inputs.ENV_VALUE_MAX, multiline=True))]


class _Model(BaseModel):
    # Validators are built on first use, not at import: the CLI's start-up pays only for the
    # models a command uses (~20 ms less start-up for `registry list`, see bench/startup.py).
    model_config = ConfigDict(defer_build=True)


class _Strict(_Model):
    model_config = ConfigDict(extra="forbid")


# --- the manifest (cellar.yaml) ---------------------------------------------------------


class Request(_Strict):
    method: HttpMethod = "GET"
    path: UrlPath = "/"
    json_body: JsonBody = Field(default=None, alias="json")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class Health(_Strict):
    path: UrlPath = "/health"
    timeout_s: float = Field(default=30.0, gt=0, le=3600)


class Runtime(Resources):
    """A manifest's ``runtime:``: how the model server runs (its host settings: ``Resources``)."""

    port: int = Field(default=8080, ge=1, le=65535)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    command: list[str] | str | None = None
    health: Health = Field(default_factory=Health)
    warmup: list[Request] = Field(default_factory=list)
    # seconds each warm-up request may take (None: 30): a first generation on a cold server is slow
    warmup_timeout_s: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("env")
    @classmethod
    def _no_secret_values(cls, env: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for key, value in env.items():
            _check_env_key(key)
            if is_secret_key(key):
                raise ValueError(
                    f"{key} looks like a secret: list it under runtime.secrets and pass its "
                    "value from the environment at deploy time, never in the manifest"
                )
            # on push only: a version recorded before these rules still loads
            if (info.context or {}).get("new_manifest") and (problem := inputs.env_value_error(key, value)):
                raise ValueError(problem)
        return env

    @field_validator("command")
    @classmethod
    def _command_text(cls, command: list[str] | str | None, info: ValidationInfo) -> list[str] | str | None:
        if command is None or not (info.context or {}).get("new_manifest"):
            return command
        for n, part in enumerate([command] if isinstance(command, str) else command):
            if problem := inputs.text_error(part, inputs.ENV_VALUE_MAX, multiline=True):
                raise ValueError(problem if isinstance(command, str) else f"[{n}]: {problem}")
        return command

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, names: list[str]) -> list[str]:
        for key in names:
            _check_env_key(key)
        return names


class Expect(_Strict):
    status: int | None = 200
    regex: FieldText | None = None
    json_schema: Annotated[dict[str, Any] | None, _on_push(inputs.json_error)] = None
    not_contains: FieldText | None = None


class Probe(_Strict):
    name: Name
    method: HttpMethod = "POST"
    path: UrlPath
    json_body: JsonBody = Field(default=None, alias="json")
    expect: Expect = Field(default_factory=Expect)
    max_latency_ms: int | None = Field(default=None, gt=0)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class Manifest(_Strict):
    """What a user writes in ``cellar.yaml`` to describe one version."""

    model: Name
    version: VersionStr
    message: Message = ""
    image: ImageRefStr | None = None
    weights: list[str] = Field(default_factory=list)
    prompts: dict[str, str] = Field(default_factory=dict)
    runtime: Runtime = Field(default_factory=Runtime)
    probes: list[Probe] = Field(default_factory=list)
    # `registry watch --auto-rollback` leaves this version alone (it alerts only), e.g. a
    # release whose database migration an older version cannot run against
    no_auto_rollback: bool = False

    @field_validator("prompts")
    @classmethod
    def _prompt_names(cls, prompts: dict[str, str]) -> dict[str, str]:
        for name in prompts:
            check_name(name, "prompt name")
        return prompts


# --- results ----------------------------------------------------------------------------


class Tensor(_Model):
    name: str
    dtype: str
    shape: list[int]
    digest: str


class WeightFile(_Model):
    path: str
    digest: str
    size: int
    tensors: list[Tensor] = Field(default_factory=list)


class PromptFile(_Model):
    name: str
    digest: str
    size: int
    path: str | None = None


class ImageRef(_Model):
    ref: str | None = None
    digest: str | None = None


class FileProvenance(_Model):
    commit: str | None = None
    author: str | None = None
    time: datetime | None = None
    dirty: bool = False


class Provenance(_Model):
    commit: str | None = None
    branch: str | None = None
    remote: str | None = None
    dirty: bool = False
    files: dict[str, FileProvenance] = Field(default_factory=dict)


class VersionSummary(_Model):
    model: str
    version: str
    manifest_digest: str
    created_at: datetime
    actor: str
    message: str
    deprecated_at: datetime | None = None  # set by `registry deprecate`: hidden from default listings


class VersionInfo(VersionSummary):
    image: ImageRef
    weights: list[WeightFile]
    prompts: list[PromptFile]
    runtime: Runtime
    probes: list[Probe]
    provenance: Provenance | None = None

    @classmethod
    def from_record(cls, summary: VersionSummary, record: dict, tensors: dict[str, list[Tensor]],
                    provenance: Provenance | None) -> VersionInfo:
        """A version's full description from the record it pins (stored, or built from a manifest)."""
        return cls(
            **summary.model_dump(),
            image=ImageRef(**record["image"]),
            weights=[WeightFile(**w, tensors=tensors.get(w["digest"], [])) for w in record["weights"]],
            prompts=[PromptFile(**p) for p in record["prompts"]],
            runtime=Runtime.model_validate(record["runtime"]),
            probes=[Probe.model_validate(p) for p in record["probes"]],
            provenance=provenance,
        )


class LogEntry(VersionSummary):
    """A changelog entry: a version summary with its git provenance, when it was pushed from git."""

    provenance: Provenance | None = None


class PushResult(_Model):
    model: str
    version: str
    manifest_digest: str
    created: bool
    bytes_ingested: int = 0
    files: int = 0
    warnings: list[str] = Field(default_factory=list)


class InitResult(_Model):
    home: str
    db_url: str
    created: bool


# --- environments and deploys (``Release``, a ledger row, lives in registry.ledger) ----------


class Environment(BaseModel):
    name: str
    port: int
    bind_addr: str = "127.0.0.1"
    docker_host: str | None = None
    health_timeout_s: float | None = None
    keep: int = 3
    protected: bool = False
    is_default: bool = False
    gate: bool = False  # promotes run the version's probes after warm-up; a fail or error rolls back
    created_at: datetime
    # host settings that win over the versions' own here (GPUs, memory ...), and GPU sharing
    runtime: EnvRuntime | None = None
    # a fleet (issue 22): the Docker hosts it spans, the first (also ``docker_host``) the canary;
    # None for an environment of one host
    hosts: list[str] | None = None

    @property
    def fleet(self) -> list[str | None]:
        """The Docker hosts this environment runs on, the canary first (None: the local engine)."""
        return list(self.hosts) if self.hosts else [self.docker_host]


class Step(BaseModel):
    """One step of a promote or rollback and how long it took; ``detail`` says what it decided,
    e.g. the health check's "timeout 2.5 s from environment staging"."""

    name: str
    seconds: float
    detail: str | None = None
    ok: bool = True  # False for a step that failed (a failed promote lists it, then the steps putting things back)


class DeployResult(BaseModel):
    """What a promote or rollback did: the release now deployed and the steps taken."""

    env: str
    operation: str
    release: Release
    previous: Release | None = None
    steps: list[Step] = Field(default_factory=list)
    removed_containers: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # e.g. old containers Docker would not remove


class Lock(BaseModel):
    env: str
    operation: str
    target: str
    actor: str
    host: str
    pid: int
    started_at: datetime


class HostStatus(BaseModel):
    """One Docker host of a fleet in ``registry status``: the deployed release's container there."""

    host: str
    container_id: str | None = None
    container_state: str | None = None
    healthy: bool | None = None
    restarts: int | None = None
    last_exit_code: int | None = None
    note: str | None = None  # the engine could not be asked
    drift: list[str] = Field(default_factory=list)

    @property
    def problem(self) -> str | None:
        if self.drift:
            return "drift: " + "; ".join(self.drift)
        if self.container_state is None:
            return "Docker engine unreachable" if self.note else "no container"
        if self.container_state != "running":
            return f"container {self.container_state}"
        return "not answering its health path" if self.healthy is False else None


class EnvStatus(BaseModel):
    env: str
    port: int
    deployed: Release | None = None
    container_id: str | None = None
    container_state: str | None = None
    healthy: bool | None = None
    pending: Lock | None = None
    pending_release: Release | None = None
    note: str | None = None
    restarts: int | None = None  # times Docker restarted the deployed container (its process died)
    last_exit_code: int | None = None  # how its process last ended, when it was restarted
    gpus: str | int | list[str] | None = None  # the GPUs the deployed release holds on its host
    # Dark: nothing is deployed, but something served here before (a switch whose old release
    # did not come back). Since when, why, and the release a plain rollback puts back.
    dark_since: datetime | None = None
    dark_reason: str | None = None
    last_good: Release | None = None
    # What runs but is not what the ledger records (registry.deploy.drift): one line each.
    drift: list[str] = Field(default_factory=list)
    # A fleet: each host's part (the fields above then say the first host's, health all hosts')
    hosts: list[HostStatus] | None = None

    @property
    def problem(self) -> str | None:
        """Why this environment needs attention (None when it is fine): it is dark, or something
        is deployed but its container is not running and answering. A property, so ``--json``
        is unchanged."""
        if self.drift:
            return "drift: " + "; ".join(self.drift)
        if self.deployed is not None and self.hosts:
            bad = [f"on {short_host(h.host)}: {h.problem}" for h in self.hosts if h.problem]
            return "; ".join(bad) or None
        if self.deployed is None:
            return f"dark since {self.dark_since:%Y-%m-%d %H:%M:%S} UTC" if self.dark_since else None
        if self.container_state is None:
            return "Docker engine unreachable" if self.note else "no container recorded"
        if self.container_state != "running":
            return f"container {self.container_state}"
        return None if self.healthy else "not answering"


class RecoverAction(BaseModel):
    env: str
    action: str
    detail: str


class RecoverResult(BaseModel):
    actions: list[RecoverAction] = Field(default_factory=list)


class FailedDeploy(BaseModel):
    """What a promote or rollback that failed its health gate did (``--json`` prints it on exit 4):
    the failed revision, the automatic rollback revision (None when nothing was restored) and why."""

    env: str
    operation: str
    error: str
    failed: Release
    rollback: Release | None = None
    previous: Release | None = None  # the release deployed before, as it was settled
    steps: list[Step] = Field(default_factory=list)


# --- what the store is handed and hands out besides its rows ---------------------------------


@dataclass
class SourceFile:
    """A file a version stores: a weight (name = relative path) or a prompt (name = prompt name)."""

    kind: str
    name: str
    path: Path
    tensors: list[TensorRange] = field(default_factory=list)


@dataclass
class Resolved:
    manifest: Manifest
    root: Path
    files: list[SourceFile]

    @property
    def weights(self) -> list[SourceFile]:
        return [f for f in self.files if f.kind == "weight"]

    @property
    def prompts(self) -> list[SourceFile]:
        return [f for f in self.files if f.kind == "prompt"]


@dataclass(frozen=True)
class PromptRevision:
    """One version in a prompt's history, with the prompt's digest there (None: absent)."""

    version: str
    actor: str
    time: datetime
    digest: str | None
    origin: FileProvenance | None
