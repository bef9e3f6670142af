"""Moving bytes once: a file is read once, copied through the kernel, and hashed once with
SHA-256 (and, per tensor, with the current tensor digest) from the page cache.

The byte-moving half of the blob store (registry.store.files.blobs decides what to store where).
Measured on 2 cores (bench/push.py): the kernel copy (``copy_file_range``) costs what ``cp``
costs; hashing the copy through a read-only mapping of the new file adds no copy into a buffer.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from registry.formats import tensor_digests
from registry.formats.safetensors_index import TensorRange

CHUNK = 8 << 20
# Start writeback every 64 MiB so dirty pages never pile up into one long fsync at the end.
WRITEBACK_EVERY = 64 << 20
_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE = 1, 2
# copy_file_range cannot copy between these two files: fall back to sendfile, then pread/pwrite.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}

Progress = Callable[[int], None]


@dataclass
class Ingested:
    digest: str
    size: int
    tensor_digests: dict[str, str] = field(default_factory=dict)
    written: bool = False
    replaced: bool = False  # a stored blob of this name did not hold these bytes and was replaced


@functools.cache  # looked up on the first large write, not at import (CLI start-up)
def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


def hash_bytes(data: bytes, tensors: Sequence[TensorRange]) -> Ingested:
    hashes = Hashes(tensors, threaded=False)
    hashes.feed(0, memoryview(data))
    return hashes.result()


def hash_fd(fd: int, tensors: Sequence[TensorRange], progress: Progress | None) -> Ingested:
    """One read of ``fd`` from its start, hashed; the kernel reads ahead while we hash."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    hashes = Hashes(tensors, threaded=os.fstat(fd).st_size > CHUNK)
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


def copy_hashing(src_fd: int, dst_fd: int, tensors: Sequence[TensorRange], progress: Progress | None) -> Ingested:
    """Copy src into dst through the kernel (a thread runs ahead), hashing each chunk as it
    lands in dst's page cache: the digest is of the bytes stored, read from memory, not disk."""
    os.posix_fadvise(src_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    hashes = Hashes(tensors, threaded=True)
    writeback = Writeback(dst_fd)
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


class Hashes:
    """SHA-256 of the whole stream and the current tensor digest of each tensor's range; the
    tensors are hashed on a second thread (both hashes release the GIL on large buffers)."""

    def __init__(self, tensors: Sequence[TensorRange], *, threaded: bool):
        self.whole, self.size = hashlib.sha256(), 0
        self.split = _TensorHasher(tensors) if tensors else None
        self._helper = _Helper() if self.split and threaded else None

    def feed(self, offset: int, view: memoryview) -> None:
        """Hash ``view``; returns once both hashes are done with it (the buffer is reused)."""
        if self._helper and self.split:
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


class Writeback:
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

    def __init__(self, tensors: Sequence[TensorRange]):
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
