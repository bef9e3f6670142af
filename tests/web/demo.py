"""A demo-like registry for the web tests, the screenshots and bench/ui.py: three versions of
support-bot (v1.1's prompt carries HTML/script payloads), two environments, a ledger with a
failed release rolled back automatically, and probe runs around each release.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from registry.api import Registry
from registry.engines.fake import FakeEngine
from registry.errors import HealthGateFailed
from registry.models.probes import ProbeResult, ProbeRun, ProbeStatus
from registry.store.sql import probes
from tests.helpers import ModelDir

IMAGE = "cellar-example-server:latest"
IMAGE_DIGEST = "sha256:" + "5e" * 32
XSS = '<script>alert("xss")</script> and "><img src=x onerror=alert(1)> end'
PROMPTS = {
    "v1.0": "You are Cellar Support Bot, a polite support assistant.\nAnswer in at most three sentences.\n",
    "v1.1": ("You are Cellar Support Bot, a friendly and concise assistant.\nAnswer in at most three sentences.\n"
             f"Never print {XSS}\nGreet the user by name when they give it.\n"),
    "v1.2": ("You are Cellar Support Bot, a friendly and concise assistant.\nAnswer in at most five sentences.\n"
             f"Never print {XSS}\nGreet the user by name when they give it.\n"),
}
MESSAGES = {"v1.0": "First release: polite support persona",
            "v1.1": "Friendlier persona; greet users by name",
            "v1.2": "Retrained output head (broken: MAX_TOKENS is not a number)"}


def fake_engine() -> FakeEngine:
    return FakeEngine(images={IMAGE: IMAGE_DIGEST})


def opener(home: Path, fake: FakeEngine):
    """What ``create_app`` takes: opens the registry at ``home`` on the fake engine."""
    return lambda: Registry.open(home, engine_factory=lambda host: fake, checks=fake.checks)


def build(home: Path, work: Path, fake: FakeEngine, *, clock=None) -> None:
    """Push, promote, fail and roll back like scripts/demo.sh, then record probe runs around
    each release. ``clock`` (the frozen_clock fixture) spaces the events an hour apart."""
    tick = clock.tick if clock else (lambda seconds: None)
    with Registry.open(home, engine_factory=lambda host: fake, checks=fake.checks) as reg:
        model = ModelDir.create(work / "support-bot", prompt=PROMPTS["v1.0"])
        for version, prompt in PROMPTS.items():
            model.set_prompt(prompt)
            env = {"MAX_TOKENS": "lots" if version == "v1.2" else "64"}
            model.write_manifest(version=version, image=IMAGE, message=MESSAGES[version],
                                 runtime={"port": 8080, "env": env, "secrets": ["SUPPORT_API_TOKEN"]})
            reg.push(model.manifest, actor="alice <alice@example.org>" if version != "v1.0" else "bob")
            tick(600)
        reg.add_env("staging", port=18080, default=True, actor="ops")
        reg.add_env("production", port=18081, protected=True, actor="ops")
        fake.unhealthy["v1.2"] = "HTTP 503 MAX_TOKENS must be a positive integer"
        steps = [("staging", "v1.0", "first release"), ("staging", "v1.1", 'friendlier <b>persona</b>'),
                 ("production", "v1.0", "CAB-1432 approved"), ("staging", "v1.2", "longer answers"),
                 ("production", "v1.1", "CAB-1440")]
        for env_name, version, reason in steps:
            tick(3600)
            try:
                reg.promote(version, env=env_name, reason=reason, actor="carol <carol@example.org>")
            except HealthGateFailed:
                pass
        record_runs(reg, clock)


def record_runs(reg: Registry, clock=None, *, per_release: int = 6) -> int:
    """Probe runs after each release of each environment: v1.1 slower than v1.0, for a visible step."""
    rnd = random.Random(7)
    count = 0
    for env in reg.environments():
        releases = reg.history(env.name)
        for rel, nxt in zip(releases, releases[1:] + [None]):
            if rel.status == "failed":
                continue
            end = nxt.started_at if nxt else rel.started_at + timedelta(hours=1)
            span = (end - rel.started_at) / (per_release + 1)
            base = {"v1.0": 120, "v1.1": 260, "v1.2": 400}.get(rel.version, 150)
            for i in range(per_release):
                at = rel.started_at + span * (i + 1)
                results = [ProbeResult(probe=name, status=ProbeStatus.PASS if rnd.random() > 0.1 else ProbeStatus.FAIL,
                                       latency_ms=base * rnd.uniform(0.7, 1.6), http_status=200)
                           for name in ("greets", "refunds", "tone")]
                run = ProbeRun(env=env.name, model=rel.model, version=rel.version, revision=rel.revision,
                               started_at=at, actor="cron", results=results)
                with reg.store.write() as conn:
                    probes.record_run(conn, run)
                count += 1
    return count


def synthetic_runs(count: int, *, start: datetime | None = None, version: str = "v1.0") -> list[ProbeRun]:
    """Probe runs an hour apart, latencies 100-200 ms, the third probe failing every fifth run."""
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    return [ProbeRun(env="staging", model="support-bot", version=version, revision=1,
                     started_at=start + timedelta(hours=i), results=[
                         ProbeResult(probe="a", status=ProbeStatus.PASS, latency_ms=100 + i % 50),
                         ProbeResult(probe="b", status=ProbeStatus.PASS, latency_ms=150 + i % 50),
                         ProbeResult(probe="c", status=ProbeStatus.FAIL if i % 5 == 0 else ProbeStatus.PASS,
                                     latency_ms=200.0)])
            for i in range(count)]


def build_examples(home: Path, work: Path, fake: FakeEngine, *, clock=None) -> None:
    """scripts/demo.sh's story on the fake engine: the three example versions pushed (weights
    made in ``work``), promoted to staging (v1.2 fails and is rolled back), v1.1 in production,
    a rollback by hand, and probe runs after each release."""
    import shutil
    import subprocess
    import sys

    examples = Path(__file__).resolve().parents[2] / "examples"
    shutil.copytree(examples / "support-bot", work / "support-bot")
    tick = clock.tick if clock else (lambda seconds: None)
    actors = {"v1.0": "bob <bob@example.org>", "v1.1": "alice <alice@example.org>", "v1.2": "alice <alice@example.org>"}
    with Registry.open(home, engine_factory=lambda host: fake, checks=fake.checks) as reg:
        for version, actor in actors.items():
            target = work / "support-bot" / version / "weights" / "model.safetensors"
            extra = ["--change", "head.weight"] if version == "v1.2" else []
            subprocess.run([sys.executable, str(examples / "make_weights.py"), str(target), *extra], check=True)
            reg.push(work / "support-bot" / version, actor=actor)
            tick(1800)
        reg.add_env("staging", port=18080, default=True, actor="ops <ops@example.org>")
        reg.add_env("production", port=18081, protected=True, actor="ops <ops@example.org>")
        fake.unhealthy["v1.2"] = "HTTP 503 {\"error\":\"MAX_TOKENS must be a positive integer\"}"
        for env_name, version, reason in [("staging", "v1.0", "first release"),
                                          ("production", "v1.0", "CAB-1432 approved"),
                                          ("staging", "v1.1", "friendlier persona"),
                                          ("staging", "v1.2", "longer answers"),
                                          ("production", "v1.1", "CAB-1440 approved")]:
            tick(4 * 3600)
            try:
                reg.promote(version, env=env_name, reason=reason, actor="carol <carol@example.org>")
            except HealthGateFailed:
                pass
        tick(4 * 3600)
        reg.rollback(env="staging", reason="compare with the first persona", actor="dave <dave@example.org>")
        tick(4 * 3600)
        record_runs(reg, clock)
