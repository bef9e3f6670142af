#!/usr/bin/env bash
# Make a local PostgreSQL serve the Cellar test database.
#
# Idempotent: installs Debian's postgresql only when no server is installed, creates
# and starts the newest installed version's "main" cluster when needed, then makes
# sure the role and database exist. The last line printed is the SQLAlchemy URL.
# Usage: scripts/setup-postgres.sh   (env PG_ROLE, PG_PASSWORD, PG_DB override the names)
set -euo pipefail

ROLE="${PG_ROLE:-cellar}"
PASSWORD="${PG_PASSWORD:-cellar}"
DB="${PG_DB:-cellar_test}"
CLUSTER=main
WAIT_S=30

log() { echo "setup-postgres: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_postgres() {  # run a command as the postgres OS user, from a directory it can read
    (cd / && runuser -u postgres -- "$@")
}

pg_version() {  # newest major version installed under /usr/lib/postgresql, empty if none
    local dir
    for dir in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$dir" ] && basename "$(dirname "$(dirname "$dir")")"
    done | sort -n | tail -n 1
}

install_postgres() {
    log "no PostgreSQL server found; installing Debian's postgresql"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
}

cluster_field() {  # cluster_field VERSION N: column N of pg_lsclusters (3 port, 4 status)
    pg_lsclusters --no-header | awk -v v="$1" -v c="$CLUSTER" -v n="$2" '$1 == v && $2 == c { print $n }'
}

start_cluster() {  # start_cluster VERSION
    local version="$1"
    if [ -z "$(cluster_field "$version" 2)" ]; then
        log "creating cluster $version/$CLUSTER"
        pg_createcluster "$version" "$CLUSTER"
    fi
    # The socket directory lives on a tmpfs that may have been emptied since install.
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    if [ "$(cluster_field "$version" 4)" != online ]; then
        log "starting cluster $version/$CLUSTER"
        pg_ctlcluster "$version" "$CLUSTER" start
    fi
}

wait_until_ready() {  # wait_until_ready PORT
    local deadline=$((SECONDS + WAIT_S))
    until pg_isready -q -h 127.0.0.1 -p "$1"; do
        [ "$SECONDS" -lt "$deadline" ] || die "PostgreSQL did not accept connections on 127.0.0.1:$1 within ${WAIT_S}s"
        sleep 0.5
    done
}

psql_admin() {  # psql_admin PORT SQL: run SQL as the postgres superuser, print tuples only
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$1" -tAc "$2"
}

ensure_role_and_db() {  # ensure_role_and_db PORT
    local port="$1"
    # Superuser: the test suite creates and drops databases of its own.
    if [ "$(psql_admin "$port" "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
        log "creating role $ROLE"
        psql_admin "$port" "CREATE ROLE \"$ROLE\" LOGIN SUPERUSER PASSWORD '$PASSWORD'"
    else
        psql_admin "$port" "ALTER ROLE \"$ROLE\" LOGIN SUPERUSER PASSWORD '$PASSWORD'"
    fi
    if [ "$(psql_admin "$port" "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
        log "creating database $DB"
        psql_admin "$port" "CREATE DATABASE \"$DB\" OWNER \"$ROLE\""
    fi
}

check_login() {  # check_login PORT: the URL we print must work, password and TCP included
    PGPASSWORD="$PASSWORD" psql -X -q -h 127.0.0.1 -p "$1" -U "$ROLE" -d "$DB" -tAc 'SELECT 1' >/dev/null ||
        die "cannot log in as $ROLE to $DB on 127.0.0.1:$1 (check pg_hba.conf)"
}

main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts the cluster)"
    local version port
    version="$(pg_version)"
    if [ -z "$version" ]; then
        install_postgres
        version="$(pg_version)"
        [ -n "$version" ] || die "no server under /usr/lib/postgresql after installing postgresql"
    fi
    start_cluster "$version"
    port="$(cluster_field "$version" 3)"
    wait_until_ready "$port"
    ensure_role_and_db "$port"
    check_login "$port"
    log "PostgreSQL $version ready on 127.0.0.1:$port"
    echo "postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$port/$DB"
}

main "$@"
