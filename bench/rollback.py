"""Rollback speed: `registry rollback` against plain `docker stop OLD && docker start PREV`.

Paired in the same run on the same two containers, several rounds, medians printed:

  tool      wall time of the `registry rollback` process (start-up included) until it returns,
            through a warm process (the default; one of the bench's own); it returns after its
            own health check passed, so the model already answers. Also timed in-process
            (REGISTRY_WARM=0), in the same rounds.
  docker    `docker stop OLD && docker start PREV` (docker CLI) plus polling until the first
            2xx answer from the health path.
  overhead  the tool's own time beyond Docker calls and health waits: wall time minus the
            stop/start/health/warm-up steps it reports in --json (same for promote, where
            creating the container and resolving the image count as Docker calls). Printed
            for the CLI process (interpreter start and imports included) and for the Python
            API call alone (``Registry.rollback`` / ``Registry.promote`` in this process).

Usage: python bench/rollback.py [--image cellar-example-server:latest] [--rounds 7] [--pg ADMIN_URL]

SQLite by default; with ``--pg`` the registry lives in a scratch PostgreSQL database on that
server (dropped after).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path

from _startup import CLI, IN_PROCESS, own_warm_process
from api_push import scratch_db

DOCKER_STEPS = {"pin image", "create container", "stop old container", "start container", "health check", "warm-up"}
ROLLBACK_DOCKER_STEPS = DOCKER_STEPS - {"pin image", "create container"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="cellar-example-server:latest")
    ap.add_argument("--health-path", default="/health")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--pg", metavar="ADMIN_URL", help="the registry on PostgreSQL")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_db(args.pg) as db_url:
        env = {**os.environ, "REGISTRY_HOME": f"{tmp}/home", "REGISTRY_ACTOR": "bench"}
        env.pop("REGISTRY_DB_URL", None)
        if db_url:
            env["REGISTRY_DB_URL"] = db_url
        port = _free_port()
        name = f"bench{os.getpid()}"
        try:
            _setup(Path(tmp), {**env, **IN_PROCESS}, args, port, name)
            with own_warm_process(env) as warm:
                rounds = _rounds(warm.env, {**env, **IN_PROCESS}, args, port)
                promotes = _promotes(warm.env, args.rounds)
            _report(rounds, promotes, _in_process(env, args.rounds))
        finally:
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=cellar.env={name}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def _setup(tmp: Path, env: dict, args, port: int, name: str) -> None:
    reg = CLI
    model = tmp / "model"
    (model / "prompts").mkdir(parents=True)
    (model / "weights.bin").write_bytes(os.urandom(1 << 20))
    _run(reg + ["init"], env)
    for version in ("v1", "v2", "v3"):
        (model / "prompts" / "system").write_text(f"You are bench model {version}.\n")
        (model / "cellar.yaml").write_text(json.dumps({
            "model": "bench", "version": version, "image": args.image, "weights": ["weights.bin"],
            "prompts": {"system": "prompts/system"},
            "runtime": {"port": 8080, "env": {"MAX_TOKENS": "64"}, "health": {"path": args.health_path}}}))
        _run(reg + ["push", str(model / "cellar.yaml")], env)
    _run(reg + ["env", "add", name, "--port", str(port), "--default"], env)
    for version in ("v1", "v2"):
        _run(reg + ["promote", version], env)


def _rounds(warm: dict, in_process: dict, args, port: int) -> dict[str, list[float]]:
    """Each round: a rollback through the warm process, two raw Docker flips, a rollback in-process."""
    out = {"tool": [], "docker": [], "overhead": [], "in-process": []}
    url = f"http://127.0.0.1:{port}{args.health_path}"
    running = "v2"  # after set-up
    for _ in range(args.rounds):
        # Back and forth between v1 and v2: a plain `rollback` would step further back each
        # time and run out of releases.
        for env, key in ((warm, "tool"), (in_process, "in-process")):
            running = "v1" if running == "v2" else "v2"
            started = time.perf_counter()
            result = json.loads(_run(CLI + ["rollback", "--to", running, "--json"], env))
            wall = time.perf_counter() - started
            out[key].append(wall)
            if key == "tool":
                out["overhead"].append(wall - sum(s["seconds"] for s in result["steps"]
                                                  if s["name"] in ROLLBACK_DOCKER_STEPS))
                now, before = result["release"]["container_id"], result["previous"]["container_id"]
                for old, new in ((now, before), (before, now)):  # there and back: the ledger stays true
                    started = time.perf_counter()
                    _run(["docker", "stop", old], env)
                    _run(["docker", "start", new], env)
                    _wait(url)
                    out["docker"].append(time.perf_counter() - started)
    return out


def _promotes(env: dict, rounds: int) -> list[float]:
    """Overhead of promote: alternate v3 and v2 into the environment."""
    reg = CLI
    out = []
    for i in range(max(3, rounds // 2)):
        started = time.perf_counter()
        result = json.loads(_run(reg + ["promote", "v3" if i % 2 == 0 else "v2", "--json"], env))
        wall = time.perf_counter() - started
        out.append(wall - sum(s["seconds"] for s in result["steps"] if s["name"] in DOCKER_STEPS))
    return out


def _in_process(env: dict, rounds: int) -> dict[str, list[float]]:
    """Overhead of the API calls alone, imports and connections already done."""
    os.environ.update({k: env[k] for k in ("REGISTRY_HOME", "REGISTRY_DB_URL") if k in env})
    from registry.api import Registry

    out: dict[str, list[float]] = {"rollback": [], "promote": []}
    with Registry.open() as reg:
        reg.engine()
        reg.promote("v3")  # whatever _promotes left running, each round starts from v3
        for i in range(rounds):
            # v3 (or v2) runs before each pair: roll back to v1 or v2, then promote v3 again.
            back_to = "v1" if i % 2 else "v2"
            for what, call, steps in (("rollback", partial(reg.rollback, to=back_to), ROLLBACK_DOCKER_STEPS),
                                      ("promote", partial(reg.promote, "v3"), DOCKER_STEPS)):
                started = time.perf_counter()
                result = call()
                wall = time.perf_counter() - started
                out[what].append(wall - sum(s.seconds for s in result.steps if s.name in steps))
    return out


def _report(r: dict[str, list[float]], promote_overhead: list[float], api: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in r.items()}
    print(f"rounds: {len(r['tool'])} (docker baseline: {len(r['docker'])} flips)")
    print(f"registry rollback (process start included): median {med['tool'] * 1000:6.0f} ms  "
          f"(min {min(r['tool']) * 1000:.0f}, max {max(r['tool']) * 1000:.0f})")
    print(f"  the same in-process (REGISTRY_WARM=0):    median {med['in-process'] * 1000:6.0f} ms  "
          f"(min {min(r['in-process']) * 1000:.0f}, max {max(r['in-process']) * 1000:.0f})")
    print(f"docker stop && docker start + first answer: median {med['docker'] * 1000:6.0f} ms  "
          f"(min {min(r['docker']) * 1000:.0f}, max {max(r['docker']) * 1000:.0f})")
    pairs = [(r["docker"][2 * i] + r["docker"][2 * i + 1]) / 2 for i in range(len(r["tool"]))]  # a round's flips
    for key, label in (("tool", "tool"), ("in-process", "in-process")):
        ratios = [t / d for t, d in zip(r[key], pairs)]
        print(f"ratio {label + ' / docker, per round:':33s} min {min(ratios):.2f}x "
              f"median {statistics.median(ratios):.2f}x max {max(ratios):.2f}x"
              + (" (target <= 1.6x, issue 10)" if key == "tool" else ""))
    print("tool overhead beyond Docker calls + health waits (target <= 150 ms):")
    print(f"  rollback, CLI process (interpreter + imports included): median {med['overhead'] * 1000:5.0f} ms")
    print(f"  promote,  CLI process (interpreter + imports included): median "
          f"{statistics.median(promote_overhead) * 1000:5.0f} ms")
    print(f"  rollback, Python API call:                              median "
          f"{statistics.median(api['rollback']) * 1000:5.0f} ms")
    print(f"  promote,  Python API call:                              median "
          f"{statistics.median(api['promote']) * 1000:5.0f} ms")


def _run(cmd: list[str], env: dict) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def _wait(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if 200 <= resp.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.01)
    sys.exit(f"{url} did not answer within {timeout} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
