"""`registry probe` and `registry watch` as a user runs them (issue 11), against the test server
in the real Docker engine:

1. `registry probe` of 5 probes, process wall time, against `registry --help` plus the server's
   own answer time (the same 5 requests with http.client): interleaved, 9 triples;
   the figure is probe - (help + raw), target <= 0.15 s;
2. the watch loop through ``Registry.watch`` (the real ProbeEnv: ledger read, container inspect,
   5 probes, run stored) for 1,000 runs: RSS after 100 and after 1,000 runs;
3. `registry watch --every 8` CPU per idle second, read from /proc/PID/stat inside the pauses
   between runs (target < 1%), with and without `--metrics-listen`.

Run from the repository root: python bench/probe.py  (needs Docker and /bin/busybox)
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, ".")
sys.path.insert(0, "bench")

import docker  # noqa: E402
from _startup import CLI, IN_PROCESS, own_warm_process  # noqa: E402

from registry.api import Registry  # noqa: E402
from tests.helpers import ModelDir  # noqa: E402
from tests.integration import conftest as server  # noqa: E402

PAIRS = 9
SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
PROBES = [{"name": f"q{i}", "path": "/cgi-bin/answer", "json": {"prompt": f"question {i}"},
           "expect": {"regex": '"answer":"42"', "json_schema": SCHEMA, "not_contains": "CANARY"},
           "max_latency_ms": 2000} for i in range(5)]


def spread(values, unit="s", scale=1.0):
    v = [x * scale for x in values]
    return f"min {min(v):.3f} median {statistics.median(v):.3f} max {max(v):.3f} {unit}"


def image(client) -> str:
    tag = f"cellar-test-server:{server._inputs_hash()}"
    if not client.images.list(name=tag):
        repo, _, version = tag.partition(":")
        client.api.import_image_from_data(server._rootfs(), repository=repo, tag=version,
                                          changes=['ENTRYPOINT ["/serve"]', "ENV PATH=/bin"])
    return tag


def setup(root: Path, client) -> tuple[Registry, str, int]:
    os.environ["REGISTRY_HOME"] = str(root / "home")
    os.environ.setdefault("REGISTRY_ACTOR", "bench")
    Registry.init(root / "home")[0].close()
    reg = Registry.open(root / "home")
    md = ModelDir.create(root / "model")
    md.write_manifest(image=image(client), probes=json.loads(json.dumps(PROBES)), runtime={  # no YAML aliases
        "port": 8080, "env": {"MAX_TOKENS": "64"}, "health": {"path": "/cgi-bin/health", "timeout_s": 5}})
    reg.push(md.manifest)
    env, port = "bench" + os.urandom(3).hex(), server.free_port()
    reg.add_env(env, port=port, default=True)
    reg.promote("v1.0")
    return reg, env, port


def wall(args, env: dict) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    return took


def raw(port: int) -> float:
    t0 = time.perf_counter()
    for p in PROBES:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", p["path"], body=json.dumps(p["json"]), headers={"Content-Type": "application/json"})
        c.getresponse().read()
        c.close()
    return time.perf_counter() - t0


def probe_cost(port: int) -> None:
    """Triples of `registry --help`, `registry probe` and the 5 raw requests, through the warm
    process (the default) and in-process (REGISTRY_WARM=0), interleaved."""
    runs = {"warm": ([], []), "in-process": ([], [])}
    raws = []
    with own_warm_process(dict(os.environ)) as warm:
        envs = {"warm": warm.env, "in-process": {**os.environ, **IN_PROCESS}}
        for _ in range(PAIRS):
            for mode, (helps, probes) in runs.items():
                helps.append(wall([*CLI, "--help"], envs[mode]))
                probes.append(wall([*CLI, "probe"], envs[mode]))
            raws.append(raw(port))
    print(f"5 raw requests (the server's own time) {spread(raws)}")
    for mode, (helps, probes) in runs.items():
        above = [p - h - r for p, h, r in zip(probes, helps, raws)]
        print(f"{mode}:")
        print(f"  registry --help                      {spread(helps)}")
        print(f"  registry probe (5 probes, stored)    {spread(probes)}")
        print(f"  probe - (help + raw), per triple     {spread(above)}  (target <= 0.150 s)")


def rss_kib() -> int:
    return int(dict(line.split(":", 1) for line in open("/proc/self/status"))["VmRSS"].split()[0])


def watch_rss(reg: Registry) -> None:
    def quiet(_text):
        return True
    reg.watch(every_s=0, max_runs=100, notify=quiet, sleep=lambda s: None)
    at_100 = rss_kib()
    t0 = time.perf_counter()
    summary = reg.watch(every_s=0, max_runs=900, notify=quiet, sleep=lambda s: None)
    took = time.perf_counter() - t0
    at_1000 = rss_kib()
    assert summary.runs == 900 and not summary.alerts, summary
    print(f"watch, 1,000 runs (Registry.watch):    RSS {at_100 / 1024:.1f} MiB after 100, {at_1000 / 1024:.1f} MiB "
          f"after 1,000 (growth {(at_1000 - at_100) / 1024:.2f} MiB); {took / 900 * 1000:.1f} ms a run")


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks a process has used (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def idle_cpu(every: int = 8, processes: int = 3) -> None:
    """CPU per idle second of a real `registry watch --every 8`, read from /proc inside its
    pauses: from 1 s after a run's line to 1 s before the next run, 3 pauses per process. The
    process's own start-up and runs stay outside the window (a difference of whole-process
    totals, as measured before, read 0.1 s of start-up noise as 2.5%)."""
    tick, window = os.sysconf("SC_CLK_TCK"), every - 2.0
    for label, extra in (("", []), (" --metrics-listen", ["--metrics-listen", f"127.0.0.1:{server.free_port()}"])):
        shares = []
        for _ in range(processes):
            proc = subprocess.Popen([*CLI, "watch", "--every", str(every), "--max-runs", "4", *extra],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for _ in range(3):
                proc.stdout.readline()  # a run ended: its pause begins
                time.sleep(1.0)
                before = cpu_ticks(proc.pid)
                time.sleep(window)
                shares.append((cpu_ticks(proc.pid) - before) / tick / window)
            proc.communicate()
            assert proc.returncode == 0
        print(f"watch --every {every}{label}: CPU per idle second {spread(shares, '%', 100)} "
              f"({len(shares)} pauses of {window:.0f} s; resolution {100 / tick / window:.2f}%)")


def main() -> None:
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        reg, env, port = setup(Path(tmp), client)
        try:
            probe_cost(port)
            watch_rss(reg)
            idle_cpu()
        finally:
            reg.close()
            for c in client.containers.list(all=True, filters={"label": f"cellar.env={env}"}):
                c.remove(force=True)
            client.close()


if __name__ == "__main__":
    main()
