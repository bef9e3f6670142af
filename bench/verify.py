"""Verify speed: re-hashing a blob store in the page cache, both cores vs one hashlib pass.

    python bench/verify.py [--gib 4] [--blob-mib 256] [--pairs 7]

Builds SIZE of random blobs in a temp blob store (under /work by default, removed at the
end), reads them once so they sit in the page cache, then times, interleaved per pair:
  baseline  one thread, hashlib.file_digest per blob (what BlobStore.verify does)
  scan      registry.store.files.scan.scan (a thread per core, largest blob first)
and prints GB/s for each as min/median/max, and the ratio. Target: scan >= 1.5 GB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from registry.store.files import scan
from registry.store.files.blobs import BlobStore


def build(store: BlobStore, total: int, blob: int) -> dict[str, int]:
    """Random blobs written straight into the store's layout (ingest's fsyncs would only slow the set-up)."""
    recorded = {}
    chunk = os.urandom(1 << 20)
    for i in range(max(1, total // blob)):
        h = hashlib.sha256()
        tmp = store.tmp / f"bench-{os.getpid()}-{i}"
        with open(tmp, "wb") as f:
            for j in range(blob >> 20):
                piece = i.to_bytes(8, "little") + chunk[j % 997:] + chunk[: j % 997]  # every blob differs
                f.write(piece[: 1 << 20])
                h.update(piece[: 1 << 20])
        digest = "sha256:" + h.hexdigest()
        final = store.path(digest)
        final.parent.mkdir(exist_ok=True)
        os.rename(tmp, final)
        recorded[digest] = blob
    return recorded


def baseline(store: BlobStore, recorded: dict[str, int]) -> None:
    for digest in recorded:
        with open(store.path(digest), "rb") as f:
            assert "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == digest


def parallel(store: BlobStore, recorded: dict[str, int]) -> None:
    result = scan.scan(store, recorded=recorded)
    assert not result.problems, result.problems[:3]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--dir", default="/work")
    args = ap.parse_args()
    total, blob = int(args.gib * (1 << 30)), args.blob_mib << 20
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-verify-", dir=args.dir))
    try:
        store = BlobStore(root / "blobs")
        store.create()
        recorded = build(store, total, blob)
        size = sum(recorded.values())
        print(f"{len(recorded)} blobs of {args.blob_mib} MiB = {size / 2**30:.2f} GiB, {os.cpu_count()} cores")
        baseline(store, recorded)  # warm the page cache
        times: dict[str, list[float]] = {"baseline": [], "scan": []}
        for _ in range(args.pairs):
            for name, fn in (("baseline", baseline), ("scan", parallel)):
                t0 = time.perf_counter()
                fn(store, recorded)
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            rates = sorted(size / t / 1e9 for t in ts)
            print(f"{name:9s} GB/s  min {rates[0]:.2f}  median {statistics.median(rates):.2f}  max {rates[-1]:.2f}")
        ratios = sorted(b / s for b, s in zip(times["baseline"], times["scan"]))
        print(f"scan/baseline speed-up  min {ratios[0]:.2f}  median {statistics.median(ratios):.2f}  "
              f"max {ratios[-1]:.2f}  (target: scan >= 1.5 GB/s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
