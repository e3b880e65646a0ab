#!/usr/bin/env bash
# One device session on one H200 (default lever only: nothing here changes a GPU setting), in calls sent
# back to back so that files under /tmp stay on the same machine (and card) between them:
#   bash bench/h200-2026-12-01-s2/session.sh STEP [vllm part folders...]
# STEP: ab (native jobs, per-step vs per-block compile, cold and warm caches), native (the presets vLLM was
# not yet compared on), vllm (install vLLM from the parts, then the same points), rest (what is left).
set -uo pipefail
STEP=$1; shift
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export PHASE_ENERGY_GIT_COMMIT=${PHASE_ENERGY_GIT_COMMIT:-unknown}
mkdir -p /tmp/vllm-parts /tmp/s2
for part in "$@"; do cp "$part"/* /tmp/vllm-parts/; done
if [ ! -d /tmp/pe-site/fla ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pe-site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/pe-site:$PWD/src
nvidia-smi --query-gpu=name,uuid,serial,driver_version,power.limit,clocks.max.sm --format=csv | tee -a "$OUT/nvidia-smi.csv"
scope() {  # the compile scope the A/B chose (per-block when its decode step is within 1 % of per-step)
  python3 - <<'PY'
import glob, pandas as pd
def step_ms(root):
    ms = []
    for f in glob.glob(f"{root}/**/rep~1/windows.parquet", recursive=True):
        w = pd.read_parquet(f)
        d = w[(w["phase"] == "decode") & (w["flags"].fillna("") == "")]
        ms.append((d["duration_s"] / (d["steps"] * d["repetitions"])).median() * 1e3)
    return min(ms) if ms else float("nan")
s, b = step_ms("/tmp/s2/ab-step"), step_ms("/tmp/s2/ab-block")
print("block" if b == b and (s != s or b <= 1.01 * s) else "step")
PY
}
case $STEP in
ab)
  python3 bench/job_loop.py --config config/h200-reference.yaml --out /tmp/s2/ab-step --cache /tmp/s2/cc-step \
      --points qwen3-4b:32x2048,qwen3-4b:32x2048 --env PHASE_ENERGY_COMPILE_SCOPE=step --deadline-s 200
  python3 bench/job_loop.py --config config/h200-reference.yaml --out /tmp/s2/ab-block --cache /tmp/s2/cc-block \
      --points qwen3-4b:32x2048,qwen3-4b:32x2048,qwen3-4b:1x2048,qwen3-4b:1x2048 \
      --env PHASE_ENERGY_COMPILE_SCOPE=block --deadline-s 200
  echo "scope chosen: $(scope)"
  (cd /tmp/s2 && tar czf "$OUT/ab.tgz" ab-step ab-block)
  ;;
native)
  export PHASE_ENERGY_COMPILE_SCOPE=$(scope) PHASE_ENERGY_COMPILE_CACHE=/tmp/s2/cc-bench
  echo "compile scope: $PHASE_ENERGY_COMPILE_SCOPE"
  python3 bench/engine_compare.py plan --config config/h200-engines.yaml --out /tmp/s2/cmp --engines native \
      --presets qwen3-4b --points 32x2048 --init-preset qwen3-4b --weight-inits heavy-tailed \
      --init-points 1x2048,32x2048 --deadline-s 150 2>&1 | tee "$OUT/native.log"
  python3 bench/engine_compare.py plan --config config/h200-engines.yaml --out /tmp/s2/cmp --engines native \
      --presets mamba2-2.7b,minicpm3-4b,nemotron-h-4b --points 1x2048,32x2048,128x2048 \
      --deadline-s ${NATIVE_S:-330} 2>&1 | tee -a "$OUT/native.log"
  (cd /tmp/s2 && tar czf "$OUT/native.tgz" cmp)
  ;;
vllm)
  bash /tmp/vllm-parts/install.sh || exit 1
  export PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/src
  python3 bench/engine_compare.py plan --config config/h200-engines.yaml --out /tmp/s2/cmp --engines vllm \
      --presets mamba2-2.7b,minicpm3-4b,nemotron-h-4b,qwen3-4b-transmla --points 1x2048,32x2048,128x2048 \
      --deadline-s 540 2>&1 | tee "$OUT/vllm.log"
  (cd /tmp/s2 && tar czf "$OUT/vllm.tgz" cmp)
  ;;
rest)
  export PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/src PHASE_ENERGY_COMPILE_SCOPE=$(scope) PHASE_ENERGY_COMPILE_CACHE=/tmp/s2/cc-bench
  python3 bench/engine_compare.py plan --config config/h200-engines.yaml --out /tmp/s2/cmp --engines vllm,native \
      --presets ${REST_PRESETS:-qwen3-4b} --points ${REST_POINTS:-32x8192} --deadline-s ${REST_S:-400} 2>&1 | tee "$OUT/rest.log"
  (cd /tmp/s2 && tar czf "$OUT/rest.tgz" cmp)
  ;;
esac
