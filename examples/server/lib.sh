# shellcheck shell=sh
# Shared by the CGI scripts in www/cgi-bin (sourced, busybox sh).
# The model snapshot is mounted at /model; MODEL_DIR exists only to try the
# scripts outside a container.
MODEL_DIR="${MODEL_DIR:-/model}"
SYSTEM_PROMPT="$MODEL_DIR/prompts/system"

# respond STATUS JSON: write a CGI response and end the script. busybox httpd
# only honours "Status:" when it is the very first header line.
respond() {
    printf 'Status: %s\r\nContent-Type: application/json\r\n\r\n%s\n' "$1" "$2"
    exit 0
}

# json_escape TEXT: TEXT as the inside of a JSON string (controls dropped, UTF-8 kept).
json_escape() {
    printf '%s' "$1" | tr -d '\000-\037\177' | sed 's/\\/\\\\/g; s/"/\\"/g'
}

# config_error: print why the environment config is invalid, nothing if it is valid.
# A version with e.g. MAX_TOKENS="lots" must fail its health check; that is how the
# demo's broken release is recognised.
config_error() {
    case "${MAX_TOKENS-64}" in
        *[!0-9]*|'') echo "MAX_TOKENS must be a positive integer"; return ;;
        *[1-9]*) ;;
        *) echo "MAX_TOKENS must be a positive integer"; return ;;
    esac
    case "${DELAY_MS-0}" in
        *[!0-9]*|'') echo "DELAY_MS must be a non-negative integer" ;;
    esac
}

# fail_unless_ready: answer 503 unless the config is valid and the prompt readable.
fail_unless_ready() {
    error=$(config_error)
    [ -z "$error" ] || respond "503 Service Unavailable" "{\"status\":\"error\",\"error\":\"$error\"}"
    [ -e "$SYSTEM_PROMPT" ] ||
        respond "503 Service Unavailable" "{\"status\":\"error\",\"error\":\"missing $SYSTEM_PROMPT\"}"
    [ -r "$SYSTEM_PROMPT" ] ||
        respond "503 Service Unavailable" "{\"status\":\"error\",\"error\":\"cannot read $SYSTEM_PROMPT as uid $(id -u)\"}"
}
