"""Export and import: one version (and optionally its container image) as one tar file.

Layout, in this order::

    index.json                 format, model@version, manifest digest, canonical record,
                               changelog entry, provenance, and every other member's
                               name, size and sha256
    blobs/sha256/<hex>         each blob the record pins, named by its digest
    image.tar                  optional: ``docker save`` of the pinned image

Reading trusts nothing in the file. Every header is checked before one byte is extracted:
regular files only (no link, device, fifo or sparse member), names exactly the ones the index
declares, each at most once and exactly the declared size, and no more members than declared,
so a tar of 100,000 members is refused at the first surplus header. Then the members are
copied into temp files on the blob store's filesystem, hashed while copied, and compared with
the index. Nothing is recorded here: the caller records the verified ``ImportBundle``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.durable import fsync_dir
from registry.errors import CorruptBlob, InvalidInput, StorageError
from registry.formats import canonical
from registry.formats.safetensors_index import (
    MAX_HEADER,
    SafetensorsError,
    TensorRange,
    is_safetensors,
    parse_header,
)
from registry.models import Name, VersionStr
from registry.store.files.scan import hash_path
from registry.store.files.streams import Hashes, Writeback

FORMAT: Final = "cellar-export"
FORMAT_VERSION: Final = 1
INDEX = "index.json"
IMAGE = "image.tar"
BLOB_RE = re.compile(r"blobs/sha256/([0-9a-f]{64})")
ALLOWED_DIRS = frozenset({"blobs", "blobs/sha256"})
MAX_MEMBERS = 10_000       # a version has a few dozen files; a tar of more is not ours
MAX_INDEX_BYTES = 16 << 20
CHUNK = 4 << 20
RECORD = 10240             # tar's record size: what `tar` itself pads the file to

Progress = Callable[[int], None]


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    size: int = Field(ge=0)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class ArchiveIndex(BaseModel):
    """``index.json``: what the archive holds and what it claims about it."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["cellar-export"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    model: Name
    version: VersionStr
    manifest_digest: str
    record: dict[str, Any]
    changelog: dict[str, Any] = Field(default_factory=dict)  # message, actor, created_at
    provenance: dict[str, Any] | None = None
    members: list[Member] = Field(default_factory=list, max_length=MAX_MEMBERS)
    image: str | None = None  # the member name of the saved image, if any


@dataclass
class ExportSource:
    """What the caller (Registry.export) gathers from the database and the blob store."""

    model: str
    version: str
    manifest_digest: str
    record: dict
    changelog: dict
    provenance: dict | None
    blob_paths: dict[str, Path]          # digest -> stored blob file
    image: Path | None = None            # an image tar already spooled (see ``spool``)
    image_digest: str | None = None      # its digest, as spool() returned it (else hashed here)


@dataclass
class ImportBundle:
    """A verified archive: temp files whose bytes match the index, ready to be recorded."""

    index: ArchiveIndex
    blobs: dict[str, Path] = field(default_factory=dict)  # digest -> verified temp file
    image: Path | None = None
    bytes_verified: int = 0
    # safetensors blob digest -> (its tensors, their digests), hashed in the same pass as the blob
    tensors: dict[str, tuple[list[TensorRange], dict[str, str]]] = field(default_factory=dict)

    def install_blobs(self, store) -> tuple[int, int]:
        """Rename the verified blobs into ``store`` (a BlobStore on the same filesystem);
        return (blobs, bytes) installed."""
        count = size = 0
        for digest, tmp in sorted(self.blobs.items()):
            final = store.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            size += tmp.stat().st_size
            os.rename(tmp, final)
            fsync_dir(final.parent)
            count += 1
        self.blobs.clear()
        return count, size

    def cleanup(self) -> None:
        """Remove the temp files left (all of them when nothing was installed)."""
        for tmp in [*self.blobs.values(), *([self.image] if self.image else [])]:
            tmp.unlink(missing_ok=True)
        self.blobs.clear()
        self.image = None


# --- writing ------------------------------------------------------------------------------


