# What every H200 session script shares, sourced after it has taken its STEP off the arguments:
#   source bench/h200-session.sh "$@"      # the vLLM part folders the call carries, if any
# Sets the environment (no GPU setting is touched), installs the carried wheels once per machine, records
# the card (nvidia-smi, appended to $OUT/nvidia-smi.csv) and defines plan (bench/engine_compare.py plan) and
# campaign (phase-energy campaign of the vLLM grid, resumed from reference-data/h200-vllm), campaign_native (a
# native group with config/h200-reference.yaml's settings, or SHORT's: a short protocol that fills the compile cache).
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export PHASE_ENERGY_GIT_COMMIT=${PHASE_ENERGY_GIT_COMMIT:-unknown} PHASE_ENERGY_COMPILE_CACHE=/tmp/s/cc-bench
mkdir -p /tmp/vllm-parts /tmp/s
for part in "$@"; do case $part in .vllm-p*) cp "$part"/* /tmp/vllm-parts/;; esac; done
if [ ! -d /tmp/pe-site/fla ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pe-site .whl/*.whl || return 1
fi
export PYTHONPATH=/tmp/pe-site:/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,uuid,serial,driver_version,power.limit,clocks.max.sm --format=csv | tee -a "$OUT/nvidia-smi.csv"
plan() {  # engines presets points deadline_s log (OUT_DIR: where the traces go, /tmp/s/cmp by default;
  # STEP_TIMINGS: vLLM's points once per entry, as repetitions 0, 1, ...)
  python3 bench/engine_compare.py plan --config config/h200-engines.yaml --out "${OUT_DIR:-/tmp/s/cmp}" --engines "$1" \
      --presets "$2" --points "$3" --deadline-s "$4" ${STEP_TIMINGS:+--step-timings $STEP_TIMINGS} 2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tee -a "$OUT/$5"
}
campaign() {  # seconds log [config overrides of the chunk, e.g. 'architectures=[mamba2-2.7b] batch_sizes=[1,8]']
  mkdir -p /tmp/s/h200-vllm/traces
  # the points measured so far travel with the tree (reference-data/h200-vllm): the campaign skips them
  [ -d reference-data/h200-vllm/traces ] && cp -rn reference-data/h200-vllm/traces/. /tmp/s/h200-vllm/traces/
  python3 -m phase_energy.cli campaign --configfile config/h200-engines.yaml --into /tmp/s/h200-vllm/traces \
      --time-limit-s "$1" --group-engines vllm \
      --chunk "engines=[vllm] batch_sizes=[1,8,32,128,256] contexts=[512,2048,8192] results=/tmp/s/campaign ${3:-}" \
      2>&1 | grep -v "^INFO\|^WARNING\|^(EngineCore\|^\[" | tee "$OUT/$2"
  (cd /tmp/s && tar czf "$OUT/h200-vllm.tgz" h200-vllm)
}
REF=config/h200-reference.yaml
SHORT="'measurement={warmup_runs: 1, idle_s: 0, min_counter_ticks: 1, prefill_trials: 1, decode_trials: 1, decode_windows: 1, decode_window_steps: 32, pause_s: 0, lead_in_s: 0.1, decode_lead_in_s: 0.1, prefill_max_tokens: 65536}'"
campaign_native() {  # name seconds chunk: the native points of the chunk in one group, into /tmp/s/NAME
  python3 -m phase_energy.cli campaign --configfile $REF --into "/tmp/s/$1/traces" --time-limit-s "$2" \
      --group-engines native --chunk "engines=[native] results=/tmp/s/results-$1 $3" \
      2>&1 | grep -v "^INFO\|^WARNING" | tee "$OUT/$1.log"
  cp /tmp/s/results-$1/logs/campaign/*.log "$OUT/" 2>/dev/null
  (cd /tmp/s && tar czf "$OUT/$1.tgz" "$1")
}
