#!/usr/bin/env bash
# Run every test on a fresh or warm machine: formatting, native unit + integration tests
# (with the training feature), the site build (wasm32 → dist/), and the browser end-to-end
# tests in headless Chromium. Installs whatever is missing (apt packages, wasm target,
# wasm-bindgen-cli, binaryen, playwright-core) into ~/.cache/ddpm-web first.
#
# The site builds in the background while the native tests build and run: each cold build
# has long stretches in one big crate that leave a core idle, which the other build fills.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
start=$SECONDS
elapsed() { printf '%dm%02ds' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }

ensure_apt chromium mesa-vulkan-drivers libvulkan1 gzip

echo "==> cargo fmt --check"
cargo fmt --all -- --check

site_log="$DDPM_CACHE/site-build.log"
echo "==> site build (wasm32 + www/ → dist/) started in the background; log: $site_log"
scripts/build-site.sh >"$site_log" 2>&1 &
site_pid=$!
trap 'kill "$site_pid" 2>/dev/null || true' EXIT

echo "==> native tests (release, --features train, without the native GPU backend: no GPU here)"
cargo test --release --no-default-features --features train --all-targets
echo "==> native tests passed ($(elapsed))"

echo "==> waiting for the site build"
if ! wait "$site_pid"; then
  cat "$site_log"
  echo "site build failed" >&2
  exit 1
fi
trap - EXIT
grep '^==>\|^    ' "$site_log"
echo "==> site built ($(elapsed))"

echo "==> browser end-to-end tests (headless Chromium)"
export DDPM_BIN="$CARGO_TARGET_DIR/release/ddpm"
node --test --test-timeout=1800000 tests/e2e/
echo "==> all tests passed ($(elapsed))"
