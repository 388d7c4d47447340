#!/usr/bin/env bash
# Start a throwaway PostgreSQL server as the `postgres` user on a free loopback port.
# Prints the DATABASE URL on stdout. Usage: DATA_DIR=/tmp/pgdata .ci/start-postgres.sh
set -euo pipefail
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
DATA_DIR="${DATA_DIR:-$(mktemp -d /tmp/fhir-pg.XXXXXX)}"
PORT="${PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
mkdir -p "$DATA_DIR"
chown postgres:postgres "$DATA_DIR"
chmod 700 "$DATA_DIR"
if [ ! -f "$DATA_DIR/PG_VERSION" ]; then
  su postgres -s /bin/sh -c "$PG_BIN/initdb -D '$DATA_DIR' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >/dev/null
fi
su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D '$DATA_DIR' -l '$DATA_DIR/server.log' -w \
  -o \"-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
  -c synchronous_commit=off -c full_page_writes=off\" start" >/dev/null
su postgres -s /bin/sh -c "$PG_BIN/psql -h 127.0.0.1 -p $PORT -U postgres -qc 'CREATE DATABASE fhir'" >/dev/null
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/fhir"
