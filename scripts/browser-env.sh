#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the console's browser tests and prints its
# path. Installs the `chromium` package when it is missing (root, apt); fails, never skips,
# when it cannot.
set -euo pipefail
BIN="${EMPORIUM_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$BIN" ]]; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the console's browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }
  fi
fi
if [[ ! -x "$BIN" ]]; then
  echo "error: the console's browser tests need Chromium at $BIN (Debian: apt-get install chromium)" >&2
  exit 1
fi
echo "$BIN"
