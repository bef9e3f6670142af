#!/usr/bin/env bash
# Make an OCI registry available to the tests: Debian's docker-registry (Distribution 2.8) and
# htpasswd (apache2-utils, for the basic-auth variant).
#
# Idempotent: installs only what is missing. Starts nothing: each test session starts its own
# registries on free loopback ports, in temp folders (tests/oci.py), so that a test can stop one,
# tamper with its storage or read its access log. The last line printed is the binary's path.
# Usage: scripts/setup-oci-registry.sh
set -euo pipefail

log() { echo "setup-oci-registry: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} from Debian"
    as_root apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
# The package's own service (port 5000) is not wanted: tests start theirs on free ports.
command -v docker-registry