def write_archive(out: Path, src: ExportSource, *, progress: Progress | None = None) -> ArchiveIndex:
    """Write ``src`` to ``out`` (through a temp file renamed at the end); every blob is hashed
    while copied and a mismatch (a corrupt blob) raises CorruptBlob, leaving no file behind."""
    members = [_member(f"blobs/sha256/{d.split(':', 1)[1]}", p, d) for d, p in sorted(src.blob_paths.items())]
    if src.image is not None:
        members.append(_member(IMAGE, src.image, src.image_digest))
    index = ArchiveIndex(model=src.model, version=src.version, manifest_digest=src.manifest_digest,
                         record=src.record, changelog=src.changelog, provenance=src.provenance,
                         members=members, image=IMAGE if src.image is not None else None)
    paths = {f"blobs/sha256/{d.split(':', 1)[1]}": p for d, p in src.blob_paths.items()}
    if src.image is not None:
        paths[IMAGE] = src.image
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "wb") as f:  # buffered: a raw write may be short
            _write_member(f, INDEX, json.dumps(index.model_dump(mode="json"), indent=1).encode())
            for m in members:
                _copy_member(f, m, paths[m.name], progress)
            _finish(f)
            os.fsync(f.fileno())
        os.rename(tmp, out)
    except OSError as exc:
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return index


def _member(name: str, path: Path, digest: str | None) -> Member:
    # A blob's name is its digest (checked while copying); the image's comes from spool().
    if digest is None:
        digest = hash_path(path)[0]
    return Member(name=name, size=path.stat().st_size, digest=digest)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o444, 0  # mtime 0: the same version, the same bytes
    return info.tobuf(format=tarfile.PAX_FORMAT)  # PAX: sizes over 8 GiB (an image) are fine


def _write_member(f, name: str, data: bytes) -> None:
    f.write(_header(name, len(data)))
    f.write(data)
    f.write(b"\0" * (-len(data) % 512))


def _copy_member(f, m: Member, path: Path, progress: Progress | None) -> None:
    f.write(_header(m.name, m.size))
    h, size = hashlib.sha256(), 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as src:
        while size < m.size and (n := src.readinto(buf)):
            n = min(n, m.size - size)
            h.update(view[:n])
            f.write(view[:n])
            size += n
            if progress:
                progress(n)
    if size != m.size or "sha256:" + h.hexdigest() != m.digest:
        raise CorruptBlob(f"{m.name} changed or is corrupt (its bytes no longer match {m.digest}): "
                          "run `registry verify`; nothing was exported")
    f.write(b"\0" * (-size % 512))


def _finish(f) -> None:
    end = f.tell() + 1024
    f.write(b"\0" * (1024 + (-end % RECORD)))


def spool(chunks: Iterable[bytes], tmp_dir: Path) -> tuple[Path, int, str]:
    """Write a stream (docker-py's ``image.save()``) to a temp file; return (path, size, digest).
    The tar header needs the size up front, so the image is spooled before the archive starts."""
    path = tmp_dir / f"export-{os.getpid()}-{secrets.token_hex(6)}"
    h, size = hashlib.sha256(), 0
    with open(path, "xb") as f:
        for chunk in chunks:
            h.update(chunk)
            f.write(chunk)
            size += len(chunk)
    return path, size, "sha256:" + h.hexdigest()


# --- reading ------------------------------------------------------------------------------


def read_archive(
    path: Path,
    *,
    tmp_dir: Path,
    have: Callable[[str, int], bool] | None = None,
    progress: Progress | None = None,
) -> ImportBundle:
    """Check every member of ``path``, then copy and verify its blobs into temp files in
    ``tmp_dir`` (the blob store's temp folder). ``have(digest, size)``: blobs already stored,
    not extracted. Raises InvalidInput (hostile or damaged archive) with ``tmp_dir`` untouched."""
    try:
        f = open(path, "rb", buffering=0)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        index, members = check_archive(f, path)
        return _extract(f, index, members, tmp_dir=tmp_dir, have=have, progress=progress)


