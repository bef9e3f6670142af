"""Scanning the blob store: re-hash every blob on both cores, list what is stored and what is stale.

sha256 cannot be split within one blob, so the parallelism is across blobs: a pool of
threads (one per core) each hashes whole blobs, largest first so the last one to finish is
short. hashlib releases the GIL while it hashes a buffer larger than 2 KiB, and ``readinto``
a reused 4 MiB buffer releases it while it reads, so two threads use two cores
(bench/verify.py measures it).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from registry.models.upkeep import ProblemKind, StorageProblem
from registry.store.files.blobs import BlobStore, _pid_of, process_alive

CHUNK = 4 << 20
HEX = frozenset("0123456789abcdef")

Progress = Callable[[int], None]  # bytes hashed since the last call


@dataclass(frozen=True)
class StoredBlob:
    """A file found below ``<blobs>/sha256``."""

    digest: str
    size: int
    mtime: float
    path: Path


@dataclass(frozen=True)
class TempFile:
    path: Path
    size: int
    mtime: float
    owner_alive: bool  # the process named in the file name still runs: never touch it


@dataclass
class ScanResult:
    problems: list[StorageProblem]
    blobs_checked: int
    bytes_hashed: int


def list_blobs(blobs: BlobStore) -> tuple[list[StoredBlob], list[Path]]:
    """Every blob file in the store, and the stray files whose names are not digests."""
    found: list[StoredBlob] = []
    stray: list[Path] = []
    top = blobs.root / "sha256"
    for sub in _scandir(top):
        if not (sub.is_dir(follow_symlinks=False) and len(sub.name) == 2 and set(sub.name) <= HEX):
            stray.append(Path(sub.path))
            continue
        for entry in _scandir(Path(sub.path)):
            hexd = sub.name + entry.name
            if len(hexd) != 64 or not set(entry.name) <= HEX or not entry.is_file(follow_symlinks=False):
                stray.append(Path(entry.path))
                continue
            st = entry.stat(follow_symlinks=False)
            found.append(StoredBlob("sha256:" + hexd, st.st_size, st.st_mtime, Path(entry.path)))
    return found, stray


def list_temp_files(blobs: BlobStore) -> list[TempFile]:
    """Files in the blob store's temp folder (``<what>-<pid>-<token>``, see BlobStore.sweep_tmp),
    each marked with whether its writer still runs."""
    out = []
    for entry in _scandir(blobs.tmp):
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # its writer renamed it into place just now
            continue
        pid = _pid_of(entry.name)
        out.append(TempFile(Path(entry.path), st.st_size, st.st_mtime, pid is not None and process_alive(pid)))
    return out


def scan(
    blobs: BlobStore,
    *,
    recorded: Mapping[str, int],
    referenced: Iterable[str] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ScanResult:
    """Re-hash every blob; report corrupt, truncated, missing, unreferenced and stray files.

    ``recorded`` maps each digest the database knows to its recorded size; ``referenced`` is
    the digests some version uses (default: all recorded ones). A blob whose size is wrong is
    reported as truncated without reading it. Unreferenced blobs are listed, not hashed.
    """
    stored, stray = list_blobs(blobs)
    on_disk = {b.digest: b for b in stored}
    refs = set(recorded) if referenced is None else set(referenced)
    problems = [StorageProblem(kind=ProblemKind.STRAY, path=str(p)) for p in stray]
    problems += [StorageProblem(kind=ProblemKind.MISSING, digest=d, expected_size=recorded.get(d))
                 for d in sorted(refs) if d not in on_disk]
    to_hash = []
    for digest, blob in sorted(on_disk.items()):
        if digest not in refs:
            problems.append(StorageProblem(kind=ProblemKind.UNREFERENCED, digest=digest, path=str(blob.path),
                                    actual_size=blob.size))
        elif (want := recorded.get(digest)) is not None and want != blob.size:
            problems.append(StorageProblem(kind=ProblemKind.TRUNCATED, digest=digest, path=str(blob.path),
                                    expected_size=want, actual_size=blob.size))
        else:
            to_hash.append(blob)
    bad, hashed = hash_all(to_hash, progress=progress, workers=workers)
    return ScanResult(problems=_sorted(problems + bad), blobs_checked=len(to_hash), bytes_hashed=hashed)


def hash_all(
    blobs: list[StoredBlob], *, progress: Progress | None = None, workers: int | None = None
) -> tuple[list[StorageProblem], int]:
    """Hash ``blobs`` on ``workers`` threads (default: one per core); return the problems and
    the bytes hashed."""
    lock = threading.Lock()

    def tick(n: int) -> None:
        if progress:
            with lock:  # one caller at a time: a rich progress bar is not written for threads
                progress(n)

    ordered = sorted(blobs, key=lambda b: b.size, reverse=True)  # largest first: balanced ends
    n = max(1, min(workers or os.cpu_count() or 1, len(ordered) or 1))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="cellar-verify") as pool:
        results = list(pool.map(lambda b: _check_one(b, tick), ordered))
    problems = [p for p, _ in results if p is not None]
    return problems, sum(size for _, size in results)


def _check_one(blob: StoredBlob, tick: Progress) -> tuple[StorageProblem | None, int]:
    try:
        digest, size = hash_path(blob.path, tick)
    except FileNotFoundError:  # removed since the listing (gc)
        return StorageProblem(kind=ProblemKind.MISSING, digest=blob.digest, expected_size=blob.size), 0
    except OSError as exc:
        return StorageProblem(kind=ProblemKind.UNREADABLE, digest=blob.digest, path=str(blob.path),
                       detail=exc.strerror or str(exc)), 0
    if size != blob.size:
        return StorageProblem(kind=ProblemKind.TRUNCATED, digest=blob.digest, path=str(blob.path),
                       expected_size=blob.size, actual_size=size), size
    if digest != blob.digest:
        return StorageProblem(kind=ProblemKind.CORRUPT, digest=blob.digest, path=str(blob.path),
                       actual_size=size, detail=f"its bytes hash to {digest}"), size
    return None, size


def hash_path(path: Path, tick: Progress | None = None, *, chunk: int = CHUNK) -> tuple[str, int]:
    """(``sha256:<hex>``, size) of a file, read into one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
            if tick:
                tick(n)
    return "sha256:" + h.hexdigest(), size


