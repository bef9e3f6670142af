"""Eight real ``registry push`` processes at once, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import select

from registry.api import Registry
from registry.store.sql import schema as t
from registry.trust import audit
from tests import helpers

REGISTRY = str(Path(sys.executable).with_name("registry"))
N = 8


def _push_all(manifests: list[Path], *extra: str) -> list[subprocess.CompletedProcess]:
    """Every push waits, its blobs stored, until all have stored theirs (registry.faults), so
    they all race for the write lock: the overlap is forced, not hoped for."""
    meet = tempfile.mkdtemp(prefix="cellar-meet-")
    env = {**os.environ, "CELLAR_MEET_AT": f"push:blobs-stored:{len(manifests)}:{meet}"}
    procs = [subprocess.Popen([REGISTRY, "push", str(m), "--json", *extra], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m in manifests]
    done = [subprocess.CompletedProcess(p.args, p.wait(), *p.communicate()) for p in procs]
    met = len(os.listdir(meet))
    shutil.rmtree(meet)
    assert met == len(manifests), f"only {met} of {len(manifests)} pushes reached the meeting point"
    return done


def _assert_chain(home: Path) -> list[dict]:
    with Registry.open(home) as reg, reg.store.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(t.events).order_by(t.events.c.id))]
    assert [r["id"] for r in rows] == list(range(1, len(rows) + 1))
    prev = audit.GENESIS
    for row in rows:
        assert row["prev_hash"] == prev
        assert row["hash"] == audit.chain_hash(prev, audit.event_body(row))
        prev = row["hash"]
    return rows


def test_eight_pushes_of_different_versions(home, tmp_path):
    manifests = []
    for i in range(N):  # same weights (one blob, raced for), a prompt of its own
        md = helpers.ModelDir.create(tmp_path / f"m{i}", version=f"v1.{i}", prompt=f"prompt {i}\n")
        manifests.append(md.manifest)
    done = _push_all(manifests)
    for d in done:
        assert d.returncode == 0, d.stderr
        assert "locked" not in d.stderr.lower()
        assert json.loads(d.stdout)["created"] is True
    with Registry.open(home) as reg:
        versions = sorted(v.version for v in reg.versions("support-bot"))
        assert versions == sorted(f"v1.{i}" for i in range(N))
        for v in versions:
            info = reg.show(f"support-bot@{v}")
            for digest in [w.digest for w in info.weights] + [p.digest for p in info.prompts]:
                reg.blobs.check(digest)
    pushes = [r for r in _assert_chain(home) if r["action"] == "push"]
    assert sorted(r["object"] for r in pushes) == sorted(f"support-bot@{v}" for v in versions)


def test_eight_pushes_of_the_same_version(home, model_dir):
    done = _push_all([model_dir.manifest] * N)
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done]
    created = [json.loads(d.stdout)["created"] for d in done]
    assert created.count(True) == 1
    with Registry.open(home) as reg:
        assert reg.count_versions() == 1
    assert [r["action"] for r in _assert_chain(home)] == ["init", "push"]
