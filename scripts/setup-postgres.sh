#!/usr/bin/env bash
# Make a local PostgreSQL serve the Cellar test database.
#
# Idempotent: installs Debian's postgresql only when no server is installed, creates
# and starts the newest installed version's "main" cluster when needed, then makes
# sure the role and database exist. The last line printed is the SQLAlchemy URL.
#
# Least privilege: the role is NOT a superuser. It owns the test database and may create
# databases (CREATEDB: the test suite makes and drops one per test), nothing more. Its
# password is generated on the first run and kept in a root-only pgpass file, reused later.
# Usage: scripts/setup-postgres.sh
#   env PG_ROLE, PG_DB override the names; PG_PASSFILE the password file
#   (default /var/lib/cellar-test/pgpass); PG_PASSWORD sets the password instead.
set -euo pipefail

ROLE="${PG_ROLE:-cellar}"
DB="${PG_DB:-cellar_test}"
PASSFILE="${PG_PASSFILE:-/var/lib/cellar-test/pgpass}"
PASSWORD=""
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

check_names() {  # the names go into SQL and a URL unquoted: keep them plain
    [[ "$ROLE" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "PG_ROLE '$ROLE' must match [a-z_][a-z0-9_]*"
    [[ "$DB" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "PG_DB '$DB' must match [a-z_][a-z0-9_]*"
    [ "$ROLE" != postgres ] || die "PG_ROLE must not be postgres (the superuser)"
}

load_password() {  # PG_PASSWORD, else the role's line in $PASSFILE, else a new one written there
    if [ -n "${PG_PASSWORD:-}" ]; then
        # it goes into SQL and the printed URL unescaped
        [[ "$PG_PASSWORD" =~ ^[A-Za-z0-9._~-]+$ ]] || die "PG_PASSWORD may hold only A-Z a-z 0-9 . _ ~ -"
        PASSWORD="$PG_PASSWORD"
        return
    fi
    if [ -f "$PASSFILE" ]; then  # pgpass format: host:port:database:user:password
        PASSWORD="$(awk -F: -v r="$ROLE" '$4 == r { print $5; exit }' "$PASSFILE")"
    fi
    if [ -z "$PASSWORD" ]; then
        log "generating a password for $ROLE, kept in $PASSFILE"
        PASSWORD="$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"  # 48 hex digits: URL-safe
        install -d -m 700 "$(dirname "$PASSFILE")"
        (umask 077 && echo "127.0.0.1:*:*:$ROLE:$PASSWORD" >>"$PASSFILE")
    fi
    chmod 600 "$PASSFILE" 2>/dev/null || true
}

ensure_role_and_db() {  # ensure_role_and_db PORT
    local port="$1" verb=ALTER
    if [ "$(psql_admin "$port" "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
        log "creating role $ROLE"
        verb=CREATE
    fi
    # Not a superuser (an older version of this script made it one: ALTER takes that back).
    # The password goes through stdin, not argv, so `ps` never shows it.
    printf '%s ROLE "%s" LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '"'"'%s'"'"';\n' \
        "$verb" "$ROLE" "$PASSWORD" | as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" >/dev/null
    # DROP DATABASE ... WITH (FORCE) must end an autovacuum worker busy in a test database, which
    # only superusers and members of pg_signal_backend may (it cannot signal superuser sessions).
    psql_admin "$port" "GRANT pg_signal_backend TO \"$ROLE\"" >/dev/null
    if [ "$(psql_admin "$port" "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
        log "creating database $DB"
        psql_admin "$port" "CREATE DATABASE \"$DB\" OWNER \"$ROLE\""
    else
        psql_admin "$port" "ALTER DATABASE \"$DB\" OWNER TO \"$ROLE\""
    fi
}

as_role() {  # as_role PORT SQL: run SQL as the test role over TCP, as the tests will
    PGPASSWORD="$PASSWORD" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U "$ROLE" -d "$DB" -tAc "$2"
}

check_login() {  # check_login PORT: the URL we print must work, password and TCP included
    as_role "$1" 'SELECT 1' >/dev/null ||
        die "cannot log in as $ROLE to $DB on 127.0.0.1:$1 (check pg_hba.conf)"
    [ "$(as_role "$1" 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user')" = f ] ||
        die "$ROLE is still a superuser"
    # what tests/conftest.py does for every PostgreSQL test: create, use, force-drop a database
    local probe="cellar_setup_check_$$"
    as_role "$1" "CREATE DATABASE \"$probe\"" >/dev/null &&
        as_role "$1" "DROP DATABASE \"$probe\" WITH (FORCE)" >/dev/null ||
        die "$ROLE cannot create and drop databases (needs CREATEDB)"
}

main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts the cluster)"
    check_names
    load_password
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
