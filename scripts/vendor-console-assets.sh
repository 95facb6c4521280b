#!/usr/bin/env bash
# Vendors the console's front-end assets from the npm registry at pinned versions into
# gateway/assets/vendor/ (committed; the binary embeds them, so the console works offline).
# Run it only to change a version; it records each file's SHA-256 in VERSIONS.
set -euo pipefail
HTMX=2.0.11
UPLOT=1.6.32
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/gateway/assets/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "htmx.org@$HTMX" "uplot@$UPLOT" >/dev/null
mkdir htmx uplot
tar -xzf "htmx.org-$HTMX.tgz" -C htmx
tar -xzf "uplot-$UPLOT.tgz" -C uplot
mkdir -p "$out"
cp htmx/package/dist/htmx.min.js "$out/htmx.min.js"
cp uplot/package/dist/uPlot.iife.min.js "$out/uPlot.iife.min.js"
cp uplot/package/dist/uPlot.min.css "$out/uPlot.min.css"
cp uplot/package/LICENSE "$out/uPlot.LICENSE"
cp htmx/package/LICENSE "$out/htmx.LICENSE"
{
  echo "# npm package@version -> file (sha256)"
  for f in htmx.min.js uPlot.iife.min.js uPlot.min.css; do
    case "$f" in htmx*) p="htmx.org@$HTMX" ;; *) p="uplot@$UPLOT" ;; esac
    echo "$p $f $(sha256sum "$out/$f" | cut -d' ' -f1)"
  done
} >"$out/VERSIONS"
echo "vendored htmx.org@$HTMX and uplot@$UPLOT into $out"
