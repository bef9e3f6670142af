"""The release ledger as a pure state machine (Helm's ``pkg/release`` idea, for Docker).

Each environment has an append-only list of releases, revisions 1, 2, 3 ... This module
decides, from the releases alone, what a promote or a rollback appends and how an outcome
settles the rows; it does no I/O. ``registry.deploy.switching`` runs the plans against a
store and an engine.

    pending-deploy / pending-rollback  --ok-->    deployed   (the previous deployed: superseded)
                                       --fail-->  failed     (+ an automatic rollback revision)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from registry.errors import InvalidInput, NotFound, OperationInProgress


class ReleaseStatus(StrEnum):
    PENDING_DEPLOY = "pending-deploy"
    PENDING_ROLLBACK = "pending-rollback"
    DEPLOYED = "deployed"
    SUPERSEDED = "superseded"
    FAILED = "failed"

    @property
    def pending(self) -> bool:
        return self in (ReleaseStatus.PENDING_DEPLOY, ReleaseStatus.PENDING_ROLLBACK)


class Operation(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    AUTO_ROLLBACK = "auto-rollback"


def short_host(host: str | None) -> str:
    """A Docker host as a person names it: gpu-2 for tcp://gpu-2:2376, "local" for a socket."""
    if not host or urlsplit(host).scheme in ("unix", "npipe"):
        return "local"
    return urlsplit(host).hostname or host


class HostState(BaseModel):
    """One Docker host's part of a release in a fleet (an environment of several hosts): the
    container it ran there and how it ended on that host."""

    model_config = ConfigDict(frozen=True)

    host: str
    container_id: str | None = None
    # pending (not switched yet), healthy, failed (this host failed the release), reverted
    # (switched, then put back when another host failed), dark (did not come back)
    state: str = "pending"

    @property
    def name(self) -> str:
        return short_host(self.host)


class Release(BaseModel):
    """One row of an environment's ledger; also what ``registry history --json`` prints.
    ``container_id`` is the container on the environment's first host; a fleet's row also lists
    every host's (``hosts``, None for an environment of one host)."""

    model_config = ConfigDict(frozen=True)

    env: str
    revision: int
    operation: Operation
    model: str
    version: str
    manifest_digest: str
    status: ReleaseStatus
    actor: str
    started_at: datetime
    image_digest: str | None = None
    reason: str | None = None
    container_id: str | None = None
    finished_at: datetime | None = None
    rollback_of: int | None = None
    healthy: bool = False
    error: str | None = None
    hosts: list[HostState] | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def container_on(self, host: str | None, first: str | None) -> str | None:
        """The container this release ran on ``host``, one of its environment's hosts. ``first``
        is the environment's first host, where a row of one host (``hosts`` None: written before
        the environment became a fleet) ran its container."""
        if self.hosts is None:
            return self.container_id if host == first else None
        return next((h.container_id for h in self.hosts if h.host == host), None)

    def containers(self) -> list[str]:
        """Every container of this release, on any host."""
        ids = [self.container_id] if self.hosts is None else [h.container_id for h in self.hosts]
        return [c for c in ids if c]


@dataclass(frozen=True)
class Target:
    """What to deploy: a version (and, for a rollback, the release it copies)."""

    model: str
    version: str
    manifest_digest: str
    image_digest: str | None = None
    copies: Release | None = None


@dataclass
class Plan:
    """The pending row an operation appends, and the deployed release it replaces."""

    pending: Release
    current: Release | None
    target: Target


@dataclass
class Settlement:
    """Rows to write when an operation ends: updates to existing revisions, new revisions."""

    updates: list[Release] = field(default_factory=list)
    appended: list[Release] = field(default_factory=list)

    @property
    def deployed(self) -> Release | None:
        rows = [*self.updates, *self.appended]
        return next((r for r in rows if r.status is ReleaseStatus.DEPLOYED), None)


def current(ledger: list[Release]) -> Release | None:
    """The deployed release, if any."""
    return next((r for r in reversed(ledger) if r.status is ReleaseStatus.DEPLOYED), None)


def went_dark(ledger: list[Release]) -> tuple[Release, Release] | None:
    """When nothing is deployed or pending but something served before: (the newest release,
    whose end left the environment dark; the last known good, the newest that served)."""
    if not ledger or current(ledger) or pending(ledger):
        return None
    good = next((r for r in reversed(ledger) if r.healthy and r.status is not ReleaseStatus.FAILED), None)
    return (max(ledger, key=lambda r: r.revision), good) if good else None


