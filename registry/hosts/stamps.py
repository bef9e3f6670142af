"""What this registry last proved about a host's cached blobs: for each digest, the (size,
mtime, ctime, inode) the host reported right after the blob was sent or hashed there. A copy
whose stat is unchanged since then holds the same bytes (a write changes its mtime and ctime,
and a replaced file its inode), as ``registry.store.files.statcache`` trusts local blobs; any
other copy is hashed on the host again. Kept here, not on the host: the host's own word about
its files is what is being checked. ``registry verify --hosts`` hashes every copy regardless.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

Stamp = tuple[int, int, int, int]  # size, mtime (s), ctime (s), inode


class Stamps:
    """The stamps of one host's cache, in ``folder``/<hash of host and volume>.json."""

    def __init__(self, folder: Path | None, *, host: str, volume: str):
        key = hashlib.sha256(f"{host}\0{volume}".encode()).hexdigest()[:24]
        self.path = folder / f"{key}.json" if folder else None
        self._data: dict[str, list[int]] = self._load()

    def _load(self) -> dict[str, list[int]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # no stamps: every copy is hashed

    def holds(self, digest: str, stat: Stamp | None) -> bool:
        return stat is not None and self._data.get(digest) == list(stat)

    def record(self, stats: dict[str, Stamp], *, forget: Sequence[str] = ()) -> None:
        """Remember ``stats`` (and drop ``forget``), written atomically: a lost write only costs a hash."""
        if self.path is None:
            return
        self._data.update({d: list(s) for d, s in stats.items()})
        for d in forget:
            self._data.pop(d, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(self._data, sort_keys=True))
        os.replace(tmp, self.path)
