"""The database half of a backup: one consistent copy of the metadata database, and back.

SQLite is copied with its backup API (one snapshot while pushes and promotes go on) into a
self-contained file; PostgreSQL with ``pg_dump`` in custom format, restored with ``pg_restore``
in one transaction. The password goes in PGPASSWORD, never in argv.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from registry.durable import fsync_dir
from registry.errors import CellarError, InvalidInput, StorageError
from registry.store.sql import BUSY_TIMEOUT_MS, Store
from registry.store.sql.urls import masked_url

SQLITE_FILE = "registry.db"
PG_FILE = "registry.pgdump"


def is_sqlite(db_url: str) -> bool:
    return make_url(db_url).get_backend_name() == "sqlite"


def dump(db_url: str, dest: Path) -> tuple[Path, dict[str, int]]:
    """Copy the database at ``db_url`` into ``dest``; the file written, and the blobs (digest ->
    size) that copy records (on PostgreSQL read live after the dump: rows deleted since only
    shrink the set)."""
    if is_sqlite(db_url):
        db_file = _dump_sqlite(_sqlite_file(db_url), dest)
        return db_file, _blob_sizes_in_file(db_file)
    return _dump_postgres(db_url, dest), _blob_sizes_live(db_url)


def _sqlite_file(db_url: str) -> Path:
    database = make_url(db_url).database
    if not database:
        raise InvalidInput(f"{masked_url(db_url)} names no database file")
    return Path(database)


def load(db_file: Path, db_url: str) -> None:
    """Restore a copy made by ``dump`` into a new SQLite file or an empty PostgreSQL database."""
    if is_sqlite(db_url):
        _load_sqlite(db_file, _sqlite_file(db_url))
    else:
        _load_postgres(db_file, db_url)


def _dump_sqlite(db_path: Path, dest: Path) -> Path:
    """One consistent copy through the backup API, as a self-contained file (no WAL beside it)."""
    tmp = dest / f".{SQLITE_FILE}.{os.getpid()}-{secrets.token_hex(4)}"
    try:
        src = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            src.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # all pages in one step: one snapshot, writers are not blocked (WAL)
                dst.execute("PRAGMA journal_mode=DELETE")
                if (ok := dst.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                    raise StorageError(f"the database copy fails SQLite's check ({ok}): run `registry verify`")
            finally:
                dst.close()
        finally:
            src.close()
        fsync_dir(tmp)
        final = dest / SQLITE_FILE
        os.replace(tmp, final)
        fsync_dir(dest)
        return final
    except sqlite3.Error as exc:
        raise StorageError(f"cannot back up {db_path} ({exc}): check that the disk of {dest} has space") from None
    finally:
        tmp.unlink(missing_ok=True)


def _blob_sizes_in_file(db_file: Path) -> dict[str, int]:
    conn = sqlite3.connect(db_file)
    try:
        return dict(conn.execute("SELECT digest, size FROM blobs"))
    finally:
        conn.close()


def _blob_sizes_live(db_url: str) -> dict[str, int]:
    store = Store(db_url)
    try:
        with store.read() as conn:
            return {d: n for d, n in conn.execute(text("SELECT digest, size FROM blobs"))}
    finally:
        store.close()


def _dump_postgres(db_url: str, dest: Path) -> Path:
    tmp = dest / f".{PG_FILE}.{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _pg_tool("pg_dump", db_url, ["--format=custom", "--no-owner", "--no-privileges", f"--file={tmp}"])
        fsync_dir(tmp)
        final = dest / PG_FILE
        os.replace(tmp, final)
        fsync_dir(dest)
        return final
    finally:
        tmp.unlink(missing_ok=True)


def _load_sqlite(db_file: Path, target: Path) -> None:
    if target.exists():
        raise InvalidInput(f"refusing to restore over the database {target}: move it away first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        shutil.copyfile(db_file, tmp)
        fsync_dir(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _load_postgres(dump: Path, db_url: str) -> None:
    store = Store(db_url)
    try:
        with store.read() as conn:
            tables = inspect(conn).get_table_names()
    finally:
        store.close()
    if tables:
        raise InvalidInput(f"refusing to restore into {masked_url(db_url)}: the database is not empty "
                           f"({len(tables)} tables); create a new one (createdb) and point REGISTRY_DB_URL at it")
    _pg_tool("pg_restore", db_url, ["--no-owner", "--no-privileges", "--exit-on-error",
                                    "--single-transaction", str(dump)])


def _pg_tool(tool: str, db_url: str, args: list[str]) -> None:
    """Run pg_dump / pg_restore against ``db_url``; the password goes in PGPASSWORD, never argv."""
    exe = shutil.which(tool)
    if exe is None:
        raise CellarError(f"{tool} is not installed: install PostgreSQL's client tools of the server's "
                          "major version or newer (Debian: apt-get install postgresql-client) and retry")
    url = make_url(db_url)
    env = {**os.environ, "PGPASSWORD": url.password or os.environ.get("PGPASSWORD", "")}
    done = subprocess.run([exe, f"--dbname={_conninfo(url)}", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[0]
        raise StorageError(f"{tool} failed on {masked_url(db_url)}: {why}")


def _conninfo(url) -> str:
    """A libpq connection string without the password."""
    parts = {"host": url.host, "port": url.port, "user": url.username, "dbname": url.database}
    parts.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return " ".join(f"{k}={_quote(str(v))}" for k, v in parts.items() if v is not None)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
