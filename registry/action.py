"""The one shape of an operation (Helm's ``pkg/action``): an object built from the registry's
``Configuration`` and the actor, whose ``run(...)`` does the work once and returns a result model.

    Action                              registry.action (this module)
    ├── Push                            registry.versions.pushing
    ├── Verify, Gc, Backup, Restore,    registry.upkeep
    │   Deprecate, Delete, Export, Import
    ├── ProbeEnv, Health, Watch,        registry.health.monitoring
    │   MetricsScrape
    └── DeployAction                    registry.deploy.action: environment, engine, steps, secrets
        ├── AddEnv, RemoveEnv, Status   registry.deploy.env_actions
        ├── Recover                     registry.deploy.recover
        └── Switching                   registry.deploy.switching
            ├── Promote                 registry.deploy.promote
            └── Rollback                registry.deploy.rollback

Reads that only look up recorded rows (``show``, ``diff``, ``history``, the audit log) are plain
functions of ``cfg`` in their feature's package; ``registry.api.Registry`` calls one or the other
and touches neither SQL nor Docker itself.
"""

from __future__ import annotations

from registry.configuration import Configuration


class Action:
    """One run of an operation: ``cfg`` (the ports) and ``actor`` (who is acting, for the audit log)."""

    def __init__(self, cfg: Configuration, *, actor: str = ""):
        self.cfg = cfg
        self.actor = actor
