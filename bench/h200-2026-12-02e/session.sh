#!/usr/bin/env bash
# The next H200 session, prepared: four calls sent back to back on one machine (files under /tmp stay between
# them), so that every comparison is on one card. Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1,650 s of device time in all, machine start included; each call under 600 s):
#   a .whl .vllm-p1   native mamba2-2.7b at 1, 32, 128 x 2048 and 32 x 8192 with the defaults (fused inputs, the
#                     update's rows split from batch 32); the rows whole (PHASE_ENERGY_RECURRENT_ROWS=whole) at
#                     32 x 8192 and 128 x 2048: the whole step's A/B; native nemotron-h-4b at 32 x 8192 and
#                     128 x 2048 with the defaults
#   b .vllm-p2        native qwen3-4b-transmla at 32 and 128 x 2048, native minicpm3-4b at 32 x 8192 (the one
#                     comparison point never measured); the decode step's kernel profile of TransMLA at
#                     32 x 8192 and of Mamba2 at 128 x 2048 (where vLLM's step is shorter)
#   c .vllm-p3        install vLLM from the three parts; the vLLM campaign grid of mamba2-2.7b at batch 1, 8, 32,
#                     128 x contexts 512, 2048, 8192 (one engine; its 1/32/128 x 2048 and 32 x 8192 points are
#                     the comparison's, on this card), CAMPAIGN_S seconds
#   d                 vLLM qwen3-4b-transmla at 32 and 128 x 2048 (DEADLINE_S), the same card as call b's native
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
case $STEP in
a)
  plan native mamba2-2.7b 1x2048,32x2048,128x2048,32x8192 ${DEADLINE_A1:-230} native.log
  PHASE_ENERGY_RECURRENT_ROWS=whole OUT_DIR=/tmp/s/rows-whole plan native mamba2-2.7b 32x8192,128x2048 120 rows-ab.log
  (cd /tmp/s && tar czf "$OUT/rows-whole.tgz" rows-whole)
  plan native nemotron-h-4b 32x8192,128x2048 ${DEADLINE_A3:-150} native.log
  ;;
b)
  plan native qwen3-4b-transmla 32x2048,128x2048 150 native.log
  plan native minicpm3-4b 32x8192 110 native.log
  timeout 120 python3 bench/gpu_run.py --out /tmp/s/kernels-8k --steps profile --context 8192 \
      --points qwen3-4b-transmla:32 2>&1 | tail -20 | tee "$OUT/kernels.log"
  cp /tmp/s/kernels-8k/engine.json "$OUT/kernels-8k.json"
  timeout 90 python3 bench/gpu_run.py --out /tmp/s/kernels --steps profile \
      --points mamba2-2.7b:128 2>&1 | tail -20 | tee -a "$OUT/kernels.log"
  cp /tmp/s/kernels/engine.json "$OUT/kernels.json"
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  campaign ${CAMPAIGN_S:-480} campaign-c.log 'architectures=[mamba2-2.7b] batch_sizes=[1,8,32,128]'
  ;;
d)
  plan vllm qwen3-4b-transmla 32x2048,128x2048 ${DEADLINE_S:-200} vllm.log
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
