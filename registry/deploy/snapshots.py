"""Snapshots: a version's files as a read-only folder, bind-mounted into its container at /model.

``<home>/snapshots/<manifest digest>/`` holds the weights at their relative paths and the
prompt templates under ``prompts/<name>``, hard-linked to the (read-only) blobs, so a snapshot
costs no space and no copy. It is built in a temporary folder and renamed into place, so a
snapshot folder that exists is complete; equal content shares one snapshot.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

from registry.errors import StorageError
from registry.hosts.files import version_files
from registry.store.files.blobs import BlobStore

READ_ONLY_DIR = 0o555


def path_for(root: Path, manifest_digest: str) -> Path:
    return root / manifest_digest.split(":", 1)[-1]


def materialise(root: Path, blobs: BlobStore, *, manifest_digest: str, record: dict) -> Path:
    """The snapshot folder of the version whose record is ``record``. An existing one is reused
    only when every file in it is a hard link to its (verified) blob and nothing else is there;
    otherwise it is rebuilt, so a file replaced or added in place is never served."""
    final = path_for(root, manifest_digest)
    if final.is_dir():
        if differs(final, blobs, record) is None:
            return final
        _discard(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for rel, digest in _files(record):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _link(blobs.path(digest), target)
        tmp.mkdir(exist_ok=True)
        _make_read_only(tmp)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another process materialised the same content first: use theirs.
    except OSError as exc:
        raise StorageError(f"cannot materialise the snapshot in {root}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            _unseal(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def differs(folder: Path, blobs: BlobStore, record: dict) -> str | None:
    """Why ``folder`` is not exactly the record's files, hard-linked to their blobs (the file
    that differs, named), or None. A snapshot on another filesystem holds copies: those are
    compared by content."""
    want = dict(_files(record))
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if rel not in want:
                return f"{rel} is in the snapshot but not in the version"
    for rel, digest in want.items():
        try:
            have, blob = os.lstat(folder / rel), os.stat(blobs.path(digest))
        except FileNotFoundError:
            return f"{rel} is missing from the snapshot"
        if (have.st_dev, have.st_ino) == (blob.st_dev, blob.st_ino):
            continue
        if not stat.S_ISREG(have.st_mode) or have.st_dev == blob.st_dev or have.st_size != blob.st_size:
            return f"{rel} is not the recorded blob {digest[:19]} (replaced in place)"
        if (folder / rel).read_bytes() != blobs.path(digest).read_bytes():  # a copy: compare
            return f"{rel} differs from the recorded blob {digest[:19]}"
    return None


def _discard(folder: Path) -> None:
    """Move a snapshot that is not what it should be out of the way, then remove it."""
    aside = folder.with_name(f".bad-{folder.name}-{secrets.token_hex(4)}")
    try:
        os.rename(folder, aside)
        _unseal(aside)
        shutil.rmtree(aside, ignore_errors=True)
    except OSError as exc:
        raise StorageError(f"cannot replace the damaged snapshot {folder}: {exc.strerror or exc}") from None


def _files(record: dict) -> list[tuple[str, str]]:
    return version_files(record)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(src, dst)  # another filesystem: a read-only copy instead
        os.chmod(dst, 0o444)


def _make_read_only(folder: Path) -> None:
    for dirpath, _dirs, _files in os.walk(folder, topdown=False):
        os.chmod(dirpath, READ_ONLY_DIR)


def _unseal(folder: Path) -> None:
    for dirpath, _dirs, _files in os.walk(folder):
        os.chmod(dirpath, 0o755)
