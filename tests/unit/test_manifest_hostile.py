"""Hostile manifests: each refused with a one-line ManifestError naming the file, line or field.

Never an "unexpected" error, never unbounded memory (the alias bombs run in a subprocess with
an address-space limit, so a regression fails here instead of exhausting the machine).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from registry.errors import ManifestError
from registry.formats import safe_yaml
from registry.models import Runtime
from registry.versions import manifest
from tests import helpers

ROOT = Path(__file__).resolve().parents[2]


def laughs(levels: int = 9, indent: str = "") -> str:
    """The "billion laughs": 10 references per level, 10^levels values once expanded."""
    lines = [f'{indent}l0: &l0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def manifest_with_warmup_bomb() -> str:
    return ("model: support-bot\nversion: v1.0\nweights: [weights]\nprompts: {system: prompts/system}\n"
            "runtime:\n  warmup:\n    - method: POST\n      path: /v1/warm\n      json:\n"
            + laughs(indent="        "))


def load_limited(path: Path, limit_bytes: int = 1 << 30) -> subprocess.CompletedProcess:
    """``manifest.load(path)`` in a child whose address space is capped at ``limit_bytes``."""
    code = ("from registry.versions import manifest\nfrom registry.errors import ManifestError\n"
            f"try:\n    manifest.load({str(path)!r})\nexcept ManifestError as exc:\n    print(exc)\n")

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, preexec_fn=cap, check=False)


# --- YAML: aliases, duplicate keys, size --------------------------------------------------


def test_billion_laughs_in_a_warmup_body_is_refused_in_bounded_memory(model_dir):
    model_dir.manifest.write_text(manifest_with_warmup_bomb())
    done = load_limited(model_dir.manifest)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"{model_dir.manifest}:10:13: anchors and aliases (&name, *name) are not "
                           "allowed in a manifest; write the value out\n")


def test_billion_laughs_in_an_unpushed_manifest_that_diff_reads(model_dir):
    # `registry diff v1.0 ./new` reads ./new/cellar.yaml with manifest.load, like push
    model_dir.manifest.write_text("model: support-bot\nversion: v2\nweights: [weights]\n" + laughs())
    done = load_limited(model_dir.manifest)
    assert done.returncode == 0, done.stderr
    assert "cellar.yaml:4:5: anchors and aliases" in done.stdout


def test_a_merge_key_is_refused(model_dir):
    model_dir.manifest.write_text("model: support-bot\nversion: v1\nruntime: {<<: {port: 1}, port: 2}\n")
    with pytest.raises(ManifestError, match=r"cellar\.yaml:3:11: merge keys \(<<\) are not allowed"):
        manifest.load(model_dir.manifest)


@pytest.mark.parametrize(("text", "where", "key", "first"), [
    ("model: a\nversion: v1\nmodel: b\n", "3:1", "model", 1),
    ("model: a\nversion: v1\nruntime:\n  env: {A: '1', B: '2', A: '3'}\n", "4:25", "A", 4),
    ("model: a\nversion: v1\nprobes:\n  - name: x\n    path: /a\n    path: /b\n", "6:5", "path", 5),
])
def test_duplicate_keys_are_refused_with_both_lines(model_dir, text, where, key, first):
    model_dir.manifest.write_text(text)
    with pytest.raises(ManifestError) as err:
        manifest.load(model_dir.manifest)
    assert str(err.value) == f"{model_dir.manifest}:{where}: duplicate key {key!r} (first on line {first}); keep one"


def test_a_huge_manifest_is_refused_before_parsing(model_dir):
    with open(model_dir.manifest, "w") as f:
        f.write("model: a\nversion: v1\nmessage: '" + "x" * (1 << 20) + "'\n")
    with pytest.raises(ManifestError, match=r"cellar\.yaml: larger than 1 MiB"):
        manifest.load(model_dir.manifest)


def test_a_fifo_manifest_is_refused_without_blocking(model_dir):
    fifo = model_dir.root / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ManifestError, match="not a regular file"):
        manifest.load(fifo)


def test_deep_nesting_is_refused(model_dir):
    model_dir.manifest.write_text("model: a\nversion: v1\nprobes: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ManifestError, match=r"cellar\.yaml:3:\d+: nested deeper than 64 levels"):
        manifest.load(model_dir.manifest)


def test_too_many_values_are_refused():
    with pytest.raises(safe_yaml.Refused, match="more than 100000 values"):
        safe_yaml.loads("a: [" + ",".join(["0"] * 100_001) + "]")


@pytest.mark.parametrize(("value", "problem"), [
    ("9" * 5000, "cannot read this value"),
    ("2026-13-45", "cannot read this value"),
    ("!!binary 'not base64 at all!'", r"malformed YAML \(failed to decode base64"),
])
def test_values_yaml_cannot_build_are_a_manifest_error(model_dir, value, problem):
    model_dir.manifest.write_text(f"model: a\nversion: v1\nmessage: {value}\n")
    with pytest.raises(ManifestError, match=rf"cellar\.yaml:3:10: {problem}"):
        manifest.load(model_dir.manifest)


def test_a_second_document_is_refused(model_dir):
    model_dir.manifest.write_text("model: a\nversion: v1\n---\nmodel: b\n")
    with pytest.raises(ManifestError, match=r"cellar\.yaml:3:1: expected a single document"):
        manifest.load(model_dir.manifest)


def test_read_yaml_is_the_same_strict_reader(tmp_path):
    path = tmp_path / "cellar.yaml"
    path.write_text("model: support-bot\nversion: v1\n")
    assert manifest.read_yaml(path) == {"model": "support-bot", "version": "v1"}
    path.write_text("model: &m support-bot\nother: *m\n")
    with pytest.raises(ManifestError, match="anchors and aliases"):
        manifest.read_yaml(path)


def test_the_strict_reader_reads_ordinary_yaml_like_pyyaml():
    text = (ROOT / "examples/support-bot/v1.0/cellar.yaml").read_text()
    assert safe_yaml.loads(text) == yaml.safe_load(text)


# --- control characters in every text field ---------------------------------------------------


@pytest.mark.parametrize(("fields", "where"), [
    ({"message": "release \x1b[2J\x1b[31mALL GOOD"}, r"message: control character U\+001B"),
    ({"message": "fine\u202eenil"}, r"message: control character U\+202E"),
    ({"runtime": {"env": {"MAX_TOKENS": "64\nEVIL=1"}}}, r"runtime\.env: MAX_TOKENS: control character U\+000A"),
    ({"runtime": {"env": {"MAX_TOKENS": "64\x00"}}}, r"runtime\.env: MAX_TOKENS: control character U\+0000"),
    ({"runtime": {"warmup": [{"method": "POST\r\nX-Evil: 1", "path": "/w"}]}},
     r"runtime\.warmup\.0\.method: method 'POST\\\\x0d⏎X-Evil: 1' is not an HTTP method"),
    ({"probes": [{"name": "hi", "method": "GET\n", "path": "/chat"}]}, r"probes\.0\.method: .* not an HTTP method"),
    ({"probes": [{"name": "hi", "method": "BREW", "path": "/chat"}]}, r"probes\.0\.method: .* use one of GET"),
    ({"prompts": {"sys\ntem": "prompts/system"}}, r"prompts: prompt name 'sys\\ntem' is not allowed"),
    ({"prompts": {"system": "prompts/sys\u2028tem"}}, r"prompts\.system: control character U\+2028"),
    ({"weights": ["weights\n"]}, r"weights\[0\]: control character U\+000A"),
    ({"runtime": {"command": "serve --name ok\u202e"}}, r"runtime\.command: control character U\+202E"),
    ({"runtime": {"command": ["serve", "\x1b[2J"]}}, r"runtime\.command: \[1\]: control character U\+001B"),
    ({"probes": [{"name": "hi", "path": "/chat", "expect": {"regex": "ok\u2066"}}]},
     r"probes\.0\.expect\.regex: control character U\+2066"),
    ({"probes": [{"name": "hi", "path": "/chat", "expect": {"not_contains": "\u202eerror"}}]},
     r"probes\.0\.expect\.not_contains: control character U\+202E"),
])
def test_control_characters_are_refused_in_every_text_field(model_dir, fields, where):
    model_dir.write_manifest(**fields)
    with pytest.raises(ManifestError, match=rf"cellar\.yaml: {where}") as err:
        manifest.load(model_dir.manifest)
    assert not any(c in str(err.value) for c in "\n\r\x1b\x00\u202e\u2028")


@pytest.mark.parametrize("text", ["You are \u202eevil\n", "ok\x1b[2J\n", "a\u2028b", "nul\x00"])
def test_control_characters_in_a_prompt_text_are_refused(model_dir, text):
    (model_dir.root / "prompts" / "system").write_text(text)
    with pytest.raises(ManifestError, match=r"cellar\.yaml: prompts\.system: system: control character") as err:
        manifest.load(model_dir.manifest)
    assert not any(c in str(err.value) for c in "\x1b\x00\u202e\u2028")


def test_tabs_newlines_and_crlf_are_fine_in_a_prompt(model_dir):
    (model_dir.root / "prompts" / "system").write_bytes(b"line one\r\n\tindented\r\n")
    manifest.load(model_dir.manifest)


@pytest.mark.parametrize("name", ["evil\nname.bin", "evil\x1b[2Jname.bin", "rtl\u202eftnib.exe"])
def test_control_characters_in_a_weight_file_name(model_dir, name):
    (model_dir.root / "weights" / name).write_bytes(b"w")
    with pytest.raises(ManifestError, match=r"cellar\.yaml: weights\[0\]: file name: control character") as err:
        manifest.load(model_dir.manifest)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


def test_a_url_with_a_password_in_env_is_a_secret(model_dir):
    model_dir.write_manifest(runtime={"env": {"DATABASE_URL": "postgresql://app:hunter2@db/app"}})
    with pytest.raises(ManifestError) as err:
        manifest.load(model_dir.manifest)
    assert str(err.value) == (
        f"{model_dir.manifest}: runtime.env: DATABASE_URL is a URL carrying a password, a secret in all "
        "but name: list DATABASE_URL under runtime.secrets and pass its value from the environment at deploy time")


def test_a_body_that_is_not_json_is_refused(model_dir):
    model_dir.manifest.write_text(model_dir.manifest.read_text()
                                  + "probes:\n- {name: hi, path: /x, json: {when: 2026-01-01}}\n")
    with pytest.raises(ManifestError, match=r"probes\.0\.json: date value '2026-01-01' is not JSON"):
        manifest.load(model_dir.manifest)


def test_recorded_versions_with_old_values_still_load():
    # the rules apply to new manifests; `show` and `diff` read what was recorded before them
    runtime = Runtime.model_validate({"env": {"A": "x\ny", "U": "http://u:p@h"},
                                      "warmup": [{"method": "post", "json": {"d": "x"}}]})
    assert runtime.env["A"] == "x\ny" and runtime.warmup[0].method == "post"


def test_methods_and_messages_that_follow_the_rules_load(model_dir):
    model_dir.write_manifest(message="Friendlier persona\n\n- shorter answers\n",
                             runtime={"env": {"DB": "postgresql://app@db/app"},
                                      "warmup": [{"method": "PUT", "path": "/w", "json": {"a": [1, None]}}]})
    m = manifest.load(model_dir.manifest).manifest
    assert m.message.startswith("Friendlier") and m.runtime.warmup[0].method == "PUT"


# --- sizes, lengths, links ------------------------------------------------------------------


def test_a_300_mib_prompt_is_refused_naming_the_file(model_dir):
    big = model_dir.root / "prompts" / "huge"
    with open(big, "wb") as f:  # sparse: 300 MiB long, nothing written
        f.truncate(300 << 20)
    model_dir.write_manifest(prompts={"system": "prompts/huge"})
    with pytest.raises(ManifestError) as err:
        manifest.load(model_dir.manifest)
    assert str(err.value) == (f"{model_dir.manifest}: prompts.system: huge is {300 << 20} bytes, over the "
                              f"{1 << 20}-byte limit for prompt templates (raise it with REGISTRY_MAX_PROMPT_BYTES "
                              "if it is meant to be)")


def test_the_prompt_limit_follows_the_environment(model_dir, monkeypatch):
    monkeypatch.setenv("REGISTRY_MAX_PROMPT_BYTES", "8")
    with pytest.raises(ManifestError, match=r"prompts\.system: system is \d+ bytes, over the 8-byte limit"):
        manifest.load(model_dir.manifest)
    monkeypatch.setenv("REGISTRY_MAX_PROMPT_BYTES", str(1 << 30))
    assert manifest.load(model_dir.manifest).prompts


def test_a_symlink_loop_in_a_weights_folder(model_dir):
    os.symlink("b.bin", model_dir.root / "weights" / "a.bin")
    os.symlink("a.bin", model_dir.root / "weights" / "b.bin")
    with pytest.raises(ManifestError) as err:
        manifest.load(model_dir.manifest)
    assert str(err.value) == (f"{model_dir.manifest}: weights[0]: 'weights/a.bin' is a symlink loop; "
                              "remove it or point it at a file")


def test_a_symlink_loop_named_directly(model_dir):
    os.symlink("loop.bin", model_dir.root / "loop.bin")
    model_dir.write_manifest(weights=["loop.bin"])
    with pytest.raises(ManifestError, match=r"weights\[0\]: 'loop\.bin' is a symlink loop"):
        manifest.load(model_dir.manifest)


def write_raw_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> Path:
    """A safetensors file with any header: name -> (dtype, shape, byte length)."""
    header, offset = {}, 0
    for name, (dtype, shape, length) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * offset)
    return path


@pytest.mark.parametrize(("tensors", "problem"), [
    ({"t" * 1025: ("F32", [1], 4)}, r"tensor name: 1025 characters, over the limit of 1024"),
    ({"x": ("F32", [1] * 100, 4)}, r"tensor 'x' has a shape of 300 characters as text, over the limit of 255"),
    ({"x": ("F" * 40, [1], 4)}, r"dtype"),
    ({"a\nb": ("F32", [1], 4)}, r"tensor name: control character U\+000A"),
])
def test_tensor_fields_longer_than_their_columns(model_dir, tensors, problem):
    write_raw_safetensors(model_dir.root / "weights" / "model.safetensors", tensors)
    with pytest.raises(ManifestError, match=rf"cellar\.yaml: weights\[0\]: .*{problem}"):
        manifest.load(model_dir.manifest)


def test_a_weight_path_longer_than_its_column(model_dir):
    deep = model_dir.root / "weights" / "/".join(["d" * 200] * 5)
    deep.mkdir(parents=True)
    (deep / ("w" * 11)).write_bytes(b"w")  # weights/ + 5 x 201 + 11 = 1024: fits
    assert max(len(f.name) for f in manifest.load(model_dir.manifest).weights) == 1024
    (deep / ("w" * 12)).write_bytes(b"w")
    with pytest.raises(ManifestError, match=r"weights\[0\]: file name: 1025 characters, over the limit of 1024"):
        manifest.load(model_dir.manifest)


def test_the_builders_here_make_valid_files(model_dir):
    path = write_raw_safetensors(model_dir.root / "weights" / "model.safetensors", {"t" * 1024: ("F32", [1], 4)})
    assert [len(t.name) for t in manifest.load(model_dir.manifest).weights[0].tensors] == [1024]
    assert helpers.write_safetensors(path).exists()
