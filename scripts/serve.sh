#!/usr/bin/env bash
# Build the page and serve it on http://127.0.0.1:8080 (PORT=… for another port); installs the
# pinned toolchain on first use. Re-run after editing the crate or www/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-site.sh
exec node scripts/static-server.mjs "${DIST:-dist}" "${PORT:-8080}"
