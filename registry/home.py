"""Where a registry lives, and which database it uses.

The home is ``$REGISTRY_HOME``, else the nearest ``.cellar/`` walking up. Its database URL is
``$REGISTRY_DB_URL``, else the one ``registry init --db-url`` remembered in ``<home>/config.json``,
else ``<home>/registry.db``. The config file never holds a password: PostgreSQL's driver reads
it from ``PGPASSWORD`` or ``~/.pgpass``, as every libpq program does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from registry.errors import InvalidInput, NotInitialised
from registry.store.sql.urls import sqlite_file, without_password

HOME_DIR = ".cellar"
CONFIG_NAME = "config.json"  # JSON, not TOML: tomllib costs ~19 ms of start-up on every command
DB_URL_VAR = "REGISTRY_DB_URL"


@dataclass(frozen=True)
class Home:
    path: Path
    db_url: str
    # where db_url came from, for messages: "REGISTRY_DB_URL", "--db-url", the config file, "default"
    db_source: str = "default"

    @property
    def blobs(self) -> Path:
        return self.path / "blobs"

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    @property
    def stat_cache(self) -> Path:
        return self.path / "statcache.json"

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME


def resolve_db_url(path: Path) -> tuple[str, str]:
    """(URL, where it came from) for the home at ``path``: the environment, the config, the default."""
    if os.environ.get(DB_URL_VAR):
        return os.environ[DB_URL_VAR], DB_URL_VAR
    configured = read_config(path).get("db_url")
    if configured:
        return configured, str(path / CONFIG_NAME)
    return default_db_url(path), "default"


def default_db_url(path: Path) -> str:
    """The embedded default: a SQLite file in the home."""
    return f"sqlite:///{path / 'registry.db'}"


def read_config(path: Path) -> dict:
    """The home's remembered settings; {} when it has none."""
    file = path / CONFIG_NAME
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{file}: cannot read the registry's configuration ({_first_line(exc)}); "
                           "fix it or write it again with `registry init --db-url URL`") from None
    if not isinstance(data, dict) or not isinstance(data.get("db_url", ""), str):
        raise InvalidInput(f"{file}: expected {{\"db_url\": \"...\"}}; fix it or write it again with "
                           "`registry init --db-url URL`")
    return data


def write_config(home: Home | Path, db_url: str) -> str:
    """Remember ``db_url`` in the home's config file, without its password; return what was stored."""
    stored = without_password(db_url)
    update_config(home, db_url=stored)
    return stored


def update_config(home: Home | Path, **fields) -> None:
    """Set ``fields`` in the home's config file (None removes one), keeping the others.

    Written atomically (temp file, rename), so a crash leaves the old file or the new one."""
    path = home.path if isinstance(home, Home) else Path(home)
    data = {k: v for k, v in {**read_config(path), **fields}.items() if v is not None}
    tmp = path / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path / CONFIG_NAME)


def for_init(path: str | Path | None = None, *, db_url: str | None = None) -> Home:
    """The home ``registry init`` creates: the given path, $REGISTRY_HOME, or ./.cellar; its
    database ``db_url`` (``--db-url``) if given, else as later commands would resolve it."""
    chosen = Path(path or os.environ.get("REGISTRY_HOME") or Path.cwd() / HOME_DIR).absolute()
    if db_url:
        return Home(chosen, db_url, "--db-url")
    return Home(chosen, *resolve_db_url(chosen))


def locate(path: str | Path | None = None, start: Path | None = None) -> Home:
    """The home of an existing registry; NotInitialised if there is none.

    Never creates anything: a SQLite database that does not exist yet is NotInitialised (it
    used to leave a stray empty registry.db behind, e.g. in a home made for PostgreSQL)."""
    explicit = path or os.environ.get("REGISTRY_HOME")
    if explicit:
        home = Path(explicit).absolute()
        if not home.is_dir():
            raise NotInitialised(f"no registry at {home}: run `registry init` to create it")
        return _existing(home)
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / HOME_DIR).is_dir():
            return _existing(folder / HOME_DIR)
    raise NotInitialised(
        f"no registry found in {here} or its parents: run `registry init` or set REGISTRY_HOME"
    )


def _existing(path: Path) -> Home:
    home = Home(path, *resolve_db_url(path))
    db_file = sqlite_file(home.db_url)
    if db_file is not None and not db_file.exists():
        if home.db_source == "default":
            raise NotInitialised(f"no registry database in {path}: run `registry init` (for PostgreSQL: "
                                 f"`registry init --db-url URL`, or set {DB_URL_VAR})")
        raise NotInitialised(f"no registry database at {db_file} (named by {home.db_source}): "
                             "run `registry init`")
    return home


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
