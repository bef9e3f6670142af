"""Rollback: append a revision that copies an earlier healthy release, and switch to it.

The kept (stopped) container of that release is started again when it still exists and its
labels say it is that release; otherwise it is recreated from the version.
"""

from __future__ import annotations

from registry import clock, ledger
from registry.deploy.switching import Switching
from registry.engines.engine import LABEL, ContainerInfo
from registry.errors import InvalidInput, NotFound
from registry.ledger import Release
from registry.models import DeployResult
from registry.signing.actions import require_policy
from registry.store.sql import probes, releases


class Rollback(Switching):
    """``Rollback(cfg, actor=...).run(env_name=..., to=..., revision=..., reason=...)``."""

    operation = "rollback"

    def run(self, *, env_name: str | None, to: str | None = None, revision: int | None = None,
            reason: str | None = None) -> DeployResult:
        env = self.open_env(env_name, reason=reason)
        wanted = to or (f"revision {revision}" if revision is not None else "previous release")
        with self.deciding(target=wanted):  # the target is chosen from the ledger as it is under the lock
            with self.cfg.store.read() as conn:
                rows, complete = releases.working_set(conn, env.name)
                failed = probes.failed_versions(conn, env.name)  # the default skips them: not "known good"
                try:
                    chosen = ledger.rollback_target(rows, version=to, revision=revision, probes_failed=failed)
                except (NotFound, InvalidInput):
                    if complete:  # a named version or revision further back: read the rest
                        raise
                    chosen = ledger.rollback_target(releases.ledger(conn, env.name), version=to, revision=revision,
                                                    probes_failed=failed)
            runtime = self.runtime_of(chosen)
            self.remember_secrets(runtime)
            kept: dict[str | None, ContainerInfo] = {}
            for host in env.fleet:
                self.on_host(host)
                if (info := self.kept_container(chosen, host)) is not None:
                    kept[host] = info
                    # make_ready() notes the secrets only when it runs; a reused container needs them scrubbed too.
                    self.remember_secrets(runtime, container_env=info.env)
            ready = {}
            with self.nothing_changed(chosen.ref):
                self.signed_by = require_policy(self.cfg, chosen.model, chosen.version, env.name)  # issue 25
                for host in env.fleet:
                    self.on_host(host)
                    if host not in kept:
                        ready[host] = self.make_ready(chosen.model, chosen.version, image_digest=chosen.image_digest)
                    else:  # bytes served are bytes recorded: the kept container mounts this snapshot
                        self.claim_host(runtime, chosen.ref)
                        self.prove_files(chosen)
                self.on_host(env.fleet[0])
            plan = self.open_revision(lambda rows: ledger.plan_rollback(
                rows, chosen, env=env.name, actor=self.actor, reason=reason, at=clock.now()))

        def make_container(plan, host: str | None) -> tuple[str, bool]:
            if host in kept:
                return kept[host].id, False
            return self.create_container(plan.pending, ready[host]), True

        return self.switch(plan, runtime=runtime, make_container=make_container,
                           container_step=lambda host: "reuse kept container" if host in kept else "create container")

    def kept_container(self, release: Release, host: str | None) -> ContainerInfo | None:
        """The release's container on ``host`` (the engine worked on) if it still exists and its
        labels prove it is that release."""
        cid = release.container_on(host, self.env.fleet[0])
        if not cid:
            return None
        info = self.engine.inspect(cid)
        if info is None:
            return None
        want = {"env": self.env.name, "model": release.model, "version": release.version,
                "manifest-digest": release.manifest_digest}
        if any(info.labels.get(f"{LABEL}.{k}") != v for k, v in want.items()):
            return None
        # The id comes from this registry's own ledger, so a container created before the registry
        # label existed (none set) is still ours; one labelled for another registry is not.
        registry = self.cfg.registry_id
        if info.labels.get(f"{LABEL}.registry", registry) != registry:
            return None
        return info

