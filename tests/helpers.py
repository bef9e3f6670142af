"""Builders for test inputs: safetensors files, prompt files, manifests, git commits."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file


def tensors(seed: int = 0, **overrides) -> dict[str, np.ndarray]:
    """A small deterministic set of tensors; ``overrides`` replace or add (None removes)."""
    rng = np.random.default_rng(seed)
    base = {
        "embed.weight": rng.standard_normal((32, 8)).astype(np.float32),
        "layer0.weight": rng.standard_normal((8, 8)).astype(np.float32),
        "layer0.bias": rng.standard_normal(8).astype(np.float32),
        "head.weight": rng.standard_normal((8, 4)).astype(np.float16),
    }
    for name, value in overrides.items():
        name = name.replace("__", ".")
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def write_safetensors(path: Path, data: dict[str, np.ndarray] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(data if data is not None else tensors(), str(path))
    return path


@dataclass
class ModelDir:
    root: Path

    @classmethod
    def create(cls, root: Path, *, model: str = "support-bot", version: str = "v1.0",
               prompt: str = "You are a helpful support assistant.\n", **extra) -> ModelDir:
        root.mkdir(parents=True, exist_ok=True)
        write_safetensors(root / "weights" / "model.safetensors")
        (root / "prompts").mkdir(exist_ok=True)
        (root / "prompts" / "system").write_text(prompt)
        md = cls(root)
        md.write_manifest(model=model, version=version, **extra)
        return md

    @property
    def manifest(self) -> Path:
        return self.root / "cellar.yaml"

    def write_manifest(self, **fields) -> Path:
        data = {
            "model": "support-bot",
            "version": "v1.0",
            "message": "test version",
            "weights": ["weights"],
            "prompts": {"system": "prompts/system"},
            "runtime": {"port": 8080, "env": {"MAX_TOKENS": "64"}, "secrets": ["SUPPORT_API_TOKEN"]},
        }
        if self.manifest.exists():
            data = yaml.safe_load(self.manifest.read_text())
        data.update(fields)
        self.manifest.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.manifest

    def set_prompt(self, text: str, name: str = "system") -> None:
        (self.root / "prompts" / name).write_text(text)


def git(repo: Path, *args: str, author: str = "Ada Lovelace <ada@example.org>") -> str:
    name, email = author.rstrip(">").split(" <")
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env)
    return out.stdout.strip()
