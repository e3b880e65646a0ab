#!/usr/bin/env bash
# The next H200 session, prepared: five calls sent back to back on one machine (files under /tmp stay between
# them). Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-next/session.sh STEP [vllm part folder ...]
# STEP, in this order (about 1,800 s of device time in all, machine start included; each call under 600 s;
# e takes what is left):
#   a .whl .vllm-p1   native qwen3.5-4b at 32 x 2048 and 32 x 8192 (the Qwen3.5 points where vLLM's step was
#                     shorter, by 1.7 and 2.5 % on card GPU-f019b024) and the native decode step's kernel
#                     profile at both; the MLA decode attention's kernel and merge over split counts
#                     (bench/gpu_run.py --steps mla_attn --mla-sweep splits: TransMLA's merge of 15 splits took
#                     0.54 ms of its 32 x 8192 step, vLLM's combine 0.20)
#   b .vllm-p2        the native Mamba2 step's profile at 128 x 2048 again, with the code Inductor generated for
#                     it (TORCH_LOGS=output_code): which of the step's ops become the four small kernels per layer
#                     that vLLM's step has not (0.39 ms; on the CPU Inductor passes the custom ops views, no copies)
#   c .vllm-p3        install vLLM from the three parts; vLLM's decode step by kernel at the same points
#                     (bench/gpu_run.py --steps vllm_profile), so both engines' steps are profiled on one card,
#                     and at 256 x 512, where vLLM's steps varied 18-24 ms at 453-607 W (card GPU-14b1be71)
#   d                 the vLLM campaign's batch-256 points of nemotron-h-4b, CAMPAIGN_S seconds
#   e                 the campaign's last point, qwen3.5-4b at 256 x 8192, CAMPAIGN_S seconds
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
case $STEP in
a)
  plan native qwen3.5-4b 32x2048,32x8192 ${DEADLINE_A1:-170} native.log
  for ctx in 8192 2048; do
    timeout 100 python3 bench/gpu_run.py --out /tmp/s/kernels-gdn-$ctx --steps profile --context $ctx \
        --points qwen3.5-4b:32 2>&1 | tail -20 | tee -a "$OUT/kernels.log"
    cp /tmp/s/kernels-gdn-$ctx/engine.json "$OUT/kernels-qwen3.5-32x$ctx.json"
  done
  timeout 150 python3 bench/gpu_run.py --out /tmp/s/mla-splits --steps mla_attn --mla-sweep splits \
      --mla-archs qwen3-4b-transmla 2>&1 | grep "mla splits\|Error" | tail -20 | tee "$OUT/mla-splits.log"
  cp /tmp/s/mla-splits/engine.json "$OUT/mla-splits.json"
  ;;
b)
  TORCH_LOGS=output_code timeout 150 python3 bench/gpu_run.py --out /tmp/s/kernels-mamba2 --steps profile \
      --points mamba2-2.7b:128 > /tmp/s/mamba2-code.log 2>&1
  grep "gpu_run profile\|Error" /tmp/s/mamba2-code.log | tail -5 | tee "$OUT/kernels-mamba2.log"
  gzip -c /tmp/s/mamba2-code.log > "$OUT/mamba2-128x2048-inductor-code.log.gz"
  cp /tmp/s/kernels-mamba2/engine.json "$OUT/kernels-mamba2-128x2048.json"
  ;;
c)
  bash /tmp/vllm-parts/install.sh || exit 1
  # one engine for the three points, each at its own context (arch:batch:context)
  timeout 320 python3 bench/gpu_run.py --out /tmp/s/vprof-gdn --steps vllm_profile \
      --points qwen3.5-4b:32:8192,qwen3.5-4b:32:2048,qwen3.5-4b:256:512 2>&1 \
      | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tail -20 | tee "$OUT/vllm-profile.log"
  cp /tmp/s/vprof-gdn/engine.json "$OUT/vllm-profile-qwen3.5.json"
  cp /tmp/s/vprof-gdn/log.txt "$OUT/vllm-profile-qwen3.5.log"  # a traceback, if any, is there
  ;;
d)
  campaign ${CAMPAIGN_S:-550} campaign-d.log 'architectures=[nemotron-h-4b] batch_sizes=[256]'
  ;;
e)
  campaign ${CAMPAIGN_S:-350} campaign-e.log 'architectures=[qwen3.5-4b] batch_sizes=[256] contexts=[8192]'
  ;;
*)
  echo "unknown step $STEP; accepted: a b c d e" >&2; exit 2
  ;;
esac
(cd /tmp/s && [ -d cmp ] && tar czf "$OUT/cmp-$STEP.tgz" cmp)
