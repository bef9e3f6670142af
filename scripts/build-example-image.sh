#!/usr/bin/env bash
# Build the example model server image (default tag cellar-example-server:latest)
# from Debian's static busybox, without pulling anything: the root filesystem is
# assembled here and loaded with `docker import`.
#
# Idempotent: the image carries a label with a hash of its inputs (this script,
# examples/server/, the busybox binary); when the tagged image already has the same
# hash nothing is rebuilt, so the tag keeps pointing at the same image ID.
# Usage: scripts/build-example-image.sh [--force] [TAG]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVER_DIR="$ROOT/examples/server"
BUSYBOX=/bin/busybox
# Deliberately not under the "cellar." prefix: image labels are inherited by
# containers, and that namespace belongs to the deployer's container labels.
HASH_LABEL=org.cellar-example.inputs-sha256
FORMAT=1   # bump when the image layout changes in a way the inputs don't show

log() { echo "build-example-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_busybox_static() {
    if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
        log "installing busybox-static from Debian"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static
    fi
    [ -x "$BUSYBOX" ] || die "$BUSYBOX missing after installing busybox-static"
}

inputs_hash() {
    {
        echo "format $FORMAT"
        sha256sum <"$BUSYBOX"
        sha256sum <"${BASH_SOURCE[0]}"
        (cd "$SERVER_DIR" && find . -type f | LC_ALL=C sort | xargs -d '\n' sha256sum)
    } | sha256sum | cut -d' ' -f1
}

current_hash() {  # the hash label of TAG, empty when there is no such image
    docker image inspect --format "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true
}

assemble_rootfs() {  # assemble_rootfs DIR
    local dir="$1" applet
    mkdir -p "$dir"/{bin,app,etc,tmp,model}
    install -m 0755 "$BUSYBOX" "$dir/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
    done
    cp -R "$SERVER_DIR"/. "$dir/app/"
    chmod -R u=rwX,go=rX "$dir/app"
    chmod 0755 "$dir/app/serve" "$dir/app/route" "$dir"/app/www/cgi-bin/*
    chmod 1777 "$dir/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

import_image() {  # import_image DIR TAG HASH
    # Fixed owner, order and mtimes make the layer itself reproducible.
    tar -C "$1" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - . |
        docker import \
            --change 'ENV PATH=/bin' \
            --change 'EXPOSE 8080' \
            --change 'USER 65534:65534' \
            --change 'WORKDIR /' \
            --change 'ENTRYPOINT ["/app/serve"]' \
            --change "LABEL $HASH_LABEL=$3" \
            --message "cellar example server (busybox httpd + CGI)" \
            - "$2" >/dev/null
}

main() {
    local force=0 tag=cellar-example-server:latest
    for arg in "$@"; do
        case "$arg" in
            --force) force=1 ;;
            -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 0 ;;
            -*) die "unknown option $arg" ;;
            *) tag="$arg" ;;
        esac
    done
    ensure_busybox_static
    "$ROOT/scripts/setup-docker.sh" >/dev/null 2>&1 || "$ROOT/scripts/setup-docker.sh"
    local hash
    hash="$(inputs_hash)"
    if [ "$force" -eq 0 ] && [ "$(current_hash "$tag")" = "$hash" ]; then
        log "$tag is up to date"
    else
        WORKDIR_TMP="$(mktemp -d)"
        trap 'rm -rf "$WORKDIR_TMP"' EXIT
        assemble_rootfs "$WORKDIR_TMP/rootfs"
        import_image "$WORKDIR_TMP/rootfs" "$tag" "$hash"
        log "built $tag"
    fi
    docker image inspect --format '{{.Id}}' "$tag"
}

main "$@"
