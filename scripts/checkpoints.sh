#!/usr/bin/env bash
# Keep a training run's newest checkpoint in the repository, and bring it back, so a run goes on
# across machines and sessions (run folders under runs/ are not committed; checkpoints/ is).
#   scripts/checkpoints.sh keep runs/mnist        # runs/mnist/checkpoint → checkpoints/mnist/
#   scripts/checkpoints.sh restore runs/mnist     # checkpoints/mnist/ → runs/mnist/checkpoint
#   scripts/checkpoints.sh list
# A kept checkpoint is the run's checkpoint folder as the trainer wrote it (model, EMA and
# optimizer state in f32, state.json) plus its train.log, so `ddpm train --resume` continues it
# exactly. Keep a run while it is stopped, or between two of its checkpoints: the trainer
# renames a finished checkpoint into place, so the files copied are always one complete set.
set -euo pipefail
cd "$(dirname "$0")/.."
# DDPM_CHECKPOINTS: another folder for the kept checkpoints (tests).
kept=${DDPM_CHECKPOINTS:-checkpoints}

# What a kept checkpoint holds besides train.log; state.json first (see `keep`).
files=(state.json model.safetensors ema.safetensors optim.safetensors)

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
step_of() { grep -o '"step": *[0-9]*' "$1/state.json" | grep -o '[0-9]*$'; }

cmd=${1:-}
case "$cmd" in
  keep)
    run=${2:?$(usage)}
    name=$(basename "$run")
    src="$run/checkpoint"
    [ -f "$src/state.json" ] || { echo "error: no checkpoint in $run (expected $src/state.json)" >&2; exit 1; }
    dst="$kept/$name"
    tmp="$kept/.$name.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for f in "${files[@]}"; do cp "$src/$f" "$tmp/"; done
    [ -f "$run/train.log" ] && cp "$run/train.log" "$tmp/"
    # The copy must be one checkpoint: state.json was copied first, so if the trainer swapped
    # in a new checkpoint while the tensors were copied, the one there now differs from it.
    if ! cmp -s "$src/state.json" "$tmp/state.json"; then
      rm -rf "$tmp"
      echo "error: $run wrote a new checkpoint during the copy; try again" >&2
      exit 1
    fi
    rm -rf "$dst"
    mv "$tmp" "$dst"
    echo "kept $run at step $(step_of "$dst") in $dst ($(du -sh "$dst" | cut -f1))"
    ;;
  restore)
    run=${2:?$(usage)}
    name=$(basename "$run")
    src="$kept/$name"
    [ -f "$src/state.json" ] || { echo "error: no kept checkpoint $src" >&2; exit 1; }
    if [ -f "$run/checkpoint/state.json" ]; then
      echo "error: $run already holds a checkpoint; not overwritten" >&2
      exit 1
    fi
    mkdir -p "$run/checkpoint"
    # state.json last: a restore cut short is not taken for a checkpoint.
    for f in "${files[@]:1}" state.json; do cp "$src/$f" "$run/checkpoint/"; done
    [ -f "$src/train.log" ] && cp "$src/train.log" "$run/train.log"
    echo "restored $src into $run"
    ;;
  list)
    for d in "$kept"/*/; do
      [ -f "$d/state.json" ] || continue
      echo "$(basename "$d") step $(step_of "$d") ($(du -sh "$d" | cut -f1))"
    done
    ;;
  *) usage ;;
esac
