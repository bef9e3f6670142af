"""What each page of the web view shows, as pydantic models built from the public ``Registry`` API.

One function per page takes an open ``Registry`` and the page's query parameters and returns its
model; the HTML templates render that model and ``?format=json`` (or ``/api/...``) serialises it,
so both views show the same data. Nothing here writes: the web view is read-only.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, Field

from registry import (
    AsOf,
    AuditFilter,
    BlameLine,
    Checkpoint,
    Diff,
    Environment,
    EnvStatus,
    Event,
    HealthReport,
    InvalidInput,
    LogEntry,
    NotFound,
    ProbeRun,
    Registry,
    Release,
    SignatureInfo,
    Verification,
    VersionInfo,
    VersionSummary,
)
from registry.web.chart import latency_chart

VERSIONS_PER_PAGE = 50
MODELS_SHOWN = 100
EVENTS_PER_PAGE = 100
BLAME_SHOWN_LINES = 5_000  # a longer prompt's page is a summary, with a link to its text
BLAME_SHOWN_BYTES = 512 << 10
PROBE_RUNS_SHOWN = 500  # the newest runs charted; older ones with ?since=
log = logging.getLogger(__name__)
_REF = re.compile(r"(?:[a-z0-9][a-z0-9._-]{0,62}@)?[a-z0-9][a-z0-9._+-]{0,62}")


class ModelCount(BaseModel):
    name: str
    versions: int


class VersionsPage(BaseModel):
    """Models, and one page of versions (newest first), of one model or all."""

    model: str | None = None
    models: list[ModelCount]  # the first MODELS_SHOWN by name (and the one chosen)
    models_total: int = 0
    versions: list[VersionSummary]
    total: int
    page: int
    pages: int


class VersionPage(BaseModel):
    """One version: its manifest as recorded, tensors, prompts with provenance, and the model's changelog."""

    info: VersionInfo
    changelog: list[LogEntry]
    previous: str | None = None  # model@version pushed just before, for "diff with previous"
    signatures: list[SignatureInfo] = Field(default_factory=list)  # each verified now (registry.signing)


class BlameSummary(BaseModel):
    """How many of a prompt's lines one version introduced (for a prompt too long to show)."""

    version: str
    actor: str
    time: datetime
    lines: int


class PromptPage(BaseModel):
    """A prompt's text at a version, each line with the version that introduced it (``registry blame``)."""

    model: str
    version: str
    prompt: str
    lines: list[BlameLine]  # empty when too_large: ``summary`` instead, the text at ``raw``
    total_lines: int = 0
    too_large: bool = False
    summary: list[BlameSummary] = []
    raw: str = ""  # where the full text is, as text/plain


class DiffPage(BaseModel):
    a: str
    b: str
    a_resolved: str | None = None
    b_resolved: str | None = None
    diff: Diff | None = None


class EnvironmentsPage(BaseModel):
    """What runs where: each environment, its deployed release and container state."""

    environments: list[Environment]
    status: list[EnvStatus]


class EnvironmentPage(BaseModel):
    environment: Environment
    status: EnvStatus | None = None
    releases: list[Release]  # the ledger, oldest revision first
    since: datetime | None = None
    probe_runs: list[ProbeRun] = []  # the newest runs in the window, oldest first
    health: HealthReport | None = None
    chart_svg: str | None = Field(default=None, exclude=True)  # HTML only: JSON clients have the runs
    as_of: AsOf | None = None  # ``?at=TIME``: what served then; the ledger up to then


class CheckedAudit(BaseModel):
    """The audit chain's verification and when it was computed (it is cached, see ``AuditVerifier``)."""

    verification: Verification
    verified_at: datetime
    seconds: float


class AuditPage(BaseModel):
    filters: dict[str, str | None]
    events: list[Event]
    page: int  # its number, counted from the newest page while the reader pages through
    more: bool  # older events follow (``?before=`` the last one shown)
    newer: bool = False  # newer events precede (``?after=`` the first one shown)
    verified: CheckedAudit | None = None  # None while the first verification runs
    events_now: int = 0  # the log's length now: more than ``verified`` checked when events came since


# --- versions ------------------------------------------------------------------------------


