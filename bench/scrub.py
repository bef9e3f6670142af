"""Bench: scrubbing a 64 KiB container log that knows 10 secrets.

Baseline: the old ``redact`` (one ``str.replace`` per raw value: no encoded forms, no cut
fragments). Candidate: ``registry.trust.secrets.Scrubber.scrub`` (every form of every value in one
trie-shaped regex, then the fragments at both ends). Interleaved pairs on the same text;
prints min/median/max of each and of the ratio, and the one-time costs of building the
scrubber and of compiling its regex (done on the first scrub only). Target: a few
milliseconds per 64 KiB, so scrubbing every log tail and error costs nothing noticeable.

    python bench/scrub.py [--pairs 9] [--kib 64] [--secrets 10]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry.trust.secrets import Scrubber


def old_redact(text: str, values: set[str]) -> str:
    """registry.engines.engine.redact as it was: raw values only."""
    for value in sorted(values, key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, "***")
    return text


def log_text(kib: int, values: list[str], rng: random.Random) -> str:
    """Log-like lines with a few secrets (raw and JSON-escaped) sprinkled in."""
    words = ["GET", "/v1/chat", "200", "latency_ms=", "model", "loaded", "tokens", "warn", "cache", "miss"]
    lines, size = [], 0
    while size < kib * 1024:
        line = f"2026-01-01T00:00:{rng.randint(0, 59):02d}Z " + " ".join(rng.choices(words, k=12))
        if rng.random() < 0.02:
            line += " auth=" + rng.choice(values)
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[: kib * 1024]


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--secrets", type=int, default=10)
    opts = parser.parse_args()
    rng = random.Random(8)
    alphabet = string.ascii_letters + string.digits + "-_!@#%"
    values = ["".join(rng.choices(alphabet, k=rng.randint(16, 48))) for _ in range(opts.secrets)]
    text = log_text(opts.kib, values, rng)

    builds = [timed(Scrubber, values) for _ in range(opts.pairs)]
    compiles = []
    for _ in range(opts.pairs):
        re.purge()  # re caches patterns by text: measure a real first compile
        compiles.append(timed(Scrubber(values)._pattern))
    scrubber = Scrubber(values)
    old, new = [], []
    for _ in range(opts.pairs):  # interleaved: both see the same machine load
        old.append(timed(old_redact, text, set(values)))
        new.append(timed(scrubber.scrub, text))
    ratios = [n / o for n, o in zip(new, old)]

    def show(name: str, xs: list[float], unit: str = "ms", scale: float = 1000) -> None:
        print(f"{name:<34} min {min(xs) * scale:8.3f}  median {statistics.median(xs) * scale:8.3f}  "
              f"max {max(xs) * scale:8.3f} {unit}")

    print(f"{len(text)} characters, {opts.secrets} secrets, {len(scrubber._forms)} forms, {opts.pairs} pairs")
    show("build Scrubber (forms)", builds)
    show("first scrub: compile the regex", compiles)
    show("old redact (raw values only)", old)
    show("Scrubber.scrub (all forms, ends)", new)
    show("ratio scrub / old redact", ratios, unit="x", scale=1)
    assert "***" in scrubber.scrub(text) and not any(v in scrubber.scrub(text) for v in values)


if __name__ == "__main__":
    main()
