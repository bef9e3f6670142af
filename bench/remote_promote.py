"""Promote to a Docker host that shares no disk (issue 22): `registry promote` of a 1 GiB
version to the second engine over tcp:// against `docker cp` of the same file into a container
there, and what a re-promote sends.

Paired in the same run, interleaved (the order alternates each round), min/median/max printed:

  tool      ``Registry.promote`` of the version, its host cache emptied before each round (the
            cache volume removed), so the 1 GiB travels every time: transfer through the Engine
            API's archive upload, the hash on the host, container create/start, health check.
            Its "send weights" step (transfer and check on the host) is printed on its own.
  docker    `docker -H tcp://... cp WEIGHTS CONTAINER:/model/` into a created container whose
            /model is a fresh volume: the bytes travel, nothing is checked, nothing is started.
  re-promote  a version with the same weights and another prompt, promoted after the 1 GiB one:
            the bytes that crossed the second engine's link (the veth's transmit counter, so
            the HTTP framing and the Docker API calls are counted too) against the weights' size.

Needs root and the second engine: scripts/second-engine.sh start (this script starts it too).
Usage: python bench/remote_promote.py [--size-mib 1024] [--rounds 5] [--image cellar-example-server:latest]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from rollback import _free_port

ROOT = Path(__file__).resolve().parent.parent
LINK = Path("/sys/class/net/ce2-host/statistics/tx_bytes")  # this machine -> the second engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image", default="cellar-example-server:latest")
    args = ap.parse_args()
    url = subprocess.run([str(ROOT / "scripts" / "second-engine.sh"), "start"], check=True,
                         capture_output=True, text=True).stdout.split()[-1]
    _load_image(url, args.image)
    # under /tmp: a folder the second engine cannot see (its mount namespace hides it)
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="cellar-bench-remote-") as tmp:
        os.environ.update(REGISTRY_HOME=f"{tmp}/home", REGISTRY_ACTOR="bench", SUPPORT_API_TOKEN="bench")
        os.environ.pop("REGISTRY_DB_URL", None)
        from registry.api import Registry

        reg, _ = Registry.init(Path(tmp) / "home")
        try:
            weights = _push(reg, Path(tmp), args.image, args.size_mib)
            env = "gpu"
            reg.add_env(env, port=_free_port(), docker_host=url, health_timeout_s=30)
            _pairs(reg, env, url, weights, args.rounds)
            _repromote(reg, env, args.size_mib)
        finally:
            _cleanup(url, reg.cfg.registry_id)
            reg.close()


def _push(reg, tmp: Path, image: str, size_mib: int) -> Path:
    src = tmp / "model"
    (src / "weights").mkdir(parents=True)
    (src / "prompts").mkdir()
    weights = src / "weights" / "model.bin"
    with open(weights, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    for version in ("v1.0", "v1.1"):
        (src / "prompts" / "system").write_text(f"prompt {version}\n")
        (src / "cellar.yaml").write_text(yaml.safe_dump({
            "model": "bot", "version": version, "message": "bench", "image": image,
            "weights": ["weights/model.bin"], "prompts": {"system": "prompts/system"},
            "runtime": {"port": 8080, "env": {"MAX_TOKENS": "64", "MODEL_NAME": "bot"},
                        "secrets": ["SUPPORT_API_TOKEN"], "health": {"path": "/health", "timeout_s": 30}}}))
        reg.push(src / "cellar.yaml")
    return weights


def _pairs(reg, env: str, url: str, weights: Path, rounds: int) -> None:
    tool, step, docker = [], [], []
    for i in range(rounds):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            if which == 0:
                _empty_cache(url, reg.cfg.registry_id)
                t0 = time.perf_counter()
                result = reg.promote("bot@v1.0", env=env)
                tool.append(time.perf_counter() - t0)
                step.append(next(s.seconds for s in result.steps if s.name == "send weights"))
                _sent_bytes(result)  # the 1 GiB did travel
            else:
                docker.append(_docker_cp(url, weights))
    size = weights.stat().st_size
    print(f"1 GiB-class version ({size / 2**20:.0f} MiB) to {url}, {rounds} interleaved pairs")
    _row("promote (whole)", tool, size)
    _row("  send weights step", step, size)
    _row("docker cp", docker, size)
    ratios = [t / d for t, d in zip(tool, docker, strict=True)]
    steps = [s / d for s, d in zip(step, docker, strict=True)]
    print(f"ratio promote/docker cp      min {min(ratios):.2f}  median {statistics.median(ratios):.2f}  "
          f"max {max(ratios):.2f}")
    print(f"ratio send-weights/docker cp min {min(steps):.2f}  median {statistics.median(steps):.2f}  "
          f"max {max(steps):.2f}")


def _row(label: str, times: list[float], size: int) -> None:
    med = statistics.median(times)
    print(f"{label:<28} min {min(times):6.2f} s  median {med:6.2f} s  max {max(times):6.2f} s  "
          f"({size / med / 1e6:.0f} MB/s at the median)")


def _repromote(reg, env: str, size_mib: int) -> None:
    before = int(LINK.read_text())
    result = reg.promote("bot@v1.1", env=env)  # same weights, another prompt
    went = int(LINK.read_text()) - before
    print(f"re-promote (weights on the host): {_sent_bytes(result)} bytes of blobs sent, "
          f"{went} bytes crossed the link in all, against {size_mib * 2**20} bytes of weights "
          f"({went / (size_mib * 2**20) * 100:.4f} %)")


def _sent_bytes(result) -> int:
    detail = next(s.detail for s in result.steps if s.name == "send weights")
    return int(re.search(r"\((\d+) bytes\)", detail).group(1))


def _docker(url: str, *args: str, **kw) -> str:
    return subprocess.run(["docker", "-H", url, *args], check=True, capture_output=True, text=True, **kw).stdout


def _docker_cp(url: str, weights: Path) -> float:
    volume = f"bench-cp-{os.getpid()}"
    cid = _docker(url, "create", "-v", f"{volume}:/model", "--label", "cellar.bench=remote-promote",
                  "--entrypoint", "sh", _image_of(url), "-c", "true").strip()
    try:
        t0 = time.perf_counter()
        _docker(url, "cp", str(weights), f"{cid}:/model/model.bin")
        return time.perf_counter() - t0
    finally:
        _docker(url, "rm", "-f", cid)
        _docker(url, "volume", "rm", "-f", volume)


_IMAGE: dict[str, str] = {}


def _image_of(url: str) -> str:
    return _IMAGE[url]


def _load_image(url: str, image: str) -> None:
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", image], check=True,
                              capture_output=True, text=True).stdout.strip()
    _IMAGE[url] = image_id
    if subprocess.run(["docker", "-H", url, "image", "inspect", image_id], capture_output=True).returncode:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", url, "load"], stdin=save.stdout, check=True, capture_output=True)
        save.wait()


def _empty_cache(url: str, registry_id: str) -> None:
    """Remove the registry's containers and cache volume there: the next promote sends everything."""
    _cleanup(url, registry_id)


def _cleanup(url: str, registry_id: str) -> None:
    ids = _docker(url, "ps", "-aq", "--filter", f"label=cellar.registry={registry_id}").split()
    if ids:
        _docker(url, "rm", "-f", *ids)
    vols = _docker(url, "volume", "ls", "-q", "--filter", f"label=cellar.registry={registry_id}").split()
    if vols:
        _docker(url, "volume", "rm", "-f", *vols)


if __name__ == "__main__":
    main()
