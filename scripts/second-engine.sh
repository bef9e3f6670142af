#!/usr/bin/env bash
# A second Docker engine on this machine that shares no disk with the registry's folders: the
# stand-in for a GPU server reached as tcp:// (tests and bench/ use it; issue 22).
#
# It runs in a network namespace of its own (a veth pair: this machine is $HOST_IP, the engine
# $ENGINE_IP, so its containers publish on $ENGINE_IP, not on this machine's loopback) and in a
# mount namespace of its own where a tmpfs covers every folder that holds registry homes ($HIDE),
# so a registry path does not exist there. Its own data root, exec root, pid file, socket and
# bridge; no iptables (published ports go through docker-proxy). `nsenter --net`, not
# `ip netns exec`: the latter remounts /sys and drops the cgroup mounts dockerd needs.
#
# Usage: scripts/second-engine.sh start   idempotent; prints the DOCKER_HOST to use (tcp://, plain)
#        scripts/second-engine.sh stop    idempotent; stops the engine, its containers, the namespace
#        scripts/second-engine.sh status  exit 0 when it answers
# Also reachable on unix://$RUN/docker.sock from this machine. Needs root. There is no image
# registry: move images with `docker save | docker -H ... load`.
set -euo pipefail

RUN=/run/cellar-engine2
DATA=/var/lib/cellar-engine2
LOG=/var/log/cellar-engine2.log
NETNS=cellar-e2
HOST_IF=ce2-host
NS_IF=ce2-engine
HOST_IP=10.231.0.1
ENGINE_IP=10.231.0.2
PORT=2375
HIDE="${CELLAR_ENGINE2_HIDE:-/tmp /work /home /root /var/tmp}"
WAIT_S="${CELLAR_ENGINE2_WAIT_S:-60}"
SOCK="unix://$RUN/docker.sock"

log() { echo "second-engine: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

answers() { docker -H "$SOCK" info >/dev/null 2>&1; }

engine_pid() {
    local pid
    pid=$(cat "$RUN/dockerd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

make_netns() {
    [ -e "/run/netns/$NETNS" ] || ip netns add "$NETNS"
    if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
        ip link add "$HOST_IF" type veth peer name "$NS_IF"
        ip link set "$NS_IF" netns "$NETNS"
        ip addr add "$HOST_IP/24" dev "$HOST_IF"
    fi
    ip link set "$HOST_IF" up
    nsenter --net="/run/netns/$NETNS" sh -c "
        ip addr show dev $NS_IF | grep -q ' $ENGINE_IP/' || ip addr add $ENGINE_IP/24 dev $NS_IF
        ip link set $NS_IF up; ip link set lo up"
}

start_engine() {
    mkdir -p "$RUN" "$DATA"
    rm -f "$RUN/dockerd.pid" "$RUN/docker.sock"
    log "starting dockerd in namespace $NETNS (log: $LOG), hiding: $HIDE"
    # unshare -m makes the mounts below private to the engine; setsid detaches it from this
    # shell so it outlives the script, stdin from /dev/null so it holds no caller's pipe.
    setsid unshare -m --propagation private sh -c '
        for dir in $1; do
            [ -d "$dir" ] && mount -t tmpfs -o size=256m,mode=1777 cellar-hidden "$dir"
        done
        exec nsenter --net="/run/netns/$2" dockerd --data-root "$3/data" --exec-root "$4/exec" \
            --pidfile "$4/dockerd.pid" -H "unix://$4/docker.sock" -H "tcp://$5:$6" \
            --iptables=false --ip-masq=false --bip 172.30.99.1/24 --userland-proxy=true
    ' second-engine "$HIDE" "$NETNS" "$DATA" "$RUN" "$ENGINE_IP" "$PORT" >"$LOG" 2>&1 </dev/null &
}

wait_for_engine() {
    local deadline=$((SECONDS + WAIT_S))
    until answers && docker -H "tcp://$ENGINE_IP:$PORT" info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOG" >&2 2>/dev/null || true
            die "the second engine did not answer within ${WAIT_S}s (log: $LOG)"
        fi
        sleep 0.5
    done
}

install_tools() {
    # ip (the namespace and veth), nsenter/unshare (util-linux), openssl (the tests' certificates),
    local missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # sshd and ssh: the tests' ssh:// host (tests/second_engine.py, second_engine_ssh)
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
    [ "${#missing[@]}" -eq 0 ] && return
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

start() {
    [ "$(id -u)" -eq 0 ] || die "needs root (network and mount namespaces)"
    command -v dockerd >/dev/null 2>&1 || die "dockerd missing: run scripts/setup-docker.sh first"
    install_tools
    make_netns
    if ! answers; then
        engine_pid >/dev/null || start_engine
        wait_for_engine
        log "up: $(docker -H "$SOCK" version --format 'server {{.Server.Version}}')"
    fi
    echo "tcp://$ENGINE_IP:$PORT"
}

stop() {
    local pid deadline
    if pid=$(engine_pid); then
        kill -TERM "$pid"
        deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    if [ -e "/run/netns/$NETNS" ]; then
        # what is left in the namespace (containerd shims, docker-proxy) was started by the engine
        for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$NETNS"
    fi
    ip link del "$HOST_IF" 2>/dev/null || true
    rm -f "$RUN/dockerd.pid" "$RUN/docker.sock"
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
