# Install the web toolchain into the cache folder, only what is missing (sourced by scripts).
# Pinned: wasm-bindgen-cli = the crate's exact version, wasm-opt from npm binaryen (Debian's
# binaryen breaks the module), playwright-core driving the system Chromium.
WASM_BINDGEN_VERSION=0.2.130
BINARYEN_VERSION=132.0.0
PLAYWRIGHT_VERSION=1.64.1

ensure_web_tools() {
  ensure_wasm_target
  if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
    echo "==> installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
    # Not --locked: the locked webpki-roots is not in the registry. Only the one binary we
    # run, without the TLS stack (used only by its test runner's downloads).
    CARGO_TARGET_DIR="$DDPM_CACHE/tools-target" \
      cargo install --root "$DDPM_CACHE" wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" \
        --no-default-features --bin wasm-bindgen
  fi
  if [ ! -x "$DDPM_CACHE/node_modules/.bin/wasm-opt" ] || [ ! -d "$DDPM_CACHE/node_modules/playwright-core" ]; then
    echo "==> installing binaryen@$BINARYEN_VERSION and playwright-core@$PLAYWRIGHT_VERSION (npm)"
    (cd "$DDPM_CACHE" && [ -f package.json ] || echo '{"private":true}' > "$DDPM_CACHE/package.json"
     cd "$DDPM_CACHE" && npm install --silent --no-audit --no-fund \
       "binaryen@$BINARYEN_VERSION" "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null)
  fi
}
