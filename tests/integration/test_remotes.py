"""Versions as ModelPack artifacts in a real OCI registry (Debian's docker-registry, Distribution
2.8, started per test on loopback by tests/oci.py): push, pull into a second home, the same
push again, a dropped connection, a tampered layer, a registry that is down, TLS with basic
auth, an artifact another client wrote, on both databases."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
import requests

from registry import InvalidInput, NotFound, RemoteError, VersionConflict
from registry.api import Registry
from tests import helpers
from tests.conftest import as_json, cli
from tests.oci import PASSWORD, USER, CuttingRelay, OciRegistry

MODELPACK = "application/vnd.cncf.model.manifest.v1+json"
OCI = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def second(tmp_path, other_url):
    """Another home (another machine) on a database of the same kind."""
    reg, _ = Registry.init(tmp_path / "second", db_url=other_url)
    with reg:
        yield reg


def _pushed(reg, model_dir, oci, version="v1.0", **remote):
    reg.push(model_dir.write_manifest(version=version))
    if not any(r.name == "team" for r in reg.remotes()):
        reg.add_remote("team", f"oci://{oci.host}/ml", plain_http=not oci.tls, **remote)
    return reg.push_remote(f"support-bot@{version}", remote="team")


def _uploads(oci) -> int:
    """Blob uploads the registry itself saw: chunks sent, and uploads finished."""
    return oci.requests_seen("PATCH") + oci.requests_seen("PUT", r"/blobs/uploads/")


def test_push_then_pull_into_a_second_home(reg, second, model_dir, oci_registry):
    pushed = _pushed(reg, model_dir, oci_registry)
    assert pushed.created and pushed.blobs_uploaded == 4  # the weights, the prompt, the config, Cellar's record
    manifest = oci_registry.session().get(
        f"{oci_registry.base_url}/v2/ml/support-bot/manifests/v1.0",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert manifest["artifactType"] == MODELPACK
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    here = reg.show("support-bot@v1.0")
    layers = {layer["digest"] for layer in manifest["layers"]}
    assert {w.digest for w in here.weights} | {p.digest for p in here.prompts} <= layers  # Cellar's blob digests
    paths = {layer.get("annotations", {}).get("org.cncf.model.filepath") for layer in manifest["layers"]}
    assert "weights/model.safetensors" in paths or "model.safetensors" in paths

    pulled = second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True)
    assert pulled.created and pulled.manifest_digest == here.manifest_digest
    there = second.show("support-bot@v1.0")
    assert (there.manifest_digest, there.message) == (here.manifest_digest, here.message)
    assert second.verify().ok
    event = second.audit(action="pull")[-1]
    assert event.detail["from"] == pulled.reference and event.detail["artifact_digest"] == pushed.artifact_digest

    again = second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True)
    assert not again.created and again.blobs_fetched == 0
    assert len(second.audit(action="pull")) == 1  # a no-op records nothing


def test_the_same_version_again_uploads_nothing(reg, model_dir, oci_registry, tmp_path):
    first = _pushed(reg, model_dir, oci_registry)
    before = _uploads(oci_registry)
    again = reg.push_remote("support-bot@v1.0", remote="team")
    assert (again.created, again.artifact_digest) == (False, first.artifact_digest)  # deterministic
    assert _uploads(oci_registry) == before

    # a new version with the same weights: only the changed prompt (and the record) go up
    model_dir.set_prompt("A new prompt.\n")
    nxt = _pushed(reg, model_dir, oci_registry, version="v1.1")
    assert (nxt.blobs_uploaded, nxt.blobs_present) == (3, 1)  # the prompt, the config, the record

    # another home pushing the same version recorded there: the same artifact digest
    other, _ = Registry.init(tmp_path / "third", db_url=f"sqlite:///{tmp_path}/third.db")
    with other:
        other.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True)
        other.add_remote("team", f"oci://{oci_registry.host}/ml", plain_http=True)
        assert other.push_remote("support-bot@v1.0", remote="team").artifact_digest == first.artifact_digest


def test_a_blob_another_model_holds_is_mounted_not_uploaded(reg, model_dir, oci_registry):
    _pushed(reg, model_dir, oci_registry)
    model_dir.write_manifest(model="support-bot-eu", version="v1.0")
    reg.push(model_dir.manifest)
    before = oci_registry.requests_seen("PATCH")
    result = reg.push_remote("support-bot-eu@v1.0", remote="team")
    assert result.blobs_mounted == 2 and result.blobs_uploaded == 2  # the files; the config and record are new
    assert oci_registry.requests_seen("PATCH") == before


def test_a_dropped_connection_mid_upload_resumes_or_restarts(reg, second, tmp_path, oci_registry, monkeypatch):
    from registry.remotes import client

    monkeypatch.setattr(client, "CHUNK", 1 << 20)  # several chunks for a 3 MiB file
    md = helpers.ModelDir.create(tmp_path / "big")
    (md.root / "weights" / "big.bin").write_bytes(bytes(range(256)) * (3 << 12))
    reg.push(md.manifest)
    with CuttingRelay(oci_registry.port, cut_after=(3 << 19)) as relay:
        reg.add_remote("cut", f"oci://127.0.0.1:{relay.port}/ml", plain_http=True)
        pushed = reg.push_remote("support-bot@v1.0", remote="cut")
        assert relay.cuts == 1
    assert pushed.created
    pulled = second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True)
    assert pulled.manifest_digest == reg.show("support-bot@v1.0").manifest_digest
    assert second.verify().ok


def test_a_tampered_layer_is_refused_and_nothing_recorded(reg, second, model_dir, oci_registry):
    _pushed(reg, model_dir, oci_registry)
    weight = reg.show("support-bot@v1.0").weights[0].digest
    blob = oci_registry.blob_file(weight)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(RemoteError, match="do not match its digest"):
        second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True)
    assert second.versions() == [] and second.audit(action="pull") == []
    assert not second.cfg.blobs.has(weight)
    assert list(second.cfg.blobs.tmp.iterdir()) == [] or all(
        not p.name.startswith("pull-") for p in second.cfg.blobs.tmp.iterdir())


def test_a_registry_that_is_down(reg, second, model_dir, oci_registry):
    _pushed(reg, model_dir, oci_registry)
    oci_registry.stop()
    with pytest.raises(RemoteError, match="cannot reach the registry"):
        reg.push_remote("support-bot@v1.0", remote="team")
    with pytest.raises(RemoteError, match="cannot reach the registry"):
        second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True)
    assert second.versions() == []
    out = cli("pull", f"oci://{oci_registry.host}/ml/support-bot:v1.0", "--plain-http", code=1,
              env={"REGISTRY_HOME": str(second.cfg.home.path), "REGISTRY_DB_URL": second.cfg.home.db_url})
    assert "cannot reach the registry" in out.stderr and "Traceback" not in out.stderr


def test_tls_with_basic_auth_from_the_docker_credentials_file(reg, second, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    oci = OciRegistry(tmp_path / "tls", tls=True, auth=True).start()
    try:
        # no CA given: the certificate is not trusted
        reg.push(model_dir.manifest)
        reg.add_remote("team", f"oci://{oci.host}/ml")
        with pytest.raises(RemoteError, match="TLS verification"):
            reg.push_remote("support-bot@v1.0", remote="team")
        reg.add_remote("team", f"oci://{oci.host}/ml", ca_file=oci.ca_file, replace=True)
        with pytest.raises(RemoteError, match="asks for credentials"):
            reg.push_remote("support-bot@v1.0", remote="team")
        config = tmp_path / "docker-config"
        config.mkdir(exist_ok=True)
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (config / "config.json").write_text(json.dumps({"auths": {oci.host: {"auth": auth}}}))
        assert reg.push_remote("support-bot@v1.0", remote="team").created
        assert PASSWORD not in (reg.cfg.home.path / "config.json").read_text()
        assert all(PASSWORD not in json.dumps(e.detail) for e in reg.audit())

        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))  # the environment instead
        monkeypatch.setenv("REGISTRY_REMOTE_USERNAME", USER)
        monkeypatch.setenv("REGISTRY_REMOTE_PASSWORD", "wrong")
        with pytest.raises(RemoteError, match="check the credentials"):
            second.pull(f"oci://{oci.host}/ml/support-bot:v1.0", ca_file=oci.ca_file)
        monkeypatch.setenv("REGISTRY_REMOTE_PASSWORD", PASSWORD)
        assert second.pull(f"oci://{oci.host}/ml/support-bot:v1.0", ca_file=oci.ca_file).created
    finally:
        oci.stop()


def test_an_artifact_another_client_wrote(second, tmp_path, oci_registry):
    """oras (PyPI) writes the files and the config; oras cannot set artifactType, so the manifest
    gets it here, by hand, as Docker Model Runner and KitOps write it."""
    import oras.client

    folder = tmp_path / "kit"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 64)
    (folder / "config.json").write_text(json.dumps({
        "descriptor": {"name": "tiny", "version": "v2", "authors": ["KitOps user"],
                       "createdAt": "2026-01-02T03:04:05Z"},
        "config": {"format": "gguf"}, "modelfs": {"type": "layers", "diffIds": []}}))
    (folder / "annotations.json").write_text(json.dumps({
        str(folder / "weights" / "model.gguf"): {"org.cncf.model.filepath": "weights/model.gguf"}}))
    target = f"{oci_registry.host}/vendor/tiny:v2"
    oras.client.OrasClient(insecure=True).push(
        target=target, files=[f"{folder / 'weights' / 'model.gguf'}:application/vnd.cncf.model.weight.v1.raw"],
        manifest_config=f"{folder / 'config.json'}:application/vnd.cncf.model.config.v1+json",
        annotation_file=str(folder / "annotations.json"), disable_path_validation=True, quiet=True)
    s = oci_registry.session()
    url = f"{oci_registry.base_url}/v2/vendor/tiny/manifests/v2"
    manifest = s.get(url, headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    manifest["artifactType"] = MODELPACK
    s.put(url, data=json.dumps(manifest), headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
          ).raise_for_status()

    pulled = second.pull(f"oci://{oci_registry.host}/vendor/tiny:v2", plain_http=True)
    assert pulled.created and pulled.foreign and pulled.warnings
    info = second.show("tiny@v2")
    assert [w.path for w in info.weights] == ["weights/model.gguf"] and info.prompts == []
    assert info.actor == "KitOps user"
    stored = second.cfg.blobs.path(info.weights[0].digest)
    assert stored.read_bytes() == (folder / "weights" / "model.gguf").read_bytes()
    assert not second.pull(f"oci://{oci_registry.host}/vendor/tiny:v2", plain_http=True).created


def test_the_cli_and_remote_verify(home, model_dir, oci_registry):
    cli("push", str(model_dir.manifest))
    cli("remote", "add", "team", f"oci://{oci_registry.host}/ml", "--plain-http")
    assert [r["name"] for r in as_json("remote", "list")] == ["team"]
    pushed = as_json("push", "--remote", "team", "support-bot@v1.0")
    assert pushed["created"] and pushed["reference"].endswith("/ml/support-bot:v1.0")
    assert "nothing to do" in cli("push", "--remote", "team", "v1.0").stdout
    report = as_json("remote", "verify", "team")
    assert [(v["version"], v["state"]) for v in report["versions"]] == [("v1.0", "same")] and report["ok"]
    s = oci_registry.session()  # a tag no version here records (pushed from another home): listed, not a failure
    manifest = s.get(f"{oci_registry.base_url}/v2/ml/support-bot/manifests/v1.0", headers={"Accept": OCI}).content
    s.put(f"{oci_registry.base_url}/v2/ml/support-bot/manifests/v9", data=manifest,
          headers={"Content-Type": OCI}).raise_for_status()
    report = as_json("remote", "verify", "team")
    assert [(v["version"], v["state"]) for v in report["versions"]] == [("v1.0", "same"), ("v9", "unknown")]
    # a layer deleted in the registry: verify names it, exit 1
    weight = as_json("show", "v1.0")["weights"][0]["digest"]
    oci_registry.blob_file(weight).unlink()
    report = as_json("remote", "verify", "team", code=1)
    assert report["versions"][0]["state"] == "missing-blobs" and report["versions"][0]["missing"] == [weight]
    assert "sent again" in cli("push", "--remote", "team", "v1.0").stdout  # a push repairs it
    assert as_json("remote", "verify", "team")["versions"][0]["state"] == "same"
    cli("remote", "remove", "team")
    assert as_json("remote", "list") == []
    assert [e["action"] for e in as_json("audit")][:4] == ["remote-remove", "remote-push", "remote-push", "remote-add"]


def test_a_version_the_registry_holds_otherwise_is_refused(reg, model_dir, oci_registry, tmp_path):
    _pushed(reg, model_dir, oci_registry)
    other, _ = Registry.init(tmp_path / "third", db_url=f"sqlite:///{tmp_path}/third.db")
    with other:
        md = helpers.ModelDir.create(tmp_path / "m2", prompt="Other content.\n")
        other.push(md.manifest)
        other.add_remote("team", f"oci://{oci_registry.host}/ml", plain_http=True)
        with pytest.raises(VersionConflict, match="immutable"):
            other.push_remote("support-bot@v1.0", remote="team")
        with pytest.raises(VersionConflict, match="immutable"):
            other.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True)


def test_bad_urls_and_plain_http_off_loopback(reg):
    with pytest.raises(InvalidInput, match="in clear"):
        reg.add_remote("team", "oci://registry.example.org/ml", plain_http=True)
    assert reg.add_remote("team", "oci://registry.example.org/ml", plain_http=True, insecure=True).insecure
    with pytest.raises(InvalidInput, match="not an OCI registry URL"):
        reg.add_remote("x", "https://registry.example.org/ml")
    with pytest.raises(InvalidInput, match="not a valid repository"):
        reg.pull("oci://127.0.0.1:5000/ML/Bad:v1", plain_http=True)
    with pytest.raises(NotFound, match="no remote named"):
        reg.push_remote("v1.0", remote="nope")


def test_a_missing_tag(second, oci_registry):
    with pytest.raises(NotFound, match="does not exist"):
        second.pull(f"oci://{oci_registry.host}/ml/none:v9", plain_http=True)


def test_requests_is_what_talks(oci_registry):
    assert requests.get(f"{oci_registry.base_url}/v2/", timeout=5).status_code == 200


@pytest.fixture
def own_image(docker_client):
    """A tiny image only this test uses (a unique file in it), removed afterwards by its ID."""
    import io
    import secrets
    import tarfile

    buf, token = io.BytesIO(), secrets.token_hex(8).encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("token")
        info.size = len(token)
        tar.addfile(info, io.BytesIO(token))
    repo = f"cellar-test-remote-image-{token.decode()}"
    docker_client.api.import_image_from_data(buf.getvalue(), repository=repo, tag="v1",
                                             changes=["LABEL cellar.test=remotes"])
    image_id = docker_client.images.get(f"{repo}:v1").id
    yield f"{repo}:v1", image_id
    with contextlib.suppress(Exception):
        docker_client.images.remove(image_id, force=True)


def test_the_pinned_image_through_the_same_registry(tmp_path, model_dir, oci_registry, own_image, docker_client):
    tag, image_id = own_image
    first, _ = Registry.init(tmp_path / "first", db_url=f"sqlite:///{tmp_path}/first.db")
    second, _ = Registry.init(tmp_path / "second", db_url=f"sqlite:///{tmp_path}/second.db")
    with first, second:
        first.push(model_dir.write_manifest(image=tag))
        assert first.show("support-bot@v1.0").image.digest == image_id
        first.add_remote("team", f"oci://{oci_registry.host}/ml", plain_http=True)
        pushed = first.push_remote("support-bot@v1.0", remote="team", with_image=True)
        assert pushed.image and pushed.image.startswith(f"{oci_registry.host}/ml/support-bot/image@sha256:")
        assert not docker_client.images.list(name=f"{oci_registry.host}/ml/support-bot/image")  # no tag left
        docker_client.images.remove(image_id, force=True)  # a host that lacks it

        pulled = second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True, with_image=True)
        assert pulled.image_pulled and docker_client.images.get(image_id).id == image_id
        assert not second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True,
                               with_image=True).image_pulled  # there already


def test_a_remote_as_the_blob_store_of_homes_sharing_one_database(home, db_url, tmp_path, monkeypatch, model_dir,
                                                                  oci_registry, fake):
    """The CI machine pushes; an operator's laptop on the same database promotes it, fetching
    the blobs its own cache lacks from the registry."""
    from tests.conftest import IMAGE, on_fake

    monkeypatch.setenv("REGISTRY_KEY_FILE", str(home / "signing.key"))  # one team, one key
    url = f"oci://{oci_registry.host}/ml"
    with on_fake(home, fake) as ci:
        assert ci.add_remote("team", url, plain_http=True, blob_store=True).blob_store
        pushed = ci.push(model_dir.write_manifest(image=IMAGE))
        assert pushed.created and pushed.warnings == []
        model_dir.set_prompt("The prompt of v1.1.\n")
        assert ci.push(model_dir.write_manifest(version="v1.1")).warnings == []
        ci.add_env("staging", port=18080, default=True)
        ci.promote("v1.0", env="staging")
    assert oci_registry.session().head(f"{oci_registry.base_url}/v2/ml/support-bot/manifests/v1.0",
                                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).ok

    laptop_home = tmp_path / "laptop"
    Registry.init(laptop_home, db_url=db_url)[0].close()
    with on_fake(laptop_home, fake) as laptop:
        laptop.add_remote("team", url, plain_http=True, blob_store=True)
        weight = laptop.show("support-bot@v1.0").weights[0].digest
        assert not laptop.cfg.blobs.has(weight)
        report = laptop.verify()  # not cached here is not damage: the blob store holds it
        assert report.ok and {str(p.kind) for p in report.problems} == {"remote-only"}
        deployed = laptop.promote("v1.1", env="staging")
        assert str(deployed.release.status) == "deployed"
        assert laptop.cfg.blobs.has(weight)
        old_prompt = laptop.show("support-bot@v1.0").prompts[0].digest
        assert not laptop.cfg.blobs.has(old_prompt)
        back = laptop.rollback(env="staging")  # to v1.0, which the CI machine promoted
        assert back.release.version == "v1.0" and laptop.cfg.blobs.has(old_prompt)
        assert laptop.verify().ok

        laptop.cfg.blobs.path(weight).unlink()  # an evicted cache: export fetches it again
        exported = laptop.export("support-bot@v1.1", tmp_path / "v1.1.tar")
        assert exported.blobs == 2 and laptop.cfg.blobs.has(weight)

        oci_registry.stop()  # a push while the registry is down: recorded here, with a warning
        model_dir.set_prompt("Another prompt.\n")
        later = laptop.push(model_dir.write_manifest(version="v1.2"))
        assert later.created and "not on the blob store" in later.warnings[0]
        laptop.remove_remote("team")
        assert not laptop.push(model_dir.manifest).warnings  # the local folder alone again


def test_the_registrys_own_gc_keeps_what_cellar_pushed(reg, second, model_dir, oci_registry):
    """Distribution's garbage-collect (registry stopped, then started again) removes blobs no
    manifest references: every layer, the config and Cellar's record are referenced."""
    _pushed(reg, model_dir, oci_registry)
    oci_registry.garbage_collect()
    assert [v.state for v in reg.verify_remote("team").versions] == ["same"]
    assert second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True).created


