#!/usr/bin/env bash
# Set up everything on this machine, then run the Cellar demo: push three versions of a model,
# promote two of them, diff them, watch a broken release roll back automatically, roll back by
# hand, and read the history, blame and audit trail.
# Usage: scripts/demo.sh   (the registry lands in .demo/; the model serves on 127.0.0.1:18080,
#        or on a free port when 18080 is taken; DEMO_PORT=N insists on port N)
# It touches only what it made: containers carrying its own registry's cellar.registry label.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/setup-docker.sh >&2
scripts/build-example-image.sh >&2
PYTHON=.venv/bin/python examples/support-bot/make.sh

export REGISTRY_HOME="$PWD/.demo/cellar" REGISTRY_ACTOR="${REGISTRY_ACTOR:-demo <demo@example.org>}"
export SUPPORT_API_TOKEN="demo-secret-never-shown"   # a secret: passed to the container, never stored
unset REGISTRY_DB_URL

registry_id() {  # the cellar.registry label of $REGISTRY_HOME's containers: its first audit event's hash
    .venv/bin/registry audit --json | .venv/bin/python -c \
        'import json, sys; print(min(json.load(sys.stdin), key=lambda e: e["id"])["hash"][:32])'
}

port_free() {  # port_free PORT: nothing listens on it (Docker publishes the demo on 127.0.0.1)
    .venv/bin/python -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

choose_port() {  # DEMO_PORT if set (it must be free), else 18080, else any free port
    if [ -n "${DEMO_PORT:-}" ]; then
        port_free "$DEMO_PORT" || { echo "DEMO_PORT=$DEMO_PORT is in use; pick another or unset it" >&2; exit 1; }
        echo "$DEMO_PORT"
    elif port_free 18080; then
        echo 18080
    else
        .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    fi
}

# Start clean: the previous demo's containers (found by its registry's label, so another
# registry's containers on this host are never touched), then its registry.
if [ -d "$REGISTRY_HOME" ]; then
    if old_id=$(registry_id 2>/dev/null) && [ -n "$old_id" ]; then
        old=$(docker ps -aq --filter "label=cellar.registry=$old_id")
        [ -z "$old" ] || docker rm -f $old >/dev/null
    else
        echo "note: could not read the previous demo registry; its containers (if any) are left alone" >&2
    fi
fi
rm -rf .demo
PORT=$(choose_port)
[ "$PORT" = 18080 ] || [ -n "${DEMO_PORT:-}" ] || echo "port 18080 is taken: the demo uses $PORT" >&2

bold=$'\033[1m' dim=$'\033[2m' off=$'\033[0m'
say() { printf '\n%s# %s%s\n' "$dim" "$*" "$off"; }
run() { printf '%s$ registry %s%s\n' "$bold" "$*" "$off"; .venv/bin/registry "$@"; }
ask() { printf '%s$ curl %s%s\n' "$bold" "$1" "$off"; curl -s -m 5 -X POST -d '{"prompt":"hello"}' "http://127.0.0.1:$PORT$1"; echo; }

say "A registry, and three versions of support-bot (v1.2 is broken: MAX_TOKENS=lots)"
run init
REGISTRY_ID=$(registry_id)
run push examples/support-bot/v1.0
run push examples/support-bot/v1.1
run push examples/support-bot/v1.2
run list
run show v1.1

say "An environment, and the first release"
run env add demo --port "$PORT" --default --health-timeout 5
run promote v1.0 --reason "first release"
ask /v1/completions

say "What changes from v1.0 to v1.1? The system prompt only."
run diff v1.0 v1.1
run promote v1.1 --reason "friendlier persona"
ask /v1/completions

say "v1.2 fails its health check: Cellar restores v1.1 and exits 4"
set +e
run promote v1.2 --reason "longer answers"
code=$?
set -e
echo "(exit code $code)"
ask /v1/completions

say "Roll back by hand: to the newest earlier healthy release, v1.0"
run rollback --reason "compare with the first persona"
ask /v1/completions

say "Who did what, and is the record intact?"
run history
run status
run blame system --at v1.1
run audit
run audit verify

printf '\n%sDone. The demo model still serves on http://127.0.0.1:%s (REGISTRY_HOME=%s).%s\n' \
    "$bold" "$PORT" "$REGISTRY_HOME" "$off"
printf 'Remove it with: docker rm -f $(docker ps -aq --filter label=cellar.registry=%s)\n' "$REGISTRY_ID"
[ "$code" -eq 4 ] || { echo "expected promote v1.2 to exit 4, got $code" >&2; exit 1; }
