#!/usr/bin/env bash
# The next H200 session, prepared: five calls sent back to back on one machine (files under /tmp stay between
# them), so that every comparison is on one card. Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1,750 s of device time in all, machine start included; each call under 600 s;
# the campaign calls take what the session has left, CAMPAIGN_S):
#   a .whl .vllm-p1   native mamba2-2.7b at 32 x 8192 and 128 x 2048 with the update's rows whole, split (the
#                     default since 2026-12-02d), whole again (PHASE_ENERGY_RECURRENT_ROWS; the fused inputs,
#                     the default, in all three); native nemotron-h-4b at the same points with the defaults
#   b .vllm-p2        the Mamba2 step's kernel profile at batch 128 with the defaults (what is left of the
#                     gap); native qwen3-4b-transmla profiled the same way at 128 x 2048 and 32 x 8192
#   c .vllm-p3        install vLLM from the three parts; vLLM mamba2-2.7b and nemotron-h-4b at the points of
#                     call a (each preset's engine starts in 130-180 s)
#   d                 the vLLM campaign grid resumed for CAMPAIGN_S seconds (reference-data/h200-vllm, which must
#                     travel with the tree: it is what the campaign resumes from)
#   e                 the campaign again for CAMPAIGN_S seconds, if the session has the time left
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
case $STEP in
a)
  for m in whole split whole2; do
    PHASE_ENERGY_RECURRENT_ROWS=${m%2} OUT_DIR=/tmp/s/rows-$m plan native mamba2-2.7b 32x8192,128x2048 150 rows-ab.log
  done
  (cd /tmp/s && tar czf "$OUT/rows-ab.tgz" rows-*)
  plan native nemotron-h-4b 32x8192,128x2048 120 native.log
  ;;
b)
  timeout 200 python3 bench/gpu_run.py --out /tmp/s/kernels --steps profile \
      --points mamba2-2.7b:128,qwen3-4b-transmla:128 2>&1 | tail -20 | tee "$OUT/kernels.log"
  cp /tmp/s/kernels/engine.json "$OUT/kernels.json"
  # TransMLA where vLLM's step was 17 % shorter: batch 32 at context 8192
  timeout 150 python3 bench/gpu_run.py --out /tmp/s/kernels-8k --steps profile --context 8192 \
      --points qwen3-4b-transmla:32 2>&1 | tail -20 | tee -a "$OUT/kernels.log"
  cp /tmp/s/kernels-8k/engine.json "$OUT/kernels-8k.json"
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  plan vllm mamba2-2.7b,nemotron-h-4b 32x8192,128x2048 ${DEADLINE_S:-480} vllm.log
  ;;
d)
  campaign ${CAMPAIGN_S:-500} campaign-d.log
  ;;
e)
  campaign ${CAMPAIGN_S:-300} campaign-e.log
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d e" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
