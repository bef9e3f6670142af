"""The SQL metadata store: one engine, read and write transactions, schema check.

Writes are serialised: SQLite takes ``BEGIN IMMEDIATE`` (so a writer waits on the busy
timeout instead of failing with "database is locked" half-way), PostgreSQL an advisory
transaction lock. Writes are small, so one writer at a time costs little and keeps the
audit hash chain and the release ledger simple.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from registry.errors import (
    DatabaseLocked,
    DatabaseUnavailable,
    InvalidInput,
    NoSpace,
    NotInitialised,
    SchemaOutOfDate,
)
from registry.store.sql.schema import SCHEMA_HEAD
from registry.store.sql.urls import masked_url

BUSY_TIMEOUT_MS = 60_000
KEY_INFO = "cellar.key"  # where a connection carries its store's signing key
_PG_WRITE_LOCK = 0x63656C6C  # "cell"
_PG_BEGIN = f"BEGIN; SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})"
# A PostgreSQL write's statements not sent yet (its BEGIN and lock too, while lazy): they go
# with its next round trip (see ``queue``).
_QUEUE = "cellar.queue"

# A statement and its parameters: a dict, or a list of dicts (one execution each).
Statement = tuple[Executable, dict[str, Any] | list[dict[str, Any]]]


T = TypeVar("T")

class Store:
    """Connections to the metadata database at ``url``.

    ``key`` (a ``registry.trust.seals.Key``) seals every row the store writes and checks the rows
    it hands out where a decision rests on them (``registry.store.sql.sealing``); it rides along on
    each connection (``conn.info``), so no store function can forget it."""

    def __init__(self, url: str, *, source: str = "REGISTRY_DB_URL", key=None):
        self.url = url
        self.source = source  # where the URL came from, for messages (see registry.home)
        self.key = key
        self.engine = _engine_or_refuse(url)
        self._reader = self.engine.execution_options(cellar_read=True)
        self._writer = self.engine.execution_options(cellar_write=True)
        self.dialect = self.engine.dialect.name
        self._db_user: str | None = None

    def close(self) -> None:
        self.engine.dispose()

    def read_once(self, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``read(conn, *args, **kwargs)`` in a read transaction of its own: how the facade asks
        for one set of rows without holding a connection itself."""
        with self.read() as conn:
            return read(conn, *args, **kwargs)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with _translated(self.url), self._connect(self._reader) as conn, conn.begin():
            conn.info[KEY_INFO] = self.key
            yield conn

    @contextmanager
    def peek(self) -> Iterator[Connection]:
        """A connection for one statement, outside any transaction. One statement sees one
        snapshot either way; on PostgreSQL this spares the BEGIN and COMMIT round trips (three
        become one). Use ``read`` for anything more (several statements, ``yield_per``)."""
        with _translated(self.url), self._connect(self.engine) as conn:
            conn.info[KEY_INFO] = self.key
            yield conn

    @contextmanager
    def write(self, *, lazy: bool = False) -> Iterator[Connection]:
        """One serialised write transaction: committed on success, rolled back on error.

        ``lazy``: on PostgreSQL, BEGIN and the write lock travel with the transaction's first
        statement (or ``run_all``) instead of a round trip of their own, so the lock guards
        nothing outside the database until a statement has run."""
        if self.dialect == "postgresql":
            with _translated(self.url), self._pg_write(lazy=lazy) as conn:
                yield conn
            return
        with _translated(self.url), self._connect(self._writer) as conn, conn.begin():
            conn.info[KEY_INFO] = self.key
            yield conn

    @contextmanager
    def _pg_write(self, *, lazy: bool) -> Iterator[Connection]:
        """PostgreSQL's write transaction, begun by hand (the driver is in autocommit) so that
        BEGIN and the advisory lock travel in one round trip. The lock is a statement of its
        own, so every later statement's snapshot is taken under it.

        Statements ``queue``d meanwhile travel with the next round trip, the COMMIT's at the
        latest; a lazy write queues its BEGIN and lock too."""
        with self._connect(self.engine) as conn:
            conn.info[KEY_INFO] = self.key
            conn.info[_QUEUE] = list(_BEGIN_STEPS)
            try:
                if not lazy:
                    _flush(conn)
                yield conn
                _flush(conn, then=[_Queued("COMMIT")])
            except BaseException:
                if conn.info[_QUEUE][:len(_BEGIN_STEPS)] != list(_BEGIN_STEPS):  # else nothing was sent
                    with contextlib.suppress(DBAPIError):  # a broken connection: the first error is the one to tell
                        conn.exec_driver_sql("ROLLBACK")
                raise
            finally:
                del conn.info[_QUEUE]

    @contextmanager
    def schema_change(self) -> Iterator[Connection]:
        """A write transaction for migrations. On SQLite, with foreign keys off while tables are
        copied (batch mode) and checked before commit; the pool is reset afterwards so every later
        connection has them on again."""
        engine = self._writer.execution_options(cellar_schema_change=True)
        try:
            with _translated(self.url), self._connect(engine) as conn, conn.begin():
                yield conn
                if self.dialect == "sqlite" and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("a migration left rows whose foreign keys point nowhere")
        finally:
            if self.dialect == "sqlite":
                self.engine.dispose()

    def _connect(self, engine) -> Connection:
        """A connection; any failure to get one (refused, unknown host, no password, bad login)
        is DatabaseUnavailable naming the URL (password masked) and where it was configured."""
        try:
            return engine.connect()
        except OperationalError as exc:
            reason = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
            if _disk_full(reason, self.url):
                raise NoSpace(NO_SPACE) from None
            raise DatabaseUnavailable(f"cannot connect to the database {masked_url(self.url)} (from {self.source}): "
                                      f"{reason}; check the URL, the password (PGPASSWORD or ~/.pgpass) and "
                                      "that the server runs") from None

    def schema_revision(self) -> str | None:
        # Outside a transaction (peek), a missing table fails this statement alone: no savepoint.
        with self.peek() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except (OperationalError, ProgrammingError):
                return None

    def check_schema(self) -> None:
        """Refuse to run on a database this program does not know how to read."""
        rev = self.schema_revision()
        if rev is None and not self._has_version_table():
            raise NotInitialised(f"no registry schema in {masked_url(self.url)}: run `registry init`")
        if rev != SCHEMA_HEAD:
            from registry.store.sql import migrate

            migrate.refuse_newer(rev)
            raise SchemaOutOfDate(
                f"the registry database is at schema {rev or 'base (empty)'}, this program needs {SCHEMA_HEAD}: "
                "run `registry db upgrade` (or upgrade Cellar if the database is newer)"
            )

    def _has_version_table(self) -> bool:
        """An emptied ``alembic_version`` (downgraded to base) is out of date, not uninitialised."""
        from sqlalchemy import inspect

        with self.read() as conn:
            return inspect(conn).has_table("alembic_version")

    def db_user(self, conn: Connection) -> str | None:
        """The database's authenticated user, recorded beside the actor on PostgreSQL."""
        if self.dialect != "postgresql":
            return None
        if self._db_user is None:  # one URL, one login: ask once, not on every write
            self._db_user = conn.execute(text("SELECT current_user")).scalar()
        return self._db_user


