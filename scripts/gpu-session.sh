#!/usr/bin/env bash
# Train and evaluate the shipped models on a borrowed GPU machine (a second x86-64 machine that
# gets a copy of this repository plus a few carried, git-ignored folders, runs one command of
# at most 10 minutes, and returns the files written under $OUT).
#
#   here:   scripts/gpu-session.sh pack
#             builds nothing; packs the release binary with the Vulkan loader (.gpu/bin) and
#             each dataset (.gpu/mnist, .gpu/emoji, .gpu/fashion-train, .gpu/fashion-test)
#             into the git-ignored .gpu/, and prints how much one call may carry beside the
#             repository (64 MiB in all): not everything at once, so the first call carries
#             .gpu/bin and one part, and calls made while the machine is still warm (within
#             30 s) carry the other parts, the binary being there already
#   there:  bash scripts/gpu-session.sh train SECONDS NAME...   (carry .gpu/bin, .gpu/PART…)
#             starts (or, on a machine still warm from the last call, keeps) a GPU run per
#             NAME whose data is there, from its checkpoint in checkpoints/NAME, trains for
#             SECONDS, and leaves the newest checkpoint of each as $OUT/NAME.tar.N (parts under
#             16 MiB). NAME is a dataset (mnist, fashion, emoji: the shipped presets) or
#             DATASET-PRESET (mnist-large: `--preset mnist-large` on MNIST), a run of its own
#           bash scripts/gpu-session.sh start NAME...   (carry .gpu/bin unless the machine is warm)
#             as train, but returns at once and brings nothing back: to start runs whose data
#             and checkpoints do not fit in one call together, a call each while it stays warm
#           bash scripts/gpu-session.sh stop NAME...   (the last call: Ctrl-C, then as above)
#           bash scripts/gpu-session.sh eval NAME [uncond|guided]   (its data there: fashion-test too)
#             exports the EMA weights and runs `ddpm eval` on 1000 DDPM-1000 samples,
#             unconditional and/or per class with guidance 2 (both by default); $OUT gets the
#             weights, the JSON and the sample sets (re-score here with `ddpm eval --load-samples`)
#           bash scripts/gpu-session.sh round SECONDS DEADLINE NAME   (carry as for start)
#             one lease's whole cycle: trains NAME alone for SECONDS, stops it (its checkpoint to
#             $OUT as stop does), then evaluates its export as eval does but without the bound,
#             unconditional first, each evaluation cut off DEADLINE seconds after the call began
#             (a cut-off one brings back nothing, and the call fails: keep DEADLINE inside the
#             call's limit). It returns 8 files, $OUT's most, with a checkpoint in one part:
#             the small presets
#   here:   scripts/gpu-session.sh land DIR
#             puts the checkpoints found in DIR (the call's returned files) into checkpoints/
#   here:   scripts/gpu-session.sh slim   (first, when the kept checkpoints make the repository
#             larger than one call may send) takes checkpoints/ out of git's index, the files
#             staying where they are, and ignores it, so calls send the rest; carry
#             checkpoints/NAME for a run to resume. Commit nothing until `unslim`
#           scripts/gpu-session.sh unslim   (after `land`) tracks checkpoints/ again
#
# A lease of 15 minutes, two runs (a second checkpoint does not fit in one call beside the
# binary, the data and the first), after `pack` and `slim`:
#   call 1: start emoji             carry .gpu/bin .gpu/mnist .gpu/emoji checkpoints/emoji
#   call 2, at once: start mnist-drop90 && sleep 420; stop emoji mnist-drop90
#                                   carry checkpoints/mnist-drop90 (11 MB; the wide
#                                   mnist-wide-lr3e4, 41 MB, the same way)
#   then, here: land the returned folder, unslim, commit. Data and the binary stay on the
#   machine between calls while it is warm.
# Or one call: session 32's `round 290 578 mnist-drop90` trained 281 s (139 of them tuning) and
# evaluated unconditionally in 103 s; the guided evaluation (twice the batch) did not finish in
# the 165 s left, so give it about 250:
#   round 220 590 mnist-drop90      carry .gpu/bin .gpu/mnist checkpoints/mnist-drop90 runs/gpu-cache
# (CUBECL_AUTOTUNE_LEVEL=minimal before `bash` would shorten the tuning at some cost in kernel
# choice: untried.)
# CubeCL tunes its kernels on a fresh machine (session 32: the first 139 s of training ran at
# 0.3 steps/s, then 9.4-11.6): `stop`, `train`, `round` and `eval` bring its cache back as
# $OUT/gpu-cache.tar, `land` keeps it in runs/gpu-cache, and a call that carries that folder
# puts it back where CubeCL looks, to start tuned (not yet tried on a GPU: session 32 had no
# device time left after the call that found the tuning cost).
# Runs on the GPU train at batch 256; everything else (lr, EMA, data order) continues from
# the checkpoint, so a run moves between the CPU and a GPU and back.
set -euo pipefail
cd "$(dirname "$0")/.."
# Where a run lives on the GPU machine: outside the copied repository, so that a later call
# on the same (still warm) machine finds it.
G=${DDPM_GPU_HOME:-/root/ddpm-gpu}
# DDPM_BIN, DDPM_DATA: a binary and a data folder to use where nothing was carried (tests, or
# a GPU machine with the repository's toolchain); DDPM_CHECKPOINTS: see checkpoints.sh.
bin=${DDPM_BIN:-$G/ddpm}
data=${DDPM_DATA:-../shared/data}
kept=${DDPM_CHECKPOINTS:-checkpoints}
device=${DDPM_GPU_DEVICE:-gpu}
# CubeCL's cache of tuned kernels: where it lands when `ddpm` runs from the repository root
# (its default root is the workspace's target/), and where it is kept here and carried there.
cubecl_env=${DDPM_CUBECL_ENV:-target/environment}
kept_cache=${DDPM_GPU_CACHE:-runs/gpu-cache}
# The files of one $OUT: at most 16 MiB each.
part=15000000

