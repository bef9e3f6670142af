"""The audit log: queries, and verification that catches each kind of tampering done with raw SQL,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select

from registry import InvalidInput
from registry.store.sql import schema as t
from registry.trust import audit
from tests.conftest import sql


@pytest.fixture
def pushed(reg, model_dir, frozen_clock):
    """init + six pushes: events 1..7, pushed by two actors an hour apart; the prompt changes twice."""
    for i in range(6):
        if i in (2, 4):
            model_dir.set_prompt(f"Prompt revision {i}.\n")
        reg.push(model_dir.manifest, version=f"v1.{i}", actor="alice" if i % 2 else "Bob <bob@example.org>")
        frozen_clock.tick(3600)
    return reg


def test_every_push_is_an_event_and_the_chain_verifies(pushed):
    events = pushed.audit()
    assert [e.id for e in events] == [7, 6, 5, 4, 3, 2, 1]
    assert events[-1].action == "init" and events[0].object == "support-bot@v1.5"
    result = pushed.verify_audit()
    assert result.ok and result.checked == 7 and result.head == events[0].hash
    if pushed.store.dialect == "postgresql":
        assert events[0].db_user == "cellar"


def test_who_changed_the_system_prompt(pushed):
    got = [e.object for e in pushed.audit(prompt="system")]
    assert got == ["support-bot@v1.4", "support-bot@v1.2", "support-bot@v1.0"]
    assert pushed.audit(prompt="other") == []


def test_filters_narrow_the_log(pushed, frozen_clock):
    assert {e.actor for e in pushed.audit(actor="BOB")} == {"Bob <bob@example.org>"}
    assert [e.object for e in pushed.audit(action="push", limit=2)] == ["support-bot@v1.5", "support-bot@v1.4"]
    assert [e.object for e in pushed.audit(since="150m", action="push")] == ["support-bot@v1.5", "support-bot@v1.4"]
    assert len(pushed.audit(model="support-bot")) == 6 and pushed.audit(env="production") == []
    assert [e.id for e in pushed.audit(prompt="system", limit=1)] == [6]


def test_pages_by_event_id_in_both_directions_with_filters(pushed):
    assert [e.id for e in pushed.audit(before=6, limit=2)] == [5, 4]
    assert [e.id for e in pushed.audit(after=2, limit=2)] == [4, 3]  # the two just newer, newest first
    assert [e.id for e in pushed.audit(after=5)] == [7, 6]
    assert [e.object for e in pushed.audit(prompt="system", before=6)] == ["support-bot@v1.2", "support-bot@v1.0"]
    assert [e.id for e in pushed.audit(actor="alice", after=2, limit=1)] == [3]
    with pytest.raises(InvalidInput, match="audit filter before"):
        pushed.audit(before=0)


def test_secret_canary_never_reaches_the_audit_log(reg, model_dir, monkeypatch):
    monkeypatch.setenv("SUPPORT_API_TOKEN", "canary-7f3a91")
    reg.push(model_dir.manifest)
    with reg.store.read() as conn:
        rows = [json.dumps(dict(r), default=str) for r in conn.execute(select(t.events)).mappings()]
    assert rows and not any("canary-7f3a91" in r for r in rows)
    assert "canary-7f3a91" not in json.dumps([e.model_dump(mode="json") for e in reg.audit()])


def broken(reg, **kw) -> audit.Problem:
    result = reg.verify_audit(**kw)
    assert not result.ok
    return result.problem


def test_a_changed_field_is_caught(pushed):
    sql(pushed, "UPDATE events SET actor = 'mallory' WHERE id = 4")
    assert broken(pushed).model_dump(include={"event", "kind"}) == {"event": 4, "kind": "altered"}


def test_a_changed_field_with_its_hash_recomputed_is_caught(pushed):
    with pushed.store.read() as conn:
        row = dict(conn.execute(select(t.events).where(t.events.c.id == 4)).mappings().one())
    row["actor"] = "mallory"
    sql(pushed, "UPDATE events SET actor = 'mallory', hash = :h WHERE id = 4",
        h=audit.chain_hash(row["prev_hash"], audit.event_body(row)))
    assert broken(pushed).model_dump(include={"event", "kind"}) == {"event": 4, "kind": "altered"}


def test_a_deleted_row_is_caught(pushed):
    sql(pushed, "DELETE FROM events WHERE id = 3")
    problem = broken(pushed)
    assert (problem.event, problem.kind) == (3, "deleted") and "event 3 was deleted" in problem.message


def test_an_inserted_row_is_caught_even_with_a_valid_hash(pushed):
    # The attacker makes room after event 3 and forges a well-chained event 4.
    sql(pushed, "UPDATE events SET id = -id WHERE id >= 4", "UPDATE events SET id = 1 - id WHERE id < 0")
    with pushed.store.read() as conn:
        prev = conn.execute(select(t.events.c.hash).where(t.events.c.id == 3)).scalar_one()
        at = conn.execute(select(t.events.c.at).where(t.events.c.id == 3)).scalar_one()
    row = {"id": 4, "at": at, "actor": "mallory", "db_user": None, "action": "push", "object": "support-bot@evil",
           "model": "support-bot", "env": None, "detail": "{}", "reason": None}
    forged = audit.chain_hash(prev, audit.event_body(row))
    with pushed.store.engine.begin() as conn:
        conn.execute(insert(t.events).values(**row, prev_hash=prev, hash=forged))
    assert broken(pushed).model_dump(include={"event", "kind"}) == {"event": 4, "kind": "inserted"}


def test_two_swapped_rows_are_caught(pushed):
    sql(pushed, "UPDATE events SET id = -3 WHERE id = 3", "UPDATE events SET id = 3 WHERE id = 4",
        "UPDATE events SET id = 4 WHERE id = -3")
    assert broken(pushed).model_dump(include={"event", "kind"}) == {"event": 3, "kind": "reordered"}


def test_a_truncated_tail_is_caught_against_a_checkpoint(pushed, model_dir):
    cp = pushed.audit_checkpoint()
    assert cp.count == 7
    sql(pushed, "DELETE FROM events WHERE id >= 6")
    # the chain alone cannot see a cut tail; the signed head (registry.trust.seals) can
    cut = pushed.verify_audit()
    assert cut.problem is None and [(p.kind, p.object) for p in cut.seals] == [("truncated", "event:6")]
    problem = broken(pushed, checkpoint=str(cp))
    assert (problem.event, problem.kind) == (6, "truncated")
    # Cut and written again to the same length: the event at the checkpoint no longer matches.
    pushed.push(model_dir.manifest, version="v2.0")
    pushed.push(model_dir.manifest, version="v2.1")
    problem = broken(pushed, checkpoint=str(cp))
    assert (problem.event, problem.kind) == (7, "truncated")
    assert pushed.verify_audit(checkpoint=cp).problem.event == 7


def test_a_checkpoint_of_an_intact_log_verifies(pushed, model_dir):
    cp = pushed.audit_checkpoint()
    pushed.push(model_dir.manifest, version="v3.0")
    result = pushed.verify_audit(checkpoint=f"{cp.head}:{cp.count}")
    assert result.ok and result.checked == 8


def test_the_prompt_filter_reads_an_index_that_verify_checks(pushed):
    with pushed.store.read() as conn:
        indexed = sorted(tuple(r) for r in conn.execute(select(t.event_prompts.c.event_id, t.event_prompts.c.prompt)))
    assert indexed == [(2, "system"), (4, "system"), (6, "system")]  # the pushes that changed it
    sql(pushed, "DELETE FROM event_prompts WHERE event_id = 4")  # hides v1.2's change from the filter
    sql(pushed, "INSERT INTO event_prompts (prompt, event_id) VALUES ('system', 7)")  # invents one
    assert [e.object for e in pushed.audit(prompt="system")] == ["support-bot@v1.4", "support-bot@v1.0"]
    result = pushed.verify_audit()
    assert not result.ok and result.problem is None  # the chain itself is intact
    assert [(p.kind, p.object) for p in result.seals] == [("index", "event:4"), ("index", "event:7")]
    assert "lacks event 4 changing prompt 'system'" in result.seals[0].message
    assert "invents event 7" in result.seals[1].message


def test_migration_0007_indexes_the_events_already_written(pushed):
    from registry.store.sql import migrate

    migrate.downgrade(pushed.store, "0006")
    migrate.upgrade(pushed.store)
    assert [e.object for e in pushed.audit(prompt="system")] == [
        "support-bot@v1.4", "support-bot@v1.2", "support-bot@v1.0"]
    assert pushed.verify_audit().ok
