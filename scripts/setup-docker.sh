#!/usr/bin/env bash
# Make a local Docker Engine answer on its default socket.
#
# Idempotent: installs docker.io only when dockerd is missing, starts dockerd only
# when `docker info` fails, then waits (bounded) until the engine answers.
# Usage: scripts/setup-docker.sh            (env DOCKER_WAIT_S overrides the 30 s wait)
set -euo pipefail

WAIT_S="${DOCKER_WAIT_S:-30}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

log() { echo "setup-docker: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_docker() {
    log "dockerd not found; installing docker.io from Debian"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io
}

engine_answers() { docker info >/dev/null 2>&1; }

dockerd_running() { pgrep -x dockerd >/dev/null 2>&1; }

start_dockerd() {
    # A pid file left by a dockerd that died with its machine makes the next one refuse to start.
    [ ! -f /var/run/docker.pid ] || as_root rm -f /var/run/docker.pid
    log "starting dockerd (log: $LOG)"
    # setsid detaches it from this shell's session so it outlives the script;
    # stdin from /dev/null so it never holds a caller's terminal or pipe open.
    as_root setsid dockerd >"$LOG" 2>&1 </dev/null &
}

wait_for_engine() {
    local deadline=$((SECONDS + WAIT_S))
    until engine_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "last lines of $LOG:"
            tail -n 20 "$LOG" >&2 2>/dev/null || true
            die "Docker Engine did not answer 'docker info' within ${WAIT_S}s"
        fi
        sleep 0.5
    done
}

main() {
    command -v dockerd >/dev/null 2>&1 || install_docker
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
    command -v docker >/dev/null 2>&1 || die "docker CLI missing (expected from docker.io)"
    if engine_answers; then
        log "Docker Engine already answering"
    else
        # A dockerd that is alive but slow to come up must not be started twice.
        dockerd_running || start_dockerd
        wait_for_engine
        log "Docker Engine is up"
    fi
    docker version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}})'
}

main "$@"
