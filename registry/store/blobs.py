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

import contextlib
import errno
import functools
import hashlib
import mmap
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from registry import tensor_digests
from registry.errors import CorruptBlob, NoSpace, NotFound, StorageError
from registry.faults import crashpoint
from registry.safetensors_index import TensorRange, read_index
from registry.store.statcache import StatCache

CHUNK = 8 << 20
# Start writeback every 64 MiB so dirty pages never pile up into one long fsync at the end.
WRITEBACK_EVERY = 64 << 20
_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE = 1, 2
# A stamp is recorded this long after the blob's last change, longer than one tick of a
# fine-grained filesystem clock (jiffies: 1-10 ms), so any later write shows in its timestamps.
STAMP_SETTLE_NS = 20_000_000
# copy_file_range cannot copy between these two files: fall back to sendfile, then pread/pwrite.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}

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
        tensors: list[TensorRange] = (),
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

    def _ingest_fd(self, fd: int, tensors: list[TensorRange], progress: Progress | None) -> Ingested:
        size = os.fstat(fd).st_size
        if size <= CHUNK:
            return self._ingest_small(fd, tensors, progress)
        if self.stamps.has_size(size):  # likely a copy of a stored blob: hash before writing
            got = _hash_fd(fd, tensors, progress)
            if self._holds(got):
                return got
            progress = None  # every byte was reported once already
        return self._write(lambda out: _copy_hashing(fd, out, tensors, progress))

    def _ingest_small(self, fd: int, tensors: list[TensorRange], progress: Progress | None) -> Ingested:
        """A small file (a prompt): read whole, no threads, compared byte for byte if stored."""
        data = b"".join(iter(lambda: os.read(fd, CHUNK), b""))  # to EOF, even if it grew
        got = _hash_bytes(data, tensors)
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

    def _write(self, fill: Callable[[int], Ingested]) -> Ingested:
        """Fill a new temp file, fsync it, rename it into place (over a damaged blob too)."""
        tmp = self.tmp / f"ingest-{os.getpid()}-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            got = fill(fd)
            crashpoint("blob:copied")
            os.fsync(fd)
            final = self.path(got.digest)
            # "written" counts bytes that were not there before, judged by the cheap size check.
            got.written = _size(final) != got.size
            _mkdir_durable(final.parent)
            os.fchmod(fd, 0o444)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
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


def hash_file(path: Path, tensors: list[TensorRange] = ()) -> Ingested:
    """Digest of a file (and its tensors) without storing it."""
    with open(path, "rb") as fin:
        return _hash_fd(fin.fileno(), tensors, None)


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


def _hash_bytes(data: bytes, tensors: list[TensorRange]) -> Ingested:
    hashes = _Hashes(tensors, threaded=False)
    hashes.feed(0, memoryview(data))
    return hashes.result()


def _hash_fd(fd: int, tensors: list[TensorRange], progress: Progress | None) -> Ingested:
    """One read of ``fd`` from its start, hashed; the kernel reads ahead while we hash."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    hashes = _Hashes(tensors, threaded=os.fstat(fd).st_size > CHUNK)
    buf = bytearray(CHUNK)
    offset = 0
    try:
        while True:
            os.posix_fadvise(fd, offset + CHUNK, 2 * CHUNK, os.POSIX_FADV_WILLNEED)
            view = _pread_full(fd, buf, offset)
            if not view:
                break
            hashes.feed(offset, view)
            offset += len(view)
            if progress:
                progress(len(view))
    finally:
        hashes.close()
    return hashes.result()


def _copy_hashing(src_fd: int, dst_fd: int, tensors: list[TensorRange], progress: Progress | None) -> Ingested:
    """Copy src into dst through the kernel (a thread runs ahead), hashing each chunk as it
    lands in dst's page cache: the digest is of the bytes stored, read from memory, not disk."""
    os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    hashes = _Hashes(tensors, threaded=True)
    writeback = _Writeback(dst_fd)
    copier = _KernelCopier(src_fd, dst_fd)
    try:
        for offset, n in copier:
            with _mapped(dst_fd, offset, n) as view:  # the page cache itself: no copy to a buffer
                hashes.feed(offset, view)
            writeback.written(offset + n)
            if progress:
                progress(n)
    finally:
        copier.close()
        hashes.close()
    return hashes.result()


