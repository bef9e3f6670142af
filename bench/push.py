"""Bench: `registry push` of large weights against the plain tools, page cache dropped, paired A/B.

    python bench/push.py [--size 2048] [--pairs 7] [--dir /tmp/cellar-bench]
                         [--only cold,shards,copied,copied-hot,prompt]
                         [--pg ADMIN_URL] [--in-process]

- cold:   push of one SIZE MiB safetensors into a fresh home   vs  `cp FILE DST && sync DST`
- shards: push of 8 safetensors shards (SIZE/8 MiB each)        vs  `cp` of the 8 files && `sync` them
- copied: push of a byte-for-byte copy of weights already stored (a new inode: the stat cache
          misses)                                               vs  one hashlib SHA-256 pass over it
- copied-hot: the same, as a user does it: the copy made just before (`cp`, so in the page
          cache), no cache dropped                               vs  one hashlib SHA-256 pass over it
- prompt: a prompt-only new version (weights known to the stat cache), CLI and API.

Each pair runs both sides in alternating order, each from a cold page cache (`echo 3 >
/proc/sys/vm/drop_caches`, as root), and prints min/median/max of each side and of the ratio,
CPU seconds per GiB (user+system of the process and its children, from wait4), and bytes the
process wrote to storage (rusage blocks out: includes write-back it caused). Asserts nothing.
`registry` runs as the console script does, through a warm process of the bench's own (its
child's CPU time and writes, added to the warm process's counters when reaped, are counted), or
with --in-process as REGISTRY_WARM=0 (each push starts Python and imports anew).
Default size 2 GiB runs in about 6 minutes; needs about 5x SIZE of free disk; removes its
files at the end unless --keep. SQLite by default; with ``--pg`` each fresh home records into a
scratch PostgreSQL database on that server (all dropped at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run the code of this checkout, whichever one the environment's `registry` was installed from.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
from _startup import CLI, Warm, own_warm_process  # noqa: E402

REGISTRY = CLI  # as the console script runs: through a warm process of this bench's own (see main)
WARM: Warm | None = None  # None with --in-process
MIB, GIB = 1 << 20, 1 << 30
HASH_PASS = "import hashlib, sys; hashlib.file_digest(open(sys.argv[1], 'rb'), 'sha256')"


@dataclass
class Run:
    wall: float
    cpu: float  # user + system seconds, the process and the children it waited for
    written: int  # bytes written to storage (rusage blocks out x 512)


def drop_caches(env: dict | None = None) -> bool:
    """Drop the page cache, then warm the programs (not the data) for both sides alike:
    Python's libraries are ~30 MB against cp's 150 KB, and a user's are warm. So is a user's
    database: with a registry's ``env``, one `registry list` reads it back (on PostgreSQL a
    new connection would otherwise read the server's catalogs from disk)."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        dropped = True
    except OSError:
        dropped = False
    subprocess.run(["cp", "--version"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", "import registry.api, cli.main, yaml, rich.progress, blake3"], check=True)
    if env and "REGISTRY_HOME" in env:
        subprocess.run([*REGISTRY, "list"], env=env, check=True, stdout=subprocess.DEVNULL)
    return dropped


def run(cmd: list[str] | str, *, env: dict | None = None, cold: bool = True) -> Run:
    if cold:
        drop_caches(env)
    if WARM:
        WARM.settle()
    warm = WARM.reaped() if WARM else (0.0, 0)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed with exit code {proc.returncode}")
    # With the warm process, the command ran in its child: its CPU time and writes are there.
    if WARM:
        WARM.settle()
    after = WARM.reaped() if WARM else (0.0, 0)
    return Run(wall=wall, cpu=usage.ru_utime + usage.ru_stime + after[0] - warm[0],
               written=usage.ru_oublock * 512 + after[1] - warm[1])


def make_safetensors(path: Path, size: int, tensors: int = 8) -> None:
    """Random bytes as ``tensors`` U8 tensors, so per-tensor hashing is exercised too."""
    each = size // tensors
    header = {f"layer{i}.weight": {"dtype": "U8", "shape": [each], "data_offsets": [i * each, (i + 1) * each]}
              for i in range(tensors)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        body = tensors * each
        while body:
            chunk = min(body, 64 * MIB)
            f.write(os.urandom(chunk))
            body -= chunk
    age(path)


def age(path: Path, seconds: int = 3600) -> None:
    """Written long ago, like real weights (not "racy" for the stat cache); a new stat key."""
    old = time.time_ns() - seconds * 10**9
    os.utime(path, ns=(old, old))


PG_ADMIN: str | None = None  # --pg
DATABASES = contextlib.ExitStack()


def fresh_home(work: Path) -> dict:
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "REGISTRY_HOME": str(home), "REGISTRY_ACTOR": "bench",
           **(WARM.env if WARM else {"REGISTRY_WARM": "0"})}
    env.pop("REGISTRY_DB_URL", None)
    if PG_ADMIN:
        from api_push import scratch_db

        env["REGISTRY_DB_URL"] = DATABASES.enter_context(scratch_db(PG_ADMIN))
    subprocess.run([*REGISTRY, "init"], check=True, env=env, stdout=subprocess.DEVNULL)
    return env


def push_cmd(weights: list[Path], version: str, prompt: Path) -> list[str]:
    cmd = [*REGISTRY, "push", "--model", "bench", "--version", version, "-m", "bench",
           "--prompt", f"system={prompt.name}"]
    for w in weights:
        cmd += ["--weights", str(w.relative_to(Path.cwd()))]
    return cmd


def spread(xs: list[float], unit: str = "s") -> str:
    return f"min {min(xs):.2f}{unit} median {statistics.median(xs):.2f}{unit} max {max(xs):.2f}{unit}"


def report(title: str, name_a: str, a: list[Run], name_b: str, b: list[Run], size: int, target: float,
           cache: str = "cold page cache") -> None:
    ratios = [x.wall / y.wall for x, y in zip(a, b, strict=True)]
    gib = size / GIB
    print(f"\n{title} ({len(a)} interleaved pairs, {size // MIB} MiB, {cache})")
    for name, runs in ((name_a, a), (name_b, b)):
        print(f"  {name:<28} wall {spread([r.wall for r in runs])}; "
              f"CPU {statistics.median(r.cpu for r in runs) / gib:.2f} s/GiB; "
              f"written {statistics.median(r.written for r in runs) / MIB:.0f} MiB (median)")
    verdict = "met" if statistics.median(ratios) <= target else "MISSED"
    print(f"  ratio {name_a} / {name_b}: {spread(ratios, 'x')}  (target <= {target}x: {verdict})", flush=True)


def pairs(n: int, a, b) -> tuple[list[Run], list[Run]]:
    """n pairs, alternating which side runs first."""
    ra, rb = [], []
    for i in range(n):
        for side in ((a, b) if i % 2 == 0 else (b, a)):
            (ra if side is a else rb).append(side(i))
    return ra, rb


def bench_cold(work: Path, src: Path, prompt: Path, n: int) -> None:
    dst = work / "cp-dst.bin"

    def push(i: int) -> Run:
        env = fresh_home(work)
        return run(push_cmd([src], "v1", prompt), env=env)

    def cp(i: int) -> Run:
        dst.unlink(missing_ok=True)
        drop_caches()
        r = run(f"cp {src} {dst} && sync {dst}", cold=False)
        dst.unlink()
        return r

    a, b = pairs(n, push, cp)
    report("push of one safetensors file vs cp && sync", "registry push", a, "cp && sync", b,
           src.stat().st_size, 1.2)


def bench_shards(work: Path, shards: list[Path], prompt: Path, n: int) -> None:
    dst = work / "cp-shards"
    files = " ".join(str(s) for s in shards)

    def push(i: int) -> Run:
        env = fresh_home(work)
        return run(push_cmd(shards, "v1", prompt), env=env)

    def cp(i: int) -> Run:
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir()
        drop_caches()
        r = run(f"cp {files} {dst}/ && sync {dst}/*", cold=False)
        shutil.rmtree(dst)
        return r

    a, b = pairs(n, push, cp)
    report(f"push of {len(shards)} safetensors shards vs cp && sync", "registry push", a, "cp && sync", b,
           sum(s.stat().st_size for s in shards), 1.2)


def bench_copied(work: Path, src: Path, copy: Path, prompt: Path, n: int) -> None:
    env = fresh_home(work)
    run(push_cmd([src], "v1", prompt), env=env, cold=False)  # the original: stored and stamped

    def push(i: int) -> Run:
        age(copy, 3600 + i)  # a new stat key: the stat cache misses, as for a fresh copy
        return run(push_cmd([copy], f"v2.{i}", prompt), env=env)

    def sha(i: int) -> Run:
        return run([sys.executable, "-c", HASH_PASS, str(copy)])

    a, b = pairs(n, push, sha)
    report("re-push of a copied file vs one hashlib SHA-256 pass", "registry push (copy)", a,
           "hashlib sha256 pass", b, copy.stat().st_size, 1.15)
    blobs = sum(p.stat().st_size for p in (work / "home/blobs/sha256").rglob("*") if p.is_file())
    print(f"  blob store after {n} copied re-pushes: {blobs / MIB:.0f} MiB (the original's blob and prompts)")


def bench_copied_hot(work: Path, src: Path, copy: Path, prompt: Path, n: int) -> None:
    """As measured from outside: `cp` the known weights to a new file (in the page cache, as
    a fresh copy is), then push it; against one SHA-256 pass over that same copy."""
    env = fresh_home(work)
    run(push_cmd([src], "v1", prompt), env=env, cold=False)

    def fresh_copy() -> None:
        copy.unlink(missing_ok=True)
        subprocess.run(["cp", str(src), str(copy)], check=True)

    def push(i: int) -> Run:
        fresh_copy()
        return run(push_cmd([copy], f"v3.{i}", prompt), env=env, cold=False)

    def sha(i: int) -> Run:
        fresh_copy()
        return run([sys.executable, "-c", HASH_PASS, str(copy)], cold=False)

    a, b = pairs(n, push, sha)
    report("re-push of a fresh copy vs one hashlib SHA-256 pass", "registry push (fresh copy)", a,
           "hashlib sha256 pass", b, copy.stat().st_size, 1.15, cache="the copy in the page cache")


def bench_prompt_only(work: Path, src: Path, prompt: Path) -> None:
    """A prompt-only new version: the weights are known to the stat cache."""
    env = fresh_home(work)
    run(push_cmd([src], "v1", prompt), env=env, cold=False)
    times = []
    for i in range(5):
        prompt.write_text(f"You are a helpful assistant, take {i}.\n")
        times.append(run(push_cmd([src], f"v2.{i}", prompt), env=env, cold=False).wall)
    print(f"\nprompt-only new version, unchanged weights (stat cache): CLI {spread(times)} "
          f"({'through the warm process' if WARM else 'in-process, interpreter start included'})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048, help="MiB of weights (default 2048)")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--dir", default="/tmp/cellar-bench")
    ap.add_argument("--only", default="cold,shards,copied,copied-hot,prompt")
    ap.add_argument("--keep", action="store_true", help="keep the generated files for another run")
    ap.add_argument("--pg", metavar="ADMIN_URL", help="each home's database on PostgreSQL")
    ap.add_argument("--in-process", action="store_true", help="REGISTRY_WARM=0: every push starts Python anew")
    args = ap.parse_args()
    global PG_ADMIN, WARM
    PG_ADMIN = args.pg
    with contextlib.ExitStack() as stack:
        if not args.in_process:
            WARM = stack.enter_context(own_warm_process(dict(os.environ)))
        bench(args)


def bench(args) -> None:
    work = Path(args.dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    size = args.size * MIB
    free = shutil.disk_usage(work).free
    if free < 5 * size:
        raise SystemExit(f"{work}: {free // MIB} MiB free, need about {5 * size // MIB}")
    prompt = work / "system.txt"
    prompt.write_text("You are a helpful assistant.\n")
    src, copy = work / "weights.safetensors", work / "copy/weights.safetensors"
    shards = [work / "shards" / f"model-{i:05d}-of-00008.safetensors" for i in range(8)]
    only = set(args.only.split(","))
    try:
        if not src.exists() or src.stat().st_size < size * 0.99:
            print(f"writing {args.size} MiB of random weights ...", flush=True)
            make_safetensors(src, size)
        cold = drop_caches()
        print(f"page cache dropped before each run: {'yes' if cold else 'NO (not root: runs are warm)'}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        if "cold" in only:
            bench_cold(work, src, prompt, args.pairs)
        if "shards" in only:
            (work / "shards").mkdir(exist_ok=True)
            for s in shards:
                if not s.exists():
                    make_safetensors(s, size // 8, tensors=4)
            bench_shards(work, shards, prompt, args.pairs)
        if "copied" in only:
            copy.parent.mkdir(exist_ok=True)
            if not copy.exists():
                shutil.copyfile(src, copy)
            bench_copied(work, src, copy, prompt, args.pairs)
        if "copied-hot" in only:
            copy.parent.mkdir(exist_ok=True)
            bench_copied_hot(work, src, copy, prompt, args.pairs)
        if "prompt" in only:
            bench_prompt_only(work, src, prompt)
    finally:
        DATABASES.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