def run_all(conn: Connection, statements: Sequence[Statement]) -> list[list[tuple]]:
    """Run ``statements`` in order; each one's rows (empty for one that returns none, and for
    one given an empty list of parameters: that one is not run at all).

    On PostgreSQL they travel together in one round trip (psycopg's pipeline mode), behind what
    the write transaction has queued: there a round trip costs more than running a small
    statement (bench/api_push.py). A failing statement fails the batch and its transaction."""
    if conn.dialect.name != "postgresql":
        return [_rows(conn.execute(stmt, params)) if params != [] else [] for stmt, params in statements]
    queued = [_queued(conn, stmt, params) if params != [] else None for stmt, params in statements]
    sent = [q for q in queued if q]
    answers = iter(_flush(conn, then=sent)[-len(sent):] if sent else ())
    return [next(answers) if q else [] for q in queued]


def queue(conn: Connection, statements: Sequence[Statement]) -> None:
    """Run ``statements`` with the write transaction's next round trip on PostgreSQL (its COMMIT
    at the latest), now on SQLite: for writes whose rows nobody reads. An error surfaces then,
    inside the transaction, which rolls back."""
    if _QUEUE not in conn.info:  # SQLite, or not a write transaction
        run_all(conn, statements)
        return
    conn.info[_QUEUE].extend(_queued(conn, stmt, params) for stmt, params in statements if params != [])


def upsert(dialect: str):
    """The dialect's own ``insert``, which alone builds ``ON CONFLICT`` (spelled alike on both)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _rows(result) -> list[tuple]:
    return [tuple(row) for row in result] if result.returns_rows else []


@dataclass(frozen=True)
class _Queued:
    """A statement in the driver's terms: SQL text, parameters (a list: one execution each),
    whether it returns rows."""

    sql: str
    params: dict[str, Any] | list[dict[str, Any]] | None = None
    rows: bool = False


_BEGIN_STEPS = tuple(_Queued(step) for step in _PG_BEGIN.split("; "))  # each its own statement in a pipeline


def _queued(conn: Connection, stmt: Executable, params: dict[str, Any] | list[dict[str, Any]]) -> _Queued:
    if isinstance(params, list):
        sql, bind, rows = _compiled(stmt, conn.dialect, tuple(params[0]))
        return _Queued(sql, [bind(p) for p in params], rows)
    sql, bind, rows = _compiled(stmt, conn.dialect, tuple(params))
    return _Queued(sql, bind(params), rows)


def _flush(conn: Connection, *, then: Sequence[_Queued] = ()) -> list[list[tuple]]:
    """Send what the write has queued, then ``then``, in one round trip; each one's rows."""
    import psycopg

    statements = [*conn.info.get(_QUEUE, ()), *then]
    if _QUEUE in conn.info:
        conn.info[_QUEUE] = []
    raw = conn.connection.driver_connection
    assert raw is not None  # None only once the connection is closed or invalidated
    sql = ""
    try:
        cursors: list[Any] = []
        spare = raw.cursor()  # a cursor of its own for each statement that returns rows
        with raw.pipeline():
            for q in statements:
                sql = q.sql
                if isinstance(q.params, list):  # no rows back (as SQLAlchemy's executemany)
                    spare.executemany(q.sql, q.params)
                    cursors.append(None)
                else:
                    cursors.append(cur := raw.cursor() if q.rows else spare)
                    cur.execute(q.sql, q.params)
        return [cur.fetchall() if cur not in (spare, None) else [] for cur in cursors]
    except psycopg.Error as exc:  # as SQLAlchemy would have raised it, for _translated
        if raw.broken:
            conn.invalidate()
        raise DBAPIError.instance(sql, None, exc, psycopg.Error, connection_invalidated=raw.broken,
                                  dialect=conn.dialect) from exc


