#!/usr/bin/env bash
# Install Debian's chromium for the web view's browser tests (tests/web/), when it is missing.
# Playwright (in the test extra) drives it; it never downloads a browser of its own. Idempotent.
# Usage: scripts/setup-browser.sh     (needs root or sudo to install)
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "setup-browser: $(chromium --version 2>/dev/null || echo chromium) present" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
echo "setup-browser: installed $(chromium --version 2>/dev/null || echo chromium)" >&2
