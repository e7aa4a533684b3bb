#!/usr/bin/env bash
# Run every test: formatting, native unit + integration tests (with the training feature),
# the wasm32 library build. Installs what is missing on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ensure_apt mesa-vulkan-drivers libvulkan1
ensure_wasm_target

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> native tests (release, --features train)"
cargo test --release --features train 2>&1

echo "==> wasm32 library build"
cargo build --release --lib --target wasm32-unknown-unknown
