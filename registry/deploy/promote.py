"""Promote: put a version into an environment (stop-first switch, health gate, auto-rollback)."""

from __future__ import annotations

from registry import clock, ledger
from registry.deploy.switching import Switching
from registry.errors import InvalidInput, StepFailed
from registry.faults import crashpoint
from registry.ledger import Release
from registry.models import DeployResult
from registry.probes import probing, suites
from registry.signing.actions import require_policy
from registry.store.sql import upkeep


class Promote(Switching):
    """``Promote(cfg, actor=...).run(model, version, env_name=..., reason=...)``."""

    operation = "promote"

    def run(self, model: str, version: str, *, env_name: str | None, reason: str | None = None,
            allow_retag: bool = False, gate: bool | None = None) -> DeployResult:
        """``gate``: run the version's probes after warm-up (None: the environment's setting)."""
        def not_deprecated(conn) -> None:  # deprecated: diffable, not deployable
            upkeep.refuse_deprecated(conn, model, version)

        with self.cfg.store.read() as conn:
            not_deprecated(conn)  # early, before any work; again below, where it cannot race
        env = self.open_env(env_name, reason=reason)
        self.gate = env.gate if gate is None else gate
        if self.gate and not suites.suite_of(self.cfg, model, version, env_name=env.name).probes:
            raise InvalidInput(f"{model}@{version} declares no probes, so the probe gate would check nothing: "
                               + ("add a `probes:` section to its manifest, or promote without --gate" if gate else
                                  f"{env.name} gates every promote: add a `probes:` section to its manifest, or "
                                  "pass --no-gate to deploy it unchecked"))
        with self.deciding(target=version):
            with self.nothing_changed(f"{model}@{version}"):
                self.signed_by = require_policy(self.cfg, model, version, self.env.name)  # signatures (issue 25)
                ready = self.ready_everywhere(model, version, allow_retag=allow_retag)
            first = ready[self.env.fleet[0]]
            plan = self.open_revision(lambda rows: ledger.plan_promote(
                rows, first.target, env=self.env.name, actor=self.actor, reason=reason, at=clock.now()),
                still_allowed=not_deprecated)
        crashpoint("promote:pending")
        return self.switch(plan, runtime=first.runtime,
                           make_container=lambda plan, host: (self.create_container(plan.pending, ready[host]), True))

    def probe_gate(self, release: Release) -> None:
        """``promote --gate``: the suite of ``release`` (still pending) against the environment's
        port; the run is stored whatever its outcome, then StepFailed unless every probe passed,
        which takes the promote's failure path (old container back, exit 4)."""
        suite = suites.suite_of(self.cfg, release.model, release.version, env_name=self.env.name)
        results = probing.run_suite(self.base_url, suite.probes, render=suite.render)
        run = suites.record(self.cfg, probing.new_run(results, env=self.env.name, model=release.model,
                                                      version=release.version, revision=release.revision,
                                                      actor=self.actor))
        if not run.ok:
            raise StepFailed(f"probe gate: {suites.failures(run)}")