def name_versions(problems: list[StorageProblem], users: Mapping[str, list[str]]) -> list[StorageProblem]:
    """The problems with ``versions`` filled from ``users`` (digest -> model@version refs)."""
    return [p.model_copy(update={"versions": sorted(users.get(p.digest, []))}) if p.digest else p
            for p in problems]


def _sorted(problems: list[StorageProblem]) -> list[StorageProblem]:
    return sorted(problems, key=lambda p: (p.kind.value, p.digest or "", p.path or ""))


def _scandir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def check_snapshot(folder: Path, record: dict, blobs: BlobStore) -> list[StorageProblem]:
    """Problems of one materialised snapshot against its version's canonical ``record``: a file
    missing, extra, or with other bytes. A hard link to the blob is checked by the blob scan."""
    want = {w["path"]: w["digest"] for w in record.get("weights", [])}
    want |= {f"prompts/{p['name']}": p["digest"] for p in record.get("prompts", [])}
    problems = []
    for rel, digest in sorted(want.items()):
        if detail := _snapshot_file_problem(folder / rel, digest, blobs):
            problems.append(StorageProblem(kind=ProblemKind.SNAPSHOT, digest=digest, path=str(folder / rel),
                                           detail=detail))
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel not in want:
                problems.append(StorageProblem(kind=ProblemKind.SNAPSHOT, path=os.path.join(dirpath, name),
                                        detail="a file the version does not have"))
    return problems


def _snapshot_file_problem(path: Path, digest: str, blobs: BlobStore) -> str | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing from the snapshot"
    if not os.path.isfile(path) or os.path.islink(path):
        return "not a regular file"
    try:
        blob = os.stat(blobs.path(digest))
        if (st.st_dev, st.st_ino) == (blob.st_dev, blob.st_ino):
            return None  # the blob itself: verified by the blob scan
    except FileNotFoundError:
        pass
    got, _ = hash_path(path)
    return None if got == digest else f"its bytes hash to {got}"
