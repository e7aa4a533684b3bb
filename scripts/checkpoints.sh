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

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

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
    cp "$src"/model.safetensors "$src"/ema.safetensors "$src"/optim.safetensors "$src"/state.json "$tmp/"
    [ -f "$run/train.log" ] && cp "$run/train.log" "$tmp/"
    # The copy must be one checkpoint: if the trainer replaced it while we copied, the step
    # in state.json no longer matches.
    if ! cmp -s "$src/state.json" "$tmp/state.json"; then
      rm -rf "$tmp"
      echo "error: $run wrote a new checkpoint during the copy; try again" >&2
      exit 1
    fi
    rm -rf "$dst"
    mv "$tmp" "$dst"
    step=$(grep -o '"step": *[0-9]*' "$dst/state.json" | grep -o '[0-9]*$')
    echo "kept $run at step $step in $dst ($(du -sh "$dst" | cut -f1))"
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
    cp "$src"/model.safetensors "$src"/ema.safetensors "$src"/optim.safetensors "$src"/state.json "$run/checkpoint/"
    [ -f "$src/train.log" ] && cp "$src/train.log" "$run/train.log"
    echo "restored $src into $run"
    ;;
  list)
    for d in "$kept"/*/; do
      [ -f "$d/state.json" ] || continue
      step=$(grep -o '"step": *[0-9]*' "$d/state.json" | grep -o '[0-9]*$')
      echo "$(basename "$d") step $step ($(du -sh "$d" | cut -f1))"
    done
    ;;
  *) usage ;;
esac
