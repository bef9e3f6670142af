"""Migration 0003 and registry.store.sql.probes on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from registry.models.probes import ProbeResult, ProbeRun
from registry.store.sql import Store, migrate, probes

NEW = {"probe_runs", "probe_results"}
T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def a_run(env: str, minutes: int, *statuses: str) -> ProbeRun:
    return ProbeRun(env=env, model="bot", version="v1.2", revision=3, actor="ada",
                    started_at=T0 + timedelta(minutes=minutes),
                    results=[ProbeResult(probe=f"q{i}", status=s, http_status=None if s == "error" else 200,
                                         latency_ms=None if s == "error" else 12.5 + i, detail=f"d{i}")
                             for i, s in enumerate(statuses)])


def test_runs_are_recorded_and_read_back_as_models(db_url):
    store = Store(db_url)
    try:
        migrate.upgrade(store)
        stored = [a_run("prod", 0, "pass", "fail"), a_run("staging", 1, "pass"),
                  a_run("prod", 2, "error", "pass", "pass"), a_run("prod", 3)]
        with store.write() as conn:
            ids = [probes.record_run(conn, run) for run in stored]
        assert len(set(ids)) == 4 and stored[0].id == ids[0]
        with store.read() as conn:
            every = probes.runs(conn)
            prod = probes.runs(conn, env="prod")
            recent = probes.runs(conn, env="prod", since=T0 + timedelta(minutes=1))
            newest = probes.runs(conn, limit=2)
        assert every == stored  # results, order, times (as aware UTC) all survive
        assert [r.started_at.minute for r in prod] == [0, 2, 3]
        assert [r.started_at.minute for r in recent] == [2, 3]
        assert [r.started_at.minute for r in newest] == [2, 3]
        assert every[2].results[0].latency_ms is None and every[2].results[1].latency_ms == 13.5
        assert every[3].results == [] and not every[3].ok  # an empty run asked nothing: no pass (issue 27)
    finally:
        store.close()


def test_a_failed_write_leaves_no_half_run(db_url):
    store = Store(db_url)
    try:
        migrate.upgrade(store)
        try:
            with store.write() as conn:
                probes.record_run(conn, a_run("prod", 0, "pass"))
                raise RuntimeError("crash after the insert")
        except RuntimeError:
            pass
        with store.read() as conn:
            assert probes.runs(conn) == []
    finally:
        store.close()
