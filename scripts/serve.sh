#!/usr/bin/env bash
# Build the page and serve it on http://127.0.0.1:8080 (installs the toolchain on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/tools.sh
ensure_web_tools
echo "==> building and serving on http://127.0.0.1:${PORT:-8080}/"
exec trunk --config trunk.toml serve --port "${PORT:-8080}" "$@"
