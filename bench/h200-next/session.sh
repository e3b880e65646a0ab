#!/usr/bin/env bash
# The next H200 session, prepared: three calls sent back to back on one machine (files under /tmp stay between
# them). Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [folder ...]
# Before call a, the engine before the recurrent ops took any layout goes into an ignored folder, carried:
#   mkdir .ab-old && git archive 0a0ce06 src bench/gpu_run.py bench/kernel_classes.py bench/kernels \
#       bench/__init__.py | tar x -C .ab-old && cp bench/h200-2026-12-02g/check_gdn_step.py .ab-old/check.py
# STEP, in this order (each call under 600 s):
#   a .whl .ab-old .vllm-p1  the native decode step by kernel before and after that change, on one card: Qwen3.5
#                            at 32 x 2048 and Mamba2 at 128 x 2048, the after-run first (it compiles from
#                            nothing on a fresh machine); then the GPU check of the strided GDN kernel and of the
#                            small models' compiled step against eager mode
#   b .vllm-p2               native qwen3.5-4b at 32 x 2048 and 32 x 8192 and mamba2-2.7b at 128 x 2048, traces
#   c .vllm-p3               vLLM installed; vLLM at the two Qwen3.5 points, traces: both engines on one card
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
prof() {  # name tree arch:batch context timeout
  timeout "$5" python3 "$2/bench/gpu_run.py" --out "/tmp/s/ab-$1" --steps profile --context "$4" --points "$3" 2>&1 \
      | grep "gpu_run profile\|Error" | tail -3 | sed "s/^/$1 /" | tee -a "$OUT/ab.log"
  cp "/tmp/s/ab-$1/engine.json" "$OUT/ab-$1.json"
}
case $STEP in
a)
  prof gdn-after . qwen3.5-4b:32 2048 150
  prof gdn-before .ab-old qwen3.5-4b:32 2048 90
  prof mamba2-after . mamba2-2.7b:128 2048 90
  prof mamba2-before .ab-old mamba2-2.7b:128 2048 90
  timeout 120 python3 .ab-old/check.py 2>&1 | grep "check\|Error" | tee -a "$OUT/ab.log"
  ;;
b)
  plan native qwen3.5-4b 32x2048,32x8192 ${DEADLINE_B1:-230} native.log
  plan native mamba2-2.7b 128x2048 ${DEADLINE_B2:-120} native.log
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  plan vllm qwen3.5-4b 32x2048,32x8192 ${DEADLINE_C1:-300} vllm.log
  ;;
*)
  echo "unknown step $STEP; accepted: a b c" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
