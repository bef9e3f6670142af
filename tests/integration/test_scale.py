"""Listings at scale on PostgreSQL: 70,000 versions (past PostgreSQL's 65,535 bind parameters
per statement) through every listing command, bounded by default and complete on request."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import insert

from registry import clock
from registry.api import Registry
from registry.formats import canonical
from registry.store.sql import schema as t
from registry.store.sql import sealing
from tests.conftest import cli

N = 70_000


@pytest.fixture
def big(home, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("the 65,535-parameter limit is PostgreSQL's")
    record = {"image": {"ref": None, "digest": None}, "weights": [], "prompts": [], "runtime": {}, "probes": []}
    manifest = canonical.dumps(record)
    start = clock.now() - timedelta(days=1)
    with Registry.open(home) as reg, reg.store.write() as conn:
        model_id = conn.execute(insert(t.models).values(name="bot", created_at=start)).inserted_primary_key[0]
        rows = []
        for i in range(N):
            row = dict(version=f"v{i}", manifest_digest=canonical.digest(record), manifest=manifest,
                       message=f"release {i}", actor="bulk", created_at=start + timedelta(seconds=i),
                       provenance=None)
            rows.append({**row, "model_id": model_id, "mac": sealing.seal_version(conn, {**row, "model": "bot"})})
        conn.execute(insert(t.versions), rows)
    return home


def test_every_listing_works_past_65535_versions(big):
    with Registry.open(big) as reg:
        assert len(reg.versions()) == N
        log = reg.changelog()  # one query, no parameter per row
        assert len(log) == N and log[0].version == f"v{N - 1}"
        assert reg.show("bot@v12345").message == "release 12345"
    assert len(cli("list").stdout.splitlines()) == 1 + 100 + 1  # header, the newest 100, "... more"
    assert cli("log", "--limit", "3").stdout.count("bot@v") == 3
    assert "older entries" in cli("log").stdout
    assert len(json.loads(cli("log", "--all", "--json").stdout)) == N
    assert len(json.loads(cli("list", "--limit", "0", "--json").stdout)) == N
    assert cli("history").stdout.startswith("No releases yet")
