"""Promote, rollback and retention decide on ``releases.working_set`` instead of the whole ledger:
on random ledgers far longer than its window, every decision equals the whole ledger's, on SQLite
and PostgreSQL."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from registry import clock, ledger
from registry.api import Registry
from registry.errors import InvalidInput, NotFound
from registry.ledger import Operation, Release, ReleaseStatus
from registry.store.sql import releases

WINDOW = 4


def _random_ledger(rnd: random.Random, n: int) -> list[Release]:
    """``n`` settled releases as promote and rollback leave them: one deployed (unless the last
    ones all failed), rollbacks copying earlier revisions, containers reused by rollbacks."""
    rows: list[Release] = []
    start = clock.now() - timedelta(days=1)
    for i in range(1, n + 1):
        healthy = rnd.random() > 0.3
        rollback = rows and rnd.random() < 0.3
        copied = rnd.choice(rows) if rollback else None
        version = copied.version if copied else f"v{rnd.randint(1, 6)}"
        container = copied.container_id if copied and rnd.random() < 0.5 else f"c{i}"
        if healthy:  # the new one is deployed; the one before is superseded
            for j, r in enumerate(rows):
                if r.status is ReleaseStatus.DEPLOYED:
                    rows[j] = r.model_copy(update={"status": ReleaseStatus.SUPERSEDED})
        rows.append(Release(env="production", revision=i, operation=Operation.ROLLBACK if copied else Operation.PROMOTE,
                            model="bot", version=version, manifest_digest="sha256:" + "ab" * 32, actor="t",
                            status=ReleaseStatus.DEPLOYED if healthy else ReleaseStatus.FAILED,
                            started_at=start + timedelta(minutes=i), healthy=healthy, container_id=container,
                            rollback_of=copied.revision if copied else None))
    return rows


def _decision(fn):
    try:
        return fn()
    except (NotFound, InvalidInput) as exc:
        return type(exc).__name__


@pytest.mark.parametrize("seed", range(12))
def test_decisions_on_the_working_set_equal_the_whole_ledgers(reg: Registry, seed, monkeypatch):
    monkeypatch.setattr(releases, "WINDOW", WINDOW)
    rnd = random.Random(seed)
    full = _random_ledger(rnd, rnd.randint(WINDOW * 3, WINDOW * 6))
    with reg.store.write() as conn:
        for r in full:
            releases.insert_(conn, r)
    alive = rnd.sample(sorted({r.container_id for r in full}), 3)  # what the engine still has
    with reg.store.read() as conn:
        assert releases.ledger(conn, "production") == full
        rows, complete = releases.working_set(conn, "production", containers=alive)
    assert not complete and len(rows) < len(full)
    assert ledger.current(rows) == ledger.current(full) and ledger.pending(rows) == ledger.pending(full)
    assert ledger.next_revision(rows) == ledger.next_revision(full)
    assert _decision(lambda: ledger.rollback_target(rows)) == _decision(lambda: ledger.rollback_target(full))
    kept_here = ledger.keep_containers(rows, keep=1) & set(alive)
    assert kept_here >= ledger.keep_containers(full, keep=1) & set(alive)  # never removes what the ledger keeps


def test_a_short_ledger_is_read_whole(reg: Registry, monkeypatch):
    monkeypatch.setattr(releases, "WINDOW", WINDOW)
    full = _random_ledger(random.Random(1), WINDOW - 1)
    with reg.store.write() as conn:
        for r in full:
            releases.insert_(conn, r)
    with reg.store.read() as conn:
        assert releases.working_set(conn, "production") == (full, True)