die() { echo "error: $*" >&2; exit 1; }
# git's ignore file for this clone only (made if missing), and the bytes a call sends as
# tracked files.
exclude_file() {
  local f
  f=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$f")"
  echo "$f"
}
tracked_bytes() { git ls-files -z | xargs -0 cat | wc -c; }
usage() { sed -n '2,62p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
# The dataset of a run NAME (DATASET or DATASET-PRESET).
dataset_of() { echo "${1%%-*}"; }
dataset_dir() {
  case $(dataset_of "$1") in
    mnist) echo mnist ;; fashion) echo fashion-mnist ;; emoji) echo noto-emoji-32 ;;
    *) die "unknown model '$1' (mnist, fashion or emoji)" ;;
  esac
}

pack() {
  source scripts/env.sh
  local exe=${DDPM_BIN:-$CARGO_TARGET_DIR/release/ddpm}
  [ -x "$exe" ] || die "build first: cargo build --release --features train"
  "$exe" --version | grep -q "(gpu, train)" \
    || die "$exe was built without the gpu or train feature: $("$exe" --version)"
  local exclude
  exclude=$(exclude_file)
  grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
  rm -rf .gpu && mkdir -p .gpu/bin
  strip -o .gpu/bin/ddpm "$exe"
  xz -T0 -6 .gpu/bin/ddpm
  # The Vulkan loader and libglvnd, which the GPU machine's image lacks (the device tool's
  # README): NVIDIA's Vulkan driver (libGLX_nvidia) needs libGLdispatch from libglvnd0, and the
  # 580 driver's also opens libEGL.so.1 (libegl1); without them no adapter is found ("Could
  # not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr'").
  local lists=/tmp/ddpm-amd64-lists o
  mkdir -p "$lists/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$lists")
  apt-get "${o[@]}" update -qq
  (cd .gpu/bin && apt-get "${o[@]}" download -qq libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2)
  # One part per dataset (fashion's in two), each .gpu/PART/DATASET-FOLDER; xz packs the idx
  # images tighter than gzip, `setup` turns them back.
  mkdir -p .gpu/mnist/mnist .gpu/emoji/noto-emoji-32 .gpu/fashion-train/fashion-mnist \
    .gpu/fashion-test/fashion-mnist
  cp "$data"/mnist/*labels* "$data"/mnist/t10k-images* .gpu/mnist/mnist/
  cp "$data"/noto-emoji-32/noto-emoji-png32.tar.gz .gpu/emoji/noto-emoji-32/
  cp "$data"/fashion-mnist/train-labels* .gpu/fashion-train/fashion-mnist/
  cp "$data"/fashion-mnist/t10k-* .gpu/fashion-test/fashion-mnist/
  gzip -dc "$data/mnist/train-images-idx3-ubyte.gz" | xz -T0 -9 >.gpu/mnist/mnist/train-images-idx3-ubyte.xz
  gzip -dc "$data/fashion-mnist/train-images-idx3-ubyte.gz" | xz -T0 -9 \
    >.gpu/fashion-train/fashion-mnist/train-images-idx3-ubyte.xz
  chmod -R u+w .gpu
  # What one call may carry besides the repository's tracked files.
  local tracked room
  tracked=$(tracked_bytes)
  room=$((64 * 1024 * 1024 - tracked))
  echo "the repository: $((tracked / 1000000)) MB; room in one call: $((room / 1000000)) MB"
  du -sB1 .gpu/* | awk '{printf "  %-22s %5.1f MB\n", $2, $1 / 1e6}'
}

# On the GPU machine: install the loader, unpack the binary and whatever data this call carried.
setup() {
  mkdir -p "$G/data" "$G/runs" "$G/kept"
  if [ -d .gpu/bin ]; then
    if ! ldconfig -p | grep -q libvulkan.so.1 || ! ldconfig -p | grep -q libGLdispatch.so.0 \
      || ! ldconfig -p | grep -q libEGL.so.1; then
      for f in .gpu/bin/*.deb; do dpkg -x "$f" /; done
      ldconfig
    fi
    [ -x "$bin" ] || { xz -dc .gpu/bin/ddpm.xz >"$bin" && chmod +x "$bin"; }
  fi
  [ -x "$bin" ] || die "no binary: carry .gpu/bin (made by 'scripts/gpu-session.sh pack')"
  if [ -d "$kept_cache/environment" ] && [ ! -d "$cubecl_env" ]; then
    mkdir -p "$(dirname "$cubecl_env")" && cp -r "$kept_cache/environment" "$cubecl_env"
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$icd" ] && export VK_DRIVER_FILES=$icd
  local egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  [ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
  # Copies, not links: the next call on a warm machine replaces the repository's copy, and a
  # link into it would then point nowhere.
  local d f to
  for d in .gpu/*/*/ "$data"/*/; do
    [ -d "$d" ] || continue
    to=$G/data/$(basename "$d")
    mkdir -p "$to"
    for f in "$d"*; do
      case $f in
        *.xz) [ -f "$to/$(basename "${f%.xz}").gz" ] || xz -dc "$f" | gzip -1 >"$to/$(basename "${f%.xz}").gz" ;;
        *) [ -e "$to/$(basename "$f")" ] || cp "$f" "$to/" ;;
      esac
    done
  done
  export XDG_RUNTIME_DIR=/tmp/ddpm-xdg
  mkdir -p "$XDG_RUNTIME_DIR"
}

# The command line of NAME's training process, to find or stop it.
pattern() { echo "train --dataset $(dataset_of "$1") --run $G/runs/$1 "; }
running() { pgrep -f "$(pattern "$1")" >/dev/null; }
# A run with no checkpoint of its own starts from the kept one, if any.
restore_kept() {
  if [ ! -f "$G/runs/$1/checkpoint/state.json" ] && [ -f "$kept/$1/state.json" ]; then
    scripts/checkpoints.sh restore "$G/runs/$1"
  fi
}

start() {
  local name=$1 run=$G/runs/$1 dir
  dir=$(dataset_dir "$name")
  [ -f "$G/data/$dir/train-images-idx3-ubyte.gz" ] || [ -f "$G/data/$dir/noto-emoji-png32.tar.gz" ] \
    || { echo "$name: its data was not carried in this call; skipped"; return 0; }
  if running "$name"; then echo "$name: still training from the last call"; return 0; fi
  restore_kept "$name"
  # DDPM_GPU_TRAIN_ARGS: more `ddpm train` options, which replace the defaults below (tests: a
  # few steps only).
  local args=() extra flag value
  read -ra extra <<<"${DDPM_GPU_TRAIN_ARGS:-}"
  # Each default FLAG VALUE unless the extra options give FLAG (`ddpm train` takes it once).
  defaults() {
    while [ $# -gt 1 ]; do
      flag=$1 value=$2; shift 2
      [[ " ${extra[*]} " == *" $flag "* ]] || args+=("$flag" "$value")
    done
  }
  defaults --batch-size 256 --checkpoint-every 500 --sample-every 2000
  if [ -f "$run/checkpoint/state.json" ]; then
    args+=(--resume)
  else
    # A new run: the settings the CPU runs use, at the GPU's batch.
    defaults --steps 200000 --lr 1e-3 --warmup 500 --ema-decay 0.9995
    [ "$name" = "$(dataset_of "$name")" ] || defaults --preset "$name"
  fi
  args+=("${extra[@]}")
  local before pid
  before=0
  [ -f "$run.out" ] && before=$(wc -l <"$run.out")
  setsid nohup "$bin" train --dataset "$(dataset_of "$name")" --run "$run" --device "$device" --data "$G/data" \
    -q "${args[@]}" >>"$run.out" 2>&1 </dev/null &
  pid=$!
  # `--device gpu` falls back to the CPU when no adapter is found; here that would spend the
  # whole call training at a hundredth of the speed, so stop at once and say why.
  if [ "$device" = gpu ]; then
    for _ in $(seq 120); do
      tail -n +$((before + 1)) "$run.out" | grep -q '^training on' && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if tail -n +$((before + 1)) "$run.out" | grep -q 'falling back to the CPU'; then
      kill -INT "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 1; done
      local why
      why=$(tail -n +$((before + 1)) "$run.out" | grep -m1 -o 'no GPU adapter.*' | sed 's/; falling back.*//')
      die "$name: $why; stopped rather than left training on the CPU"
    fi
  fi
  echo "$name: training (pid $pid)"
}

