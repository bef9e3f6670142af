"""The content-addressed blob store: ``<home>/blobs/sha256/<2 hex>/<62 hex>``.

A blob is written to a temp file on the same filesystem, hashed while it is copied (one
read of the source), flushed, checked against the digest, renamed into place and made
read-only. A final path therefore only ever holds complete, verified bytes; a crash leaves
at most a temp file, which the next command removes.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from registry.faults import crashpoint
from registry.errors import CorruptBlob, NoSpace, NotFound, StorageError
from registry.safetensors_index import TensorRange

CHUNK = 8 << 20
# Start writeback every 64 MiB so dirty pages never pile up into one long fsync at the end.
WRITEBACK_EVERY = 64 << 20
_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE = 1, 2

Progress = Callable[[int], None]


@dataclass
class Ingested:
    digest: str
    size: int
    tensor_digests: dict[str, str] = field(default_factory=dict)
    written: bool = False


@functools.cache  # looked up on the first large write, not at import (CLI start-up)
def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


def digest_of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs named by ``sha256:<hex>`` below ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"

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
        tensors: list[TensorRange] = (),
        progress: Progress | None = None,
    ) -> Ingested:
        """Copy ``src`` into the store in one pass; return its digest (and per-tensor digests)."""
        tmp = self.tmp / f"ingest-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            with open(src, "rb") as fin, _create_exclusive(tmp) as fout:
                got = _copy_hashing(fin.fileno(), fout.fileno(), tensors, progress)
                crashpoint("blob:copied")
                os.fsync(fout.fileno())
            final = self.path(got.digest)
            # Never trust a blob already at the final path: it may be truncated or damaged.
            # The verified copy is written and fsynced already, so renaming it over the old one
            # costs no extra read (re-hashing a large old blob would) and repairs any damage.
            # "written" counts bytes that were not there before, judged by the cheap size check.
            got.written = _size(final) != got.size
            final.parent.mkdir(exist_ok=True)
            os.chmod(tmp, 0o444)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
            return got
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(
                    f"no space left on device while storing {src} in {self.root}: "
                    "free some space and push again (nothing was recorded)"
                ) from None
            raise StorageError(f"cannot store {src}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def verify(self, digest: str) -> None:
        """Raise CorruptBlob unless the blob exists and its bytes match its name."""
        path = self.path(digest)
        if not path.is_file():
            raise NotFound(f"blob {digest} is missing from {self.root}; restore it from a backup")
        if _hash_file(path) != digest:
            raise CorruptBlob(f"blob {digest} is corrupt (its bytes no longer match its digest)")

    def sweep_tmp(self) -> int:
        """Remove temp files left by processes that died mid-write; return how many."""
        removed = 0
        for path in self.tmp.glob("*-*-*"):  # <what>-<pid>-<token>: ingest-..., statcache-...
            pid = _pid_of(path.name)
            if pid is not None and _alive(pid):
                continue
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _create_exclusive(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb", buffering=0)


def _copy_hashing(
    src_fd: int, dst_fd: int, tensors: list[TensorRange], progress: Progress | None
) -> Ingested:
    """Read src once and hash it here; a reader thread keeps the disk busy meanwhile, a writer
    thread writes, another hashes tensors. Files of one chunk or less are copied inline."""
    if os.fstat(src_fd).st_size <= CHUNK:
        return _copy_inline(src_fd, dst_fd, tensors, progress)
    os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    splitter = _TensorHasher(tensors) if tensors else None
    stages = [_Stage(_Writer(dst_fd).feed)] + ([_Stage(splitter.feed)] if splitter else [])
    reader = _Reader(src_fd)
    whole, size = hashlib.sha256(), 0
    try:
        for buf in reader:
            for stage in stages:
                stage.put(size, buf)
            whole.update(buf)
            size += len(buf)
            if progress:
                progress(len(buf))
    finally:
        reader.close()
        errors = [stage.close() for stage in stages]
    if error := next(filter(None, errors), None):
        raise error
    return Ingested(digest="sha256:" + whole.hexdigest(), size=size,
                    tensor_digests=splitter.digests() if splitter else {})


def _copy_inline(src_fd: int, dst_fd: int, tensors: list[TensorRange], progress: Progress | None) -> Ingested:
    """A small file (a prompt): no threads, whose start-up would cost more than the copy."""
    data = b"".join(iter(lambda: os.read(src_fd, CHUNK), b""))  # to EOF, even if it grew
    view = memoryview(data)
    while view:
        view = view[os.write(dst_fd, view) :]
    splitter = _TensorHasher(tensors) if tensors else None
    if splitter:
        splitter.feed(0, data)
    if progress:
        progress(len(data))
    return Ingested(digest=digest_of_bytes(data), size=len(data),
                    tensor_digests=splitter.digests() if splitter else {})


class _Reader:
    """Reads chunks ahead in a thread, so the disk works while the caller hashes."""

    def __init__(self, fd: int, depth: int = 4):
        self._fd, self._stop = fd, False
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop and (buf := os.read(self._fd, CHUNK)):
                self._queue.put(buf)
            self._queue.put(None)
        except BaseException as exc:  # handed to the consumer
            self._queue.put(exc)

    def __iter__(self):
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop reading (early on an error) and wait for the thread."""
        self._stop = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblock a put on a full queue
            except queue.Empty:
                pass
        self._thread.join()