def check_archive(f, path: Path) -> tuple[ArchiveIndex, dict[str, tarfile.TarInfo]]:
    """The index and the member headers by name, once every header passed the rules."""
    file_size = os.fstat(f.fileno()).st_size
    try:
        tar = tarfile.open(fileobj=f, mode="r:")
        first = tar.next()
        if first is None or first.name != INDEX:
            raise _refuse(path, "its first member is not index.json: this is not a Cellar export")
        _check_header(path, first, file_size)
        if first.size > MAX_INDEX_BYTES:
            raise _refuse(path, f"index.json is {first.size} bytes, more than {MAX_INDEX_BYTES}")
        data = tar.extractfile(first)  # None unless a regular file (a folder passes _check_header)
        if data is None:
            raise _refuse(path, "index.json is not a regular file")
        index = _parse_index(path, data.read())
        declared = {m.name: m for m in index.members}
        found = _check_members(tar, path, declared, file_size)
    except tarfile.TarError as exc:
        raise _refuse(path, f"it is not a readable tar file ({exc})") from None
    if missing := sorted(set(declared) - set(found)):
        raise _refuse(path, f"members the index declares are missing: {', '.join(missing[:3])}")
    return index, found


def _check_members(tar: tarfile.TarFile, path: Path, declared: dict[str, Member],
                   file_size: int) -> dict[str, tarfile.TarInfo]:
    """Walk the headers (data is seeked over, never read); stop at the first bad one."""
    found: dict[str, tarfile.TarInfo] = {}
    limit = len(declared) + len(ALLOWED_DIRS)
    count = 0
    while (m := tar.next()) is not None:
        # tarfile keeps every header it reads; we keep our own bounded map (typeshed omits the
        # undocumented TarFile.members)
        tar.members.clear()  # type: ignore[attr-defined]
        count += 1
        if count > limit:  # before anything else: a huge tar is refused at its first surplus header
            raise _refuse(path, f"it holds more members than its index declares ({len(declared)})")
        _check_header(path, m, file_size)
        if m.isdir():
            if m.name.rstrip("/") not in ALLOWED_DIRS:
                raise _refuse(path, f"folder {m.name!r} is not part of the format")
            continue
        want = declared.get(m.name)
        if want is None:
            raise _refuse(path, f"member {m.name!r} is not declared in its index")
        if m.name in found:
            raise _refuse(path, f"member {m.name!r} appears twice")
        if m.size != want.size:
            raise _refuse(path, f"member {m.name!r} is {m.size} bytes, its index declares {want.size}")
        found[m.name] = m
    return found


def _check_header(path: Path, m: tarfile.TarInfo, file_size: int) -> None:
    name = m.name
    pure = PurePosixPath(name)
    if "\0" in name or "\\" in name or pure.is_absolute() or ".." in pure.parts or not name:
        raise _refuse(path, f"member {name!r} would land outside the import folder")
    if m.issym() or m.islnk():
        raise _refuse(path, f"member {name!r} is a {'symlink' if m.issym() else 'hard link'}; links are not allowed")
    if m.ischr() or m.isblk() or m.isfifo():
        raise _refuse(path, f"member {name!r} is a device file or fifo; only regular files are allowed")
    if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        raise _refuse(path, f"member {name!r} is not a regular file (tar type {m.type!r})")
    if m.isreg() and m.offset_data + m.size > file_size:
        raise _refuse(path, f"member {name!r} runs past the end of the file: the archive is truncated")


def _parse_index(path: Path, data: bytes) -> ArchiveIndex:
    try:
        index = ArchiveIndex.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _refuse(path, f"its index.json is not valid ({where}: {first['msg']})") from None
    names = [m.name for m in index.members]
    if len(set(names)) != len(names):
        raise _refuse(path, "its index declares a member twice")
    for m in index.members:
        blob = BLOB_RE.fullmatch(m.name)
        if not (blob and m.digest == "sha256:" + blob.group(1)) and not (m.name == IMAGE == index.image):
            raise _refuse(path, f"its index declares member {m.name!r}, which is not a blob named by its digest")
    if index.image is not None and index.image not in names:
        raise _refuse(path, "its index names an image member it does not declare")
    _check_record(path, index)
    return index


