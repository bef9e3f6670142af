#!/usr/bin/env bash
# Lint and type-check: ruff (the rule set in pyproject.toml's [tool.ruff]) over all the Python,
# then mypy ([tool.mypy]) over the library and the CLI. Both come with the test extra.
# Usage: scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
.venv/bin/ruff check registry cli migrations tests bench scripts examples
.venv/bin/mypy registry cli
