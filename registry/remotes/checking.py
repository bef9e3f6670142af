"""``registry remote verify NAME``: what the remote holds of this home's versions.

For each recorded version: ``same`` (the tag names exactly the artifact a push would write, and
every blob it references is there), ``missing-blobs`` (the tag is there but some layer is not:
deleted by hand, or a registry gc after a broken push), ``different`` (the tag names another
artifact) or ``absent``. Tags in the model's repository that no version here records are listed
as ``unknown`` (pushed from another home, or a version deleted here).
"""

from __future__ import annotations

import contextlib

from registry.configuration import Configuration
from registry.models.remotes import RemoteVerifyReport, RemoteVersionState
from registry.remotes.managing import client_for, tag_of
from registry.remotes.publish import artifact_of
from registry.remotes.settings import Remote
from registry.store.sql import versions


def check_remote(cfg: Configuration, remote: Remote) -> RemoteVerifyReport:
    report = RemoteVerifyReport(remote=remote.name)
    with cfg.store.read() as conn:
        names = versions.model_names(conn)
    with contextlib.closing(client_for(cfg, remote)) as client:
        for model in names:
            repo = remote.repository(model)
            recorded = [v.version for v in versions.summaries(cfg.store, model, include_deprecated=True)]
            for version in sorted(recorded):
                artifact = artifact_of(cfg, model, version)
                there = client.manifest_digest(repo, tag_of(version))
                state = "absent" if there is None else "same" if there == artifact.digest else "different"
                missing = []
                if state == "same":
                    wanted = [layer.digest for layer in artifact.layers] + list(artifact.small_blobs())
                    missing = [d for d in dict.fromkeys(wanted) if not client.has_blob(repo, d)]
                    state = "missing-blobs" if missing else state
                report.versions.append(RemoteVersionState(model=model, version=version, state=state, missing=missing))
            tags = {tag_of(v) for v in recorded}
            report.versions += [RemoteVersionState(model=model, version=t, state="unknown")
                                for t in sorted(set(client.tags(repo)) - tags)]
    return report
