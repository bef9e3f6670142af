#!/usr/bin/env bash
# End-to-end check of the example server image against the real Docker Engine:
# builds the image if needed, runs it with a good and a broken config the way the
# deployer does (--init, snapshot mounted read-only), checks both endpoints, then
# removes its containers. Prints start-to-first-200 and stop times.
# Usage: scripts/smoke-example-server.sh   (env SMOKE_PORT, default 18080)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${SMOKE_PORT:-18080}"
IMAGE=cellar-example-server:latest
URL="http://127.0.0.1:$PORT"
CONTAINERS=()
TMP="$(mktemp -d)"

cleanup() {
    [ "${#CONTAINERS[@]}" -eq 0 ] || docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

make_snapshot() {  # make_snapshot DIR: a read-only model snapshot like the registry's
    mkdir -p "$1/prompts" "$1/weights"
    printf 'You are a smoke test.\nSecond line.\n' >"$1/prompts/system"
    head -c 1024 /dev/zero >"$1/weights/model.safetensors"
    chmod 0444 "$1/prompts/system" "$1/weights/model.safetensors"
}

start() {  # start MAX_TOKENS: run the server; echo the container id
    docker run --init -d -p "127.0.0.1:$PORT:8080" -v "$TMP/model:/model:ro" \
        -e "MAX_TOKENS=$1" -e MODEL_NAME=smoke -e MODEL_VERSION=v0 "$IMAGE"
}

wait_answering() {  # wait until /health answers at all (any status), bounded
    local deadline=$(($(now_ms) + 5000))
    until curl -s -o /dev/null "$URL/health"; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "server did not answer within 5 s"
        sleep 0.005
    done
}

expect() {  # expect STATUS PATTERN CURL_ARGS...: check the status and grep the body
    local status="$1" pattern="$2" body code
    shift 2
    body="$(curl -s -w '\n%{http_code}' "$@")"
    code="${body##*$'\n'}"
    body="${body%$'\n'*}"
    body="${body%$'\n'}"
    [ "$code" = "$status" ] || fail "$* answered $code, wanted $status: $body"
    grep -Eq "$pattern" <<<"$body" || fail "$* body did not match /$pattern/: $body"
    echo "ok  $code $*  $body"
}

main() {
    "$ROOT/scripts/build-example-image.sh" >/dev/null
    make_snapshot "$TMP/model"
    local sha t0 t1 t2 id
    sha="$(sha256sum "$TMP/model/prompts/system" | cut -d' ' -f1)"

    t0="$(now_ms)"
    id="$(start 64)"; CONTAINERS+=("$id")
    wait_answering
    t1="$(now_ms)"
    expect 200 '^\{"status":"ok","prompt_bytes":35,"weights_files":1\}$' "$URL/health"
    expect 200 "\"system_prompt_sha\":\"$sha\".*\"completion\":\"You are a smoke test. You said: hello\"" \
        -X POST -H 'Content-Type: application/json' -d '{"prompt":"hello"}' "$URL/v1/completions"
    expect 404 'not found' "$URL/nope"
    t2="$(now_ms)"
    docker stop "$id" >/dev/null
    echo "good config: docker run until /health answered $((t1 - t0)) ms, docker stop $(($(now_ms) - t2)) ms"
    docker rm "$id" >/dev/null

    id="$(start lots)"; CONTAINERS+=("$id")
    wait_answering
    expect 503 '^\{"status":"error","error":"MAX_TOKENS must be a positive integer"\}$' "$URL/health"
    expect 503 'MAX_TOKENS' -X POST -d '{"prompt":"hello"}' "$URL/v1/completions"
    echo "smoke: PASS"
}

main "$@"
