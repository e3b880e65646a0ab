#!/usr/bin/env bash
# An H200 session, prepared: four calls sent back to back on one machine (files under /tmp stay between
# them), so that every engine comparison is on one card. Default lever only: nothing here changes a GPU
# setting.
#   bash bench/h200-2026-12-02/session.sh STEP [vllm part folder ...]      # carry .whl (step a) and the parts
# STEP, in this order (about 1600 s of device time in all, machine start included):
#   a .vllm-p1          where a native job's time goes before its first window (two jobs in fresh processes:
#                       empty compile cache, then the first job's), then native qwen3-4b-transmla, qwen3.5-4b
#   b .vllm-p2          native minicpm3-4b and qwen3-4b batch 32 x 8192, then a kernel profile of the Mamba2
#                       decode step (the recurrent step per tiling, kernel time per class)
#   c .vllm-p3 .vllm-p4 install vLLM from the four parts; vLLM qwen3-4b-transmla, then qwen3.5-4b
#                       (asynchronous scheduling, vLLM's default)
#   d                   vLLM minicpm3-4b with the Triton attention backend (FlashAttention 3 failed at its
#                       engine start), then vLLM qwen3-4b at batch 32 x 8192 as time allows
# Points: batch 1, 32, 128 at context 2048 and batch 32 at 8192 (the engine table's points).
set -uo pipefail
STEP=$1; shift
HERE=bench/h200-2026-12-02
POINTS=1x2048,32x2048,128x2048,32x8192
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
      --presets "$2" --points "$3" --deadline-s "$4" 2>&1 | tee -a "$OUT/$5"
}
case $STEP in
a)
  python3 bench/job_loop.py --config $HERE/job-parts.yaml --out /tmp/s/parts --cache /tmp/s/cc-parts \
      --points qwen3-4b:32x2048,qwen3-4b:32x2048 --deadline-s 110 2>&1 | tee "$OUT/parts.log"
  python3 bench/gpu_job_time.py /tmp/s/parts --out "$OUT/gpu-job-time-parts.json" 2>&1 | tee -a "$OUT/parts.log"
  (cd /tmp/s && tar czf "$OUT/parts.tgz" parts)
  plan native qwen3-4b-transmla,qwen3.5-4b $POINTS 360 native.log
  ;;
b)
  plan native minicpm3-4b 1x2048,32x2048 120 native.log
  plan native qwen3-4b 32x8192 70 native.log
  # the Mamba2 decode gap to vLLM: the recurrent step per tiling, and kernel time per class in a whole step
  timeout 200 python3 bench/gpu_run.py --out /tmp/s/kernels --steps recurrent_speed,profile \
      --points mamba2-2.7b:1,mamba2-2.7b:128,nemotron-h-4b:128 2>&1 | tail -60 | tee "$OUT/kernels.log"
  cp /tmp/s/kernels/engine.json "$OUT/kernels.json"
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  plan vllm qwen3-4b-transmla,qwen3.5-4b $POINTS ${DEADLINE_S:-530} vllm.log
  ;;
d)
  # MiniCPM3 with the Triton attention backend (FlashAttention 3 failed at engine start); batch 128 x 2048 and
  # 32 x 8192 do not fit vLLM's full-head cache
  python3 bench/engine_compare.py plan --config $HERE/engines-triton-attn.yaml --out /tmp/s/cmp --engines vllm \
      --presets minicpm3-4b --points 1x2048,32x2048 --deadline-s 230 2>&1 | tee -a "$OUT/vllm.log"
  plan vllm qwen3-4b 32x8192 ${DEADLINE_S:-200} vllm.log
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d" >&2; exit 2
  ;;
esac
(cd /tmp/s && tar czf "$OUT/cmp-$STEP.tgz" cmp)