# The newest checkpoint of a run (taken while it trains) as $OUT/NAME.tar, in parts if large.
collect() {
  local name=$1
  [ -f "$G/runs/$name/checkpoint/state.json" ] || { echo "$name: no checkpoint yet"; return 0; }
  for _ in 1 2 3 4 5; do
    DDPM_CHECKPOINTS=$G/kept scripts/checkpoints.sh keep "$G/runs/$name" && break
    sleep 2
  done
  [ -n "${OUT:-}" ] || return 0
  tar -C "$G/kept" -cf - "$name" | split -b $part -d -a 1 - "$OUT/$name.tar."
  cp "$G/runs/$name.out" "$OUT/$name.out" 2>/dev/null || true
}

# CubeCL's cache, tuned here, as $OUT/gpu-cache.tar.
bring_cache() {
  [ -n "${OUT:-}" ] || return 0
  if [ ! -d "$cubecl_env" ]; then
    echo "no CubeCL cache in $cubecl_env (user cache: $(ls -d ~/.cache/cubecl 2>/dev/null || echo none))"
    return 0
  fi
  tar -C "$(dirname "$cubecl_env")" -cf "$OUT/gpu-cache.tar" \
    --transform "s|^$(basename "$cubecl_env")|environment|" "$(basename "$cubecl_env")"
}

