#!/usr/bin/env bash
# Run a command with FHIR_TEST_PG_URL pointing at a throwaway PostgreSQL server that this
# script starts (as the `postgres` user, on a free port) and stops afterwards.
# If FHIR_TEST_PG_URL is already set, the command just runs with it.
set -euo pipefail
if [ -n "${FHIR_TEST_PG_URL:-}" ]; then exec "$@"; fi
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$PG_BIN" ] || ! id postgres >/dev/null 2>&1; then
  echo "WARNING: PostgreSQL is not installed: running the tests on SQLite only." >&2
  echo "         (.ci/run installs it: apt-get install postgresql)" >&2
  exec "$@"
fi
DATA_DIR="$(mktemp -d /tmp/fhir-test-pg.XXXXXX)"
export DATA_DIR
stop() { su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D '$DATA_DIR' -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$DATA_DIR"; }
trap stop EXIT
FHIR_TEST_PG_URL="$("$(dirname "$0")/../.ci/start-postgres.sh")"
export FHIR_TEST_PG_URL
echo "PostgreSQL for tests: $FHIR_TEST_PG_URL" >&2
"$@"
