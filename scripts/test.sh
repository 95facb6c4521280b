#!/usr/bin/env bash
# Runs Emporium's whole test suite against real PostgreSQL and NATS (JetStream).
#
# Uses the servers at EMPORIUM_TEST_DATABASE_URL / DATABASE_URL and NATS_URL (defaults:
# postgres://postgres@127.0.0.1:5432/postgres and nats://127.0.0.1:4222) when they answer.
# Otherwise it starts throwaway ones from the installed `postgres` / `nats-server`
# binaries in a temporary directory and stops them afterwards. If neither works it says
# what to install and fails: tests never skip a missing service.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${EMPORIUM_TEST_DATABASE_URL:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
TMP="$(mktemp -d -t emporium-test-XXXXXX)"
STARTED_PG=""
STARTED_NATS=""

cleanup() {
  if [[ -n "$STARTED_PG" ]]; then
    as_pg_user pg_ctl -D "$TMP/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [[ -n "$STARTED_NATS" ]]; then
    kill "$STARTED_NATS" 2>/dev/null || true
  fi
  rm -rf "$TMP" 2>/dev/null || true
}
trap cleanup EXIT

as_pg_user() {
  # initdb and postgres refuse to run as root.
  if [[ "$(id -u)" == "0" ]]; then
    chown -R postgres "$TMP" 2>/dev/null || true
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_answers() {
  if command -v psql >/dev/null 2>&1; then
    psql "$1" -Atqc 'select 1' >/dev/null 2>&1
  else
    local hostport="${1#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
    (exec 3<>"/dev/tcp/${hostport%%:*}/${hostport##*:}") 2>/dev/null
  fi
}

nats_answers() {
  local hostport="${1#*://}"; hostport="${hostport##*@}"
  local host="${hostport%%:*}" port="${hostport##*:}"
  # The server greets every connection with an INFO line.
  timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port && head -c 4 <&3" 2>/dev/null | grep -q INFO
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

pg_bin() {
  command -v "$1" 2>/dev/null && return
  ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1
}

if ! pg_answers "$PG_URL"; then
  echo "PostgreSQL does not answer at $PG_URL; starting a throwaway server" >&2
  INITDB="$(pg_bin initdb)"; PG_CTL="$(pg_bin pg_ctl)"
  if [[ -z "$INITDB" || -z "$PG_CTL" ]]; then
    echo "error: no PostgreSQL to test against. Start one and set DATABASE_URL, or install" >&2
    echo "       PostgreSQL 15+ (Debian: apt-get install postgresql), or run docker compose up -d --wait postgres" >&2
    exit 1
  fi
  PORT="$(free_port)"
  mkdir -p "$TMP/pg" "$TMP/sock"
  as_pg_user "$INITDB" -D "$TMP/pg" -U postgres --auth=trust >/dev/null
  as_pg_user "$PG_CTL" -D "$TMP/pg" -w -l "$TMP/pg.log" \
    -o "-p $PORT -k $TMP/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  STARTED_PG=1
  PG_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
  pg_answers "$PG_URL" || { echo "error: the throwaway PostgreSQL did not start (see $TMP/pg.log)" >&2; exit 1; }
fi

if ! nats_answers "$NATS_URL"; then
  echo "NATS does not answer at $NATS_URL; starting a throwaway server" >&2
  if ! command -v nats-server >/dev/null 2>&1; then
    echo "error: no NATS to test against. Start one and set NATS_URL, or install nats-server" >&2
    echo "       (Debian: apt-get install nats-server), or run docker compose up -d --wait nats" >&2
    exit 1
  fi
  PORT="$(free_port)"
  mkdir -p "$TMP/nats"
  nats-server -a 127.0.0.1 -p "$PORT" -js -sd "$TMP/nats" >"$TMP/nats.log" 2>&1 &
  STARTED_NATS=$!
  NATS_URL="nats://127.0.0.1:$PORT"
  for _ in $(seq 50); do nats_answers "$NATS_URL" && break; sleep 0.1; done
  nats_answers "$NATS_URL" || { echo "error: the throwaway NATS did not start (see $TMP/nats.log)" >&2; exit 1; }
fi

export EMPORIUM_TEST_DATABASE_URL="$PG_URL"
export NATS_URL
# Python tools the tests run (DuckDB and pandas read the exports; schemathesis below).
EMPORIUM_PY_VENV="$(bash scripts/python-env.sh)"
export EMPORIUM_PY_VENV
# Debian's Chromium for the console's browser tests.
EMPORIUM_CHROMIUM="$(bash scripts/browser-env.sh)"
export EMPORIUM_CHROMIUM
echo "testing against PostgreSQL $PG_URL and NATS $NATS_URL" >&2

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# The contract fuzzing run against the live binary (every schemathesis phase and check).
# Only for the whole suite: a filtered run (arguments given) is someone iterating on tests.
if [[ $# -eq 0 ]]; then
  bash scripts/schemathesis.sh
fi
