#!/usr/bin/env bash
# The next H200 session, prepared: four calls sent back to back on one machine (files under /tmp stay between
# them), so that every comparison is on one card. Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-2026-12-02b/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1500 s of device time in all, machine start included):
#   a .whl .vllm-p1      the compiler prefetch A/B (a warm-up job, then three pairs of qwen3-4b 32 x 2048 jobs,
#                        prefetch on and off, the order alternating), then native qwen3-4b at the table's points
#   b .vllm-p2           native mamba2-2.7b and nemotron-h-4b at 32 x 8192, qwen3-4b-transmla at 128 x 2048
#                        (the MLA kernel's new batch-128 tiling in a whole step); the attention and recurrent
#                        kernels against PyTorch (new tilings, strided q/k), the MLA decode-attention tilings
#                        and a kernel profile of the qwen3-4b-transmla and qwen3.5-4b decode steps
#   c .vllm-p3 .vllm-p4  install vLLM from the four parts; vLLM qwen3-4b at the table's points, then
#                        mamba2-2.7b at 32 x 8192
#   d                    vLLM nemotron-h-4b at 32 x 8192, then the vLLM campaign grid in groups (one engine per
#                        preset) for CAMPAIGN_S seconds: the start of reference-data/h200-vllm/
# Points: batch 1, 32, 128 at context 2048 and batch 32 at 8192.
set -uo pipefail
STEP=$1; shift
HERE=bench/h200-2026-12-02b
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
  # the compile cache warmed by one job, then prefetch on (1) and off (0) alternately in fresh processes
  python3 bench/job_loop.py --config $HERE/job-parts.yaml --out /tmp/s/pf-warm --cache /tmp/s/cc-pf \
      --points qwen3-4b:32x2048 --deadline-s 80 2>&1 | tee "$OUT/prefetch.log"
  # three pairs, the order alternating (on-off, off-on, on-off): a drift over the call falls on both arms
  i=0
  for order in "1 0" "0 1" "1 0"; do i=$((i + 1)); for pf in $order; do
    python3 bench/job_loop.py --config $HERE/job-parts.yaml --out /tmp/s/pf$pf-$i --cache /tmp/s/cc-pf \
        --points qwen3-4b:32x2048 --env PHASE_ENERGY_COMPILE_PREFETCH=$pf --deadline-s 60 2>&1 | tee -a "$OUT/prefetch.log"
  done; done
  python3 bench/gpu_job_time.py /tmp/s/pf1-* --out "$OUT/gpu-job-time-prefetch-on.json" 2>&1 | tee -a "$OUT/prefetch.log"
  python3 bench/gpu_job_time.py /tmp/s/pf0-* --out "$OUT/gpu-job-time-prefetch-off.json" 2>&1 | tee -a "$OUT/prefetch.log"
  (cd /tmp/s && tar czf "$OUT/prefetch.tgz" pf*)
  plan native qwen3-4b $POINTS 150 native.log
  ;;
b)
  plan native mamba2-2.7b,nemotron-h-4b 32x8192 170 native.log
  # the MLA kernel's batch-128 tiling (new since 2026-12-02) in a whole step; the tilings again below
  plan native qwen3-4b-transmla 128x2048 60 native.log
  timeout 240 python3 bench/gpu_run.py --out /tmp/s/kernels --steps attn,recurrent,mla_attn,profile \
      --points qwen3-4b-transmla:32,qwen3-4b-transmla:128,qwen3.5-4b:32,qwen3.5-4b:128,mamba2-2.7b:128 2>&1 | tail -60 | tee "$OUT/kernels.log"
  cp /tmp/s/kernels/engine.json "$OUT/kernels.json"
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  plan vllm qwen3-4b $POINTS 300 vllm.log
  plan vllm mamba2-2.7b 32x8192 ${DEADLINE_S:-220} vllm.log
  ;;
d)
  plan vllm nemotron-h-4b 32x8192 ${DEADLINE_S:-220} vllm.log
  # the vLLM campaign grid with the time left, one engine per preset (resumes in later sessions)
  mkdir -p /tmp/s/h200-vllm/traces
  python3 -m phase_energy.cli campaign --configfile config/h200-engines.yaml --into /tmp/s/h200-vllm/traces \
      --time-limit-s ${CAMPAIGN_S:-240} --group-engines vllm \
      --chunk 'engines=[vllm] batch_sizes=[1,8,32,128,256] contexts=[512,2048,8192] results=/tmp/s/campaign' \
      2>&1 | tee "$OUT/campaign.log"
  (cd /tmp/s && tar czf "$OUT/h200-vllm.tgz" h200-vllm)
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d" >&2; exit 2
  ;;
esac
(cd /tmp/s && tar czf "$OUT/cmp-$STEP.tgz" cmp)
