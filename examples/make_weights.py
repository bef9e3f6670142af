"""Write the small, deterministic ``.safetensors`` file of the example model.

The tensors are random but fixed by ``--seed``, so the same arguments always give
the same bytes. ``--change NAME`` redraws just that tensor from another seed, so
two files made with and without it differ in exactly one tensor, which is what
per-tensor diffs and deduplication should notice.

    python examples/make_weights.py examples/support-bot/v1.0/weights/model.safetensors
    python examples/make_weights.py out.safetensors --change head.weight
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

# name -> (shape, dtype): a toy embedding, one dense layer and an output head.
TENSORS: dict[str, tuple[tuple[int, ...], str]] = {
    "embed.weight": ((64, 16), "float32"),
    "layer0.weight": ((16, 16), "float32"),
    "layer0.bias": ((16,), "float32"),
    "head.weight": ((16, 8), "float16"),
}


def make_tensors(*, seed: int = 0, change: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Return the example tensors; those named in ``change`` come from another seed."""
    unknown = change - TENSORS.keys()
    if unknown:
        raise ValueError(f"unknown tensor(s) {sorted(unknown)}; known: {sorted(TENSORS)}")
    tensors = {}
    for index, (name, (shape, dtype)) in enumerate(TENSORS.items()):
        # One generator per tensor, so changing one tensor leaves the others identical.
        tensor_seed = [seed, index, 1 if name in change else 0]
        rng = np.random.default_rng(tensor_seed)
        tensors[name] = rng.standard_normal(shape).astype(dtype)
    return tensors


def write_weights(path: Path, *, seed: int = 0, change: frozenset[str] = frozenset()) -> Path:
    """Write the tensors to ``path`` (parents created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(make_tensors(seed=seed, change=change), str(path), metadata={"model": "support-bot"})
    # safetensors creates files 0600 whatever the umask; the server runs as nobody.
    path.chmod(0o644)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="path of the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed for all tensors (default 0)")
    parser.add_argument(
        "--change",
        action="append",
        default=[],
        metavar="NAME",
        help=f"redraw this tensor so the file differs from the default in it alone "
        f"(one of {', '.join(TENSORS)}); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        path = write_weights(args.output, seed=args.seed, change=frozenset(args.change))
    except ValueError as error:
        parser.error(str(error))
    print(path)


if __name__ == "__main__":
    main()
