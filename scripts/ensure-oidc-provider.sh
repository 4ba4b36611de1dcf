#!/usr/bin/env bash
# Install the OpenID provider the single sign-on tests run against (npm's oidc-provider, a
# certified implementation) into tests/oidc_provider/node_modules, from its lock file with
# `npm ci`; reinstalled only when the lock file changed (same scheme as scripts/webui.sh).
set -euo pipefail
cd "$(dirname "$0")/../tests/oidc_provider"

STAMP=node_modules/.zhiku-lock.sha256
command -v npm >/dev/null || { echo "ensure-oidc-provider: npm not found (Node.js 20 and npm are needed)" >&2; exit 1; }
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$lock_sum" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$STAMP"
  echo "ensure-oidc-provider: installed oidc-provider into tests/oidc_provider/node_modules"
fi
