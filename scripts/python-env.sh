#!/usr/bin/env bash
# The Python virtualenv the test suite uses (schemathesis for the contract run; DuckDB and
# pandas to read the Parquet and CSV exports as analysts would). Created on first use under
# target/ (or EMPORIUM_PY_VENV), with pinned versions; prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${EMPORIUM_PY_VENV:-$PWD/target/py-venv}"
REQS="schemathesis==4.32.5 duckdb==2.0.1 pandas==3.1.1"
STAMP="$VENV/.emporium-requirements"

if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$STAMP" 2>/dev/null)" != "$REQS" ]]; then
  echo "installing $REQS into $VENV" >&2
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if command -v apt-get >/dev/null 2>&1; then
      apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    else
      echo "error: python3 with venv is needed (schemathesis, DuckDB, pandas)" >&2
      exit 1
    fi
  fi
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQS >&2
  echo "$REQS" > "$STAMP"
fi
echo "$VENV"
