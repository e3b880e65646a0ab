#!/usr/bin/env bash
# The next H200 session, prepared: five calls sent back to back on one machine (files under /tmp stay between
# them). Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1,700 s of device time in all, machine start included; each call under 600 s):
#   a .whl .vllm-p1   native qwen3.5-4b at 128 x 2048 and native nemotron-h-4b at 1 and 32 x 2048 (the
#                     comparison points whose native side predates this round's engine, or ran on another card
#                     than vLLM's); in the comparison folder, next to call c-e's vLLM campaign points
#   b .vllm-p2        nothing but the part (a short call: the machine stays warm)
#   c .vllm-p3        install vLLM from the three parts; the vLLM campaign grid of qwen3.5-4b (15 points),
#                     CAMPAIGN_S seconds
#   d                 the campaign's batch-256 points of qwen3-4b-transmla, mamba2-2.7b and nemotron-h-4b,
#                     CAMPAIGN_S seconds (one vLLM engine per preset)
#   e                 the campaign again for what the session has left (CAMPAIGN_S), if any
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
case $STEP in
a)
  plan native qwen3.5-4b 128x2048 ${DEADLINE_A1:-110} native.log
  plan native nemotron-h-4b 1x2048,32x2048 ${DEADLINE_A2:-130} native.log
  ;;
b)
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  campaign ${CAMPAIGN_S:-550} campaign-c.log 'architectures=[qwen3.5-4b]'
  ;;
d)
  campaign ${CAMPAIGN_S:-550} campaign-d.log 'architectures=[qwen3-4b-transmla,mamba2-2.7b,nemotron-h-4b] batch_sizes=[256]'
  ;;
e)
  campaign ${CAMPAIGN_S:-150} campaign-e.log
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d e" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
