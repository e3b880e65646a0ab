#!/usr/bin/env bash
# The next H200 session, prepared: five calls sent back to back on one machine (files under /tmp stay between
# them), so that every comparison is on one card. Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1,800 s of device time in all, machine start included; each call under 600 s;
# d's campaign takes what the session has left, CAMPAIGN_S):
#   a .whl .vllm-p1   the Mamba2 state update with its rows split over programs against the engine's tiling
#                     (bench/gpu_run.py --recurrent-sweep split), a kernel profile of the native Mamba2 step at
#                     batch 32; native qwen3-4b-transmla at 1 x 2048 and 32 x 8192 (not measured since the
#                     one-load MLA path)
#   b .vllm-p2        native qwen3.5-4b at 1 x 2048, 32 x 2048 and 32 x 8192 (not measured since its fused
#                     input projections); native mamba2-2.7b at 32 x 8192 and 128 x 2048 with
#                     PHASE_ENERGY_MAMBA2_STEP separate, fused, separate again (the fused inputs' A/B)
#   c .vllm-p3        install vLLM from the three parts; vLLM qwen3-4b-transmla at the points of call a, each
#                     three times on one engine: the decode step timed in the warm-up, in the first decode
#                     trial's lead-in, in the warm-up again (the lead-in's before-and-after)
#   d                 vLLM qwen3.5-4b at the points of call b, then the vLLM campaign grid resumed for CAMPAIGN_S
#                     seconds (reference-data/h200-vllm/, which must travel with the tree: it is what the
#                     campaign resumes from)
#   e                 the campaign again for CAMPAIGN_S seconds, if the session has the time left
set -uo pipefail
STEP=$1; shift
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export PHASE_ENERGY_GIT_COMMIT=${PHASE_ENERGY_GIT_COMMIT:-unknown} PHASE_ENERGY_COMPILE_CACHE=/tmp/s/cc-bench
mkdir -p /tmp/vllm-parts /tmp/s
for part in "$@"; do case $part in .vllm-p*) cp "$part"/* /tmp/vllm-parts/;; esac; done
if [ ! -d /tmp/pe-site/fla ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pe-site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,uuid,serial,driver_version,power.limit,clocks.max.sm --format=csv | tee -a "$OUT/nvidia-smi.csv"
plan() {  # engines presets points deadline_s log (OUT_DIR: where the traces go, /tmp/s/cmp by default;
  # STEP_TIMINGS: vLLM's points once per entry, as repetitions 0, 1, ...)
  python3 bench/engine_compare.py plan --config config/h200-engines.yaml --out "${OUT_DIR:-/tmp/s/cmp}" --engines "$1" \
      --presets "$2" --points "$3" --deadline-s "$4" ${STEP_TIMINGS:+--step-timings $STEP_TIMINGS} 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tee -a "$OUT/$5"
}
campaign() {  # seconds log
  mkdir -p /tmp/s/h200-vllm/traces
  # the points measured so far travel with the tree (reference-data/h200-vllm): the campaign skips them
  [ -d reference-data/h200-vllm/traces ] && cp -rn reference-data/h200-vllm/traces/. /tmp/s/h200-vllm/traces/
  python3 -m phase_energy.cli campaign --configfile config/h200-engines.yaml --into /tmp/s/h200-vllm/traces \
      --time-limit-s "$1" --group-engines vllm \
      --chunk 'engines=[vllm] batch_sizes=[1,8,32,128,256] contexts=[512,2048,8192] results=/tmp/s/campaign' \
      2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tee "$OUT/$2"
  (cd /tmp/s && tar czf "$OUT/h200-vllm.tgz" h200-vllm)
}
case $STEP in
a)
  # the new kernels' correctness on the card first (recurrent: the split update, the fused Mamba2 step and
  # the convolution's step against PyTorch), then their speed and the Mamba2 step's profile
  timeout 180 python3 bench/gpu_run.py --out /tmp/s/kernels --steps recurrent,recurrent_speed,profile \
      --recurrent-sweep split --points mamba2-2.7b:32 2>&1 | tail -30 | tee "$OUT/kernels.log"
  cp /tmp/s/kernels/engine.json "$OUT/kernels.json"
  plan native qwen3-4b-transmla 1x2048,32x8192 120 native.log
  ;;
b)
  plan native qwen3.5-4b 1x2048,32x2048,32x8192 160 native.log
  # Mamba2's step with its inputs inside the update kernel against the default, one compile cache (the
  # first run compiles): separate, fused, separate again
  for m in separate fused separate2; do
    PHASE_ENERGY_MAMBA2_STEP=${m%2} OUT_DIR=/tmp/s/mamba2-$m plan native mamba2-2.7b 32x8192,128x2048 110 mamba2-ab.log
  done
  (cd /tmp/s && tar czf "$OUT/mamba2-ab.tgz" mamba2-*)
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  # three times each on one engine: the decode step timed in the warm-up (as before), in the first trial's
  # lead-in (the new default: no whole-batch prefill of the warm-up's own), in the warm-up again
  STEP_TIMINGS=warm-up,lead-in,warm-up plan vllm qwen3-4b-transmla 1x2048,32x8192 ${DEADLINE_S:-380} vllm.log
  ;;
d2)
  # what call b's deadlines left: native qwen3.5-4b at 32 x 2048 and 32 x 8192, Mamba2 fused at 128 x 2048
  plan native qwen3.5-4b 32x2048,32x8192 200 native.log
  PHASE_ENERGY_MAMBA2_STEP=fused OUT_DIR=/tmp/s/mamba2-fused2 plan native mamba2-2.7b 128x2048 90 mamba2-ab.log
  (cd /tmp/s && tar czf "$OUT/mamba2-ab.tgz" mamba2-*)
  plan vllm qwen3.5-4b 1x2048,32x2048,32x8192 ${DEADLINE_S:-300} vllm.log
  ;;
d)
  plan vllm qwen3.5-4b 1x2048,32x2048,32x8192 ${DEADLINE_S:-300} vllm.log
  campaign ${CAMPAIGN_S:-250} campaign-d.log
  ;;
e)
  campaign ${CAMPAIGN_S:-400} campaign-e.log
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d d2 e" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
