"""What a model server's container gets from its host: GPUs, memory, shared memory, IPC, CPUs,
ulimits, log rotation and restart policy (a manifest's ``runtime:``, an environment's overrides).

Written in Docker's own spelling (``16g``, ``--ipc host``) so a user can copy a ``docker run``
line into a manifest. Every field is optional: a version that sets none records none of them
(its manifest digest is what it was before these settings existed), and ``effective`` fills in
the defaults Cellar picks when creating the container (``Log()``, ``DEFAULT_RESTART``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

# Decisions (README, "Runtime settings"): a crashed server or a rebooted host comes back by itself,
# a container stopped on purpose (kept for rollback) does not: Docker's `unless-stopped`. Logs
# rotate at 5 files of 20 MiB (100 MiB per container at most), in Docker's json-file format so
# `docker logs` keeps working. IPC stays Docker's private namespace unless `ipc: host` is asked.
DEFAULT_RESTART = "unless-stopped"
DEFAULT_LOG_DRIVER, DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_MAX_FILE = "json-file", "20m", 5

SIZE_RE = re.compile(r"[1-9][0-9]{0,15}[bkmg]?")
GPU_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:-]{0,79}")
RESTART_RE = re.compile(r"no|always|unless-stopped|on-failure(:[1-9][0-9]{0,3})?")
IPC_MODES = ("private", "host", "shareable")
LOG_DRIVERS = ("json-file", "local")
# The ulimit names Docker accepts (docker/go-units ulimit.go).
ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
           "rtprio", "rttime", "sigpending", "stack")
RESOURCE_FIELDS = ("gpus", "shm_size", "memory", "ipc", "cpus", "ulimits", "log", "restart")
# Left out of a recorded runtime while unset (these and the Runtime's own late additions).
OMITTED_WHEN_UNSET = (*RESOURCE_FIELDS, "warmup_timeout_s")


def check_size(value: Any, field: str) -> str:
    """A size in Docker's spelling (``256m``, ``16g``, bytes without a unit), lower-cased."""
    text = str(value).strip().lower() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not SIZE_RE.fullmatch(text):
        raise ValueError(f"{value!r} is not a size: write a whole number with b, k, m or g, e.g. 256m or 16g")
    return text


def size_bytes(text: str) -> int:
    """``16g`` -> 17179869184."""
    unit = text[-1] if text[-1] in "bkmg" else "b"
    return int(text.rstrip("bkmg")) << {"b": 0, "k": 10, "m": 20, "g": 30}[unit]


