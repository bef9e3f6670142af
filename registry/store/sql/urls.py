"""Database URLs: parse, hide or drop the password, find a SQLite file. SQLAlchemy's URL
parser is the one the store connects with, so both read a URL the same way."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from registry.errors import InvalidInput


def masked_url(url: str) -> str:
    """The URL with its password shown as ***, also for text that does not parse as a URL."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r":[^:/@]*@", ":***@", url)


def without_password(db_url: str) -> str:
    """``db_url`` with no password in it (user info or ``?password=``); refused if not a URL."""
    url = parsed(db_url)
    # URL.set(password=None) means "unchanged"; _replace (it is a NamedTuple) really drops it
    url = url._replace(password=None).difference_update_query(_password_keys(url))
    return url.render_as_string(hide_password=False)


def has_password(db_url: str) -> bool:
    """True if ``db_url`` carries a password that ``write_config`` leaves out (so later commands
    need ``PGPASSWORD`` or ``~/.pgpass``: worth telling the user at init)."""
    url = parsed(db_url)
    return url.password is not None or bool(_password_keys(url))


def parsed(db_url: str):
    try:
        return make_url(db_url)
    except ArgumentError:
        raise InvalidInput(f"{masked_url(db_url)} is not a database URL: use sqlite:////path "
                           "or postgresql+psycopg://user@host/db") from None


def _password_keys(url) -> list[str]:
    return [k for k in url.query if k.lower() == "password"]


def sqlite_file(db_url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names; None for other databases and in-memory SQLite."""
    if not db_url.startswith("sqlite"):
        return None
    try:
        database = make_url(db_url).database
    except ArgumentError:
        return None  # Store refuses it with the right message
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)
