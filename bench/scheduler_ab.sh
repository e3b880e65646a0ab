#!/usr/bin/env bash
# Snakemake's greedy scheduler settings against its defaults, on the measurement part of the main job without
# a GPU (the `traces` target, qwen3-4b and mamba2-2.7b: 840 simulated points), --cores 1, each variant in a
# fresh copy of the workflow, alternating, ROUNDS times; always `--scheduler greedy` (the workflow's profile
# names its own scheduler since 2cb9de4; this script compares Snakemake's greedy scheduler with its
# settings). Prints a line per run: round, variant, exit status, wall seconds.
#   bash bench/scheduler_ab.sh [ROUNDS]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
for round in $(seq 1 "${1:-2}"); do
  for variant in default omit-prioritize subsample-100; do
    d=$WORK/$variant; rm -rf "$d"; mkdir -p "$d"
    for n in Snakefile workflow config profiles envs; do cp -r "$ROOT/$n" "$d/"; done
    case $variant in
      omit-prioritize) extra=(--scheduler-greedy-omit-prioritize-by-temp-and-input) ;;
      subsample-100) extra=(--scheduler-subsample 100) ;;
      *) extra=() ;;
    esac
    t0=$(date +%s.%N)
    (cd "$d" && snakemake traces --cores 1 --resources gpu=1 --scheduler greedy "${extra[@]}" \
        --config 'architectures=[qwen3-4b,mamba2-2.7b]' > log.txt 2>&1)
    rc=$?
    echo "$round $variant rc=$rc $(echo "$(date +%s.%N) - $t0" | bc) s"
  done
done
rm -rf "$WORK"
