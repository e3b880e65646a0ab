#!/usr/bin/env bash
# The next H200 session, prepared: calls sent back to back on one machine (files under /tmp stay between them:
# the compile cache of one call is the next one's). Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [folder ...]
# Before the calls, the code before the protocol change goes into ignored folders, carried:
#   mkdir .ab-proto && git archive ab600ed src | tar x -C .ab-proto      # before: a refill per decode trial
#   mkdir .ab-old && git archive 0a0ce06 src bench/gpu_run.py bench/kernel_classes.py bench/kernels \
#       bench/__init__.py | tar x -C .ab-old && cp bench/h200-2026-12-02g/check_gdn_step.py .ab-old/check.py
# STEP, in this order (each call under 600 s):
#   ab .whl .ab-proto     the protocol's before-and-after: native groups of five points (qwen3-4b at 32 and
#                         128 x 2048 and 32 x 8192, qwen3.5-4b and mamba2-2.7b at 32 x 2048), after (a cold
#                         compile cache), before, after; one process per group and preset before, one per
#                         group after (a native group may hold several presets now)
#   camp1 .whl            a native campaign, qwen3-4b and qwen3.5-4b at batch 1, 32, 128 x 2048, 8192 in one
#                         group process (phase-energy campaign --group-engines native): the compile cache warm
#                         only for the shapes of call ab
#   camp2 .whl            the same campaign again into a new folder: every shape's compiled artefacts cached
#   layout .whl .ab-old   the native decode step by kernel before and after the recurrent ops took any layout,
#                         on one card (Qwen3.5 at 32 x 2048, Mamba2 at 128 x 2048), and the GPU check
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
CFG=config/h200-engines.yaml
AB_POINTS=qwen3-4b:32x2048,qwen3-4b:128x2048,qwen3-4b:32x8192,qwen3.5-4b:32x2048,mamba2-2.7b:32x2048
group() {  # run tree commit points...: one `phase-energy measure --points` process per argument after the commit
  local run=$1 tree=$2 commit=$3; shift 3
  for pts in "$@"; do
    local arch=()
    case $pts in *:*:*|*,*:*) ;; *:*) arch=(--arch "${pts%%:*}"); pts=${pts#*:};; esac
    PHASE_ENERGY_GIT_COMMIT=$commit PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/$tree timeout 300 python3 -m phase_energy.cli measure --config $CFG \
        --lever default "${arch[@]}" --points "$pts" --out-root "/tmp/s/ab/$run" --log-dir "/tmp/s/ab/logs-$run" \
        > "/tmp/s/ab/$run-$(date +%s%N).out" 2>&1
    echo "$run $tree ${arch[*]} $pts: exit $? $(date -u +%T)" | tee -a "$OUT/ab.log"
    (cd /tmp/s && tar czf "$OUT/ab.tgz" ab)  # after each process: a call stopped at its limit keeps the rest
  done
}
campaign_native() {  # name seconds
  python3 -m phase_energy.cli campaign --configfile $CFG --into "/tmp/s/$1/traces" --time-limit-s "$2" \
      --group-engines native --chunk "engines=[native] architectures=[qwen3-4b,qwen3.5-4b] batch_sizes=[1,32,128] contexts=[2048,8192] results=/tmp/s/results-$1" \
      2>&1 | grep -v "^INFO\|^WARNING" | tee "$OUT/$1.log"
  cp /tmp/s/results-$1/logs/campaign/*.log "$OUT/" 2>/dev/null
  (cd /tmp/s && tar czf "$OUT/$1.tgz" "$1")
}
prof() {  # name tree arch:batch context timeout
  timeout "$5" python3 "$2/bench/gpu_run.py" --out "/tmp/s/ab-$1" --steps profile --context "$4" --points "$3" 2>&1 \
      | grep "gpu_run profile\|Error" | tail -3 | sed "s/^/$1 /" | tee -a "$OUT/layout.log"
  cp "/tmp/s/ab-$1/engine.json" "$OUT/layout-$1.json"
}
case $STEP in
ab)
  mkdir -p /tmp/s/ab
  group after-1 src "$PHASE_ENERGY_GIT_COMMIT" "$AB_POINTS"
  group before .ab-proto/src ab600ed qwen3-4b:32x2048,128x2048,32x8192 qwen3.5-4b:32x2048 mamba2-2.7b:32x2048
  group after-2 src "$PHASE_ENERGY_GIT_COMMIT" "$AB_POINTS"
  ;;
camp1) campaign_native camp1 540 ;;
camp2) campaign_native camp2 540 ;;
layout)
  export PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/src
  prof gdn-after . qwen3.5-4b:32 2048 150
  prof gdn-before .ab-old qwen3.5-4b:32 2048 90
  prof mamba2-after . mamba2-2.7b:128 2048 90
  prof mamba2-before .ab-old mamba2-2.7b:128 2048 90
  timeout 120 python3 .ab-old/check.py 2>&1 | grep "check\|Error" | tee -a "$OUT/layout.log"
  ;;
*)
  echo "unknown step $STEP; accepted: ab camp1 camp2 layout" >&2; exit 2
  ;;
esac