def pending(ledger: list[Release]) -> Release | None:
    return next((r for r in reversed(ledger) if r.status.pending), None)


def next_revision(ledger: list[Release]) -> int:
    return max((r.revision for r in ledger), default=0) + 1


def plan_promote(ledger: list[Release], target: Target, *, env: str, actor: str, reason: str | None,
                 at: datetime) -> Plan:
    """Append revision N+1 as pending-deploy; refuse while another revision is pending."""
    _refuse_pending(ledger)
    row = _new_row(ledger, target, env=env, actor=actor, reason=reason, at=at,
                   status=ReleaseStatus.PENDING_DEPLOY, operation=Operation.PROMOTE)
    return Plan(pending=row, current=current(ledger), target=target)


def rollback_target(ledger: list[Release], *, version: str | None = None, revision: int | None = None,
                    probes_failed: frozenset[str] = frozenset()) -> Release:
    """The release a rollback copies.

    By default the newest earlier release that was deployed and healthy and is not the
    current one, never a failed one (unlike Helm's blind N-1). "Earlier" is measured from the
    revision the current release copies when it is itself a rollback, so repeated rollbacks
    keep stepping back instead of flipping between the two newest. ``version`` or
    ``revision`` choose one, which must also have been healthy once and not be what runs now.
    ``probes_failed``: versions whose last probe run here got an answer wrong; the default
    target skips them (the last known good served, passed health and its probes), a named one
    may still be any of them.
    """
    now = current(ledger)
    candidates = [r for r in reversed(ledger) if r.healthy and r.status is not ReleaseStatus.FAILED
                  and (now is None or r.ref != now.ref)]
    if revision is not None:
        return _chosen(ledger, candidates, lambda r: r.revision == revision, f"revision {revision}")
    if version is not None:
        return _chosen(ledger, candidates, lambda r: r.version == version or r.ref == version, version)
    before = step_back_from(now)
    for r in candidates:
        if (before is None or r.revision < before) and r.version not in probes_failed:
            return r
    skipped = sorted({r.version for r in candidates if r.version in probes_failed})
    if skipped:
        raise NotFound(f"no earlier healthy release to roll back to ({', '.join(skipped)} failed their last "
                       "probe run here): name one with --to, see `registry history`")
    raise NotFound("no earlier healthy release to roll back to: see `registry history`")


def step_back_from(now: Release | None) -> int | None:
    """The revision a default rollback looks behind: for a rollback copy, the one it copies."""
    if now is None:
        return None
    if now.operation is not Operation.PROMOTE and now.rollback_of is not None:
        return now.rollback_of
    return now.revision


def _chosen(ledger: list[Release], candidates: list[Release], match, what: str) -> Release:
    found = next((r for r in candidates if match(r)), None)
    if found:
        return found
    if any(match(r) for r in ledger):
        raise InvalidInput(f"{what} never deployed healthily here, or is what runs now: "
                           "pick another from `registry history`")
    raise NotFound(f"no release {what} in this environment: see `registry history`")


def plan_rollback(ledger: list[Release], chosen: Release, *, env: str, actor: str, reason: str | None,
                  at: datetime) -> Plan:
    """Append a pending-rollback revision copying ``chosen``; history is never rewritten."""
    _refuse_pending(ledger)
    target = Target(model=chosen.model, version=chosen.version, manifest_digest=chosen.manifest_digest,
                    image_digest=chosen.image_digest, copies=chosen)
    row = _new_row(ledger, target, env=env, actor=actor, reason=reason, at=at,
                   status=ReleaseStatus.PENDING_ROLLBACK, operation=Operation.ROLLBACK)
    return Plan(pending=_with(row, rollback_of=chosen.revision), current=current(ledger), target=target)


