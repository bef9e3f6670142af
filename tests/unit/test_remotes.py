"""The pure parts of remotes: the ModelPack mapping, URLs and their safety rules, credentials
(real files and a real credential-helper executable, no registry)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from registry import InvalidInput
from registry.remotes import auth, modelpack, settings

RECORD = {
    "image": {"ref": "example:latest", "digest": "sha256:" + "ab" * 32},
    "weights": [{"path": "weights/model.safetensors", "digest": "sha256:" + "11" * 32, "size": 10},
                {"path": "weights/tokenizer.json", "digest": "sha256:" + "22" * 32, "size": 5}],
    "prompts": [{"name": "system", "digest": "sha256:" + "33" * 32, "size": 3}],
    "runtime": {"port": 8080}, "probes": [],
}
CHANGELOG = {"message": "first", "actor": "Ada", "created_at": "2026-01-02T03:04:05+00:00"}


def _build(**over):
    args = {"model": "support-bot", "version": "v1.0", "manifest_digest": "sha256:" + "44" * 32, "record": RECORD,
            "changelog": CHANGELOG, "provenance": None, **over}
    return modelpack.build(**args)


def test_the_artifact_is_modelpack_and_deterministic():
    artifact = _build()
    assert _build().manifest == artifact.manifest  # the same version, the same digest
    manifest = json.loads(artifact.manifest)
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    types = [(layer["mediaType"], layer.get("annotations", {}).get("org.cncf.model.filepath"))
             for layer in manifest["layers"]]
    assert types == [("application/vnd.cncf.model.weight.v1.raw", "weights/model.safetensors"),
                     ("application/vnd.cncf.model.weight.config.v1.raw", "weights/tokenizer.json"),
                     ("application/vnd.cncf.model.doc.v1.raw", "prompts/system"),
                     ("application/vnd.cellar.version.v1+json", None)]
    assert [layer["digest"] for layer in manifest["layers"][:3]] == [f["digest"] for f in
                                                                      RECORD["weights"] + RECORD["prompts"]]
    config = json.loads(artifact.config)
    assert set(config) == {"descriptor", "config", "modelfs"}  # ModelPack's schema allows nothing else
    assert config["descriptor"]["createdAt"] == CHANGELOG["created_at"] and config["config"]["format"] == "safetensors"
    assert _build(changelog={**CHANGELOG, "message": "other"}).digest != artifact.digest


def test_reading_back_what_was_built():
    artifact = _build()
    manifest = modelpack.parse_manifest(artifact.manifest, where="x")
    incoming = modelpack.from_cellar(manifest, artifact.cellar, where="x")
    assert (incoming.model, incoming.version, incoming.record) == ("support-bot", "v1.0", RECORD)
    assert ("prompt", "system", "sha256:" + "33" * 32, 3) in incoming.files


def test_a_record_naming_a_file_the_artifact_lacks_is_refused():
    artifact = _build()
    manifest = modelpack.parse_manifest(artifact.manifest, where="x")
    manifest["layers"] = manifest["layers"][1:]
    with pytest.raises(InvalidInput, match="not a layer of the artifact"):
        modelpack.from_cellar(manifest, artifact.cellar, where="x")


@pytest.mark.parametrize("layer, message", [
    ({"mediaType": "application/vnd.cncf.model.weight.v1.tar", "digest": "sha256:" + "1" * 64, "size": 1,
      "annotations": {"org.cncf.model.filepath": "w"}}, "cannot store as files"),
    ({"mediaType": modelpack.WEIGHT, "digest": "sha256:" + "1" * 64, "size": 1,
      "annotations": {"org.cncf.model.filepath": "../../etc/passwd"}}, "not a relative path"),
    ({"mediaType": modelpack.WEIGHT, "digest": "sha256:" + "1" * 64, "size": 1}, "no org.cncf.model.filepath"),
])
def test_foreign_artifacts_cellar_refuses(layer, message):
    manifest = {"schemaVersion": 2, "config": {}, "layers": [layer]}
    with pytest.raises(InvalidInput, match=message):
        modelpack.from_modelpack(manifest, {}, model="m", version="v1", where="x", empty_record={})


def test_urls():
    ref = settings.parse_artifact("oci://127.0.0.1:5000/team/ml/support-bot:v1.3")
    assert (ref.host, ref.repository, ref.tag) == ("127.0.0.1:5000", "team/ml/support-bot", "v1.3")
    by_digest = settings.parse_artifact("oci://reg.example.org/ml/bot@sha256:" + "a" * 64)
    assert by_digest.reference == "sha256:" + "a" * 64
    assert settings.parse_artifact("oci://reg.example.org/ml/bot").tag == "latest"
    for bad in ("https://reg/ml", "oci://reg/ML/Bot:v1", "oci://reg/ml/bot:-x", "oci://reg:port/ml", "oci://reg/"):
        with pytest.raises(InvalidInput):
            settings.parse_artifact(bad)


def test_credentials_in_a_url_are_refused_without_echoing_them():
    with pytest.raises(InvalidInput) as err:
        settings.remote_from("team", "oci://alice:hunter2@reg.example.org/ml")
    assert "hunter2" not in str(err.value) and "docker login" in str(err.value)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1:5000", True), ("localhost", True), ("[::1]:5000", True),
                                            ("127.8.9.1", True), ("10.0.0.1:5000", False),
                                            ("registry.internal", False), ("localhost.evil.org", False)])
def test_plain_http_is_for_loopback(host, loopback):
    assert settings.is_loopback(host) is loopback
    if loopback:
        assert settings.remote_from("r", f"oci://{host}/ml", plain_http=True).base_url == f"http://{host}"
    else:
        with pytest.raises(InvalidInput, match="--insecure"):
            settings.remote_from("r", f"oci://{host}/ml", plain_http=True)
        assert settings.remote_from("r", f"oci://{host}/ml", plain_http=True, insecure=True).insecure
    assert settings.remote_from("r", f"oci://{host}/ml").base_url == f"https://{host}"


def test_credentials_from_the_environment_then_the_docker_file(tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert auth.credentials("reg:5000", env) is None
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "reg:5000": {"auth": base64.b64encode(b"alice:pa:ss").decode()},
        "https://other": {"username": "bob", "password": "pw"}}}))
    assert auth.credentials("reg:5000", env) == ("alice", "pa:ss")
    assert auth.credentials("other", env) == ("bob", "pw")
    assert auth.credentials("reg:5000", {**env, auth.USER_VAR: "ci", auth.PASSWORD_VAR: "x"}) == ("ci", "x")
    with pytest.raises(InvalidInput, match="both"):
        auth.credentials("reg:5000", {**env, auth.USER_VAR: "ci"})


def test_credentials_from_a_credential_helper(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-cellartest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread host\n[ "$host" = "reg:5000" ] || exit 1\n'
                      'echo \'{"ServerURL": "reg:5000", "Username": "helper-user", "Secret": "helper-secret"}\'\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"reg:5000": "cellartest"}}))
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert auth.credentials("reg:5000", env) == ("helper-user", "helper-secret")
    assert auth.credentials("elsewhere", env) is None