def test_a_container_image_is_not_a_version(second, oci_registry):
    from registry.remotes import modelpack
    from registry.remotes.client import Endpoint, OciClient

    client = OciClient(Endpoint(base_url=oci_registry.base_url))
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"not a tar, it does not matter here"
    for data in (config, layer):
        client.upload_bytes("apps/web", modelpack.digest_of(data), data)
    client.put_manifest("apps/web", "v1", json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": modelpack.digest_of(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": modelpack.digest_of(layer),
                    "size": len(layer)}]}).encode())
    client.close()
    with pytest.raises(InvalidInput, match="not a ModelPack artifact"):
        second.pull(f"oci://{oci_registry.host}/apps/web:v1", plain_http=True)
    assert second.versions() == []


def _registry_cli(home, *args, **env):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("registry")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "REGISTRY_HOME": str(home), "REGISTRY_WARM": "0", **env})


def test_a_push_killed_mid_upload_then_pushed_again(reg, second, model_dir, oci_registry):
    """SIGKILL at the first chunk: no tag names a half-pushed version; the next push completes."""
    reg.push(model_dir.manifest)
    reg.add_remote("team", f"oci://{oci_registry.host}/ml", plain_http=True)
    home = reg.cfg.home.path
    killed = _registry_cli(home, "push", "--remote", "team", "v1.0", CELLAR_CRASH_AT="remote:chunk")
    assert killed.returncode == -9
    assert [v.state for v in reg.verify_remote("team").versions] == ["absent"]
    assert _registry_cli(home, "push", "--remote", "team", "v1.0").returncode == 0
    assert second.pull(f"oci://{oci_registry.host}/ml/support-bot:v1.0", plain_http=True).created
    assert second.verify().ok


