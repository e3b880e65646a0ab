#!/usr/bin/env bash
# H200 session of 2026-12-03: calls sent back to back on one machine (files under /tmp stay between them:
# the compile cache of one call is the next one's). Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-2026-12-03/session.sh STEP .whl
# STEP, in this order (each call under 600 s):
#   cold      the imports timed (torch, its compiler, fla's kernels with and without flash-linear-attention's
#             layers and models); then every shape of the reference campaign's qwen3-4b points (and
#             qwen3.5-4b's at batch 1, 32, 128) compiled once, with a short protocol: the compile cache warm
#   ref1      the reference campaign's settings (config/h200-reference.yaml), qwen3-4b's 15 points, one
#             native group process, every shape cached: time to the first window and share in windows
#   jobs      jobs in processes of their own (the workflow's measure rule), caches warm, jobs.yaml here:
#             qwen3.5-4b at 32 x 2048 with fla-core alone and with flash-linear-attention too, alternating
#             (after one job that compiles what is left), and with the bytecode cache off
#             (PHASE_ENERGY_PYCACHE=0); then qwen3-4b's and qwen3.5-4b's jobs forked
#             from a parent that imported torch and its compiler (bench/job_loop.py --fork)
#   ref2      the reference campaign's settings, qwen3.5-4b at batch 1, 32, 128, one group process
#   warm      one call that holds both halves (the machine of one call is not the next call's): qwen3-4b at
#             batch 1, 32, 128 and context 2048 compiled with the short protocol, then measured with the
#             reference campaign's settings in one group process, every shape cached; then qwen3-4b at
#             32 x 2048 in jobs of their own, twice, and forked from a parent that imported torch and its
#             compiler (not fla.ops, whose import starts CUDA), twice
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
if [ ! -d /tmp/pe-core/fla ]; then  # fla-core alone (the package's gpu extra now): no layers, no models
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pe-core \
      .whl/fla_core-*.whl .whl/jsonschema*.whl .whl/referencing-*.whl .whl/rpds_py-*.whl || exit 1
fi
CORE=/tmp/pe-core:$PWD/src
FULL=/tmp/pe-site:$PWD/src
export PYTHONPATH=$CORE
imports() {  # name pythonpath statement [VAR=value ...]: its wall time, twice (the second finds what the first cached)
  local name=$1 path=$2 stmt=$3; shift 3
  for i in 1 2; do
    local t0; t0=$(date +%s%N)
    env PYTHONPATH=$path "$@" python3 -X importtime -c "$stmt" 2> "/tmp/s/importtime-$name-$i.txt"
    echo "$name run $i: $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$OUT/imports.log"
  done
  cp "/tmp/s/importtime-$name-1.txt" "$OUT/"
}
case $STEP in
cold)
  python3 - <<'PY' | tee "$OUT/imports.log"
import importlib.util, os, sys, sysconfig
spec = importlib.util.find_spec("torch")
root = os.path.dirname(spec.origin)
ind = os.path.join(root, "_inductor")
pyc = [f for f in os.listdir(os.path.join(ind, "__pycache__"))] if os.path.isdir(os.path.join(ind, "__pycache__")) else []
print(f"torch at {root}; writable: {os.access(ind, os.W_OK)}; _inductor/__pycache__ files: {len(pyc)} "
      f"(compile_fx: {[f for f in pyc if f.startswith('compile_fx.')]}); cache tag {sys.implementation.cache_tag}; "
      f"dont_write_bytecode {sys.dont_write_bytecode}; PYTHONPYCACHEPREFIX {os.environ.get('PYTHONPYCACHEPREFIX')}")
PY
  imports compiler "$CORE" "import torch, triton, torch._dynamo, torch._inductor.compile_fx"
  imports fla-core "$CORE" "import torch, fla.ops.gated_delta_rule"
  imports fla-full "$FULL" "import torch, fla.ops.gated_delta_rule"
  campaign_native cold 420 "architectures=[qwen3-4b] $SHORT"
  campaign_native cold35 150 "architectures=[qwen3.5-4b] batch_sizes=[1,32,128] $SHORT"
  ;;
ref1) campaign_native ref1 510 "architectures=[qwen3-4b]" ;;
ref2) campaign_native ref2 510 "architectures=[qwen3.5-4b] batch_sizes=[1,32,128]" ;;
jobs)
  CFG=bench/h200-2026-12-03/jobs.yaml
  loop() {  # name pythonpath points [--fork]
    PYTHONPATH=$2 python3 bench/job_loop.py --config $CFG --out "/tmp/s/jobs/$1" --cache /tmp/s/cc-bench \
        --points "$3" --deadline-s 200 ${4:-} 2>&1 | tee -a "$OUT/jobs.log"
  }
  # bytecode: the image sets PYTHONDONTWRITEBYTECODE and ships no .pyc; with a prefix and writing allowed,
  # the first run writes, the second reads
  imports pyc "$CORE" "import torch, triton, torch._dynamo, torch._inductor.compile_fx" \
      PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=/tmp/s/pyc
  loop core-0 "$CORE" qwen3.5-4b:32x2048   # compiles the shape and writes the bytecode cache: not compared
  loop full-1 "$FULL" qwen3.5-4b:32x2048
  loop core-1 "$CORE" qwen3.5-4b:32x2048
  PHASE_ENERGY_PYCACHE=0 loop nopyc-1 "$CORE" qwen3.5-4b:32x2048
  loop full-2 "$FULL" qwen3.5-4b:32x2048
  loop core-2 "$CORE" qwen3.5-4b:32x2048
  PHASE_ENERGY_PYCACHE=0 loop nopyc-2 "$CORE" qwen3.5-4b:32x2048
  loop fork "$CORE" qwen3-4b:32x2048,qwen3.5-4b:32x2048,qwen3-4b:32x2048,qwen3.5-4b:32x2048 --fork
  (cd /tmp/s && tar czf "$OUT/jobs.tgz" jobs)
  ;;
warm)
  POINTS="architectures=[qwen3-4b] batch_sizes=[1,32,128] contexts=[2048]"
  campaign_native warm0 90 "$POINTS $SHORT"
  campaign_native warm 150 "$POINTS"
  CFG=bench/h200-2026-12-03/jobs.yaml
  for mode in own fork; do
    python3 bench/job_loop.py --config $CFG --out "/tmp/s/warmjobs/$mode" --cache /tmp/s/cc-bench \
        --points qwen3-4b:32x2048,qwen3-4b:32x2048 --deadline-s 55 $([ $mode = fork ] && echo --fork) \
        2>&1 | tee -a "$OUT/warmjobs.log"
  done
  (cd /tmp/s && tar czf "$OUT/warmjobs.tgz" warmjobs)
  ;;
*)
  echo "unknown step $STEP; accepted: cold ref1 jobs ref2 warm" >&2; exit 2
  ;;
esac