@contextlib.contextmanager
def _mapped(fd: int, offset: int, length: int) -> Iterator[memoryview]:
    """``length`` bytes of ``fd`` at ``offset``, mapped read-only for the time of the block."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(fd, length + offset - start, prot=mmap.PROT_READ, offset=start) as mapped:
        view = memoryview(mapped)[offset - start :]
        try:
            yield view
        finally:
            view.release()


def _pread_full(fd: int, buf: bytearray, offset: int, want: int | None = None) -> memoryview:
    """Up to ``want`` (default: the buffer's size) bytes at ``offset``; fewer only at EOF."""
    view = memoryview(buf)[: want or len(buf)]
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return view[:got]


class _Hashes:
    """SHA-256 of the whole stream and the current tensor digest of each tensor's range; the
    tensors are hashed on a second thread (both hashes release the GIL on large buffers)."""

    def __init__(self, tensors: list[TensorRange], *, threaded: bool):
        self.whole, self.size = hashlib.sha256(), 0
        self.split = _TensorHasher(tensors) if tensors else None
        self._helper = _Helper() if self.split and threaded else None

    def feed(self, offset: int, view: memoryview) -> None:
        """Hash ``view``; returns once both hashes are done with it (the buffer is reused)."""
        if self._helper:
            self._helper.start(self.split.feed, offset, view)
        elif self.split:
            self.split.feed(offset, view)
        self.whole.update(view)
        self.size += len(view)
        if self._helper:
            self._helper.wait()

    def close(self) -> None:
        if self._helper:
            self._helper.close()

    def result(self) -> Ingested:
        return Ingested(digest="sha256:" + self.whole.hexdigest(), size=self.size,
                        tensor_digests=self.split.digests() if self.split else {})


class _Helper:
    """One worker thread that runs one call at a time; its error surfaces in wait()."""

    def __init__(self):
        self._todo: queue.Queue = queue.Queue(maxsize=1)
        self._done: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            fn, args = item
            del item  # hold no reference to the caller's buffer once done: it may be unmapped
            try:
                fn(*args)
                done = None
            except BaseException as exc:  # handed to the caller in wait()
                done = exc
            del fn, args
            self._done.put(done)

    def start(self, fn: Callable, *args) -> None:
        self._todo.put((fn, args))

    def wait(self) -> None:
        if (exc := self._done.get()) is not None:
            raise exc

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join()


class _KernelCopier:
    """Copies src to dst chunk by chunk in a thread, yielding each (offset, length) copied;
    at most ``depth`` chunks ahead of the consumer, so unhashed dirty pages stay bounded."""

    def __init__(self, src_fd: int, dst_fd: int, depth: int = 4):
        self._src, self._dst, self._stop = src_fd, dst_fd, False
        self._copy = self._copy_file_range
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            offset = 0
            while not self._stop and (n := self._copy(offset)):
                self._queue.put((offset, n))
                offset += n
            self._queue.put(None)
        except BaseException as exc:  # handed to the consumer
            self._queue.put(exc)

    def _copy_file_range(self, offset: int) -> int:
        try:
            return os.copy_file_range(self._src, self._dst, CHUNK, offset, offset)
        except OSError as exc:
            if offset or exc.errno not in _NO_KERNEL_COPY:
                raise
            self._copy = self._sendfile  # e.g. across filesystems on this kernel
            return self._copy(offset)

    def _sendfile(self, offset: int) -> int:
        try:
            return _sendfile_all(self._dst, self._src, offset)
        except OSError as exc:
            if offset or exc.errno not in _NO_KERNEL_COPY:
                raise
            self._copy = self._pread_pwrite
            return self._copy(offset)

    def _pread_pwrite(self, offset: int) -> int:
        data = os.pread(self._src, CHUNK, offset)
        view = memoryview(data)
        while view:
            view = view[os.pwrite(self._dst, view, offset + len(data) - len(view)) :]
        return len(data)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop copying (early on an error) and wait for the thread."""
        self._stop = True
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblock a put on a full queue
            except queue.Empty:
                pass
        self._thread.join()


def _sendfile_all(dst_fd: int, src_fd: int, offset: int) -> int:
    """Up to one chunk from ``offset`` of src, written at dst's offset (kept equal to it)."""
    done = 0
    while done < CHUNK:
        n = os.sendfile(dst_fd, src_fd, offset + done, CHUNK - done)
        if n == 0:
            break
        done += n
    return done


class _Writeback:
    """Keeps dirty pages of the new blob bounded while it is written (see WRITEBACK_EVERY)."""

    def __init__(self, fd: int):
        self.fd, self.flushed, self.previous = fd, 0, 0
        self.sync_range = _libc_sync_file_range()

    def written(self, end: int) -> None:
        """Bytes up to ``end`` are written and hashed."""
        if not self.sync_range or end - self.flushed < WRITEBACK_EVERY:
            return
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
        self.hashers = [tensor_digests.new() for _ in self.tensors]
        self.next = 0

    def feed(self, offset: int, buf: memoryview) -> None:
        end = offset + len(buf)
        i = self.next
        while i < len(self.tensors) and self.tensors[i].begin < end:
            t = self.tensors[i]
            lo, hi = max(t.begin, offset), min(t.end, end)
            if lo < hi:
                self.hashers[i].update(buf[lo - offset : hi - offset])
            if t.end <= end:
                i += 1
                self.next = i
            else:
                break

    def digests(self) -> dict[str, str]:
        return {t.name: tensor_digests.finish(h) for t, h in zip(self.tensors, self.hashers)}


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _mkdir_durable(path: Path) -> None:
    """Create a fan-out directory; fsync its parent so the new entry survives a crash."""
    try:
        path.mkdir()
    except FileExistsError:
        return
    _fsync_dir(path.parent)


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
