"""Export/import archives: a round trip on real files, and hostile archives refused with
nothing extracted."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from registry.errors import CorruptBlob, InvalidInput
from registry.formats import canonical
from registry.store.files.blobs import BlobStore
from registry.upkeep import archive


@pytest.fixture
def store(tmp_path) -> BlobStore:
    s = BlobStore(tmp_path / "src-blobs")
    s.create()
    return s


def _version(store: BlobStore, tmp_path: Path, *, image: bytes | None = None) -> archive.ExportSource:
    files = {"weights": ("model.bin", os.urandom(archive.CHUNK + 777)),
             "prompts": ("system", b"You are a helpful support assistant.\n")}
    pins = {}
    for kind, (name, data) in files.items():
        src = tmp_path / name
        src.write_bytes(data)
        got = store.ingest(src)
        pins[kind] = [{"path" if kind == "weights" else "name": name, "digest": got.digest, "size": got.size}]
    record = {"image": {"ref": None, "digest": None}, **pins, "runtime": {"port": 8080}, "probes": []}
    image_path = None
    if image is not None:
        image_path, _, image_digest = archive.spool([image[:3], image[3:]], tmp_path)
    return archive.ExportSource(
        model="support-bot", version="v1.0", manifest_digest=canonical.digest(record), record=record,
        changelog={"message": "first", "actor": "tester", "created_at": "2026-11-01T12:00:00Z"},
        provenance={"commit": "abc"},
        blob_paths={p["digest"]: store.path(p["digest"]) for p in pins["weights"] + pins["prompts"]},
        image=image_path, image_digest=image_digest if image is not None else None)


@pytest.fixture
def dest(tmp_path) -> BlobStore:
    d = BlobStore(tmp_path / "dest-blobs")
    d.create()
    return d


@pytest.mark.parametrize("image", [None, b"a docker save tar would be here"])
def test_round_trip(store, dest, tmp_path, image):
    src = _version(store, tmp_path, image=image)
    out = tmp_path / "v1.0.cellar.tar"
    written = archive.write_archive(out, src)
    assert tarfile.is_tarfile(out)  # a plain tar: `tar tf` lists it
    bundle = archive.read_archive(out, tmp_dir=dest.tmp)
    assert bundle.index == written
    assert bundle.index.manifest_digest == src.manifest_digest and bundle.index.provenance == {"commit": "abc"}
    assert (bundle.image is not None) == (image is not None)
    if image is not None:
        assert bundle.image.read_bytes() == image
    assert bundle.install_blobs(dest)[0] == 2
    for digest, path in src.blob_paths.items():
        assert dest.path(digest).read_bytes() == path.read_bytes()
        dest.check(digest)
    bundle.cleanup()
    assert list(dest.tmp.iterdir()) == []


def test_same_bytes_twice_and_stored_blobs_are_skipped(store, dest, tmp_path):
    src = _version(store, tmp_path)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    archive.write_archive(a, src)
    archive.write_archive(b, src)
    assert a.read_bytes() == b.read_bytes()
    bundle = archive.read_archive(a, tmp_dir=dest.tmp, have=lambda d, n: True)
    assert bundle.blobs == {} and bundle.bytes_verified == 0


def test_export_refuses_a_corrupt_blob_and_leaves_no_file(store, tmp_path):
    src = _version(store, tmp_path)
    victim = next(iter(src.blob_paths.values()))
    os.chmod(victim, 0o644)
    data = victim.read_bytes()
    victim.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # a changed byte, whatever it was
    out = tmp_path / "out.tar"
    with pytest.raises(CorruptBlob):
        archive.write_archive(out, src)
    assert not out.exists() and not list(tmp_path.glob(".out.tar*"))


# --- hostile archives ---------------------------------------------------------------------


@pytest.fixture
def good(store, tmp_path) -> tuple[Path, archive.ArchiveIndex]:
    out = tmp_path / "good.tar"
    return out, archive.write_archive(out, _version(store, tmp_path))


def _rebuild(good: tuple[Path, archive.ArchiveIndex], tmp_path: Path, *, extra=(), replace=None,
             index: dict | None = None) -> Path:
    """A copy of the good archive, its members rewritten by ``replace(info, data)`` and
    ``extra`` (TarInfo, bytes | None) appended."""
    path, idx = good
    out = tmp_path / "hostile.tar"
    with tarfile.open(path) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == archive.INDEX and index is not None:
                data = json.dumps(index).encode()
                info.size = len(data)
            elif replace:
                info, data = replace(info, data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def _info(name: str, kind=tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def _refused(path: Path, dest: BlobStore, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        archive.read_archive(path, tmp_dir=dest.tmp)
    assert list(dest.tmp.iterdir()) == []  # nothing extracted
    assert list((dest.root / "sha256").iterdir()) == []


@pytest.mark.parametrize("member, match", [
    (_info("../x", size=1), "outside"),
    (_info("blobs/../../x", size=1), "outside"),
    (_info("/etc/cron.d/x", size=1), "outside"),
    (_info("blobs/sha256/link", tarfile.SYMTYPE, link="/etc/passwd"), "symlink"),
    (_info("blobs/sha256/hard", tarfile.LNKTYPE, link="index.json"), "hard link"),
    (_info("dev", tarfile.CHRTYPE), "device"),
    (_info("blk", tarfile.BLKTYPE), "device"),
    (_info("fifo", tarfile.FIFOTYPE), "fifo"),
    (_info("blobs/sha256/" + "0" * 64, size=1), "not declared"),
    (_info("notes.txt", size=1), "not declared"),
    (_info("etc", tarfile.DIRTYPE), "not part of the format"),
])
def test_hostile_member_refused(good, dest, tmp_path, member, match):
    hostile = _rebuild(good, tmp_path, extra=[(member, b"x" if member.size else None)])
    names = tarfile.open(hostile).getnames()
    assert member.name.rstrip("/") in names  # the hostile entry really is in the file
    _refused(hostile, dest, match)


def test_member_larger_than_declared(good, dest, tmp_path):
    def grow(info, data):
        if info.name.startswith("blobs/") and info.size < 1000:
            data += b"!"
            info.size = len(data)
        return info, data
    _refused(_rebuild(good, tmp_path, replace=grow), dest, "declares")


def test_altered_bytes_under_the_declared_size(good, dest, tmp_path):
    def flip(info, data):
        if info.name.startswith("blobs/") and info.size < 1000:
            data = bytes([data[0] ^ 1]) + data[1:]
        return info, data
    _refused(_rebuild(good, tmp_path, replace=flip), dest, "does not match its digest")


def test_altered_record(good, dest, tmp_path):
    index = good[1].model_dump(mode="json")
    index["record"]["runtime"]["port"] = 9999
    _refused(_rebuild(good, tmp_path, index=index), dest, "altered")


def test_index_declaring_an_escaping_member(good, dest, tmp_path):
    index = good[1].model_dump(mode="json")
    index["members"].append({"name": "../evil", "size": 1, "digest": "sha256:" + "1" * 64})
    _refused(_rebuild(good, tmp_path, index=index), dest, "not a blob named by its digest")


def test_not_a_cellar_export(dest, tmp_path):
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.addfile(_info("readme", size=2), io.BytesIO(b"hi"))
    _refused(plain, dest, "not a Cellar export")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    _refused(junk, dest, "not")


def test_truncated_archive(good, dest, tmp_path):
    path, _ = good
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _refused(cut, dest, "truncated|missing")


def _many(good, tmp_path: Path, n: int, name) -> Path:
    """The good archive followed by ``n`` empty members written as raw headers (fast: tarfile
    builds one header, the others differ from it only in their name and checksum)."""
    path, _ = good
    out = tmp_path / "many.tar"
    body = path.read_bytes().rstrip(b"\0")
    body += b"\0" * (-len(body) % 512)
    with open(out, "wb") as f:
        f.write(body)
        if name(0) == name(1):  # one header repeated
            f.write(_info(name(0), tarfile.DIRTYPE).tobuf() * n)
        else:
            template = bytearray(_info(name(0)).tobuf())
            assert len(template) == 512, "a name that needs an extended header"
            template[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
            for i in range(n):
                header = bytearray(template)
                header[0:100] = name(i).encode().ljust(100, b"\0")
                header[148:156] = b"%06o\0 " % sum(header)
                f.write(header)
        f.write(b"\0" * 1024)
    return out


@pytest.mark.parametrize("name", [lambda i: "blobs", lambda i: f"blobs/sha256/{i:064x}"])
def test_hundred_thousand_members(good, dest, tmp_path, name):
    _refused(_many(good, tmp_path, 100_000, name), dest, "more members|not declared")


def test_index_declaring_hundred_thousand_members(good, dest, tmp_path):
    index = good[1].model_dump(mode="json")
    index["members"] += [{"name": f"blobs/sha256/{i:064x}", "size": 0, "digest": f"sha256:{i:064x}"}
                         for i in range(100_000)]
    _refused(_rebuild(good, tmp_path, index=index), dest, "index.json")


def test_safetensors_tensors_are_hashed_while_extracting(store, dest, tmp_path):
    from registry.formats.safetensors_index import read_index
    from registry.store.files.blobs import hash_file
    from tests import helpers

    src = _version(store, tmp_path)
    weights = helpers.write_safetensors(tmp_path / "w" / "model.safetensors")
    got = store.ingest(weights)
    pin = {"path": "model.safetensors", "digest": got.digest, "size": got.size}
    record = {**src.record, "weights": [pin]}
    src = archive.ExportSource(**{**src.__dict__, "record": record, "manifest_digest": canonical.digest(record),
                                  "blob_paths": {got.digest: store.path(got.digest),
                                                 **{d: p for d, p in src.blob_paths.items()
                                                    if d == record["prompts"][0]["digest"]}}})
    out = tmp_path / "st.tar"
    archive.write_archive(out, src)
    bundle = archive.read_archive(out, tmp_dir=dest.tmp)
    ranges, digests = bundle.tensors[got.digest]
    assert digests == hash_file(weights, read_index(weights)).tensor_digests and len(ranges) == 4
    bundle.cleanup()
