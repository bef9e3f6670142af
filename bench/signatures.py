"""What the trust policy costs a promote, on SQLite with the in-library fake engine (so that
Docker's own time does not drown the difference), three ways in the same run:

  unhooked   `Registry.promote` with the policy check replaced by a no-op (the code before issue 25)
  no policy  the check as shipped, the environment requiring nothing (one read of two rows)
  2 signed   the environment requires 2 signatures: each bundle verified against its registered
             key, its files against the record

Three homes with the same two versions; each round promotes v1.0 then v1.1 in each, in a
rotating order (interleaved). Prints min/median/max per promote and the median of the per-round
ratios against "unhooked".

Usage: python bench/signatures.py [--rounds 15] [--weight-mb 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from registry import Registry  # noqa: E402
from registry.engines.fake import FakeEngine  # noqa: E402

IMAGE, IMAGE_ID = "bench:latest", "sha256:" + "ab" * 32


def _key(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _home(root: Path, name: str, model: Path, *, policy: bool, keys: dict) -> tuple[Registry, FakeEngine]:
    os.environ["REGISTRY_HOME"] = str(root / name)
    Registry.init(root / name)[0].close()
    fake = FakeEngine(images={IMAGE: IMAGE_ID})
    reg = Registry.open(root / name, engine_factory=lambda host: fake, checks=fake.checks)
    for version in ("v1.0", "v1.1"):
        (model / "prompts" / "system").write_text(f"prompt {version}\n")
        (model / "cellar.yaml").write_text(f"model: bot\nversion: {version}\nimage: {IMAGE}\n"
                                           "weights: [weights]\nprompts: {system: prompts/system}\n")
        reg.push(model / "cellar.yaml")
    reg.add_env("prod", port=18999)
    if policy:
        for signer, (private, public) in keys.items():
            reg.add_key(signer, public)
            for version in ("v1.0", "v1.1"):
                reg.sign(f"bot@{version}", key=private)
        reg.set_trust("prod", trust=list(keys), require_signatures=2)
    return reg, fake


def _promote_pair(reg: Registry) -> float:
    started = time.perf_counter()
    reg.promote("bot@v1.0", env="prod")
    reg.promote("bot@v1.1", env="prod")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--weight-mb", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "model"
        (model / "weights").mkdir(parents=True)
        (model / "prompts").mkdir()
        (model / "weights" / "w.bin").write_bytes(os.urandom(args.weight_mb << 20))
        keys = {name: _key(root, name) for name in ("alice", "bob")}
        homes = {"unhooked": _home(root, "unhooked", model, policy=False, keys=keys)[0],
                 "no policy": _home(root, "plain", model, policy=False, keys=keys)[0],
                 "2 signed": _home(root, "signed", model, policy=True, keys=keys)[0]}
        times: dict[str, list[float]] = {name: [] for name in homes}
        for reg in homes.values():
            _promote_pair(reg)  # warm: snapshots made, imports loaded
        names = list(homes)
        for i in range(args.rounds):
            for name in names[i % 3:] + names[:i % 3]:
                with _unhooked(name == "unhooked"):
                    times[name].append(_promote_pair(homes[name]) / 2)
        for reg in homes.values():
            reg.close()

    def ms(xs: list[float]) -> str:
        return f"min {min(xs) * 1e3:.1f} / median {statistics.median(xs) * 1e3:.1f} / max {max(xs) * 1e3:.1f} ms"

    base = times["unhooked"]
    for name, xs in times.items():
        ratios = [x / b for x, b in zip(xs, base)]
        print(f"promote, {name:9}: {ms(xs)}; ratio to unhooked: median {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
    print(f"({args.rounds} interleaved rounds, {args.weight_mb} MiB of weights)")


@contextlib.contextmanager
def _unhooked(off: bool):
    """The promote's policy check replaced by a no-op while ``off``."""
    from registry.deploy import promote

    real = promote.require_policy
    if off:
        promote.require_policy = lambda *a, **k: {}  # type: ignore[assignment]
    try:
        yield
    finally:
        promote.require_policy = real


if __name__ == "__main__":
    main()
