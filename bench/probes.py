"""Probe figures (issue 11), library level until the CLI is wired:

1. import cost of what `registry probe` adds (registry.probes.probing + probe_models + store.probes,
   and jsonschema for suites with a schema) against a bare `import registry.models`;
2. run_suite of 5 probes against a local HTTP server vs the same 5 requests with http.client
   (the server's own answer time): the ratio is the probe machinery's overhead;
3. the watch loop for 1,000 runs (every 0 s) against the same server: RSS growth, and CPU per
   idle second of the loop's pause (StopFlag.wait).

Interleaved pairs, min/median/max over 9 pairs. Run: python bench/probes.py
"""

from __future__ import annotations

import http.client
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, ".")

from registry.health.watching import StopFlag, Watcher, WatchPolicy
from registry.models import Probe  # noqa: E402
from registry.probes.probing import new_run, run_suite

PAIRS = 9
BODY = json.dumps({"answer": "42", "completion": "You said: hello"}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def spread(values):
    return f"min {min(values):.3f} median {statistics.median(values):.3f} max {max(values):.3f}"


def imports():
    def wall(code):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t0
    base, probe, schema = [], [], []
    for _ in range(PAIRS):
        base.append(wall("import registry.models"))
        probe.append(wall("import registry.models, registry.probes.probing, registry.store.sql.probes"))
        schema.append(wall("import registry.models, registry.probes.probing, registry.store.sql.probes, jsonschema"))
    print(f"import baseline (registry.models)       s: {spread(base)}")
    print(f"import + probing + store.probes         s: {spread(probe)}  "
          f"(+{(statistics.median(probe) - statistics.median(base)) * 1000:.1f} ms median)")
    print(f"import + ... + jsonschema               s: {spread(schema)}  "
          f"(+{(statistics.median(schema) - statistics.median(base)) * 1000:.1f} ms median)")


def suite(url, probes):
    raw, ours = [], []
    host, port = url.removeprefix("http://").split(":")
    for _ in range(PAIRS):
        t0 = time.perf_counter()
        for p in probes:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("POST", p.path, body=json.dumps(p.json_body), headers={"Content-Type": "application/json"})
            c.getresponse().read()
            c.close()
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        results = run_suite(url, probes)
        ours.append(time.perf_counter() - t0)
        assert all(r.status == "pass" for r in results), results
    ratios = [o / r for o, r in zip(ours, raw)]
    print(f"5 raw requests                          s: {spread(raw)}")
    print(f"run_suite, 5 probes (regex, schema ...) s: {spread(ours)}")
    print(f"ratio run_suite / raw                     : {spread(ratios)}  "
          f"(+{(statistics.median(ours) - statistics.median(raw)) * 1000:.2f} ms median)")


def rss_kib():
    return int(dict(line.split(":", 1) for line in open("/proc/self/status"))["VmRSS"].split()[0])


def watch(url, probes):
    def probe_once():
        return new_run(run_suite(url, probes), env="prod", model="m", version="v", revision=1, actor="bench")
    warm = Watcher(probe_once=probe_once, notify=lambda t: None, every_s=0, sleep=lambda s: None, max_runs=50)
    warm.run()
    before = rss_kib()
    Watcher(probe_once=probe_once, notify=lambda t: None, every_s=0, sleep=lambda s: None,
            policy=WatchPolicy(), max_runs=1000).run()
    after = rss_kib()
    print(f"watch, 1,000 runs: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB "
          f"(growth {(after - before) / 1024:.2f} MiB)")
    flag, cpu = StopFlag(), []
    for _ in range(3):
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        flag.wait(1.0)
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append((u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime) * 100)
    print(f"watch pause: CPU per idle second, %    : {spread(cpu)}")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    schema = {"type": "object", "required": ["answer"]}
    probes = [Probe.model_validate({"name": f"p{i}", "path": "/v1/completions", "json": {"prompt": "hello"},
                                    "expect": {"regex": "You said", "json_schema": schema,
                                               "not_contains": "SECRET"}, "max_latency_ms": 1000})
              for i in range(5)]
    imports()
    suite(url, probes)
    watch(url, probes)
    server.shutdown()


if __name__ == "__main__":
    main()
