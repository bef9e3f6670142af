"""The strict manifest loader (registry.formats.safe_yaml) against PyYAML's CSafeLoader on a real manifest.

Prints min/median/max of the ratio strict/baseline over interleaved pairs, each timing 200 loads
of examples/support-bot/v1.0/cellar.yaml. Usage: python bench/yaml_loader.py [pairs]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import yaml

from registry.formats import safe_yaml

TEXT = (Path(__file__).parent.parent / "examples/support-bot/v1.0/cellar.yaml").read_text()
BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
LOADS = 200


def timed(load) -> float:
    start = time.perf_counter()
    for _ in range(LOADS):
        load()
    return (time.perf_counter() - start) / LOADS


def main(pairs: int = 9) -> None:
    assert safe_yaml.loads(TEXT) == yaml.load(TEXT, Loader=BASE)  # same result, or the ratio means nothing
    base, strict = [], []
    for _ in range(pairs):
        base.append(timed(lambda: yaml.load(TEXT, Loader=BASE)))
        strict.append(timed(lambda: safe_yaml.loads(TEXT)))
    ratios = sorted(s / b for s, b in zip(strict, base))
    print(f"manifest load, {pairs} pairs x {LOADS} loads: baseline CSafeLoader median "
          f"{statistics.median(base) * 1e6:.0f} us, strict median {statistics.median(strict) * 1e6:.0f} us")
    print(f"ratio strict/baseline: min {ratios[0]:.2f}  median {statistics.median(ratios):.2f}  max {ratios[-1]:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
