"""A version's probe suite as recorded, sent once and stored: what the promote gate, ``registry
probe`` and ``registry watch`` share."""

from __future__ import annotations

from typing import NamedTuple

from registry.configuration import Configuration
from registry.models import Probe
from registry.models.probes import ProbeRun, ProbeStatus
from registry.probes import probing, templating
from registry.store.sql import probes, versions


class Suite(NamedTuple):
    """A version's probes, the renderer for templated bodies (None when no body has a template),
    and whether the version refuses an automatic rollback."""

    probes: list[Probe]
    render: probing.Render | None
    no_auto_rollback: bool


def suite_of(cfg: Configuration, model: str, version: str, *, env_name: str = "") -> Suite:
    """The suite ``model@version`` recorded; prompt texts are read only for templated bodies."""
    with cfg.store.read() as conn:
        record = versions.record_of(conn, model, version).record
    suite = [Probe.model_validate(p) for p in record.get("probes", [])]
    render = None
    if any(templating.has_template(p.json_body) for p in suite):
        from registry.versions import inspection

        texts = {p["name"]: inspection.prompt_text(cfg.blobs, p["digest"]) for p in record["prompts"]}
        render = templating.renderer(prompts=texts, model=model, version=version, env=env_name)
    return Suite(suite, render, bool(record.get("no_auto_rollback")))


def record(cfg: Configuration, run: ProbeRun) -> ProbeRun:
    """Store ``run`` (its id is set) and return it."""
    with cfg.store.write() as conn:
        probes.record_run(conn, run)
    return run


def failures(run: ProbeRun, limit: int = 3) -> str:
    """``2 of 3 probes did not pass: answers (fail: too slow ...), ...`` on one line."""
    bad = [r for r in run.results if r.status != ProbeStatus.PASS]
    named = ", ".join(f"{r.where} ({r.status.value}: {r.detail})" for r in bad[:limit])
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} of {len(run.results)} probes did not pass: {named}{more}"


