# Shared settings for the project's scripts (sourced, not run).
# Tools and the cargo target dir live in a cache folder outside the clone, reused across runs.
export DDPM_CACHE="${DDPM_CACHE:-$HOME/.cache/ddpm-web}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DDPM_CACHE/target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/ddpm-xdg}"
mkdir -p "$DDPM_CACHE" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
export PATH="$DDPM_CACHE/bin:$DDPM_CACHE/node_modules/.bin:$PATH"

# apt install, only for what is missing (works as root or with sudo).
ensure_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "==> installing ${missing[*]} (apt)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_wasm_target() {
  rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown \
    || rustup target add wasm32-unknown-unknown
}
