"""A stat cache so re-pushing unchanged weights does not read them again.

Keyed by path and (device, inode, size, mtime_ns, ctime_ns), like git's index. An entry
whose mtime is not clearly older than the moment it was recorded is "racy" (the file could
have changed within the timestamp's granularity) and is not trusted, as git does.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RACY_NS = 2_000_000_000  # coarse filesystems stamp whole seconds; allow two


def _key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class StatCache:
    """Path -> digest, trusted only while the file's stat key is unchanged and not racy."""

    def __init__(self, path: Path, *, tmp: Path | None = None, racy_ns: int = RACY_NS):
        """``tmp``: where to write before renaming (the blob store's, so the sweep of dead
        processes' temp files covers it); default: beside ``path``. ``racy_ns``: how long after
        its last change a file must have been recorded to be trusted (the timestamp granularity)."""
        self.path = path
        self.racy_ns = racy_ns
        self.tmp = tmp or path.parent
        self._entries: dict[str, list] | None = None
        self._dirty = False
        self._saved_at = float("-inf")
        self._sizes: dict[int, list[str]] | None = None  # size -> paths, built on first use

    @property
    def entries(self) -> dict[str, list]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def lookup(self, path: Path) -> str | None:
        """The digest recorded for ``path`` if it provably has not changed since."""
        entry = self.entries.get(str(path.absolute()))
        if not entry:
            return None
        st = os.stat(path)
        key, digest, recorded_ns = entry[:5], entry[5], entry[6]
        if key != _key(st) or st.st_mtime_ns >= recorded_ns - self.racy_ns:
            return None
        return digest

    def paths_of_size(self, size: int) -> list[Path]:
        """Paths recorded (trusted or not) with ``size`` bytes, newest first: a hint only."""
        if self._sizes is None:
            self._sizes = {}
            for path, entry in self.entries.items():
                self._sizes.setdefault(entry[2], []).append(path)
        return [Path(p) for p in reversed(self._sizes.get(size, []))]

    def record(self, path: Path, before: os.stat_result, digest: str) -> None:
        """Remember ``digest`` for ``path`` if it did not change while it was being read."""
        if _key(os.stat(path)) != _key(before):
            return
        self.entries[str(path.absolute())] = [*_key(before), digest, time.time_ns()]
        if self._sizes is not None:
            self._sizes.setdefault(before.st_size, []).append(str(path.absolute()))
        self._dirty = True

    def save(self, *, unless_within: float = 0.0) -> None:
        """Write the cache if it changed, but not again within ``unless_within`` seconds of the
        last write: a loop of pushes rewrites it once a second, not once a push."""
        if not self._dirty or time.monotonic() - self._saved_at < unless_within:
            return
        self._saved_at = time.monotonic()
        tmp = self.tmp / f"statcache-{os.getpid()}-{time.monotonic_ns()}"
        try:
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)  # a cache: last writer wins, no fsync needed
        except OSError:
            tmp.unlink(missing_ok=True)
        self._dirty = False
