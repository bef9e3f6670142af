"""A release's share of its Docker host: the version's runtime settings with the environment's
overrides on top, turned into the engine's ``HostSettings``; and the GPU rule: two environments on
one host never get the same GPU unless both allow sharing (two models in one GPU's memory crash
each other)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from registry.engines.engine import HostSettings
from registry.errors import Conflict
from registry.models import Environment, Runtime
from registry.models.resources import DEFAULT_RESTART, Log, Resources, gpu_claim, gpu_overlap, size_bytes

NANO = 1_000_000_000


def effective(runtime: Runtime, env: Environment) -> Resources:
    """What ``runtime``'s container gets in ``env``: the environment's overrides win where set."""
    return runtime.overlaid(env.runtime)


def host_settings(res: Resources) -> HostSettings:
    """The engine's terms for ``res``, with Cellar's defaults for log rotation and restart."""
    log = res.log or Log()
    ulimits = {name: (v, v) if isinstance(v, int) else (v.soft, v.hard) for name, v in (res.ulimits or {}).items()}
    return HostSettings(
        gpus=res.gpus, shm_size=res.shm_size, memory=res.memory, ipc=res.ipc,
        nano_cpus=round(res.cpus * NANO) if res.cpus else None, ulimits=ulimits,
        log_driver=log.driver, log_options={"max-size": log.max_size, "max-file": str(log.max_file)},
        restart=res.restart or DEFAULT_RESTART)


def check_sizes(res: Resources) -> None:
    """A ``/dev/shm`` larger than the memory limit is a mistake Docker accepts: its pages count
    against the limit, so the server is killed long before the shared memory fills."""
    if res.shm_size and res.memory and size_bytes(res.shm_size) > size_bytes(res.memory):
        raise Conflict(f"runtime.shm_size {res.shm_size} is larger than runtime.memory {res.memory}: "
                       "raise the memory limit or lower the shared memory")


@dataclass
class GpuHolder:
    """Another environment's deployed release that holds GPUs on the same Docker host."""

    env: Environment
    ref: str
    gpus: str | int | list[str]


def check_gpu_collision(env: Environment, wanted: Resources, ref: str, holders: list[GpuHolder]) -> None:
    """Conflict naming both environments when ``ref`` in ``env`` would take GPUs that one of
    ``holders`` (other environments' deployed releases on the same host) holds, unless both
    environments allow sharing (``env set NAME --share-gpus``)."""
    mine = gpu_claim(wanted.gpus)
    for other in holders:
        shared = gpu_overlap(mine, gpu_claim(other.gpus))
        if not shared or (_shares(env) and _shares(other.env)):
            continue
        which = "all GPUs" if shared == {"*"} else "GPU " + ", ".join(sorted(shared))
        raise Conflict(f"{ref} in {env.name} would use {which}, which {other.ref} in {other.env.name} holds on "
                       f"the same Docker host: give one of them other GPUs (`registry env set {env.name} "
                       f"--runtime gpus=...`), or allow sharing on both with `--share-gpus`")


def _shares(env: Environment) -> bool:
    return bool(env.runtime and env.runtime.share_gpus)


def same_host(a: Environment, b: Environment) -> bool:
    """Two environments with a Docker engine in common (the local one when neither names a host)."""
    return bool({h or local_engine() for h in a.fleet} & {h or local_engine() for h in b.fleet})


def local_engine() -> str:
    """The local engine's URL as a fleet names it: $DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
