#!/usr/bin/env bash
# Build the web UI bundle the gateway serves (services/gateway/static) from webui/, or check
# that the committed bundle is exactly what the sources build to.
#
#   bash scripts/webui.sh build   # rebuild services/gateway/static (then commit it)
#   bash scripts/webui.sh check   # build into a temporary folder and diff; fails when stale
#
# Dependencies come from webui/package-lock.json with `npm ci` (never `npm install`, which may
# move the lock), into webui/node_modules; they are reinstalled only when the lock file changed.
# Vite names assets by content hash, so the same sources and lock give the same bytes.
set -euo pipefail
cd "$(dirname "$0")/../webui"

mode=${1:-build}
STATIC=../services/gateway/static
STAMP=node_modules/.zhiku-lock.sha256

command -v npm >/dev/null || { echo "webui: npm not found (Node.js 20 and npm are needed)" >&2; exit 1; }
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$lock_sum" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$STAMP"
fi

case "$mode" in
  build)
    npm run --silent build
    ;;
  check)
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    npx --no-install tsc --noEmit
    npx --no-install vite build --logLevel error --outDir "$out" --emptyOutDir
    if ! diff -r "$out" "$STATIC" >/dev/null; then
      diff -r "$out" "$STATIC" | head -20 >&2 || true
      echo "the committed web UI bundle in services/gateway/static is stale: run 'make webui' and commit it" >&2
      exit 1
    fi
    echo "webui: committed bundle matches webui/ sources"
    ;;
  *)
    echo "usage: $0 build|check" >&2
    exit 2
    ;;
esac
