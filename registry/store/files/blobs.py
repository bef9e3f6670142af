"""The content-addressed blob store: ``<home>/blobs/sha256/<2 hex>/<62 hex>``.

A blob is copied into a temp file on the same filesystem through the kernel
(``copy_file_range``, else ``sendfile``), and the copy is hashed from the page cache as it
lands, so every byte is read from the source once and hashed once with SHA-256 (and, for
safetensors, once with BLAKE3 per tensor, on another core). The temp file is fsynced, renamed
into place, its directory fsynced, and made read-only: a final path only ever holds complete,
verified bytes; a crash leaves at most a temp file, which the next command removes.

Before copying a large file whose size matches a blob already stored, the file is hashed
first: when the blob is there and intact nothing is written at all. "Intact" is proved by the
blob's *stamp* (its stat key recorded once its bytes were verified, in ``stamps.json``): any
write to the blob changes its mtime or ctime, so a blob modified since is re-hashed and, when
damaged, repaired by the copy.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from registry.durable import fsync_dir
from registry.errors import CorruptBlob, NoSpace, NotFound, StorageError
from registry.faults import crashpoint
from registry.formats.safetensors_index import TensorRange, read_index
from registry.store.files.statcache import StatCache
from registry.store.files.streams import (
    CHUNK,
    Ingested,
    Progress,
    copy_hashing,
    hash_bytes,
    hash_fd,
)

__all__ = ["CHUNK", "BlobStore", "Ingested", "digest_of_bytes", "hash_file"]

# A stamp is recorded this long after the blob's last change, longer than one tick of a
# fine-grained filesystem clock (jiffies: 1-10 ms), so any later write shows in its timestamps.
STAMP_SETTLE_NS = 20_000_000
# Dedup before writing compares these many bytes at three places of each blob of equal size.
SAMPLE, MAX_CANDIDATES = 64 << 10, 64
def digest_of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs named by ``sha256:<hex>`` below ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"
        self.stamps = StatCache(root / "stamps.json", tmp=self.tmp, racy_ns=STAMP_SETTLE_NS)
        self._stamping = threading.Lock()  # the shards of one push are stored on several threads

    def create(self) -> None:
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise StorageError(f"{digest!r} is not a sha256 digest")
        return self.root / "sha256" / hexd[:2] / hexd[2:]

    def has(self, digest: str, *, size: int | None = None) -> bool:
        """True if the blob is stored (and, given ``size``, has that many bytes: a cheap check)."""
        return _size(self.path(digest)) == size if size is not None else self.path(digest).is_file()

    def ingest(
        self,
        src: Path,
        *,
        tensors: Sequence[TensorRange] = (),
        progress: Progress | None = None,
    ) -> Ingested:
        """Store ``src`` (one read, one SHA-256 pass); return its digest and per-tensor digests.

        ``written`` is False when the blob was there already, intact, and nothing was written."""
        try:
            with open(src, "rb") as fin:
                return self._ingest_fd(fin.fileno(), tensors, progress)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(
                    f"no space left on device while storing {src} in {self.root}: "
                    "free some space and push again (nothing was recorded)"
                ) from None
            raise StorageError(f"cannot store {src}: {exc.strerror or exc}") from None

    def _ingest_fd(self, fd: int, tensors: Sequence[TensorRange], progress: Progress | None) -> Ingested:
        size = os.fstat(fd).st_size
        if size <= CHUNK:
            return self._ingest_small(fd, tensors, progress)
        if self._likely_stored(fd, size):  # hash before writing: maybe nothing to write
            # SHA-256 only: when the blob is there, its tensors were indexed when it was stored
            # (the caller reads them; ``tensor_digests`` stays empty). Hashing them again cost
            # a re-push of copied weights 1.3x a plain SHA-256 pass on a busy 2-core machine.
            got = hash_fd(fd, (), progress)
            if self._holds(got):
                return got
            progress = None  # every byte was reported once already
        return self._write(lambda out: copy_hashing(fd, out, tensors, progress))

    def _likely_stored(self, fd: int, size: int) -> bool:
        """True if a stamped blob has this size and the same bytes at a few sampled places.

        Size alone misleads: the shards of one model, or a fine-tune and its base, often have
        equal sizes, and each wrong guess costs a second read and hash."""
        candidates = self.stamps.paths_of_size(size)[:MAX_CANDIDATES]
        if not candidates:
            return False
        mine = _samples(fd, size)
        for path in candidates:
            try:
                with open(path, "rb") as blob:
                    if _samples(blob.fileno(), size) == mine:
                        return True
            except OSError:
                continue  # gone or unreadable: it cannot be reused anyway
        return False

    def _ingest_small(self, fd: int, tensors: Sequence[TensorRange], progress: Progress | None) -> Ingested:
        """A small file (a prompt): read whole, no threads, compared byte for byte if stored."""
        data = b"".join(iter(lambda: os.read(fd, CHUNK), b""))  # to EOF, even if it grew
        got = hash_bytes(data, tensors)
        if progress:
            progress(len(data))
        final = self.path(got.digest)
        if _size(final) == len(data) and _read(final) == data:
            return got
        return self._write(functools.partial(_write_returning, data, got))

    def _holds(self, got: Ingested) -> bool:
        """True if the blob ``got`` names is stored intact: by its stamp, else by hashing it."""
        final = self.path(got.digest)
        try:
            if _size(final) != got.size:
                return False
            if self.stamps.lookup(final) == got.digest:
                return True
            if hash_file(final).digest != got.digest:
                return False  # damaged: the caller stores the file again, repairing it
            self._stamp(final, os.stat(final), got.digest)
            return True
        except FileNotFoundError:
            return False

    def vouched(self, digest: str, size: int) -> bool:
        """True when the blob has ``size`` bytes and its stamp proves them unchanged since they
        were verified; False for a blob never stamped (small ones) or written since."""
        final = self.path(digest)
        return _size(final) == size and self.stamps.lookup(final) == digest

    def copy_in(self, src: Path, digest: str, size: int) -> None:
        """Store the blob ``src`` as ``digest``, an independent copy (the kernel copies, the copy
        is hashed as it lands, as ``ingest`` does); CorruptBlob, nothing stored, when its bytes
        are not ``size`` bytes hashing to ``digest``. How backup and restore move blobs."""

        def checked(got: Ingested) -> None:
            if (got.digest, got.size) != (digest, size):
                raise CorruptBlob(f"{src} is damaged: {got.size} bytes hashing to {got.digest}, "
                                  f"not {size} bytes of {digest}")

        with open(src, "rb") as fin:
            self._write(lambda out: copy_hashing(fin.fileno(), out, [], None), check=checked)

    def _write(self, fill: Callable[[int], Ingested], *, check: Callable[[Ingested], None] | None = None) -> Ingested:
        """Fill a new temp file, fsync it, rename it into place (over a damaged blob too)."""
        tmp = self.tmp / f"ingest-{os.getpid()}-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            got = fill(fd)
            if check is not None:
                check(got)
            crashpoint("blob:copied")
            os.fsync(fd)
            final = self.path(got.digest)
            # "written" counts bytes that were not there before, judged by the cheap size check;
            # a blob there already was damaged (it did not hold these bytes): it is replaced.
            got.replaced = final.exists()
            got.written = _size(final) != got.size
            _mkdir_durable(final.parent)
            os.fchmod(fd, 0o444)
            os.rename(tmp, final)
            fsync_dir(final.parent)
            if got.size > CHUNK:
                self._stamp(final, os.fstat(fd), got.digest)
            return got
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)

    def _stamp(self, final: Path, st: os.stat_result, digest: str) -> None:
        """Remember that ``final`` held verified bytes in the state ``st`` describes."""
        if st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0:
            return  # whole-second timestamps: a later write could leave them unchanged
        wait = max(st.st_mtime_ns, st.st_ctime_ns) + STAMP_SETTLE_NS - time.time_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        with self._stamping:
            self.stamps.record(final, st, digest)  # records nothing if final changed since st
            self.stamps.save()

    def rehash_tensors(self, digest: str) -> dict[str, str]:
        """Tensor name -> digest with the current algorithm, read from a stored safetensors
        blob: for a blob indexed by an older Cellar (``sha256:`` tensor digests)."""
        path = self.path(digest)
        try:
            return hash_file(path, read_index(path)).tensor_digests
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from {self.root}; restore it from a backup") from None

    def check(self, digest: str, *, trust_stamp: bool = False) -> None:
        """Raise CorruptBlob unless the blob exists and its bytes match its name.

        ``trust_stamp``: a blob whose stat key is still the one recorded when its bytes were
        last verified is not read again (any write since changes its mtime/ctime); otherwise it
        is re-hashed and, when intact, stamped. Bit rot below the filesystem keeps the stat key:
        ``registry verify`` re-reads every byte for that."""
        path = self.path(digest)
        if not path.is_file():
            raise NotFound(f"blob {digest} is missing from {self.root}; restore it from a backup")
        if trust_stamp and self.stamps.lookup(path) == digest:
            return
        before = os.stat(path)
        if _hash_file(path) != digest:
            raise CorruptBlob(f"blob {digest} is corrupt (its bytes no longer match its digest)")
        if trust_stamp and before.st_size > CHUNK:
            self._stamp(path, before, digest)

    def sweep_tmp(self) -> int:
        """Remove temp files left by processes that died mid-write; return how many."""
        removed = 0
        for path in self.tmp.glob("*-*-*"):  # <what>-<pid>-<token>: ingest-..., statcache-...
            pid = _pid_of(path.name)
            if pid is not None and process_alive(pid):
                continue
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def hash_file(path: Path, tensors: Sequence[TensorRange] = ()) -> Ingested:
    """Digest of a file (and its tensors) without storing it."""
    with open(path, "rb") as fin:
        return hash_fd(fin.fileno(), tensors, None)


def _samples(fd: int, size: int) -> list[bytes]:
    """The first, middle and last SAMPLE bytes of a file of ``size`` bytes."""
    last = max(size - SAMPLE, 0)
    return [os.pread(fd, SAMPLE, offset) for offset in (0, last // 2, last)]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_returning(data: bytes, got: Ingested, fd: int) -> Ingested:
    _write_all(fd, data)
    return got


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _mkdir_durable(path: Path) -> None:
    """Create a fan-out directory; fsync its parent so the new entry survives a crash."""
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)



def _pid_of(name: str) -> int | None:
    try:
        return int(name.split("-")[1])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs. A zombie does not: it was killed and
    holds nothing, only its parent has not reaped it yet (e.g. the warm process, for the few
    milliseconds after a ``kill -9`` of the ``registry`` that started the command)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
