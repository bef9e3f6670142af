"""Bench: `registry diff` of two versions whose weights are 2 GiB safetensors files.

Builds two sparse 2 GiB safetensors files (a header, then mostly holes) that differ in one
tensor's dtype and one small tensor's bytes, pushes both once, then times `registry diff` as
a subprocess (wall) and counts the bytes that process read (/proc/<pid>/io rchar), to show
that no weight bytes are read. Target: <= 0.3 s wall, no weight bytes read.

    python bench/diff.py [--size-gib 2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from _startup import floor, run_cli


def write_safetensors(path: Path, *, total: int, big_dtype: str, small: bytes) -> None:
    """A header, a small tensor with ``small`` bytes, then two big zero tensors filling ``total``."""
    big = (total - 1024) // 2 // 4 * 4
    header = {
        "small.bias": {"dtype": "F32", "shape": [len(small) // 4], "data_offsets": [0, len(small)]},
        "embed.weight": {"dtype": "F32", "shape": [big // 4], "data_offsets": [len(small), len(small) + big]},
        "layers.0.weight": {"dtype": big_dtype, "shape": [big // 4],
                            "data_offsets": [len(small) + big, len(small) + 2 * big]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + small)
        f.truncate(8 + len(raw) + len(small) + 2 * big)  # sparse: the big tensors are holes


def manifest(folder: Path, version: str) -> None:
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "system").write_text(f"You are the {version} assistant.\n")
    (folder / "cellar.yaml").write_text(
        f"model: big-bot\nversion: {version}\nweights: [weights]\nprompts: {{system: prompts/system}}\n")


def registry(env: dict, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``registry ARGS``; also return how many bytes that process read (rchar)."""
    return run_cli(env, *args, file="io", key="rchar", sep=": ")


def in_process(home: Path) -> float:
    """Best time of the library call alone: what is left is Python and import start-up."""
    from registry.api import Registry

    with Registry.open(home) as reg:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            reg.diff("v1.0", "v1.1")
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--keep", action="store_true", help="Keep the temp folder.")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-diff-"))
    env = {**os.environ, "REGISTRY_HOME": str(root / "home"), "REGISTRY_ACTOR": "bench"}
    env.pop("REGISTRY_DB_URL", None)
    total = int(opts.size_gib * (1 << 30))
    try:
        registry(env, "init")
        for version, dtype, small in (("v1.0", "F32", b"\0" * 64), ("v1.1", "I32", b"\1" * 64)):
            folder = root / version
            (folder / "weights").mkdir(parents=True)
            write_safetensors(folder / "weights" / "model.safetensors", total=total, big_dtype=dtype, small=small)
            manifest(folder, version)
            t0 = time.perf_counter()
            registry(env, "push", str(folder))
            print(f"push {version}: {opts.size_gib:g} GiB in {time.perf_counter() - t0:.1f} s (once)")
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            out, read = registry(env, "diff", "v1.0", "v1.1", "--json")
            runs.append((time.perf_counter() - t0, read))
        diff = json.loads(out.stdout)
        tensors = diff["weights"][0]["tensors"]
        best = min(r[0] for r in runs)
        print(f"registry diff (subprocess, JSON): best {best * 1000:.0f} ms, "
              f"median {sorted(r[0] for r in runs)[2] * 1000:.0f} ms wall (target <= 300 ms)")
        print(f"bytes read by the diff process (rchar, includes Python's own modules): "
              f"{max(r[1] for r in runs) / (1 << 20):.1f} MiB, vs {2 * total / (1 << 30):.0f} GiB of weights")
        print(f"changed tensors: {tensors['changed']} kinds {tensors['kinds']}")
        print(f"Registry.diff in process (no interpreter start-up): {in_process(root / 'home') * 1000:.1f} ms")
        print(f"start-up floor (python + import cli.main, registry.api): {floor() * 1000:.0f} ms wall")
    finally:
        if opts.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
