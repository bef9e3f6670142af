"""Export with the container image and import it elsewhere, through the real Docker engine:
the image is removed from the engine in between, and ``docker load`` brings it back."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from registry.api import Registry
from registry.errors import NotFound

LABEL = "cellar.test"


@pytest.fixture
def own_image(docker_client):
    """An image only this test uses (a unique file, so a unique ID), labelled, removed after."""
    client = docker_client
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(64 * 1024)
        info = tarfile.TarInfo("payload")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = f"cellar-test-transfer:{os.urandom(4).hex()}"
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=version,
                                      changes=[f"LABEL {LABEL}=transfer"])
    image_id = client.images.get(tag).id
    yield tag, image_id
    for image in client.images.list(filters={"label": f"{LABEL}=transfer"}):
        if image.id == image_id:
            client.images.remove(image.id, force=True)


def test_export_with_image_and_import_after_the_image_is_gone(reg, own_image, model_dir, tmp_path,
                                                              other_url, monkeypatch, docker_client):
    tag, image_id = own_image
    model_dir.write_manifest(image=tag)
    reg.push(model_dir.manifest)
    assert reg.show("v1.0").image.digest == image_id
    out = tmp_path / "v1.0.tar"
    assert reg.export("v1.0", out, with_image=True).with_image

    client = docker_client
    client.images.remove(image_id, force=True)  # the air-gapped site has never seen it
    with pytest.raises(NotFound):
        reg.engine().image_digest(image_id)

    monkeypatch.setenv("REGISTRY_DB_URL", other_url)  # ``reg`` holds its own store already
    Registry.init(tmp_path / "other", db_url=other_url)[0].close()
    with Registry.open(tmp_path / "other") as other:
        first = other.import_archive(out)
        assert first.created and first.image_loaded
        assert client.images.get(image_id).labels.get(LABEL) == "transfer"
        again = other.import_archive(out)
        assert not again.created and not again.image_loaded
        assert other.show("v1.0").image.digest == image_id and other.verify().ok
