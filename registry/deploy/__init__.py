"""Deploys: one object per action (``Promote``, ``Rollback``, ``Recover``, ``AddEnv``,
``RemoveEnv``, ``Status``), each a ``DeployAction`` built from the registry's ``Configuration``:
``switching`` (lock, switch, settle), ``ownership`` (who may hold an environment's lock),
``snapshots`` (a version's files at ``/model``) and the probe gate. The ports they use are in
``registry.engines``."""
