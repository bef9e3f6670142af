#!/usr/bin/env bash
# Generate the weights of the three support-bot versions (they are not committed).
# v1.0 and v1.1 share identical weights; v1.2 differs from them in head.weight only.
# Usage: examples/support-bot/make.sh   (PYTHON=... to pick an interpreter with
# numpy and safetensors; defaults to python3)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
MAKE_WEIGHTS="$HERE/../make_weights.py"

"$PYTHON" "$MAKE_WEIGHTS" "$HERE/v1.0/weights/model.safetensors"
"$PYTHON" "$MAKE_WEIGHTS" "$HERE/v1.1/weights/model.safetensors"
"$PYTHON" "$MAKE_WEIGHTS" "$HERE/v1.2/weights/model.safetensors" --change head.weight
