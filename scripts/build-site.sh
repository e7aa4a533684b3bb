#!/usr/bin/env bash
# Build the page into dist/ (or $DIST): the crate for wasm32 in release, wasm-bindgen
# (`--target web`, loaded by the module Web Worker in www/worker.js), `wasm-opt -Oz`, then the
# files of www/ and weights/ beside it. The pinned tools come from scripts/tools.sh (installed
# into ~/.cache/ddpm-web on first use). The wasm build has its own target dir, so it can run
# while a native build runs (scripts/test.sh does both at once).
#   WASM_OPT=0 scripts/build-site.sh    skip wasm-opt (a quicker, larger build)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/tools.sh

dist="${DIST:-dist}"
target_dir="$DDPM_CACHE/target-wasm"
stage="$(mktemp -d "${TMPDIR:-/tmp}/ddpm-site.XXXXXX")"
chmod 755 "$stage" # mktemp makes it private; dist/ is for any web server to read
tools_log="$stage.tools.log"
tools_pid=""
trap '[ -n "$tools_pid" ] && kill "$tools_pid" 2>/dev/null; rm -rf "$stage" "$tools_log"' EXIT

# The tools install (compiling wasm-bindgen-cli, the first time) while the crate compiles.
ensure_wasm_target
ensure_web_tools >"$tools_log" 2>&1 &
tools_pid=$!

echo "==> cargo build (wasm32, release)"
CARGO_TARGET_DIR="$target_dir" cargo build --release --target wasm32-unknown-unknown --lib

if ! wait "$tools_pid"; then
  tools_pid=""
  cat "$tools_log" >&2
  echo "installing the web tools failed" >&2
  exit 1
fi
tools_pid=""
cat "$tools_log"

echo "==> wasm-bindgen $WASM_BINDGEN_VERSION"
wasm-bindgen --target web --no-typescript --out-name ddpm-web --out-dir "$stage" \
  "$target_dir/wasm32-unknown-unknown/release/ddpm_web.wasm"

if [ "${WASM_OPT:-1}" != 0 ]; then
  echo "==> wasm-opt -Oz"
  before=$(stat -c %s "$stage/ddpm-web_bg.wasm")
  wasm-opt -Oz --output "$stage/opt.wasm" "$stage/ddpm-web_bg.wasm"
  mv "$stage/opt.wasm" "$stage/ddpm-web_bg.wasm"
  echo "    $before → $(stat -c %s "$stage/ddpm-web_bg.wasm") bytes"
fi

cp www/*.html www/*.js www/*.css "$stage/"
mkdir "$stage/weights"
cp weights/*.safetensors weights/index.json "$stage/weights/"

# Swap the finished site in whole, so a failed build never leaves half a dist/.
rm -rf "$dist.old"
[ -e "$dist" ] && mv "$dist" "$dist.old"
cp -r "$stage" "$dist"
rm -rf "$dist.old"
echo "==> site in $dist/ ($(du -sh "$dist" | cut -f1)); serve it with scripts/serve.sh"