def settle(plan: Plan, *, ok: bool, at: datetime, container_id: str | None = None,
           error: str | None = None, previous: str = "untouched", hosts: list[HostState] | None = None,
           previous_hosts: list[HostState] | None = None) -> Settlement:
    """How the rows end.

    ok: the pending row becomes deployed and healthy, the previous deployed superseded.
    not ok: the pending row becomes failed, and ``previous`` says what became of the release
    that was deployed before: ``untouched`` (its container never stopped: it stays deployed),
    ``restored`` (stopped, started again and answering: recorded as a new automatic
    rollback revision, the old row superseded) or ``lost`` (it did not come back: nothing
    is deployed any more). A lost release is superseded, not failed, with the error saying so:
    it served until the switch, and what kept it from coming back is usually its surroundings
    (the port taken, the engine down), so it stays the last known good a rollback goes to.

    In a fleet, ``hosts`` is how the operation ended on each host, and ``previous_hosts`` how
    the release deployed before serves again on each (restored, or dark where it did not come back).
    """
    out = Settlement()
    cid = container_id or plan.pending.container_id
    fleet = {"hosts": hosts} if hosts is not None else {}
    if ok:
        out.updates.append(_with(plan.pending, status=ReleaseStatus.DEPLOYED, healthy=True,
                                 container_id=cid, finished_at=at, **fleet))
        if plan.current:
            out.updates.append(_with(plan.current, status=ReleaseStatus.SUPERSEDED))
        return out
    out.updates.append(_with(plan.pending, status=ReleaseStatus.FAILED, finished_at=at, error=error,
                             container_id=cid, **fleet))
    if plan.current is None or previous == "untouched":
        return out
    if previous == "restored":
        out.updates.append(_with(plan.current, status=ReleaseStatus.SUPERSEDED))
        out.appended.append(_with(
            plan.current, revision=plan.pending.revision + 1, operation=Operation.AUTO_ROLLBACK,
            status=ReleaseStatus.DEPLOYED, healthy=True, rollback_of=plan.current.revision,
            actor=plan.pending.actor, reason=f"automatic rollback: revision {plan.pending.revision} failed",
            started_at=at, finished_at=at, error=None,
            **({"hosts": previous_hosts} if previous_hosts is not None else {})))
    else:
        out.updates.append(_with(plan.current, status=ReleaseStatus.SUPERSEDED, error=(
            f"did not answer again after revision {plan.pending.revision} failed; it served until then, "
            "so it stays a rollback candidate")))
    return out


def adopt(ledger: list[Release], source: Release, *, container_id: str, image_digest: str | None, actor: str,
          reason: str, at: datetime) -> Settlement:
    """Record what runs (``registry recover --adopt``): a new deployed revision copying
    ``source``, the release whose container was started by hand; the deployed one superseded.
    History is not rewritten: the switch made outside Cellar becomes a revision of its own."""
    out = Settlement()
    if (now := current(ledger)) is not None:
        out.updates.append(_with(now, status=ReleaseStatus.SUPERSEDED))
    out.appended.append(_with(
        source, revision=next_revision(ledger), operation=Operation.ROLLBACK, status=ReleaseStatus.DEPLOYED,
        healthy=True, rollback_of=source.revision, container_id=container_id,
        image_digest=image_digest or source.image_digest, actor=actor, reason=reason, started_at=at,
        finished_at=at, error=None))
    return out


def keep_containers(ledger: list[Release], *, keep: int, host: str | None = None,
                    first: str | None = None) -> set[str]:
    """Container ids retention must never remove (on ``host``, one of a fleet's hosts): the
    deployed one, and ``keep`` stopped ones: first what a default rollback needs, then the
    newest others of healthy releases. The rollback target counts within ``keep`` (``--keep 3``
    leaves three stopped containers, not four); with ``keep`` 0 a rollback recreates its
    container from the version. ``first``: the environment's first host (``Release.container_on``)."""
    now = current(ledger)
    mine = now.container_on(host, first) if now else None
    protected = {mine} if mine else set()
    stopped: list[str] = []
    try:
        target = rollback_target(ledger).container_on(host, first)
        if target and target not in protected:
            stopped.append(target)
    except (NotFound, InvalidInput):
        pass
    for r in reversed(ledger):
        cid = r.container_on(host, first)
        if r.healthy and cid and cid not in protected and cid not in stopped:
            stopped.append(cid)
    return protected | set(stopped[:keep])


def _refuse_pending(ledger: list[Release]) -> None:
    stuck = pending(ledger)
    if stuck:
        raise OperationInProgress(
            f"revision {stuck.revision} ({stuck.operation} {stuck.version}) is still {stuck.status}: "
            "run `registry recover` to complete or revert it")


def _new_row(ledger: list[Release], target: Target, *, env: str, actor: str, reason: str | None,
             at: datetime, status: ReleaseStatus, operation: Operation) -> Release:
    return Release(env=env, revision=next_revision(ledger), operation=operation, model=target.model,
                 version=target.version, manifest_digest=target.manifest_digest,
                 image_digest=target.image_digest, status=status, actor=actor, reason=reason,
                 started_at=at)


def _with(row: Release, **changes) -> Release:
    return row.model_copy(update=changes)
