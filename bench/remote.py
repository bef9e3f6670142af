"""Push to and pull from an OCI registry: Cellar vs oras (PyPI), and Cellar's peak memory.

    python bench/remote.py [--size-gib 1] [--pairs 5] [--rss-gib 2] [--dir /work]

Starts Debian's docker-registry (Distribution 2.8) on loopback (scripts/setup-oci-registry.sh
installs it) with its storage under --dir, pushes one version of SIZE of weights into a temp
home, then times, interleaved per pair:
  cellar push   Registry.push_remote to a new namespace (every byte uploaded, 64 MiB chunks)
  oras push     oras-py's chunked push (do_chunked, the same chunk size) of the same file
  cellar pull   Registry.pull into a new home (verify every byte, fsync, record)
  oras pull     oras-py's pull of the same artifact into a new folder
and prints seconds min/median/max and the ratios (targets: push <= 1.3x, pull <= 1.3x). Then
the peak RSS of `registry push --remote` and `registry pull` of a --rss-gib file, each in a
process of its own (target < 200 MiB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.api import Registry  # noqa: E402
from tests.oci import OciRegistry  # noqa: E402

CHUNK = 64 << 20


def write_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(16 << 20)
    with open(path, "wb") as f:
        for i in range(0, size, len(block)):
            f.write(i.to_bytes(8, "little") + block[8:min(len(block), size - i)])


def summary(name: str, values: list[float], unit: str = "s") -> str:
    v = sorted(values)
    return f"{name:14s} min {v[0]:.2f}{unit}  median {statistics.median(v):.2f}{unit}  max {v[-1]:.2f}{unit}"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=1)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--rss-gib", type=float, default=2)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    os.environ.setdefault("REGISTRY_ACTOR", "bench")
    os.environ["DOCKER_CONFIG"] = tempfile.mkdtemp(prefix="bench-docker-")  # anonymous
    root = Path(tempfile.mkdtemp(prefix="bench-remote-", dir=args.dir))
    oci = OciRegistry(root / "oci").start()
    try:
        speed(root, oci, int(args.size_gib * 2**30), args.pairs)
        if args.rss_gib:
            memory(root, oci, int(args.rss_gib * 2**30))
    finally:
        oci.stop()
        shutil.rmtree(root, ignore_errors=True)


def speed(root: Path, oci: OciRegistry, size: int, pairs: int) -> None:
    import oras.client

    folder = root / "model"
    write_file(folder / "weights" / "model.bin", size)
    reg = _home(root / "home", folder, "v1.0")
    orasc = oras.client.OrasClient(insecure=True)
    times: dict[str, list[float]] = {k: [] for k in ("cellar push", "oras push", "cellar pull", "oras pull")}
    print(f"one file of {size / 2**30:.2f} GiB, {pairs} interleaved pairs, {os.cpu_count()} cores")
    for i in range(pairs):
        reg.add_remote(f"p{i}", f"oci://{oci.host}/cellar{i}", plain_http=True)
        times["cellar push"].append(timed(lambda i=i: reg.push_remote("bench@v1.0", remote=f"p{i}")))
        target = f"{oci.host}/oras{i}/bench:v1.0"
        times["oras push"].append(timed(lambda target=target: orasc.push(
            target=target, files=[str(folder / "weights" / "model.bin")], disable_path_validation=True,
            do_chunked=True, chunk_size=CHUNK, quiet=True)))
        pulled, _ = Registry.init(root / f"pulled{i}")  # a new home, made before the clock starts
        url = f"oci://{oci.host}/cellar{i}/bench:v1.0"
        times["cellar pull"].append(timed(lambda pulled=pulled, url=url: pulled.pull(url, plain_http=True)))
        pulled.close()
        shutil.rmtree(root / f"pulled{i}", ignore_errors=True)
        out = root / f"oras-out{i}"
        times["oras pull"].append(timed(lambda target=target, out=out: orasc.pull(target=target, outdir=str(out))))
        shutil.rmtree(out, ignore_errors=True)
    reg.close()
    for name, values in times.items():
        print(summary(name, values) + f"   ({size / statistics.median(values) / 1e9:.2f} GB/s)")
    for a, b in (("cellar push", "oras push"), ("cellar pull", "oras pull")):
        ratios = [x / y for x, y in zip(times[a], times[b])]
        print(summary(f"{a.split()[1]} ratio", ratios, "x") + "   (target <= 1.3x)")


def memory(root: Path, oci: OciRegistry, size: int) -> None:
    folder = root / "big"
    write_file(folder / "weights" / "model.bin", size)
    home = root / "rss-home"
    _home(home, folder, "v2.0").close()
    env = {**os.environ, "REGISTRY_HOME": str(home), "REGISTRY_WARM": "0"}
    registry = str(Path(sys.executable).with_name("registry"))
    subprocess.run([registry, "remote", "add", "rss", f"oci://{oci.host}/rss", "--plain-http"], env=env, check=True,
                   capture_output=True, timeout=60)
    push = _peak_rss([registry, "push", "--remote", "rss", "bench@v2.0"], env)
    pulled = root / "rss-pulled"
    Registry.init(pulled)[0].close()
    pull = _peak_rss([registry, "pull", f"oci://{oci.host}/rss/bench:v2.0", "--plain-http"],
                     {**env, "REGISTRY_HOME": str(pulled)})
    print(f"peak RSS, {size / 2**30:.1f} GiB file: push --remote {push:.0f} MiB, pull {pull:.0f} MiB "
          "(target < 200 MiB)")


def _peak_rss(cmd: list[str], env: dict) -> float:
    """The peak RSS of ``cmd`` in MiB, alone in a fresh process (ru_maxrss of a waited child)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], env=env, check=True, capture_output=True, text=True,
                         timeout=600)
    return int(out.stdout.strip()) / 1024


def _home(path: Path, folder: Path, version: str) -> Registry:
    reg, _ = Registry.init(path)
    (folder / "cellar.yaml").write_text(f"model: bench\nversion: {version}\nweights: [weights]\n")
    reg.push(folder / "cellar.yaml")
    return reg

if __name__ == "__main__":
    main()
