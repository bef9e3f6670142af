"""The SQL metadata store: one engine, read and write transactions, schema check.

Writes are serialised: SQLite takes ``BEGIN IMMEDIATE`` (so a writer waits on the busy
timeout instead of failing with "database is locked" half-way), PostgreSQL an advisory
transaction lock. Writes are small, so one writer at a time costs little and keeps the
audit hash chain and the release ledger simple.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, ProgrammingError

from registry.errors import (DatabaseLocked, DatabaseUnavailable, InvalidInput, NoSpace, NotInitialised,
                             SchemaOutOfDate)
from registry.store.schema import SCHEMA_HEAD
from registry.store.urls import masked_url

BUSY_TIMEOUT_MS = 60_000
KEY_INFO = "cellar.key"  # where a connection carries its store's signing key
_PG_WRITE_LOCK = 0x63656C6C  # "cell"


class Store:
    """Connections to the metadata database at ``url``.

    ``key`` (a ``registry.signing.Key``) seals every row the store writes and checks the rows
    it hands out where a decision rests on them (``registry.store.seals``); it rides along on
    each connection (``conn.info``), so no store function can forget it."""

    def __init__(self, url: str, *, source: str = "REGISTRY_DB_URL", key=None):
        self.url = url
        self.source = source  # where the URL came from, for messages (see registry.home)
        self.key = key
        self.engine = _engine_or_refuse(url)
        self._writer = self.engine.execution_options(cellar_write=True)
        self.dialect = self.engine.dialect.name
        # PostgreSQL with the driver in autocommit: peek's one statement stands alone, and
        # _pg_write begins and ends its transaction itself. (On SQLite a BEGIN costs nothing.)
        self._autocommit = (self.engine.execution_options(isolation_level="AUTOCOMMIT")
                            if self.dialect == "postgresql" else None)
        self._db_user: str | None = None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with _translated(self.url), self._connect(self.engine) as conn, conn.begin():
            conn.info[KEY_INFO] = self.key
            yield conn

    @contextmanager
    def peek(self) -> Iterator[Connection]:
        """A connection for one statement, outside any transaction. One statement sees one
        snapshot either way; on PostgreSQL this spares the BEGIN and COMMIT round trips (three
        become one). Use ``read`` for anything more (several statements, ``yield_per``)."""
        with _translated(self.url), self._connect(self._autocommit or self.engine) as conn:
            conn.info[KEY_INFO] = self.key
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One serialised write transaction: committed on success, rolled back on error."""
        if self.dialect == "postgresql":
            with _translated(self.url), self._pg_write() as conn:
                yield conn
            return
        with _translated(self.url), self._connect(self._writer) as conn, conn.begin():
            conn.info[KEY_INFO] = self.key
            yield conn

    @contextmanager
    def _pg_write(self) -> Iterator[Connection]:
        """PostgreSQL's write transaction, begun by hand so that BEGIN and the advisory lock
        travel in one round trip (psycopg sends its own BEGIN alone, then the lock). The lock is
        a statement of its own, so every later statement's snapshot is taken under it."""
        with self._connect(self._autocommit) as conn:
            conn.info[KEY_INFO] = self.key
            conn.exec_driver_sql(f"BEGIN; SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(DBAPIError):  # a broken connection: the first error is the one to tell
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

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
            from registry.store import migrate  # alembic (~100 ms): only on this rare path

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
        engine = create_engine(url)
        _pg_begin_listener(engine)
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
    """The write lock for schema changes (ordinary writes take it in ``Store._pg_write``)."""
    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("cellar_write"):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")


NO_SPACE = "no space left on device for the registry database: free some space and retry (nothing was recorded)"


def _disk_full(message: str, url: str) -> bool:
    low = message.lower()
    return "disk is full" in low or "no space left" in low or ("disk i/o error" in low and _full(url))


def _full(url: str) -> bool:
    """SQLite reports a full disk while opening its WAL files as a bare "disk I/O error"."""
    import shutil

    db = make_url(url).database
    try:
        return bool(db) and shutil.disk_usage(os.path.dirname(os.path.abspath(db))).free < (1 << 20)
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
