"""Export and import speed: a version of SIZE of safetensors weights vs plain tar.

    python bench/export.py [--size-gib 2] [--files 4] [--pairs 7] [--dir /work]

Pushes one version into a temp registry (under --dir, removed at the end), then times,
interleaved per pair:
  export    Registry.export (hash while copying, fsync, rename)
  tar c     `tar cf` of the same blob files, then `sync` of the tar file
  import    Registry.import_archive into a new home (check, copy and verify, install, index
            tensors, record)
  tar x     `tar xf` of the tar file into a new folder, then `sync` of the files
and prints seconds min/median/max and the ratios (targets: export <= 1.2x, import <= 1.3x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

from registry.api import Registry

TENSORS_PER_FILE = 8


def write_weights(folder: Path, total: int, files: int) -> None:
    """``files`` safetensors files of random bytes, TENSORS_PER_FILE tensors each."""
    folder.mkdir(parents=True)
    per_file = total // files
    per_tensor = per_file // TENSORS_PER_FILE
    chunk = os.urandom(16 << 20)
    for i in range(files):
        header = {f"layer{j}.weight": {"dtype": "U8", "shape": [per_tensor],
                                       "data_offsets": [j * per_tensor, (j + 1) * per_tensor]}
                  for j in range(TENSORS_PER_FILE)}
        head = json.dumps(header).encode()
        head += b" " * (-len(head) % 8)
        with open(folder / f"part{i}.safetensors", "wb") as f:
            f.write(struct.pack("<Q", len(head)) + head)
            left, n = per_tensor * TENSORS_PER_FILE, 0
            while left:
                piece = i.to_bytes(4, "little") + n.to_bytes(4, "little") + chunk[8:min(len(chunk), left)]
                f.write(piece[:left])
                left -= len(piece[:left])
                n += 1


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(name: str, values: list[float], unit: str = "s") -> str:
    v = sorted(values)
    return f"{name:16s} min {v[0]:.2f}{unit}  median {statistics.median(v):.2f}{unit}  max {v[-1]:.2f}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--dir", default="/work")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-export-", dir=args.dir))
    os.environ["REGISTRY_ACTOR"] = "bench"
    try:
        run(root, int(args.size_gib * (1 << 30)), args.files, args.pairs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, total: int, files: int, pairs: int) -> None:
    model = root / "model"
    write_weights(model / "weights", total, files)
    (model / "cellar.yaml").write_text("model: bench\nversion: v1\nweights: [weights]\n")
    Registry.init(root / "home")[0].close()
    reg = Registry.open(root / "home")
    reg.push(model / "cellar.yaml")
    info = reg.show("bench@v1")
    blob_files = [str(reg.blobs.path(w.digest).relative_to(reg.blobs.root)) for w in info.weights]
    size = sum(w.size for w in info.weights)
    print(f"{len(blob_files)} weight files, {size / 2**30:.2f} GiB, {pairs} interleaved pairs, {os.cpu_count()} cores")
    out, plain = root / "v1.tar", root / "plain.tar"
    times: dict[str, list[float]] = {"export": [], "tar c": [], "import": [], "tar x": []}

    def tar_c():
        subprocess.run(["tar", "cf", str(plain), "-C", str(reg.blobs.root), *blob_files], check=True)
        subprocess.run(["sync", str(plain)], check=True)

    for i in range(pairs):
        out.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)
        steps = [("export", lambda: reg.export("bench@v1", out)), ("tar c", tar_c)]
        for name, fn in (steps if i % 2 == 0 else steps[::-1]):  # alternate which goes first
            times[name].append(timed(fn))
        target, extracted = root / f"site{i}", root / f"x{i}"
        Registry.init(target)[0].close()  # set-up, not timed: a site has its registry already
        with Registry.open(target) as site:
            steps = [("import", lambda: _import(site, out)), ("tar x", partial(_untar, plain, extracted))]
            for name, fn in (steps if i % 2 == 0 else steps[::-1]):
                times[name].append(timed(fn))
        shutil.rmtree(target, ignore_errors=True)
        _rmtree_ro(extracted)
    reg.close()
    for name, values in times.items():
        print(summary(name, values) + f"   ({size / statistics.median(values) / 1e9:.2f} GB/s)")
    for a, b, target_ratio in (("export", "tar c", 1.2), ("import", "tar x", 1.3)):
        ratios = [x / y for x, y in zip(times[a], times[b])]
        print(summary(f"{a}/{b}", ratios, "x") + f"   (target <= {target_ratio}x)")


def _import(site: Registry, archive: Path) -> None:
    assert site.import_archive(archive).created


def _untar(plain: Path, folder: Path) -> None:
    folder.mkdir()
    subprocess.run(["tar", "xf", str(plain), "-C", str(folder)], check=True)
    files = [str(p) for p in folder.rglob("*") if p.is_file()]
    subprocess.run(["sync", *files], check=True)


def _rmtree_ro(folder: Path) -> None:
    for dirpath, _dirs, _files in os.walk(folder):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
