"""Where a registry lives: ``$REGISTRY_HOME``, else the nearest ``.cellar/`` walking up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registry.errors import NotInitialised

HOME_DIR = ".cellar"


@dataclass(frozen=True)
class Home:
    path: Path
    db_url: str

    @property
    def blobs(self) -> Path:
        return self.path / "blobs"

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    @property
    def stat_cache(self) -> Path:
        return self.path / "statcache.json"


def _db_url(path: Path) -> str:
    return os.environ.get("REGISTRY_DB_URL") or f"sqlite:///{path / 'registry.db'}"


def for_init(path: str | Path | None = None) -> Home:
    """The home ``registry init`` creates: the given path, $REGISTRY_HOME, or ./.cellar."""
    chosen = Path(path or os.environ.get("REGISTRY_HOME") or Path.cwd() / HOME_DIR).absolute()
    return Home(chosen, _db_url(chosen))


def find(path: str | Path | None = None, start: Path | None = None) -> Home:
    """The home of an existing registry; NotInitialised if there is none."""
    explicit = path or os.environ.get("REGISTRY_HOME")
    if explicit:
        home = Path(explicit).absolute()
        if not home.is_dir():
            raise NotInitialised(f"no registry at {home}: run `registry init` to create it")
        return Home(home, _db_url(home))
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / HOME_DIR).is_dir():
            return Home(folder / HOME_DIR, _db_url(folder / HOME_DIR))
    raise NotInitialised(
        f"no registry found in {here} or its parents: run `registry init` or set REGISTRY_HOME"
    )