# Until UNTIL seconds after T0, every EVERY seconds, each run's newest progress line.
follow() {
  local t0=$1 until=$2 every=$3 name
  shift 3
  while [ $((SECONDS - t0)) -lt "$until" ]; do
    sleep "$every"
    for name in "$@"; do
      echo "[$((SECONDS - t0)) s] $name: $(tail -n 1 "$G/runs/$name/train.log" 2>/dev/null || echo 'starting')"
    done
  done
}

start_only() {
  [ $# -gt 0 ] || usage
  local name
  setup
  for name in "$@"; do start "$name"; done
}

train() {
  local seconds=${1:?$(usage)}; shift
  [ $# -gt 0 ] || usage
  local t0=$SECONDS name
  start_only "$@"
  # Leave a minute for the copies, then report once a minute.
  follow "$t0" $((seconds - 60)) 60 "$@"
  for name in "$@"; do collect "$name"; done
  bring_cache
}

stop() {
  [ $# -gt 0 ] || usage
  local name
  setup
  for name in "$@"; do pkill -INT -f "$(pattern "$name")" || true; done
  for name in "$@"; do
    while running "$name"; do sleep 1; done
    tail -n 2 "$G/runs/$name.out" || true
    collect "$name"
  done
  bring_cache
}

evaluate() {
  local name=${1:?$(usage)} run=$G/runs/$1 what=${2:-both}
  case $what in uncond | guided | both) ;; *) die "eval $name $what: uncond, guided or both" ;; esac
  setup
  restore_kept "$name"
  "$bin" export --run "$run" --out "$OUT/$name.safetensors"
  # DDPM_GPU_SAMPLES / _STEPS / _ELBO_STRIDE: a smaller evaluation (tests).
  local n=${DDPM_GPU_SAMPLES:-1000}
  # DDPM_GPU_DEADLINE: SECONDS at which each evaluation still running is cut off (round).
  cut() {
    if [ -n "${DDPM_GPU_DEADLINE:-}" ]; then
      local left=$((DDPM_GPU_DEADLINE - SECONDS))
      [ "$left" -gt 0 ] || { echo "$name: no time left for this evaluation" >&2; return 1; }
      timeout -s INT "$left" "$@" || { echo "$name: evaluation cut off or failed ($?)" >&2; return 1; }
    else
      "$@"
    fi
  }
  # An evaluation that fails (or is cut off) lets the next one run; the call then fails.
  local failed=0
  local bound=(--n "$n" --elbo-stride "${DDPM_GPU_ELBO_STRIDE:-1}")
  [ "${DDPM_GPU_ELBO:-1}" = 0 ] && bound=(--no-elbo)
  local common=(--weights "$OUT/$name.safetensors" --data "$G/data" --device "$device" --batch 1000
    --samples "$n" --sampler ddpm --steps "${DDPM_GPU_STEPS:-1000}" -q)
  if [ "$what" != guided ]; then
    cut "$bin" eval "${common[@]}" "${bound[@]}" --save-samples "$OUT/$name-uncond.st" \
      >"$OUT/$name-uncond.json" || failed=1
    cat "$OUT/$name-uncond.json"
  fi
  bring_cache
  [ "$what" = uncond ] && return "$failed"
  [ "$(dataset_of "$name")" = emoji ] && return "$failed" # no labels, no classifier: its figure is the grid
  cut "$bin" eval "${common[@]}" --no-elbo --class all --guidance 2 --seed 5000 \
    --save-samples "$OUT/$name-guided.st" >"$OUT/$name-guided.json" || failed=1
  cat "$OUT/$name-guided.json"
  bring_cache
  return "$failed"
}

round() {
  local seconds=${1:?$(usage)} deadline=${2:?$(usage)} name=${3:?$(usage)} t0=$SECONDS
  start_only "$name"
  follow "$t0" "$seconds" 15 "$name"
  stop "$name"
  echo "[$((SECONDS - t0)) s] $name: stopped; evaluating"
  local status=0
  DDPM_GPU_ELBO=0 DDPM_GPU_DEADLINE=$((t0 + deadline)) evaluate "$name" || status=$?
  echo "[$((SECONDS - t0)) s] done"
  return "$status"
}

land() {
  local from=${1:?$(usage)} name
  if [ -f "$from/gpu-cache.tar" ]; then
    rm -rf "$kept_cache" && mkdir -p "$kept_cache"
    tar -C "$kept_cache" -xf "$from/gpu-cache.tar"
    echo "landed CubeCL's cache in $kept_cache ($(du -sh "$kept_cache" | cut -f1))"
  fi
  for f in "$from"/*.tar.0; do
    [ -e "$f" ] || die "no NAME.tar.0 in $from"
    name=$(basename "$f" .tar.0)
    rm -rf "$kept/.$name.new" && mkdir -p "$kept/.$name.new"
    cat "$from/$name".tar.* | tar -C "$kept/.$name.new" -xf -
    [ -f "$kept/.$name.new/$name/state.json" ] || die "$f: no checkpoint inside"
    rm -rf "${kept:?}/${name:?}" && mv "$kept/.$name.new/$name" "$kept/$name"
    rmdir "$kept/.$name.new"
    echo "landed $name: $(scripts/checkpoints.sh list | grep "^$name ")"
  done
}

# checkpoints/ out of the index and ignored (slim), or back (unslim). The exclude line is
# what marks a slimmed repository, so both are safe to run twice.
slim_line=/checkpoints/
slim() {
  local exclude
  exclude=$(exclude_file)
  grep -qx "$slim_line" "$exclude" 2>/dev/null || echo "$slim_line" >>"$exclude"
  git rm -r -q --cached --ignore-unmatch -- checkpoints
  echo "checkpoints/ untracked for the calls (run 'unslim' before committing); the repository: $(($(tracked_bytes) / 1000000)) MB"
  local d
  for d in checkpoints/*/; do
    [ -d "$d" ] && du -sB1 "${d%/}" | awk '{printf "  carry %-26s %5.1f MB\n", $2, $1 / 1e6}'
  done
  return 0
}
unslim() {
  local exclude
  exclude=$(exclude_file)
  if [ -f "$exclude" ]; then
    grep -vx "$slim_line" "$exclude" >"$exclude.new" || true
    mv "$exclude.new" "$exclude"
  fi
  git reset -q -- checkpoints
  git add -A -- checkpoints
  echo "checkpoints/ tracked again: $(git status --porcelain -- checkpoints | wc -l) changed files to commit"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  pack) pack ;;
  train) train "$@" ;;
  start) start_only "$@" ;;
  stop) stop "$@" ;;
  eval) evaluate "$@" ;;
  round) round "$@" ;;
  land) land "$@" ;;
  slim) slim ;;
  unslim) unslim ;;
  *) usage ;;
esac
