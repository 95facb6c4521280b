#!/usr/bin/env bash
# Contract fuzzing: runs schemathesis (every phase, every check) against the live `emporium`
# binary, once on the embedded SQLite store and once on PostgreSQL + NATS, each with its own
# data directory or database and port. Fails on any failure or error schemathesis reports:
# a server error, a response outside the schema, or a schema-valid request refused.
#
# Called by scripts/test.sh (EMPORIUM_TEST_DATABASE_URL and NATS_URL set); can run alone.
# schemathesis comes from the suite's virtualenv (scripts/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${EMPORIUM_TEST_DATABASE_URL:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
MAX_EXAMPLES="${EMPORIUM_ST_MAX_EXAMPLES:-20}"
TMP="$(mktemp -d -t emporium-st-XXXXXX)"
DB=""

# Engines are started inside `$(start ...)`, a subshell: their pids go to files, since an
# array set there would never reach this shell (the engines outlived the script before).
cleanup() {
  for f in "$TMP"/*.pid; do
    [[ -e "$f" ]] || continue
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ -n "$DB" ]]; then
    psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

VENV="$(bash scripts/python-env.sh)"

cargo build --quiet -p emporium-gateway --bin emporium
BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/emporium"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME ARGS...: starts the engine, waits until it is ready, prints its base URL.
start() {
  local name="$1"; shift
  local port; port="$(free_port)"
  EMPORIUM_ADMIN_KEY="st-admin-key" "$BIN" serve --listen "127.0.0.1:$port" "$@" \
    >"$TMP/$name.log" 2>&1 &
  echo "$!" >"$TMP/$name.pid"
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then
      echo "http://127.0.0.1:$port"
      return
    fi
    sleep 0.2
  done
  echo "error: the engine ($name) did not become ready; its log:" >&2
  cat "$TMP/$name.log" >&2
  exit 1
}

DB="emporium_st_$(date +%s)_$$"
psql "$PG_URL" -qAtc "CREATE DATABASE \"$DB\"" >/dev/null
EMBEDDED="$(start embedded --data-dir "$TMP/data")"
POSTGRES="$(start postgres --database-url "${PG_URL%/*}/$DB" --nats-url "$NATS_URL" --nats-prefix "st$$")"

run() {
  local name="$1" url="$2" root="$PWD"
  # Each run in a directory of its own: schemathesis keeps a cache (.schemathesis/) in its
  # working directory, which must land neither in the repository nor in the other run's.
  mkdir -p "$TMP/work-$name"
  (cd "$TMP/work-$name" &&
    SCHEMATHESIS_HOOKS="$root/tests/schemathesis/hooks.py" "$VENV/bin/st" --no-color run "$url/openapi.json" \
      -H "Authorization: Bearer st-admin-key" --checks all --max-examples "$MAX_EXAMPLES") \
    >"$TMP/st-$name.txt" 2>&1
}

status=0
run embedded "$EMBEDDED" & e=$!
run postgres "$POSTGRES" & p=$!
wait "$e" || status=1
wait "$p" || status=1
for name in embedded postgres; do
  echo "--- schemathesis against the $name engine: $(tail -1 "$TMP/st-$name.txt")" >&2
done
if [[ "$status" != 0 ]]; then
  for name in embedded postgres; do
    echo "===== schemathesis, $name =====" >&2
    cat "$TMP/st-$name.txt" >&2
  done
  echo "error: schemathesis found problems (above)" >&2
  exit 1
fi
