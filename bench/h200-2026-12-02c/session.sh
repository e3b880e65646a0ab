#!/usr/bin/env bash
# The H200 session of 2026-12-02 (the third that day), as it ran (named bench/h200-next/session.sh then;
# README.md here lists the calls): four calls sent back to back on one machine (files under /tmp stay between
# them), so that every comparison is on one card. Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1,600 s of device time in all, machine start included; each call under 600 s):
#   a .whl .vllm-p1 .old-src   the prefill lead-in's A/B: native qwen3-4b at 32 and 128 x 2048 in one process,
#                     with the code before (a whole measured prefill as lead-in, from .old-src), after (a piece of
#                     it), before again, one compile cache; then native mamba2-2.7b and nemotron-h-4b at
#                     32 x 8192 and 128 x 2048 (the vLLM points below, on this card)
#   b .vllm-p2        the MLA kernel's one-load path against its default tiling (TransMLA, batch 32/128/1);
#                     native qwen3.5-4b at 128 x 2048 (its fused input projections in a whole step)
#   c .vllm-p3        install vLLM from the three parts; vLLM mamba2-2.7b at 32 x 8192 and 128 x 2048
#   d                 vLLM nemotron-h-4b at the same points, then the vLLM campaign grid in groups for
#                     CAMPAIGN_S seconds: the start of reference-data/h200-vllm/
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
plan() {  # engines presets points deadline_s log [script]
  python3 "${6:-bench/engine_compare.py}" plan --config config/h200-engines.yaml --out "${OUT_DIR:-/tmp/s/cmp}" \
      --engines "$1" --presets "$2" --points "$3" --deadline-s "$4" 2>&1 \
      | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tee -a "$OUT/$5"
}
case $STEP in
a)
  # .old-src holds src/ and bench/engine_compare.py of the commit before the lead-in change (OLD_COMMIT)
  for v in before after before2; do
    if [ $v = after ]; then
      OUT_DIR=/tmp/s/leadin-$v plan native qwen3-4b 32x2048,128x2048 100 leadin.log
    else
      PHASE_ENERGY_GIT_COMMIT=${OLD_COMMIT:-unknown} PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/.old-src/src \
        OUT_DIR=/tmp/s/leadin-$v plan native qwen3-4b 32x2048,128x2048 100 leadin.log .old-src/bench/engine_compare.py
    fi
  done
  (cd /tmp/s && tar czf "$OUT/leadin.tgz" leadin-*)
  plan native mamba2-2.7b,nemotron-h-4b 32x8192,128x2048 250 native.log
  ;;
b)
  # the MLA kernel's one-load path (V from the key tile) against the default tiling, TransMLA at batch 32/128/1
  timeout 170 python3 bench/gpu_run.py --out /tmp/s/mla --steps attn,mla_attn --mla-archs qwen3-4b-transmla \
      --mla-sweep one_load 2>&1 | tail -20 | tee "$OUT/mla.log"
  cp /tmp/s/mla/engine.json "$OUT/mla.json"
  plan native qwen3.5-4b 128x2048 130 native.log
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  plan vllm mamba2-2.7b 32x8192,128x2048 ${DEADLINE_S:-300} vllm.log
  ;;
d)
  plan vllm nemotron-h-4b 32x8192,128x2048 ${DEADLINE_S:-300} vllm.log
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
(cd /tmp/s && tar czf "$OUT/cmp-$STEP.tgz" cmp 2>/dev/null)
