"""Bench: the web view under load and attack (issue 28).

Builds a registry with two 1 MiB prompts of shared lines in different orders (big@v1.0, v1.1:
difflib's quadratic case), a small prompt edited by one line (small@v1.0, v1.1) and 2,000 more
models, then prints, each as min/median/max over
interleaved pairs with a baseline measured in the same run:

1. ``/diff`` and the blame page of the 1 MiB prompts, against the same pages of the small
   prompt (limit: under 1 s, or an immediate "too large" page); and the line diff of two
   unrelated 4,000-line prompts (140 KB) against the difflib.unified_diff it replaces;
2. ``/`` with 2,000 models: time and size, against ``/versions?model=small`` (one model);
3. the p99 of a small request (``/api/envs``) while 20 heavy ones run, against the same
   request on an idle server (limit: under 250 ms); ``registry ui`` as a subprocess;
4. RSS growth of ``registry ui`` over --requests requests, against the same server with the
   cyclic collector off (what ``gc.disable()`` did to it before; limit: under 10 MB).

    python bench/web_attack.py [--runs 5] [--requests 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import difflib
import http.client
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SMALL = "/api/envs"
HEAVY = ["/diff?a=big@v1.0&b=big@v1.1", "/v/big/v1.1/prompts/system", "/", "/v/big/v1.0/prompts/system/raw"]


def big_prompt(seed: int, size: int = (1 << 20) - 64) -> str:
    """``size`` bytes of lines drawn from a vocabulary of one per 90 lines, at least 120 (each just under
    1 % of the text): too rare for difflib's autojunk, common enough to make its matching quadratic."""
    shared = random.Random(0)  # both prompts draw from the same lines, in another order
    vocab = [f"{{{{slot_{i:03d}}}}} {shared.getrandbits(96):024x}\n" for i in range(max(120, size // 40 // 90))]
    rng = random.Random(seed)
    lines, total = [], 0
    while total < size:
        lines.append(rng.choice(vocab))
        total += len(lines[-1])
    return "".join(lines)[:size]


def build(home: Path, work: Path, models: int) -> None:
    from registry.api import Registry
    from tests.helpers import ModelDir

    reg, _ = Registry.init(home)
    with reg:
        for n, version in enumerate(("v1.0", "v1.1")):
            reg.push(ModelDir.create(work / f"big{n}", model="big", version=version, prompt=big_prompt(n)).manifest)
        small = ModelDir.create(work / "small", model="small", version="v1.0")
        reg.push(small.manifest)
        small.set_prompt("You are a helpful support assistant.\nBe brief.\n")
        small.write_manifest(version="v1.1")
        reg.push(small.manifest)
        clone_models(reg, models)


def clone_models(reg, count: int) -> None:
    """``count`` models m-0000.. with one version each: small@v1.0's rows (bench only, sealed as a push)."""
    from sqlalchemy import insert, select

    from registry.store.sql import schema as t
    from registry.store.sql import sealing

    with reg.store.read() as conn:
        row = conn.execute(select(t.versions).join(t.models).where(
            t.models.c.name == "small", t.versions.c.version == "v1.0")).mappings().one()
        files = conn.execute(select(t.version_files).where(t.version_files.c.version_id == row["id"])).mappings().all()
    base = dict(row)
    base.pop("id")
    with reg.store.write() as conn:
        for i in range(count):
            name = f"m-{i:04d}"
            at = row["created_at"] + timedelta(seconds=i + 1)
            mid = conn.execute(insert(t.models).values(name=name, created_at=at)).inserted_primary_key[0]
            new = {**base, "model_id": mid, "created_at": at}
            new["mac"] = sealing.seal_version(conn, {**new, "model": name})
            vid = conn.execute(insert(t.versions).values(**new)).inserted_primary_key[0]
            conn.execute(insert(t.version_files), [{**dict(f), "version_id": vid} for f in files])


def spread(values: list[float]) -> str:
    return f"{min(values):8.1f} {statistics.median(values):8.1f} {max(values):8.1f}"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


# --- 1 and 2: pages in process ---------------------------------------------------------------


def pages(home: Path, runs: int) -> None:
    from starlette.testclient import TestClient

    from registry.api import Registry
    from registry.versions import diffing
    from registry.web import create_app

    cases = [("/diff?a=big@v1.0&b=big@v1.1", "/diff?a=small@v1.0&b=small@v1.1", 1000),
             ("/v/big/v1.1/prompts/system", "/v/small/v1.1/prompts/system", 1000),
             ("/", "/versions?model=small", None)]
    print(f"{'page (baseline)':58} {'min':>8} {'median':>8} {'max':>8} ms  ratio  size")
    with TestClient(create_app(lambda: Registry.open(home)), base_url="http://127.0.0.1:8765") as client:
        for path, base, limit in cases:
            got, ref = client.get(path), client.get(base)
            assert got.status_code == ref.status_code == 200, (path, got.status_code)
            ours, theirs = [], []
            for _ in range(runs):  # interleaved: the page, then its baseline
                ours.append(timed(lambda p=path: client.get(p)))
                theirs.append(timed(lambda b=base: client.get(b)))
            note = " (too large: summary)" if "Too large to show line by line" in got.text else ""
            print(f"{path:58} {spread(ours)} ms  {statistics.median(ours) / statistics.median(theirs):5.1f}  "
                  f"{len(got.content) / 1024:.0f} KiB{note}")
            print(f"  ({base}){'':{56 - len(base) - 2}} {spread(theirs)} ms         {len(ref.content) / 1024:.0f} KiB")
            if limit:
                print(f"  median {statistics.median(ours):.0f} ms; limit {limit} ms")
    a, b = big_prompt(1, 140_000), big_prompt(2, 140_000)
    new, old = [], []
    for _ in range(runs):
        new.append(timed(lambda: diffing.unified(a, b, old_label="a", new_label="b")))
        old.append(timed(lambda: list(difflib.unified_diff(a.splitlines(), b.splitlines(), "a", "b", lineterm=""))))
    print(f"line diff, two 140 KB prompts as above: diffing.unified {spread(new)} ms; "
          f"difflib.unified_diff {spread(old)} ms; ratio {statistics.median(new) / statistics.median(old):.3f}")


def cli_diff(home: Path, runs: int) -> None:
    """``registry diff`` and ``registry blame`` of the 1 MiB prompts as subprocesses, against the small ones."""
    env = {**os.environ, "REGISTRY_HOME": str(home), "REGISTRY_WARM": "0"}
    env.pop("REGISTRY_DB_URL", None)

    def run(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, timeout=300)

    for what, big, small in (("registry diff", ("diff", "big@v1.0", "big@v1.1"), ("diff", "small@v1.0", "small@v1.1")),
                             ("registry blame", ("blame", "system", "--at", "big@v1.1"),
                              ("blame", "system", "--at", "small@v1.1"))):
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(timed(lambda a=big: run(*a)))
            theirs.append(timed(lambda a=small: run(*a)))
        print(f"{what} of the 1 MiB prompts (subprocess): {spread(ours)} ms; of the small ones {spread(theirs)} ms; "
              f"ratio {statistics.median(ours) / statistics.median(theirs):.1f}")


# --- 3 and 4: `registry ui` as a subprocess --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(home: Path, *, collector: bool = True) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "REGISTRY_HOME": str(home), "REGISTRY_WARM": "0"}
    env.pop("REGISTRY_DB_URL", None)
    args = ["ui", "--listen", f"127.0.0.1:{port}"]
    if collector:
        cmd = [sys.executable, "-m", "cli.main", *args]
    else:  # the server as it ran before issue 21/28: the cyclic collector off for the whole process
        cmd = [sys.executable, "-c", "import gc, sys; gc.disable(); sys.argv = ['registry', *sys.argv[1:]]; "
               "from cli.main import app; app()", *args]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            get(port, SMALL)
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("registry ui did not start") from None
            time.sleep(0.2)


def get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> float:
    own = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    own.request("GET", path)
    response = own.getresponse()
    response.read()
    took = (time.perf_counter() - t0) * 1000
    if conn is None:
        own.close()
    if response.status != 200:
        raise OSError(f"{path}: {response.status}")
    return took


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def under_load(home: Path, rounds: int, samples: int = 100) -> None:
    proc, port = start_ui(home)
    try:
        idle, loaded = [], []
        for _ in range(rounds):  # interleaved: idle, then under load
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            idle.append(p99([get(port, SMALL, conn) for _ in range(samples)]))
            stop = threading.Event()
            heavy = [threading.Thread(target=_hammer, args=(port, HEAVY[i % len(HEAVY)], stop)) for i in range(20)]
            for t in heavy:
                t.start()
            time.sleep(1.0)
            loaded.append(p99([get(port, SMALL, conn) for _ in range(samples)]))
            stop.set()
            for t in heavy:
                t.join(120)
            conn.close()
        print(f"p99 of {SMALL} over {samples} requests: idle {spread(idle)} ms; with 20 heavy requests running "
              f"{spread(loaded)} ms (min/median/max over {rounds} rounds); median {statistics.median(loaded):.0f} ms, "
              f"limit 250 ms; ratio {statistics.median(loaded) / statistics.median(idle):.1f}")
    finally:
        proc.terminate()
        proc.wait(30)


def _hammer(port: int, path: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            get(port, path)
        except OSError:
            time.sleep(0.05)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory(home: Path, requests: int, batches: int = 10) -> None:
    mix = ["/", "/versions?page=3", "/v/small/v1.0", "/diff?a=small@v1.0&b=small@v1.1", SMALL, "/audit",
           "/v/small/v1.1/prompts/system", "/api/versions?model=small"]
    servers = {"collector on (registry ui)": start_ui(home), "collector off (before)": start_ui(home, collector=False)}
    try:
        for _, port in servers.values():  # warm-up: caches, imports, the first verification
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for i in range(200):
                get(port, mix[i % len(mix)], conn)
            conn.close()
        start = {name: rss_kib(proc.pid) for name, (proc, _) in servers.items()}
        growth: dict[str, list[float]] = {name: [] for name in servers}
        per = requests // batches
        for b in range(batches):  # interleaved: a batch to each server in turn
            for name, (proc, port) in servers.items():
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # (an idle one is closed)
                for i in range(per):
                    get(port, mix[(b * per + i) % len(mix)], conn)
                conn.close()
                growth[name].append((rss_kib(proc.pid) - start[name]) / 1024)
        for name, values in growth.items():
            print(f"RSS growth over {per * batches} requests, {name}: {values[-1]:+.1f} MiB "
                  f"(after each batch of {per}: {', '.join(f'{v:+.1f}' for v in values)}); limit 10 MB")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["pages", "load", "memory"])
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellar-bench-attack-"))
    os.environ.pop("REGISTRY_DB_URL", None)
    os.environ.update(REGISTRY_HOME=str(root / "home"), REGISTRY_ACTOR="bench")
    try:
        t0 = time.perf_counter()
        build(root / "home", root / "work", opts.models)
        print(f"built: two unrelated 1 MiB prompts, a small one, {opts.models} more models "
              f"in {time.perf_counter() - t0:.1f} s")
        if "pages" not in opts.skip:
            pages(root / "home", opts.runs)
            cli_diff(root / "home", opts.runs)
        if "load" not in opts.skip:
            under_load(root / "home", opts.rounds)
        if "memory" not in opts.skip:
            memory(root / "home", opts.requests)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
