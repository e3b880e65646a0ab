#!/usr/bin/env bash
# The next H200 session, prepared: two calls sent back to back on one machine (files under /tmp stay between
# them). Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [folder ...]
# STEP, in this order (each call under 600 s):
#   native .whl .vllm-p1 .vllm-p2   native qwen3.5-4b at 32 x 2048 and 32 x 8192 and mamba2-2.7b at 128 x 2048,
#                                   traces (the parts of vLLM's wheels are staged for the next call)
#   vllm .vllm-p3                   vLLM installed; vLLM at the two Qwen3.5 points, traces: both engines on one
#                                   card after the recurrent ops took any layout
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
case $STEP in
native)
  plan native qwen3.5-4b 32x2048,32x8192 ${DEADLINE_1:-230} native.log
  plan native mamba2-2.7b 128x2048 ${DEADLINE_2:-120} native.log
  ;;
vllm)
  bash /tmp/vllm-parts/install.sh || exit 1
  plan vllm qwen3.5-4b 32x2048,32x8192 ${DEADLINE_3:-300} vllm.log
  ;;
*)
  echo "unknown step $STEP; accepted: native vllm" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
