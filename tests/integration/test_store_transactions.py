"""Store.write on both databases: all or nothing, serialised, and a clean connection after an
error (PostgreSQL's write transaction is begun and ended by hand: registry.store.sql)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from registry import clock
from registry.store.sql import Store, queue, run_all
from registry.store.sql import schema as t


def _models(store: Store) -> list[str]:
    with store.peek() as conn:
        return sorted(conn.execute(select(t.models.c.name)).scalars())


def _add(conn, name: str) -> None:
    conn.execute(insert(t.models).values(name=name, created_at=clock.now()))


def test_an_error_inside_a_write_leaves_nothing_and_the_next_write_commits(reg):
    store = reg.store
    with pytest.raises(RuntimeError, match="half-way"), store.write() as conn:
        _add(conn, "half-written")
        raise RuntimeError("half-way")
    with pytest.raises(IntegrityError), store.write() as conn:  # the database refuses a statement
        _add(conn, "twice")
        _add(conn, "twice")
    with store.write() as conn:
        _add(conn, "whole")
    assert _models(store) == ["whole"]


def test_a_return_from_inside_a_write_commits(reg):
    """(push returns from inside its write when another writer recorded the version first)"""
    def record() -> str:
        with reg.store.write() as conn:
            _add(conn, "returned")
            return "done"

    assert record() == "done"
    assert _models(reg.store) == ["returned"]


@pytest.mark.parametrize("second_store", [False, True], ids=["same-store", "other-store"])
def test_writes_wait_for_each_other_and_see_what_came_before(reg, home, second_store):
    first = reg.store
    other = Store(first.url) if second_store else first
    inside, order = threading.Event(), []

    def late_writer():
        inside.wait(10)
        with other.write() as conn:
            order.append("second in")
            count = conn.execute(select(func.count()).select_from(t.models)).scalar()
            _add(conn, f"after-{count}")

    worker = threading.Thread(target=late_writer)
    worker.start()
    try:
        with first.write() as conn:
            _add(conn, "first")
            inside.set()
            time.sleep(0.5)  # the second writer is waiting for the lock meanwhile
            order.append("first out")
    finally:
        worker.join(30)
        if second_store:
            other.close()
    assert order == ["first out", "second in"]
    assert _models(first) == ["after-1", "first"]  # it saw the first writer's row


def test_batched_statements_answer_in_order_and_queued_ones_commit_with_the_write(reg):
    """run_all answers each statement's rows in order (one round trip on PostgreSQL); queued
    statements run with the next round trip, the COMMIT's at the latest."""
    store = reg.store
    add = insert(t.models).values(created_at=clock.now())
    names = select(t.models.c.name).order_by(t.models.c.name)
    with store.write(lazy=True) as conn:
        got = run_all(conn, [(names, {}), (add, [{"name": "a"}, {"name": "b"}]), (names, {}), (add, [])])
        assert got == [[], [], [("a",), ("b",)], []]  # an insert of no rows runs nowhere
        queue(conn, [(add, {"name": "queued"})])
        assert run_all(conn, [(select(func.count()).select_from(t.models), {})]) == [[(3,)]]  # sent first
        queue(conn, [(add, {"name": "with-the-commit"})])
    assert _models(store) == ["a", "b", "queued", "with-the-commit"]


def test_a_failing_queued_statement_fails_its_write_which_leaves_nothing(reg):
    store = reg.store
    add = insert(t.models).values(created_at=clock.now())
    with pytest.raises(IntegrityError), store.write(lazy=True) as conn:
        run_all(conn, [(add, {"name": "first"})])
        queue(conn, [(add, {"name": "twice"}), (add, {"name": "twice"})])  # refused at the COMMIT's trip
    with pytest.raises(IntegrityError), store.write(lazy=True) as conn:
        queue(conn, [(add, {"name": "dup"})])
        run_all(conn, [(add, {"name": "dup"})])  # the queued one went first
    assert _models(store) == []
    with store.write(lazy=True) as conn:  # the connection is clean again
        queue(conn, [(add, {"name": "whole"})])
    assert _models(store) == ["whole"]


def test_a_lazy_write_that_fails_before_any_statement_sends_nothing(reg):
    store = reg.store
    with pytest.raises(RuntimeError, match="before"), store.write(lazy=True):
        raise RuntimeError("before any statement")
    with store.write(lazy=True):
        pass  # nothing to send, nothing begun
    with store.write(lazy=True) as conn:
        _add(conn, "plain")  # an ordinary statement sends the pending BEGIN and lock first
    assert _models(store) == ["plain"]


def test_a_lazy_write_holds_the_lock_from_its_first_statement(reg):
    store, inside, order = reg.store, threading.Event(), []

    def late_writer():
        inside.wait(10)
        with store.write(lazy=True) as conn:
            (count,), = run_all(conn, [(select(func.count()).select_from(t.models), {})])[0]
            order.append(f"second in, saw {count}")

    worker = threading.Thread(target=late_writer)
    worker.start()
    try:
        with store.write(lazy=True) as conn:
            run_all(conn, [(select(func.count()).select_from(t.models), {})])
            queue(conn, [(insert(t.models).values(created_at=clock.now()), {"name": "first"})])
            inside.set()
            time.sleep(0.5)  # the second writer waits for the lock meanwhile
            order.append("first out")
    finally:
        worker.join(30)
    assert order == ["first out", "second in, saw 1"]