def check_gpus(value: Any) -> str | int | list[str] | None:
    """``all``, a count (``2``), or device IDs / UUIDs (``[0, 1]`` or ``"0,1"``) -> one spelling:
    ``"all"``, an int, or a sorted list of strings."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("write all, a count such as 1, or device IDs such as [0, 1]")
    if isinstance(value, int):
        if not 1 <= value <= 64:
            raise ValueError(f"{value} GPUs: ask for 1 to 64, 'all', or device IDs such as [0, 1]")
        return value
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return "all"
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not value:
        raise ValueError("write all, a count such as 1, or device IDs such as [0, 1]")
    ids = [str(v) for v in value if not isinstance(v, bool)]
    bad = [i for i in ids if not GPU_ID_RE.fullmatch(i)]
    if bad or len(ids) != len(value):
        raise ValueError(f"{(bad or value)[0]!r} is not a GPU index or UUID (e.g. 0 or GPU-8f6a...)")
    return sorted(set(ids), key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i))


class Log(BaseModel):
    """Container log rotation (Docker's ``--log-driver``, ``--log-opt max-size/max-file``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    driver: str = DEFAULT_LOG_DRIVER
    max_size: str = DEFAULT_LOG_MAX_SIZE
    max_file: int = Field(default=DEFAULT_LOG_MAX_FILE, ge=1, le=100)

    @field_validator("driver")
    @classmethod
    def _driver(cls, value: str) -> str:
        if value not in LOG_DRIVERS:
            raise ValueError(f"{value!r} is not a log driver Cellar rotates: use one of {', '.join(LOG_DRIVERS)}")
        return value

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> str:
        return check_size(value, "max_size")


class Ulimit(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    soft: int = Field(ge=-1)
    hard: int = Field(ge=-1)


class Resources(BaseModel):
    """The host settings of a model server's container. None means "not asked for": Docker's
    default, or Cellar's (``Log()``, ``DEFAULT_RESTART``) where it picks one."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    gpus: str | int | list[str] | None = None
    shm_size: str | None = None
    memory: str | None = None
    ipc: str | None = None
    cpus: float | None = Field(default=None, gt=0, le=1024)
    ulimits: dict[str, int | Ulimit] | None = None
    log: Log | None = None
    restart: str | None = None

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        return check_gpus(value)

    @field_validator("shm_size", "memory", mode="before")
    @classmethod
    def _sizes(cls, value: Any, info) -> Any:
        return None if value is None else check_size(value, info.field_name)

    @field_validator("ipc")
    @classmethod
    def _ipc(cls, value: str | None) -> str | None:
        if value is not None and value not in IPC_MODES:
            raise ValueError(f"{value!r} is not an IPC mode: use host (vLLM, PyTorch) or private")
        return value

    @field_validator("ulimits")
    @classmethod
    def _ulimits(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for name, limit in (value or {}).items():
            if name not in ULIMITS:
                raise ValueError(f"{name!r} is not a ulimit: use one of {', '.join(ULIMITS)}")
            if isinstance(limit, int) and limit < -1:
                raise ValueError(f"{name}: {limit} is not a limit (-1 means unlimited)")
        return value

    @field_validator("restart")
    @classmethod
    def _restart(cls, value: str | None) -> str | None:
        if value is not None and not RESTART_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a restart policy: use unless-stopped (the default), always, "
                             "on-failure, on-failure:N or no")
        return value

    @model_serializer(mode="wrap")
    def _set_only(self, handler) -> dict[str, Any]:
        # Settings left out are not recorded: older versions' digests and diffs stay as they were.
        data = handler(self)
        return {k: v for k, v in data.items() if k not in OMITTED_WHEN_UNSET or v is not None}

    def resources(self) -> Resources:
        """Just the host settings (of a Runtime, which has more)."""
        return Resources.model_validate({k: getattr(self, k) for k in RESOURCE_FIELDS})

    def overlaid(self, overrides: Resources | None) -> Resources:
        """These settings with ``overrides`` (an environment's) winning where they are set."""
        mine = self.resources().model_dump()
        theirs = overrides.resources().model_dump() if overrides else {}
        return Resources.model_validate({**mine, **theirs})


class EnvRuntime(Resources):
    """An environment's overrides of its versions' host settings, e.g. other GPUs on that host,
    and whether it lets another environment use the same GPUs."""

    share_gpus: bool = False

    @model_serializer(mode="wrap")
    def _set_only(self, handler) -> dict[str, Any]:
        data = {k: v for k, v in handler(self).items() if k not in RESOURCE_FIELDS or v is not None}
        if not data.get("share_gpus"):
            data.pop("share_gpus", None)
        return data

    def is_empty(self) -> bool:
        return not self.model_dump()


def gpu_claim(gpus: str | int | list[str] | None) -> set[str] | None:
    """The GPUs a setting takes: None for none, ``{"*"}`` for all, else device IDs. A count N
    takes devices 0..N-1 (what the NVIDIA runtime gives a ``--gpus N`` container)."""
    if gpus is None:
        return None
    if gpus == "all":
        return {"*"}
    if isinstance(gpus, int):
        return {str(i) for i in range(gpus)}
    return {str(g) for g in gpus}


def gpu_overlap(a: set[str] | None, b: set[str] | None) -> set[str]:
    """The GPUs two claims share (``{"*"}`` stands for "all of them")."""
    if not a or not b:
        return set()
    if "*" in a or "*" in b:
        return {"*"} if "*" in a and "*" in b else (b if "*" in a else a)
    return a & b


def describe_gpus(gpus: str | int | list[str] | None) -> str:
    if gpus is None:
        return "none"
    if gpus == "all":
        return "all"
    if isinstance(gpus, int):
        return f"{gpus} (devices {', '.join(str(i) for i in range(gpus))})"
    return ", ".join(gpus)


def runtime_overrides(items: list[str]) -> dict[str, Any]:
    """``["gpus=0,1", "memory=16g", "ulimits={memlock: -1}"]`` (``--runtime KEY=VALUE``) -> a dict;
    a value is read as YAML (``[0, 1]``, ``{memlock: -1}``), an empty one clears the setting (None)."""
    from registry.errors import InvalidInput
    from registry.formats import safe_yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in RESOURCE_FIELDS:
            raise InvalidInput(f"--runtime {item!r}: write KEY=VALUE with KEY one of {', '.join(RESOURCE_FIELDS)}")
        try:
            out[key] = safe_yaml.loads(text) if text.strip() else None
        except Exception:
            raise InvalidInput(f"--runtime {key}: {text!r} is not a value (e.g. gpus=all, memory=16g, "
                               "ulimits={memlock: -1})") from None
    return out


def env_runtime(current: EnvRuntime | None, changes: dict[str, Any], *, share_gpus: bool | None = None,
                where: str = "--runtime") -> EnvRuntime | None:
    """``current`` with ``changes`` applied (None values clear), validated; None when nothing is left.
    InvalidInput names the field on a bad value."""
    from pydantic import ValidationError

    from registry.errors import InvalidInput

    data = current.model_dump(mode="json") if current else {}
    data.update(changes)
    if share_gpus is not None:
        data["share_gpus"] = share_gpus
    data = {k: v for k, v in data.items() if v is not None}
    try:
        merged = EnvRuntime.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"{where} {field}: {msg}") from None
    return None if merged.is_empty() else merged
