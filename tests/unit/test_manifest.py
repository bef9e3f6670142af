"""Manifest validation and file resolution: errors name the file and the field."""

from __future__ import annotations

import os

import pytest

from registry.errors import ManifestError
from registry.versions import manifest
from tests import helpers


def load(md: helpers.ModelDir):
    return manifest.load(md.manifest)


def test_a_valid_manifest_resolves_its_files(model_dir):
    resolved = load(model_dir)
    assert resolved.manifest.model == "support-bot"
    assert [(f.kind, f.name) for f in resolved.files] == [
        ("weight", "weights/model.safetensors"), ("prompt", "system")]
    assert len(resolved.weights[0].tensors) == 4


def test_a_folder_argument_means_its_cellar_yaml(model_dir):
    assert manifest.load(model_dir.root).manifest.version == "v1.0"


def test_overrides_replace_manifest_fields(model_dir):
    resolved = manifest.load(model_dir.manifest, version="v9", message="override", unused=None)
    assert (resolved.manifest.version, resolved.manifest.message) == ("v9", "override")


def test_unknown_key_names_file_and_field(model_dir):
    model_dir.write_manifest(wieghts=["weights"])
    with pytest.raises(ManifestError) as err:
        load(model_dir)
    assert str(model_dir.manifest) in str(err.value) and "wieghts: unknown key" in str(err.value)


def test_unknown_nested_key_names_its_path(model_dir):
    model_dir.write_manifest(runtime={"port": 8080, "helth": {}})
    with pytest.raises(ManifestError, match=r"runtime\.helth: unknown key"):
        load(model_dir)


def test_wrong_type_names_the_field(model_dir):
    model_dir.write_manifest(runtime={"port": "eighty"})
    with pytest.raises(ManifestError, match=r"cellar\.yaml: runtime\.port"):
        load(model_dir)


def test_bad_model_name_names_the_field(model_dir):
    model_dir.write_manifest(model="../evil")
    with pytest.raises(ManifestError, match=r"cellar\.yaml: model: name '\.\./evil' is not allowed"):
        load(model_dir)


def test_malformed_yaml_gives_line_and_column(model_dir):
    model_dir.manifest.write_text("model: a\nversion: [v1\n")
    with pytest.raises(ManifestError, match=r"cellar\.yaml:\d+:\d+: malformed YAML"):
        load(model_dir)


@pytest.mark.parametrize("text", ["", "- a list\n", "just a string\n"])
def test_a_manifest_must_be_a_mapping(model_dir, text):
    model_dir.manifest.write_text(text)
    with pytest.raises(ManifestError, match="mapping"):
        load(model_dir)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        manifest.load(tmp_path / "cellar.yaml")


def test_non_utf8_manifest(model_dir):
    model_dir.manifest.write_bytes(b"model: \xff\xfe\n")
    with pytest.raises(ManifestError, match="cannot read"):
        load(model_dir)


def test_secret_values_in_env_are_refused(model_dir):
    model_dir.write_manifest(runtime={"env": {"OPENAI_API_KEY": "sk-123"}})
    with pytest.raises(ManifestError, match="OPENAI_API_KEY looks like a secret"):
        load(model_dir)


@pytest.mark.parametrize("entry", ["../outside.bin", "/etc/passwd", "weights/../../outside.bin",
                                   "a\\..\\b", "w\x00x"])
def test_weight_paths_may_not_escape(model_dir, entry):
    (model_dir.root.parent / "outside.bin").write_bytes(b"secret")
    model_dir.write_manifest(weights=[entry])
    with pytest.raises(ManifestError, match=r"weights\[0\]"):
        load(model_dir)


def test_prompt_paths_may_not_escape(model_dir):
    (model_dir.root.parent / "outside.txt").write_text("x")
    model_dir.write_manifest(prompts={"system": "../outside.txt"})
    with pytest.raises(ManifestError, match=r"prompts\.system: .* outside"):
        load(model_dir)


def test_symlink_in_weights_folder_pointing_outside(model_dir):
    (model_dir.root.parent / "outside.bin").write_bytes(b"secret")
    os.symlink("../../outside.bin", model_dir.root / "weights" / "sneaky.bin")
    with pytest.raises(ManifestError, match=r"sneaky\.bin is a symlink pointing outside"):
        load(model_dir)


def test_symlinked_weight_entry_pointing_outside(model_dir):
    (model_dir.root.parent / "outside.bin").write_bytes(b"secret")
    os.symlink("../outside.bin", model_dir.root / "link.bin")
    model_dir.write_manifest(weights=["link.bin"])
    with pytest.raises(ManifestError, match="outside the manifest's folder"):
        load(model_dir)


def test_symlinked_folder_inside_weights_is_refused(model_dir):
    os.symlink("/etc", model_dir.root / "weights" / "etc")
    with pytest.raises(ManifestError, match="symlinked folder"):
        load(model_dir)


def test_symlink_staying_inside_is_fine(model_dir):
    os.symlink("model.safetensors", model_dir.root / "weights" / "alias.safetensors")
    names = [f.name for f in load(model_dir).weights]
    assert names == ["weights/alias.safetensors", "weights/model.safetensors"]


