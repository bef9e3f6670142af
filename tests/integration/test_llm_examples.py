"""The LLM server examples (issue 24): each manifest pushes (with stand-in weights: the real
ones are downloaded, never committed) and diffs, on SQLite and PostgreSQL, and says what a real
server needs: its health path, minutes to load, GPUs, shared memory, a warm-up."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli

EXAMPLES = Path(__file__).parents[2] / "examples"
# example -> (weights folder, stand-in files, the health path its server answers when ready)
SERVERS = {
    "vllm": ("hf", ["config.json", "model.safetensors", "tokenizer.json"], "/health"),
    "llama-cpp": ("gguf", ["qwen2.5-0.5b-instruct-q4_k_m.gguf"], "/health"),
    "tei": ("hf", ["config.json", "model.safetensors", "tokenizer.json"], "/health"),
    "ollama": ("ollama", ["manifests/registry.ollama.ai/library/qwen2.5/0.5b", "blobs/sha256-00"], "/api/version"),
}


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\0" * 8


def _copy(name: str, where: Path) -> Path:
    folder, files, _ = SERVERS[name]
    root = shutil.copytree(EXAMPLES / name, where / name)
    for rel in files:
        path = root / folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_safetensors() if rel.endswith(".safetensors") else f"stand-in {rel}\n".encode())
    return root


@pytest.mark.parametrize("name", SERVERS)
def test_each_llm_example_pushes_and_diffs(name, reg, tmp_path):
    root = _copy(name, tmp_path)
    pushed = reg.push(root / "cellar.yaml")
    model = pushed.model
    info = reg.show(f"{model}@v1.0")
    runtime = info.runtime
    assert runtime.health.path == SERVERS[name][2]
    assert runtime.health.timeout_s >= 120  # minutes: these servers load for a long time
    assert runtime.gpus is not None and runtime.warmup and runtime.warmup_timeout_s
    assert runtime.memory
    if name == "vllm":
        assert runtime.ipc == "host" and runtime.ulimits == {"memlock": -1, "stack": 67108864}
    if name == "tei":
        assert runtime.shm_size == "1g"
    if name == "ollama":  # its / says "running" before a model is loaded: readiness is a real generation
        assert runtime.warmup[0].path == "/api/generate" and runtime.health.path != "/"

    # the same server on another GPU layout is another version, and diff says what changed
    manifest = yaml.safe_load((root / "cellar.yaml").read_text())
    manifest["version"], manifest["runtime"]["gpus"] = "v1.1", [0, 1]
    (root / "cellar.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    reg.push(root / "cellar.yaml")
    diff = reg.diff(f"{model}@v1.0", f"{model}@v1.1")
    changed = {s.field: (s.old, s.new) for s in diff.runtime.settings}
    assert changed == {"gpus": (manifest_gpus(name), ["0", "1"])}
    assert "host    gpus [0, 1]" in cli("show", f"{model}@v1.1").stdout
    assert "~ gpus:" in cli("diff", f"{model}@v1.0", f"{model}@v1.1").stdout
    assert all(str(w.status) == "unchanged" for w in diff.weights)


def manifest_gpus(name: str):
    return yaml.safe_load((EXAMPLES / name / "cellar.yaml").read_text())["runtime"]["gpus"]
