#!/usr/bin/env bash
# One short call on one H200 (default lever only: nothing here changes a GPU setting):
#   bash bench/h200-2026-12-01-s3/session.sh
# Two native jobs of the same point one after the other, each in a fresh process as the workflow starts them
# (the first with an empty compile cache, the second finding the first's), then the parts of each job's time
# before its first window from the traces.
set -uo pipefail
export PYTHONUNBUFFERED=1 PHASE_ENERGY_GIT_COMMIT=${PHASE_ENERGY_GIT_COMMIT:-unknown}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pe-site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/pe-site:$PWD/src
nvidia-smi --query-gpu=name,uuid,serial,driver_version,power.limit,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.csv"
python3 bench/job_loop.py --config bench/h200-2026-12-01-s3/job-parts.yaml --out "$OUT/jobs" --cache /tmp/cc \
    --points qwen3-4b:32x2048,qwen3-4b:32x2048,qwen3-4b:1x2048 --deadline-s "${DEADLINE_S:-100}"
python3 bench/gpu_job_time.py "$OUT/jobs" --out "$OUT/gpu-job-time.json"
