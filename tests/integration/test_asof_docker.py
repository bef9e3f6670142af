"""What ran when (issue 26) against the real Docker engine: real promotes, a real failed promote
with its automatic rollback and a real rollback, then ``status --at`` each moment between them,
read back from the recorded times (nothing is mocked)."""

from __future__ import annotations

import pytest

from registry.errors import HealthGateFailed
from tests.conftest import as_json, cli


def between(a, b) -> str:
    return (a + (b - a) / 2).isoformat()


def test_status_at_each_moment_between_real_changes(docker_env):
    reg, env = docker_env
    reg.promote("v1.0")
    reg.promote("v1.1")
    with pytest.raises(HealthGateFailed):
        reg.promote("v1.2")  # answers 503: rolled back to v1.1 automatically
    reg.rollback(reason="back to the first one")
    rows = reg.history(env)
    assert [(r.revision, r.version, str(r.status)) for r in rows] == [
        (1, "v1.0", "superseded"), (2, "v1.1", "superseded"), (3, "v1.2", "failed"),
        (4, "v1.1", "superseded"), (5, "v1.0", "deployed")]
    done = [r.finished_at for r in rows]
    before_all = rows[0].started_at
    moments = {before_all.isoformat(): None, between(done[0], done[1]): 1, between(done[1], rows[2].started_at): 2,
               between(done[3], done[4]): 4, done[4].isoformat(): 5}
    for moment, revision in moments.items():
        (answer,) = as_json("status", "--env", env, "--at", moment)
        got = answer["release"]["revision"] if answer["release"] else None
        assert got == revision, (moment, answer)
        assert answer["at"].endswith(("Z", "+00:00"))
    # while v1.2 was being tried, v1.1 still counted as serving, and the attempt is shown beside it
    trying = reg.status_at(between(rows[2].started_at, done[2]), env=env)
    assert trying.release.revision == 2 and trying.pending.revision == 3
    # what changed in production since v1.1 served: the prompt lines, by name
    text = cli("diff", f"{env}@{between(done[1], rows[2].started_at)}", env).stdout
    assert "prompt-v1.1" in text and "prompt-v1.0" in text
    assert reg.show(f"{env}@{between(done[3], done[4])}").version == "v1.1"