@functools.lru_cache(maxsize=128)
def _compiled(stmt: Executable, dialect: Dialect, keys: tuple[str, ...]):
    """``stmt``'s SQL for ``dialect`` given parameters named ``keys`` (an INSERT names only
    those columns), a function from such parameters to the driver's with each type's bind
    processing (what SQLAlchemy does on ``execute``), and whether it returns rows; compiled once."""
    assert isinstance(stmt, ClauseElement)  # every Executable Cellar queues; the type has no compile()
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler)  # what the dialect compiles a statement with
    processors = {name: proc for name, bind in compiled.binds.items()
                  if (proc := bind.type.dialect_impl(dialect).bind_processor(dialect))}

    def bind(params: dict[str, Any]) -> dict[str, Any]:
        values = dict(compiled.construct_params(params))
        for name, proc in processors.items():
            values[name] = proc(values[name])
        return values

    return compiled.string, bind, not stmt.is_dml or bool(compiled.effective_returning)


def _send_queued(conn, *_args) -> None:
    """Before a statement of a write (``before_cursor_execute``): what it queued, first."""
    if conn.info.get(_QUEUE):
        _flush(conn)


def _engine_or_refuse(url: str) -> Engine:
    """Translate a malformed URL or an unknown dialect/driver into a message that says what to do."""
    try:
        return _make_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"REGISTRY_DB_URL {masked_url(url)} is not a database URL ({reason}): "
                           "use sqlite:////path or postgresql+psycopg://user@host/db (the password from "
                           "PGPASSWORD or ~/.pgpass)") from None


def _make_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() != "sqlite":
        # The driver in autocommit and every transaction begun by hand (_pg_begin_listener,
        # Store._pg_write): peek's one statement stands alone, and no connection switches
        # modes on each checkout and back on return (0.3 ms a push).
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        _pg_begin_listener(engine)
        event.listen(engine, "before_cursor_execute", _send_queued)
        return engine
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let us issue BEGIN ourselves (pysqlite's own BEGIN is always deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()
        if options.get("cellar_schema_change"):
            # SQLite's own recipe for changing a table others reference: foreign keys off
            # (only possible outside a transaction), change, then PRAGMA foreign_key_check.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("cellar_write") else "BEGIN")

    return engine


def _pg_begin_listener(engine: Engine) -> None:
    """BEGIN for a read, with the write lock for a schema change (ordinary writes begin in
    ``Store._pg_write``; peek's statement stands alone). The driver, in autocommit, sends
    COMMIT or ROLLBACK at the end because the server is then in a transaction."""
    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()  # neither: SQLAlchemy's autobegin, nothing to send
        if options.get("cellar_write") or options.get("cellar_read"):
            conn.exec_driver_sql(_PG_BEGIN if options.get("cellar_write") else "BEGIN")


NO_SPACE = "no space left on device for the registry database: free some space and retry (nothing was recorded)"


def _disk_full(message: str, url: str) -> bool:
    low = message.lower()
    return "disk is full" in low or "no space left" in low or ("disk i/o error" in low and _full(url))


def _full(url: str) -> bool:
    """SQLite reports a full disk while opening its WAL files as a bare "disk I/O error"."""
    import shutil

    db = make_url(url).database
    if not db:
        return False
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(db))).free < (1 << 20)
    except OSError:
        return False


@contextmanager
def _translated(url: str) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        msg = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        low = msg.lower()
        if _disk_full(msg, url):
            raise NoSpace(NO_SPACE) from None
        if exc.connection_invalidated or "connection" in low and "refused" in low:
            raise DatabaseUnavailable(f"cannot reach the database {masked_url(url)} ({msg}); "
                              "check REGISTRY_DB_URL and that the server runs") from None
        if "database is locked" in low:
            raise DatabaseLocked("the registry database stayed locked by another process; "
                              "retry in a moment") from None
        raise
