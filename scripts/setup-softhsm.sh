#!/usr/bin/env bash
# Install SoftHSM 2 (a software PKCS#11 token) for the tests of `registry sign --key pkcs11:...`.
# Idempotent; needs root (or sudo) on Debian.
set -euo pipefail
if [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq softhsm2 >/dev/null
echo "setup-softhsm: SoftHSM 2 installed" >&2