def _check_record(path: Path, index: ArchiveIndex) -> None:
    """The record must hash to the manifest digest and pin exactly the blobs declared."""
    if canonical.digest(index.record) != index.manifest_digest:
        raise _refuse(path, f"its record does not hash to {index.manifest_digest}: it was altered")
    pinned = {f.get("digest"): f.get("size") for key in ("weights", "prompts") for f in index.record.get(key, [])}
    blobs = {m.digest: m.size for m in index.members if m.name != index.image}
    if pinned != blobs:
        raise _refuse(path, "the blobs it holds are not exactly the ones its record pins")


def _extract(f, index: ArchiveIndex, members: dict[str, tarfile.TarInfo], *, tmp_dir: Path,
             have: Callable[[str, int], bool] | None, progress: Progress | None) -> ImportBundle:
    bundle = ImportBundle(index=index)
    indexed = {w.get("digest") for w in index.record.get("weights", []) if is_safetensors(str(w.get("path")))}
    try:
        for m in index.members:
            if m.name != index.image and have and have(m.digest, m.size):
                continue
            info = members[m.name]
            ranges = _tensor_ranges(f.fileno(), info, m) if m.digest in indexed and m.name != index.image else []
            tmp, digests = _copy_verified(f, info, m, tmp_dir, progress, ranges)
            bundle.bytes_verified += m.size
            if m.name == index.image:
                bundle.image = tmp
            else:
                bundle.blobs[m.digest] = tmp
                if ranges:
                    bundle.tensors[m.digest] = (ranges, digests)
    except BaseException:
        bundle.cleanup()
        raise
    return bundle


def _tensor_ranges(fd: int, info: tarfile.TarInfo, m: Member) -> list[TensorRange]:
    """The tensors of a safetensors member, from its header read in place (nothing extracted)."""
    at, size = info.offset_data, m.size
    try:
        head = os.pread(fd, 8, at)
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"header length {n} does not fit the file ({size} bytes)")
        # validated exactly as a push validates it (dtypes, sizes, no overlaps, gaps or tail)
        return parse_header(os.pread(fd, n, at + 8), data_size=size - 8 - n, base=8 + n)
    except (SafetensorsError, ValueError) as exc:
        raise InvalidInput(f"refusing to import: member {m.name} is not a valid safetensors file ({exc}); "
                           "nothing was recorded") from None


def _copy_verified(f, info: tarfile.TarInfo, m: Member, tmp_dir: Path, progress: Progress | None,
                   ranges: Sequence[TensorRange] = ()) -> tuple[Path, dict[str, str]]:
    """Copy one member into a temp file, hashing it on the way (its tensors on a second
    thread, so both cores hash); the file and its tensors' digests."""
    # "import-<pid>-<token>": the name BlobStore.sweep_tmp removes after a crash
    tmp = tmp_dir / f"import-{os.getpid()}-{secrets.token_hex(6)}"
    done = 0
    # the blob's SHA-256 and its tensors' digests in one read (tensors on a second thread), as
    # BlobStore.ingest computes them; writeback starts early so the final fsync is short
    hashes = Hashes(list(ranges), threaded=True)
    view = memoryview(bytearray(CHUNK))
    try:
        with open(tmp, "xb") as out:
            writeback = Writeback(out.fileno())
            while done < m.size:
                data = _read(f.fileno(), view, info.offset_data + done, min(CHUNK, m.size - done), fresh=False)
                if not data:
                    raise InvalidInput(f"{m.name} ends early: the archive is truncated")
                hashes.feed(done, data)  # returns once both hashes are done with the buffer
                out.write(data)
                done += len(data)
                out.flush()
                writeback.written(done)
                if progress:
                    progress(len(data))
            os.fsync(out.fileno())
        got = hashes.result()
        if got.digest != m.digest:
            raise InvalidInput(f"{m.name} does not match its digest {m.digest}: the archive is damaged; "
                               "nothing was imported")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        hashes.close()
    return tmp, got.tensor_digests


def _read(fd: int, view: memoryview, offset: int, size: int, *, fresh: bool):
    """``size`` bytes at ``offset``: into the reused buffer, or as new bytes when another
    thread still reads the previous chunk."""
    if fresh:
        return os.pread(fd, size, offset)
    return view[: os.preadv(fd, [view[:size]], offset)]


def _refuse(path: Path, why: str) -> InvalidInput:
    return InvalidInput(f"refusing to import {path}: {why}; nothing was extracted")

