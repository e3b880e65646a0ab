#!/usr/bin/env bash
# The next H200 session, prepared: five calls sent back to back on one machine (files under /tmp stay between
# them). Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1,650 s of device time in all, machine start included; each call under 600 s):
#   a .whl .vllm-p1   native qwen3.5-4b at 128 x 2048 (the comparison point whose native side ran on another
#                     card than vLLM's), next to call d's vLLM campaign point
#   b .vllm-p2        nothing but the part (a short call: the machine stays warm)
#   c .vllm-p3        install vLLM from the three parts; vLLM's decode step by kernel (bench/gpu_run.py
#                     --steps vllm_profile) where its step is shorter than the native one: TransMLA at 32 x 8192,
#                     Mamba2 at 128 x 2048 (the native profiles of bench/h200-2026-12-02e/ are the other side)
#   d                 the vLLM campaign grid of qwen3.5-4b (15 points), CAMPAIGN_S seconds
#   e                 the campaign's batch-256 points of qwen3-4b-transmla, mamba2-2.7b and nemotron-h-4b for what
#                     the session has left (CAMPAIGN_S), one vLLM engine per preset
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
case $STEP in
a)
  plan native qwen3.5-4b 128x2048 ${DEADLINE_A1:-110} native.log
  ;;
b)
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  timeout 210 python3 bench/gpu_run.py --out /tmp/s/vprof-mla --steps vllm_profile --context 8192 \
      --points qwen3-4b-transmla:32 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tail -20 | tee "$OUT/vllm-profile.log"
  cp /tmp/s/vprof-mla/engine.json "$OUT/vllm-profile-transmla-32x8192.json"
  cp /tmp/s/vprof-mla/log.txt "$OUT/vllm-profile-transmla-32x8192.log"  # a traceback, if any, is there
  timeout 230 python3 bench/gpu_run.py --out /tmp/s/vprof-mamba2 --steps vllm_profile \
      --points mamba2-2.7b:128 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tail -20 | tee -a "$OUT/vllm-profile.log"
  cp /tmp/s/vprof-mamba2/engine.json "$OUT/vllm-profile-mamba2-128x2048.json"
  cp /tmp/s/vprof-mamba2/log.txt "$OUT/vllm-profile-mamba2-128x2048.log"
  ;;
d)
  campaign ${CAMPAIGN_S:-550} campaign-d.log 'architectures=[qwen3.5-4b]'
  ;;
e)
  campaign ${CAMPAIGN_S:-250} campaign-e.log 'architectures=[qwen3-4b-transmla,mamba2-2.7b,nemotron-h-4b] batch_sizes=[256]'
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d e" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
