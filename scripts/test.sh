#!/usr/bin/env bash
# Run every test on a fresh or warm machine: formatting, native unit + integration tests
# (with the training feature), the trunk-built site, and the browser end-to-end tests in
# headless Chromium. Installs whatever is missing (apt packages, wasm target, trunk,
# wasm-bindgen-cli, binaryen, playwright-core) into ~/.cache/ddpm-web first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/tools.sh

ensure_apt chromium mesa-vulkan-drivers libvulkan1 gzip
ensure_web_tools

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> native tests (release, --features train)"
cargo test --release --features train --all-targets

echo "==> site (trunk build: wasm32 + www/ → dist/)"
trunk --config trunk.toml build

echo "==> browser end-to-end tests (headless Chromium)"
export DDPM_BIN="$CARGO_TARGET_DIR/release/ddpm"
node --test --test-timeout=900000 tests/e2e/
