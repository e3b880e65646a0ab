#!/usr/bin/env bash
# The next H200 session, prepared: four calls sent back to back on one machine (files under /tmp stay between
# them), so that every comparison is on one card. Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1750 s of device time in all, machine start included; each call under 600 s):
#   a .whl .vllm-p1   native mamba2-2.7b and nemotron-h-4b at 32 x 8192 and 128 x 2048 (the vLLM points below, on
#                     this card), a kernel profile of the Mamba2 step at batch 32 and 128 and of Qwen3.5 at 128
#   b .vllm-p2        native qwen3.5-4b at 32 and 128 x 2048 (its four input projections as one GEMM, the 64-wide
#                     state tiling: the whole step on the card of the vLLM points of 2026-12-02 was before them);
#                     the MLA kernel's one-load path against its default tiling (TransMLA, batch 32/128/1)
#   c .vllm-p3        install vLLM from the three parts; vLLM mamba2-2.7b at 32 x 8192 and 128 x 2048
#   d                 vLLM nemotron-h-4b at the same points, then the vLLM campaign grid in groups for
#                     CAMPAIGN_S seconds: the start of reference-data/h200-vllm/
set -uo pipefail
STEP=$1; shift
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export PHASE_ENERGY_GIT_COMMIT=${PHASE_ENERGY_GIT_COMMIT:-unknown} PHASE_ENERGY_COMPILE_CACHE=/tmp/s/cc-bench
mkdir -p /tmp/vllm-parts /tmp/s
for part in "$@"; do cp "$part"/* /tmp/vllm-parts/; done
if [ ! -d /tmp/pe-site/fla ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pe-site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,uuid,serial,driver_version,power.limit,clocks.max.sm --format=csv | tee -a "$OUT/nvidia-smi.csv"
plan() {  # engines presets points deadline_s log
  python3 bench/engine_compare.py plan --config config/h200-engines.yaml --out /tmp/s/cmp --engines "$1" \
      --presets "$2" --points "$3" --deadline-s "$4" 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tee -a "$OUT/$5"
}
case $STEP in
a)
  plan native mamba2-2.7b,nemotron-h-4b 32x8192,128x2048 280 native.log
  timeout 150 python3 bench/gpu_run.py --out /tmp/s/kernels --steps recurrent,profile \
      --points mamba2-2.7b:32,mamba2-2.7b:128,qwen3.5-4b:128 2>&1 | tail -40 | tee "$OUT/kernels.log"
  cp /tmp/s/kernels/engine.json "$OUT/kernels.json"
  ;;
b)
  plan native qwen3.5-4b 32x2048,128x2048 200 native.log
  # the MLA kernel's one-load path (V from the key tile) against the default tiling, TransMLA at batch 32/128/1
  timeout 180 python3 bench/gpu_run.py --out /tmp/s/mla --steps attn,mla_attn --mla-archs qwen3-4b-transmla \
      --mla-sweep one_load 2>&1 | tail -20 | tee "$OUT/mla.log"
  cp /tmp/s/mla/engine.json "$OUT/mla.json"
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  plan vllm mamba2-2.7b 32x8192,128x2048 ${DEADLINE_S:-330} vllm.log
  ;;
d)
  plan vllm nemotron-h-4b 32x8192,128x2048 ${DEADLINE_S:-330} vllm.log
  # the vLLM campaign grid with the time left, one engine per preset (resumes in later sessions)
  mkdir -p /tmp/s/h200-vllm/traces
  python3 -m phase_energy.cli campaign --configfile config/h200-engines.yaml --into /tmp/s/h200-vllm/traces \
      --time-limit-s ${CAMPAIGN_S:-120} --group-engines vllm \
      --chunk 'engines=[vllm] batch_sizes=[1,8,32,128,256] contexts=[512,2048,8192] results=/tmp/s/campaign' \
      2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tee "$OUT/campaign.log"
  (cd /tmp/s && tar czf "$OUT/h200-vllm.tgz" h200-vllm)
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d" >&2; exit 2
  ;;
esac
(cd /tmp/s && tar czf "$OUT/cmp-$STEP.tgz" cmp)
