"""Bench: push a 2 GiB weights file vs ``cp SRC DST && sync``, page cache dropped, paired A/B.

    python bench/push.py [--size-mib 2048] [--rounds 3] [--dir /tmp/cellar-bench] [--kind safetensors|bin]

Each round times both, in alternating order, each from a cold page cache and into a fresh
registry home (so the blob is really written). Then it times a prompt-only re-push of the
unchanged weights (the stat cache path). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

REGISTRY = str(Path(sys.executable).with_name("registry"))
MIB = 1 << 20


def drop_caches() -> bool:
    """Drop the page cache, then warm the programs (not the data) for both sides alike:
    Python's libraries are ~30 MB against cp's 150 KB, and a user's are warm."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        dropped = True
    except OSError:
        dropped = False
    subprocess.run(["cp", "--version"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", "import registry.api, cli.main, yaml, rich.progress, git"], check=True)
    return dropped


def make_weights(path: Path, size: int, kind: str) -> None:
    """Random bytes; as safetensors, eight U8 tensors, so per-tensor hashing is exercised too."""
    with open(path, "wb") as f:
        body = size
        if kind == "safetensors":
            n, each = 8, size // 8
            header = {f"layer{i}.weight": {"dtype": "U8", "shape": [each],
                                           "data_offsets": [i * each, (i + 1) * each]} for i in range(n)}
            raw = json.dumps(header).encode()
            raw += b" " * (-len(raw) % 8)
            f.write(struct.pack("<Q", len(raw)) + raw)
            body = n * each
        while body:
            chunk = min(body, 64 * MIB)
            f.write(os.urandom(chunk))
            body -= chunk
    old = time.time_ns() - 3600 * 10**9  # written long ago, like real weights (not "racy")
    os.utime(path, ns=(old, old))


def run(cmd: list[str], env: dict | None = None, shell: bool = False) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, shell=shell, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def fresh_home(work: Path) -> dict:
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "REGISTRY_HOME": str(home), "REGISTRY_ACTOR": "bench"}
    env.pop("REGISTRY_DB_URL", None)
    subprocess.run([REGISTRY, "init"], check=True, env=env, stdout=subprocess.DEVNULL)
    return env


def push_cmd(src: Path, version: str, prompt: Path) -> list[str]:
    return [REGISTRY, "push", "--model", "bench", "--version", version, "--weights", src.name,
            "--prompt", f"system={prompt.name}", "-m", "bench"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/cellar-bench")
    ap.add_argument("--kind", choices=["safetensors", "bin"], default="safetensors")
    args = ap.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    src = work / f"weights.{args.kind}"
    prompt = work / "system.txt"
    prompt.write_text("You are a helpful assistant.\n")
    if not src.exists() or src.stat().st_size < args.size_mib * MIB * 0.99:
        print(f"writing {args.size_mib} MiB of random weights to {src} ...", flush=True)
        make_weights(src, args.size_mib * MIB, args.kind)
    cold = drop_caches()
    print(f"page cache dropped before each run: {'yes' if cold else 'NO (not permitted here; runs are warm)'}; "
          f"load average {os.getloadavg()[0]:.1f}")
    cp_times, push_times = [], []
    for r in range(args.rounds):
        order = ["cp", "push"] if r % 2 == 0 else ["push", "cp"]
        for which in order:
            if which == "cp":
                dst = work / "copy.bin"
                drop_caches()
                cp_times.append(run(f"cp {src} {dst} && sync", shell=True))
                dst.unlink()
            else:
                env = fresh_home(work)
                drop_caches()
                push_times.append(run(push_cmd(src, "v1", prompt), env=env))
        print(f"round {r + 1}: cp+sync {cp_times[-1]:.2f} s, registry push {push_times[-1]:.2f} s", flush=True)
    cp_med, push_med = statistics.median(cp_times), statistics.median(push_times)
    print(f"median cp+sync {cp_med:.2f} s, median push {push_med:.2f} s, ratio {push_med / cp_med:.2f}x "
          f"(target <= 1.15x); {args.size_mib} MiB {args.kind}, {args.rounds} rounds")
    repush(work, src, prompt, env)


def repush(work: Path, src: Path, prompt: Path, env: dict) -> None:
    """A prompt-only new version: the 2 GiB weights are known to the stat cache."""
    times = []
    for i in range(5):
        prompt.write_text(f"You are a helpful assistant, take {i}.\n")
        times.append(run(push_cmd(src, f"v2.{i}", prompt), env=env))
    api = _api_repush(work, src, prompt)
    print(f"re-push, unchanged weights (prompt-only new version): CLI median {statistics.median(times):.3f} s "
          f"wall (incl. interpreter start), API median {api:.3f} s (target <= 0.3 s)")


def _api_repush(work: Path, src: Path, prompt: Path) -> float:
    os.environ["REGISTRY_HOME"] = str(work / "home")
    from registry import Registry
    from registry import manifest

    times = []
    with Registry.open() as reg:
        for i in range(5):
            prompt.write_text(f"API take {i}.\n")
            t0 = time.perf_counter()
            resolved = manifest.from_flags(model="bench", version=f"v3.{i}", message="bench",
                                           weights=[src.name], prompts=[f"system={prompt.name}"],
                                           image=None, root=work)
            reg.push(resolved, actor="bench")
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