def test_a_pull_killed_after_verifying_records_nothing(reg, model_dir, oci_registry, tmp_path, monkeypatch):
    _pushed(reg, model_dir, oci_registry)
    other = tmp_path / "other"
    Registry.init(other, db_url=f"sqlite:///{tmp_path}/other.db")[0].close()
    url = f"oci://{oci_registry.host}/ml/support-bot:v1.0"
    env = {"REGISTRY_DB_URL": f"sqlite:///{tmp_path}/other.db"}
    assert _registry_cli(other, "pull", url, "--plain-http", CELLAR_CRASH_AT="pull:verified", **env).returncode == -9
    monkeypatch.setenv("REGISTRY_DB_URL", env["REGISTRY_DB_URL"])
    with Registry.open(other) as site:  # the next command sweeps the dead pull's temp files
        assert site.versions() == [] and not any((other / "blobs" / "sha256").rglob("*/*"))
        assert not [p for p in site.cfg.blobs.tmp.iterdir() if p.name.startswith("pull-")]
    assert _registry_cli(other, "pull", url, "--plain-http", **env).returncode == 0


def test_a_registry_with_a_bearer_token_realm(reg, second, model_dir, tmp_path, monkeypatch):
    """Harbor, Zot and hosted registries answer 401 with a token realm: Cellar asks it for a
    token with the basic credentials, for the scopes it needs, then retries with the token."""
    from tests.oci import TokenServer

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    realm = TokenServer(tmp_path / "token")
    oci = OciRegistry(tmp_path / "oci-token", token_realm=realm).start()
    try:
        reg.push(model_dir.manifest)
        reg.add_remote("team", f"oci://{oci.host}/ml", plain_http=True)
        with pytest.raises(RemoteError, match="asks for credentials"):
            reg.push_remote("support-bot@v1.0", remote="team")
        monkeypatch.setenv("REGISTRY_REMOTE_USERNAME", USER)
        monkeypatch.setenv("REGISTRY_REMOTE_PASSWORD", PASSWORD)
        assert reg.push_remote("support-bot@v1.0", remote="team").created
        assert second.pull(f"oci://{oci.host}/ml/support-bot:v1.0", plain_http=True).created
        assert realm.issued >= 2
        monkeypatch.setenv("REGISTRY_REMOTE_PASSWORD", "wrong")
        with pytest.raises(RemoteError, match="refused the credentials"):
            second.pull(f"oci://{oci.host}/ml/support-bot:v1.0", plain_http=True)
    finally:
        oci.stop()
        realm.close()


