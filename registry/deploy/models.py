"""Results of environment, promote, rollback, status and recover operations.

``Release`` (a ledger row) lives in ``registry.ledger``; these wrap it for the API and ``--json``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from registry.ledger import Release


class Environment(BaseModel):
    name: str
    port: int
    bind_addr: str = "127.0.0.1"
    docker_host: str | None = None
    health_timeout_s: float | None = None
    keep: int = 3
    protected: bool = False
    is_default: bool = False
    created_at: datetime


class Step(BaseModel):
    """One step of a promote or rollback and how long it took."""

    name: str
    seconds: float


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

    @property
    def problem(self) -> str | None:
        """Why this environment needs attention (None when it is fine): something is deployed
        but its container is not running and answering. A property, so ``--json`` is unchanged."""
        if self.deployed is None:
            return None
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