def versions_page(reg: Registry, *, model: str | None = None, page: int = 1) -> VersionsPage:
    """Page ``page`` (from 1) of the versions of ``model`` (or of every model). The model list
    shows the first ``MODELS_SHOWN`` (and the one chosen): thousands of models stay one page."""
    model = model or None
    everything = reg.model_counts()  # one query, however many models
    counts = {name: n for name, n in everything}
    if model and model not in counts:
        raise NotFound(f"no model named {model!r}")
    total = counts[model] if model else sum(counts.values())
    pages = max(1, -(-total // VERSIONS_PER_PAGE))
    page = min(max(page, 1), pages)
    shown = reg.versions(model, limit=VERSIONS_PER_PAGE, offset=(page - 1) * VERSIONS_PER_PAGE)
    listed = [ModelCount(name=n, versions=c) for n, c in everything[:MODELS_SHOWN]]
    if model and all(m.name != model for m in listed):
        listed.append(ModelCount(name=model, versions=counts[model]))
    return VersionsPage(model=model, models=listed, models_total=len(everything), versions=shown, total=total,
                        page=page, pages=pages)


def version_page(reg: Registry, model: str, version: str) -> VersionPage:
    info = reg.show(_ref(f"{model}@{version}"))
    changelog = reg.changelog(model, limit=12)
    older = [e for e in changelog if e.created_at < info.created_at]
    return VersionPage(info=info, changelog=changelog, signatures=reg.signatures(f"{info.model}@{info.version}"),
                       previous=f"{model}@{older[0].version}" if older else None)


def prompt_page(reg: Registry, model: str, version: str, prompt: str) -> PromptPage:
    ref = _ref(f"{model}@{version}")
    lines = reg.blame(prompt, at=ref, model=model)
    page = PromptPage(model=model, version=version, prompt=prompt, lines=lines, total_lines=len(lines),
                      raw=f"/v/{quote(model, safe='')}/{quote(version, safe='')}/prompts/{quote(prompt, safe='')}/raw")
    if len(lines) > BLAME_SHOWN_LINES or sum(len(x.text) for x in lines) > BLAME_SHOWN_BYTES:
        page.too_large, page.lines, page.summary = True, [], blame_summary(lines)
    return page


def blame_summary(lines: list[BlameLine]) -> list[BlameSummary]:
    """Lines per introducing version, oldest first."""
    counts = Counter(x.version for x in lines)
    first = {x.version: x for x in reversed(lines)}
    return sorted((BlameSummary(version=v, actor=first[v].actor, time=first[v].time, lines=n)
                   for v, n in counts.items()), key=lambda s: s.time)


def prompt_raw(reg: Registry, model: str, version: str, prompt: str) -> str:
    """The prompt's full text (the page for a prompt too long to show line by line links here)."""
    return reg.prompt_text(prompt, at=_ref(f"{model}@{version}"), model=model)


# --- diff ----------------------------------------------------------------------------------


def diff_page(reg: Registry, a: str | None, b: str | None) -> DiffPage:
    """A diff of two versions, or of an environment (what it runs) and a version."""
    page = DiffPage(a=a or "", b=b or "")
    if not a or not b:
        return page
    page.a_resolved, page.b_resolved = resolve_side(reg, a), resolve_side(reg, b)
    page.diff = reg.diff(page.a_resolved, page.b_resolved)
    return page


def resolve_side(reg: Registry, text: str) -> str:
    """``model@version``, a bare version, or an environment's name -> ``model@version``.

    Always an explicit, validated ``model@version``: ``Registry.diff`` also reads manifest files
    from the server's disk, which a web request must never reach."""
    text = text.strip()
    if not _REF.fullmatch(text):
        raise InvalidInput(f"{text!r} is not a version (model@v1.3 or v1.3) or an environment name")
    if "@" not in text:
        deployed = _deployed_in(reg, text)
        if deployed:
            return _ref(deployed)
    model, version = reg.resolve_ref(text)
    return _ref(f"{model}@{version}")


def _deployed_in(reg: Registry, env_name: str) -> str | None:
    """What ``env_name`` runs; None when no environment has that name."""
    if env_name not in {e.name for e in reg.environments()}:
        return None
    current = [r for r in reg.history(env_name) if r.status == "deployed"]
    if not current:
        raise NotFound(f"nothing is deployed in {env_name}")
    return current[-1].ref


def _ref(ref: str) -> str:
    if Path(ref).exists():  # belt and braces: a file of that name would be read as a manifest
        raise InvalidInput(f"{ref!r} names a file on the server, not a version")
    return ref


# --- environments --------------------------------------------------------------------------


def environments_page(reg: Registry) -> EnvironmentsPage:
    return EnvironmentsPage(environments=reg.environments(), status=reg.status())


def environment_page(reg: Registry, name: str, *, since: str | None = None, at: str | None = None) -> EnvironmentPage:
    """One environment: status, ledger, probe runs and the health chart with release markers;
    ``at``: as of that time (what served then, from the sealed ledger, and the ledger up to then)."""
    env = reg.environment(name)
    if at:
        as_of = reg.status_at(at, env=env.name)
        releases = [r for r in reg.history(env.name) if r.started_at <= as_of.at]
        return EnvironmentPage(environment=env, releases=releases, as_of=as_of)
    status = next((s for s in reg.status() if s.env == env.name), None)
    releases = reg.history(env.name)
    when = _since(since)
    page = EnvironmentPage(environment=env, status=status, releases=releases, since=when)
    page.probe_runs = reg.probe_runs(env.name, since=when, limit=PROBE_RUNS_SHOWN)
    if not page.probe_runs:
        return page
    if page.probe_runs and len(page.probe_runs) == PROBE_RUNS_SHOWN:
        when = page.since = page.probe_runs[0].started_at  # the chart, markers and figures cover the same window
    shown = [r for r in releases if when is None or r.started_at >= when]
    page.chart_svg = latency_chart(page.probe_runs, shown, title=f"{env.name}: probe latency and pass rate")
    page.health = reg.health(env.name, since=when, runs=page.probe_runs)
    return page


def _since(text: str | None) -> datetime | None:
    """An age (``7d``) or ISO date, as ``registry audit --since`` reads it; None for all time."""
    if not text:
        return None
    try:
        return AuditFilter(since=text).since
    except ValueError:
        raise InvalidInput(f"since {text!r}: use an ISO date or an age like 30m, 12h, 7d, 2w") from None


# --- audit ---------------------------------------------------------------------------------


AUDIT_FILTERS = ("action", "actor", "env", "model", "prompt", "since")


def audit_page(reg: Registry, verifier: AuditVerifier, *, page: int = 1, before: int | None = None,
               after: int | None = None, **filters: str | None) -> AuditPage:
    """One page of audit events (newest first) narrowed like ``registry audit``, and the chain's
    check. Pages are cursors: ``before`` the oldest event of the page shown (older), or ``after``
    its newest (newer); ``page`` only numbers them for the reader."""
    given = {k: (filters.get(k) or None) for k in AUDIT_FILTERS}
    n, now = EVENTS_PER_PAGE, reg.audit_checkpoint()
    if after is not None:
        events = reg.audit(**given, after=after, limit=n + 1)  # the n + 1 just newer, newest first
        newer, older, shown = len(events) > n, True, events[-n:]
    else:
        events = reg.audit(**given, before=before, limit=n + 1)
        newer, older, shown = before is not None, len(events) > n, events[:n]
    page = max(page, 2) if newer else 1
    return AuditPage(filters=given, events=shown, page=page, more=older and bool(shown),
                     newer=newer and bool(shown), verified=verifier.result(reg, checkpoint=now), events_now=now.count)


class AuditVerifier:
    """Verifying the audit chain re-reads every event (seconds on 100,000), so no page waits for
    it: a thread of its own verifies through a registry of its own (``opener()``), and pages show
    the newest finished result with when it was computed.

    A result is renewed in the background when the log's head or count changed or it is older
    than ``max_age_s``: a row altered in the middle leaves head and count as they were, which is
    why results expire. The app starts the first verification as it starts (``prime``); a page
    waits up to ``wait_s`` for the first result (a small log is verified by then). ``verify now``
    (``verify_now``) starts a verification in that thread, at most one per ``every_s``, and waits
    up to ``now_wait_s`` for it; the page shows the newest result either way."""

    def __init__(self, opener: Callable[[], Registry], *, max_age_s: float = 300.0, wait_s: float = 0.25,
                 every_s: float = 30.0, now_wait_s: float = 5.0):
        self.opener, self.max_age_s, self.wait_s = opener, max_age_s, wait_s
        self.every_s, self.now_wait_s = every_s, now_wait_s
        self._asked: float | None = None
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._cached: tuple[str, float, CheckedAudit] | None = None
        self._running = False

    def result(self, reg: Registry, *, checkpoint: Checkpoint | None = None) -> CheckedAudit | None:
        """The newest result (None while the first one is computed); renewal started if due.
        ``checkpoint``: the log's head and count now, when the caller has read them."""
        head = str(checkpoint or reg.audit_checkpoint())
        with self._lock:
            cached = self._cached
            if not (cached and cached[0] == head and time.monotonic() - cached[1] < self.max_age_s):
                self._start()
            if self._cached is None:
                self._finished.wait_for(lambda: self._cached is not None or not self._running, timeout=self.wait_s)
            return self._cached[2] if self._cached else None

    def verify_now(self) -> None:
        """A fresh verification (throttled: one per ``every_s``), waited for up to ``now_wait_s``."""
        with self._lock:
            now = time.monotonic()
            if self._asked is not None and now - self._asked < self.every_s:
                return
            self._asked = now
            self._start()
            self._finished.wait_for(lambda: not self._running, timeout=self.now_wait_s)

    def prime(self) -> None:
        """Start the first verification now (the app calls this as it starts)."""
        with self._lock:
            self._start()

    def _start(self) -> None:  # with the lock held
        if not self._running:
            self._running = True
            threading.Thread(target=self._run, name="cellar-audit-verify", daemon=True).start()

    def _run(self) -> None:
        result = None
        try:
            started = time.monotonic()
            with self.opener() as reg:
                head = str(reg.audit_checkpoint())  # read first: the result covers at least this
                result = (head, started, _verified(reg))
        except Exception:  # a database gone for a moment: the page says "not verified yet"
            log.exception("audit verification failed")
        finally:
            with self._lock:
                if result is not None:
                    self._cached = result
                self._running = False
                self._finished.notify_all()


def _verified(reg: Registry) -> CheckedAudit:
    started = time.monotonic()
    return CheckedAudit(verification=reg.verify_audit(), verified_at=datetime.now(UTC),
                        seconds=round(time.monotonic() - started, 3))
