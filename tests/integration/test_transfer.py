"""Export and import between two registry homes (each with its own database, SQLite or
PostgreSQL): a round trip, twice; the image through the engine; hostile files refused with
nothing recorded. The real Docker engine: test_transfer_docker.py."""

from __future__ import annotations

import io
import tarfile

import pytest

from registry.api import Registry
from registry.engines.fake import FakeEngine
from registry.errors import InvalidInput, VersionConflict
from registry.upkeep import archive
from tests.conftest import IMAGE, IMAGE_ID, on_fake, push_versions
from tests.unit.test_archive import _info, _many, _rebuild


@pytest.fixture
def reg(home, fake, model_dir):
    with on_fake(home, fake) as r:
        push_versions(r, model_dir, "v1.0", "v1.1", prompt="prompt of {version}\n", image=IMAGE)
        yield r


@pytest.fixture
def site():
    """The other site's engine: it has never seen the image."""
    return FakeEngine()


@pytest.fixture
def other(reg, other_url, tmp_path, monkeypatch, site):
    monkeypatch.setenv("REGISTRY_DB_URL", other_url)  # ``reg`` holds its own store already
    Registry.init(tmp_path / "other", db_url=other_url)[0].close()
    with on_fake(tmp_path / "other", site) as r:
        r.add_env("prod", port=18081, default=True)
        yield r


def _nothing_recorded(other: Registry) -> None:
    assert other.versions(include_deprecated=True) == []
    assert other.audit(action="import") == []
    assert [p for p in (other.blobs.root / "sha256").rglob("*") if p.is_file()] == []
    assert list(other.blobs.tmp.iterdir()) == []


@pytest.mark.parametrize("with_image", [False, True])
def test_export_import_between_two_homes_twice(reg, other, site, tmp_path, with_image):
    out = tmp_path / "v1.1.tar"
    exported = reg.export("v1.1", out, with_image=with_image)
    assert exported.blobs == 2 and exported.with_image is with_image and out.is_file()
    [event] = reg.audit(action="export")
    assert event.object == "support-bot@v1.1" and event.detail["file"] == str(out)

    first = other.import_archive(out)
    assert first.created and first.blobs_stored == 2 and first.image_loaded is with_image
    again = other.import_archive(out)
    assert not again.created and again.blobs_stored == 0 and not again.image_loaded  # a no-op
    assert len(other.audit(action="import")) == 1
    [event] = other.audit(action="import")
    assert event.detail["from"] == str(out) and event.detail["pushed_by"] == "tester"

    here, there = reg.show("v1.1"), other.show("v1.1")
    assert there.model_dump() == here.model_dump()  # tensors, provenance, pusher and time included
    assert other.verify().ok
    if with_image:
        assert site.image_digest(IMAGE_ID) == IMAGE_ID
        assert other.promote("v1.1").release.version == "v1.1"


def test_import_of_other_content_under_the_same_version_is_a_conflict(reg, other, tmp_path, model_dir):
    reg.export("v1.1", tmp_path / "v1.1.tar")
    model_dir.set_prompt("something else entirely\n")
    model_dir.write_manifest(version="v1.1", image=None)
    other.push(model_dir.manifest)
    with pytest.raises(VersionConflict, match="other content"):
        other.import_archive(tmp_path / "v1.1.tar")
    assert other.audit(action="import") == []


def _hostile(good, tmp_path, case: str):
    if case == "many":
        return _many(good, tmp_path, 100_000, lambda i: f"blobs/sha256/{i:064x}")
    if case == "larger":
        def grow(info, data):
            if info.name.startswith("blobs/") and info.size < 1000:
                data += b"!"
                info.size = len(data)
            return info, data
        return _rebuild(good, tmp_path, replace=grow)
    member = {
        "dotdot": _info("../x", size=1), "absolute": _info("/etc/cron.d/x", size=1),
        "symlink": _info("blobs/sha256/link", tarfile.SYMTYPE, link="/etc/passwd"),
        "hardlink": _info("blobs/sha256/hard", tarfile.LNKTYPE, link="index.json"),
        "device": _info("dev", tarfile.CHRTYPE),
    }[case]
    return _rebuild(good, tmp_path, extra=[(member, b"x" if member.size else None)])


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "hardlink", "device", "larger", "many"])
def test_hostile_archive_refused_with_nothing_recorded(reg, other, tmp_path, case):
    out = tmp_path / "good.tar"
    reg.export("v1.1", out)
    with tarfile.open(out) as tar:
        index = tar.extractfile("index.json").read()
    hostile = _hostile((out, archive.ArchiveIndex.model_validate_json(index)), tmp_path, case)
    with pytest.raises(InvalidInput, match="refusing to import"):
        other.import_archive(hostile)
    _nothing_recorded(other)


def test_altered_blob_refused_before_anything_is_recorded(reg, other, tmp_path):
    out = tmp_path / "good.tar"
    reg.export("v1.0", out)
    data = bytearray(out.read_bytes())
    prompt = b"prompt of v1.0\n"
    at = data.index(prompt)
    data[at] ^= 1
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="does not match its digest"):
        other.import_archive(bad)
    _nothing_recorded(other)


def test_export_refuses_a_version_without_a_pinned_image(reg, tmp_path, model_dir):
    model_dir.write_manifest(version="v2.0", image=None)
    reg.push(model_dir.manifest)
    with pytest.raises(InvalidInput, match="no image"):
        reg.export("v2.0", tmp_path / "v2.tar", with_image=True)
    assert not (tmp_path / "v2.tar").exists() and list(reg.blobs.tmp.iterdir()) == []


def test_a_plain_tar_is_not_an_export(other, tmp_path):
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.addfile(_info("readme", size=2), io.BytesIO(b"hi"))
    with pytest.raises(InvalidInput, match="not a Cellar export"):
        other.import_archive(plain)
    _nothing_recorded(other)


def test_an_import_indexes_the_prompts_it_brings(reg, other, tmp_path):
    """``audit --prompt NAME`` finds an import that brought that prompt, as it finds a push
    (the import records through the push's statements, its event names the prompts changed)."""
    for version in ("v1.0", "v1.1"):
        reg.export(version, tmp_path / f"{version}.tar")
        other.import_archive(tmp_path / f"{version}.tar")
    name = reg.show("v1.1").prompts[0].name
    found = [(e.action, e.object) for e in other.audit(prompt=name)]
    assert found == [("import", f"{reg.show('v1.1').model}@v1.1"), ("import", f"{reg.show('v1.0').model}@v1.0")]