def test_a_blob_damaged_here_is_not_published(reg, model_dir, oci_registry):
    from registry import CorruptBlob

    reg.push(model_dir.manifest)
    reg.add_remote("team", f"oci://{oci_registry.host}/ml", plain_http=True)
    blob = reg.cfg.blobs.path(reg.show("support-bot@v1.0").weights[0].digest)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(CorruptBlob, match="registry verify"):
        reg.push_remote("support-bot@v1.0", remote="team")
    assert [v.state for v in reg.verify_remote("team").versions] == ["absent"]


def test_init_with_a_registry_as_the_blob_store(tmp_path, monkeypatch, model_dir, oci_registry):
    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path / "ci"))
    cli("init", "--blobs", f"oci://{oci_registry.host}/ml", "--blobs-plain-http")
    assert [(r["name"], r["blob_store"]) for r in as_json("remote", "list")] == [("blobs", True)]
    cli("push", str(model_dir.manifest))
    assert [v["state"] for v in as_json("remote", "verify", "blobs")["versions"]] == ["same"]
    cli("init", "--blobs", "oci://registry.example.org/ml", "--blobs-plain-http", code=1)  # in clear, off loopback


@pytest.mark.parametrize("hostile, message", [
    ({"weights": [{"path": "../../etc/cron.d/x", "size": 4}]}, "not a relative path"),
    ({"prompts": [{"name": "../../x", "size": 4}]}, "not a relative path"),
    ({"runtime": {"port": "not a port"}}, "record is not valid"),
    ({"manifest_digest": "sha256:" + "0" * 64}, "does not hash to the manifest digest"),
])
def test_a_hostile_cellar_record_is_refused(second, oci_registry, hostile, message):
    """Someone who can write to the registry writes an artifact of their own making."""
    from registry.formats import canonical
    from registry.remotes import modelpack
    from registry.remotes.client import Endpoint, OciClient

    data = b"evil"
    file = {"digest": modelpack.digest_of(data), "size": 4}
    record = {"image": {}, "weights": [{"path": "w.bin", **file}], "prompts": [], "runtime": {"port": 8080},
              "probes": []}
    record.update({k: [{**v[0], **file}] if isinstance(v, list) else v for k, v in hostile.items()
                   if k != "manifest_digest"})
    artifact = modelpack.build(model="bot", version="v1", record=record, provenance=None,
                               manifest_digest=hostile.get("manifest_digest", canonical.digest(record)),
                               changelog={"message": "", "actor": "x", "created_at": "2026-01-01T00:00:00+00:00"})
    client = OciClient(Endpoint(base_url=oci_registry.base_url))
    for digest, blob in {**artifact.small_blobs(), file["digest"]: data}.items():
        client.upload_bytes("ml/bot", digest, blob)
    client.put_manifest("ml/bot", "v1", artifact.manifest)
    client.close()
    with pytest.raises(InvalidInput, match=message):
        second.pull(f"oci://{oci_registry.host}/ml/bot:v1", plain_http=True)
    assert second.versions() == [] and not any(second.cfg.blobs.root.joinpath("sha256").rglob("*/*"))


def test_a_dropped_download_goes_on_from_where_it_stopped(reg, second, tmp_path, oci_registry):
    md = helpers.ModelDir.create(tmp_path / "big")
    (md.root / "weights" / "big.bin").write_bytes(bytes(range(256)) * (3 << 12))  # 3 MiB
    reg.push(md.manifest)
    reg.add_remote("team", f"oci://{oci_registry.host}/ml", plain_http=True)
    reg.push_remote("support-bot@v1.0", remote="team")
    before = oci_registry.requests_seen("GET", "/blobs/sha256:")
    with CuttingRelay(oci_registry.port, cut_after=5 << 19, down=True) as relay:  # mid-file, past a chunk
        pulled = second.pull(f"oci://127.0.0.1:{relay.port}/ml/support-bot:v1.0", plain_http=True)
        assert relay.cuts == 1
    assert pulled.created and second.verify().ok
    assert oci_registry.requests_seen("GET", "/blobs/sha256:") - before == 5  # record, 3 files, 1 ranged retry
    assert '" 206 ' in oci_registry.log.read_text()  # the retry asked for the rest only