class _Stage:
    """One consumer thread fed (offset, bytes) in order; its error surfaces in put/close."""

    def __init__(self, fn: Callable[[int, bytes], None]):
        self._fn, self._error = fn, None
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fn(*item)
                except BaseException as exc:  # handed to the producer in close()
                    self._error = exc

    def put(self, offset: int, buf: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((offset, buf))

    def close(self) -> BaseException | None:
        """Finish the thread; return the error it met, if any."""
        self._queue.put(None)
        self._thread.join()
        return self._error


class _Writer:
    def __init__(self, fd: int):
        self.fd, self.flushed, self.previous = fd, 0, 0
        self.sync_range = _libc_sync_file_range()

    def feed(self, offset: int, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            view = view[os.write(self.fd, view) :]
        end = offset + len(buf)
        if self.sync_range and end - self.flushed >= WRITEBACK_EVERY:
            # Start writing this range; wait for the one before, so the final fsync is short
            # and the page cache holds at most two ranges of dirty pages.
            self.sync_range(self.fd, self.flushed, end - self.flushed, _SYNC_FILE_RANGE_WRITE)
            if self.flushed:
                self.sync_range(self.fd, self.previous, self.flushed - self.previous,
                                _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE)
                # That range is on disk: drop its clean pages now rather than make the kernel
                # reclaim them under pressure (2 GiB push: 2.4 s -> 0.8 s of system time).
                os.posix_fadvise(self.fd, self.previous, self.flushed - self.previous, os.POSIX_FADV_DONTNEED)
            self.previous, self.flushed = self.flushed, end


class _TensorHasher:
    """Hashes each tensor's byte range as the file streams past."""

    def __init__(self, tensors: list[TensorRange]):
        self.tensors = sorted(tensors, key=lambda t: t.begin)
        self.hashers = [hashlib.sha256() for _ in self.tensors]
        self.next = 0

    def feed(self, offset: int, buf: bytes) -> None:
        end = offset + len(buf)
        view = memoryview(buf)
        i = self.next
        while i < len(self.tensors) and self.tensors[i].begin < end:
            t = self.tensors[i]
            lo, hi = max(t.begin, offset), min(t.end, end)
            if lo < hi:
                self.hashers[i].update(view[lo - offset : hi - offset])
            if t.end <= end:
                i += 1
                self.next = i
            else:
                break

    def digests(self) -> dict[str, str]:
        return {t.name: "sha256:" + h.hexdigest() for t, h in zip(self.tensors, self.hashers)}


def hash_file(path: Path, tensors: list[TensorRange] = ()) -> Ingested:
    """Digest of a file (and its tensors) without storing it."""
    with open(path, "rb") as fin:
        whole, size = hashlib.sha256(), 0
        splitter = _TensorHasher(tensors) if tensors else None
        while buf := fin.read(CHUNK):
            whole.update(buf)
            if splitter:
                splitter.feed(size, buf)
            size += len(buf)
    return Ingested(
        digest="sha256:" + whole.hexdigest(),
        size=size,
        tensor_digests=splitter.digests() if splitter else {},
    )


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_of(name: str) -> int | None:
    try:
        return int(name.split("-")[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