def test_missing_weight_file(model_dir):
    model_dir.write_manifest(weights=["weights/nope.safetensors"])
    with pytest.raises(ManifestError, match=r"weights\[0\]: 'weights/nope.safetensors' does not exist"):
        load(model_dir)


def test_missing_prompt_file(model_dir):
    model_dir.write_manifest(prompts={"system": "prompts/nope"})
    with pytest.raises(ManifestError, match=r"prompts\.system: .*does not exist"):
        load(model_dir)


def test_empty_weights_folder(model_dir):
    (model_dir.root / "empty").mkdir()
    model_dir.write_manifest(weights=["empty"])
    with pytest.raises(ManifestError, match=r"weights\[0\]: folder 'empty' holds no files"):
        load(model_dir)


def test_a_fifo_is_not_a_regular_file(model_dir):
    os.mkfifo(model_dir.root / "weights" / "pipe.bin")
    with pytest.raises(ManifestError, match=r"pipe\.bin is not a regular file"):
        load(model_dir)


def test_corrupt_safetensors_header(model_dir):
    (model_dir.root / "weights" / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(ManifestError, match=r"weights\[0\]: model\.safetensors is not a valid safetensors"):
        load(model_dir)


def test_prompt_must_be_utf8(model_dir):
    (model_dir.root / "prompts" / "system").write_bytes(b"\xff\xfe binary")
    with pytest.raises(ManifestError, match=r"prompts\.system: .*not UTF-8"):
        load(model_dir)


def test_bad_prompt_name(model_dir):
    model_dir.write_manifest(prompts={"../system": "prompts/system"})
    with pytest.raises(ManifestError, match="prompt name"):
        load(model_dir)


def test_from_flags_needs_version_and_name_equals_path(model_dir):
    with pytest.raises(ManifestError, match="--version is required"):
        manifest.from_flags(model="m", version=None, message=None, weights=[], prompts=[], image=None,
                            root=model_dir.root)
    with pytest.raises(ManifestError, match="NAME=PATH"):
        manifest.from_flags(model="m", version="v1", message=None, weights=[], prompts=["system"],
                            image=None, root=model_dir.root)
    with pytest.raises(ManifestError, match="command line: model"):
        manifest.from_flags(model="Bad/Name", version="v1", message=None, weights=[], prompts=[],
                            image=None, root=model_dir.root)


def test_dotdot_inside_the_folder_is_refused(model_dir):
    (model_dir.root / "sub").mkdir()
    (model_dir.root / "w.bin").write_bytes(b"w")
    model_dir.write_manifest(weights=["sub/../w.bin"])
    with pytest.raises(ManifestError, match=r"weights\[0\]: 'sub/\.\./w\.bin' contains '\.\.'"):
        load(model_dir)


def test_dotdot_through_a_symlinked_root_is_refused(model_dir):
    (model_dir.root / "w.bin").write_bytes(b"w")
    link = model_dir.root.parent / "linked"
    os.symlink(model_dir.root, link)
    model_dir.write_manifest(weights=[f"../{model_dir.root.name}/w.bin"])
    with pytest.raises(ManifestError, match=r"weights\[0\]: .* contains '\.\.'"):
        manifest.load(link / "cellar.yaml")


@pytest.mark.parametrize("entry", ["prompts", "prompts/w.bin"])
def test_weights_under_the_prompt_folder_are_refused(model_dir, entry):
    (model_dir.root / "prompts" / "w.bin").write_bytes(b"w")
    model_dir.write_manifest(weights=[entry])
    with pytest.raises(ManifestError, match=r"weights\[0\]: weight file 'prompts/.*' is under prompts/"):
        load(model_dir)


@pytest.mark.parametrize(("fields", "field"), [
    ({"runtime": {"health": {"path": "healthz"}}}, r"runtime\.health\.path"),
    ({"runtime": {"warmup": [{"path": "v1/chat"}]}}, r"runtime\.warmup\.0\.path"),
    ({"probes": [{"name": "hi", "path": "chat"}]}, r"probes\.0\.path"),
    ({"probes": [{"name": "hi", "path": "/chat now"}]}, r"probes\.0\.path"),
])
def test_http_paths_must_start_with_a_slash(model_dir, fields, field):
    model_dir.write_manifest(**fields)
    with pytest.raises(ManifestError, match=rf"cellar\.yaml: {field}: .* must be a URL path starting with '/'"):
        load(model_dir)


def test_http_paths_with_a_slash_are_fine(model_dir):
    model_dir.write_manifest(runtime={"health": {"path": "/healthz"}, "warmup": [{"path": "/v1?x=1"}]},
                             probes=[{"name": "hi", "path": "/chat"}])
    assert load(model_dir).manifest.runtime.health.path == "/healthz"


def test_stored_runtimes_with_old_relative_paths_still_load():
    from registry.models import Runtime

    assert Runtime.model_validate({"health": {"path": "healthz"}}).health.path == "healthz"
