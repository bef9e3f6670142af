#!/usr/bin/env bash
# Run the whole test suite: install and start what the tests need, then pytest.
# Needs root (or sudo) on a Debian machine for PostgreSQL and the Docker engine.
# PostgreSQL tests log in as a least-privilege role (CREATEDB, not SUPERUSER) whose generated
# password scripts/setup-postgres.sh keeps in /var/lib/cellar-test/pgpass (root only); set
# CELLAR_TEST_PG_URL yourself to use another server instead.
# Starts a second Docker engine too (scripts/second-engine.sh), for the remote-host tests.
# Usage: scripts/test.sh [pytest args...]
#        scripts/test.sh --fast [pytest args...]
# --fast: only the tests marked neither docker, postgres, browser nor oci (tests/conftest.py marks them),
# with nothing installed or started but the venv, on CELLAR_TEST_JOBS pytest-xdist workers (default:
# two per core, as the tests also wait on subprocesses and sleeps; 0 runs them in this process, for
# --pdb), their temporary files in /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode caches on: with PYTHONDONTWRITEBYTECODE (set on some machines) every pytest worker
# rewrites the tests' asserts from source (4 s each) and every CLI subprocess compiles Cellar anew.
unset PYTHONDONTWRITEBYTECODE

if [ "${1:-}" = "--fast" ]; then
    shift
    scripts/bootstrap.sh
    # The tests' temporary files in memory when there is room (4 GiB free; a run peaks at 1.3 GiB):
    # they create, fsync and delete some 12,000 files, a tenth of the tier's CPU on this ext4.
    # Removed at the end. The whole suite below keeps them on disk.
    if [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -gt $((4 << 20)) ]; then
        base="$(mktemp -d /dev/shm/cellar-fast-XXXXXX)"
        trap 'rm -rf "$base"' EXIT
        set -- --basetemp "$base/tmp" "$@"
    fi
    # --dist loadfile: a file's tests on one worker, so a module's fixtures (a seeded home, a
    # warm process) are built once, not once per worker.
    status=0
    .venv/bin/python -m pytest -q -p no:cacheprovider -n "${CELLAR_TEST_JOBS:-$(($(nproc) * 2))}" --dist loadfile \
        -m "not docker and not postgres and not browser and not oci" "$@" || status=$?
    exit "$status"
fi

scripts/bootstrap.sh
if [ -z "${CELLAR_TEST_PG_URL:-}" ]; then
    CELLAR_TEST_PG_URL=$(scripts/setup-postgres.sh | tail -n 1)
fi
export CELLAR_TEST_PG_URL
scripts/setup-docker.sh >&2
scripts/build-example-image.sh >&2
scripts/setup-browser.sh >&2
scripts/setup-softhsm.sh >&2
scripts/setup-oci-registry.sh >&2
# The second engine (no shared disk: issue 22's remote hosts), stopped when the tests end unless
# it was already running before (a developer's, kept for the next run).
if scripts/second-engine.sh status; then
    scripts/second-engine.sh start >&2
else
    scripts/second-engine.sh start >&2
    trap 'scripts/second-engine.sh stop >&2 || true' EXIT
fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
