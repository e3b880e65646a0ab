#!/usr/bin/env bash
# H200 session of 2026-12-03 (second): the reference campaign's settings in one native group, first with an
# empty compile cache, then with every shape cached. Calls sent back to back keep one machine (files under
# /tmp stay between them); a call that finds the compile cache empty says so and warms it first, with a
# short protocol. Default lever only: nothing here changes a GPU setting.
#   PHASE_ENERGY_GIT_COMMIT=<commit> bash bench/h200-2026-12-03b/session.sh STEP .whl
# STEP (each call under 600 s):
#   refcold   config/h200-reference.yaml's settings, qwen3-4b's 15 points, one native group process, compile
#             cache empty (a fresh machine)
#   refwarm   the same points again into another folder, every shape cached by refcold
#   q35       qwen3.5-4b at batch 1, 32, 128 and context 512, 2048: compiled with the short protocol, then
#             measured with the reference settings in one group, every shape cached
set -uo pipefail
STEP=$1; shift
source bench/h200-session.sh "$@" || exit 1
cache_state() {  # what the compile cache holds when the step starts
  echo "compile cache $PHASE_ENERGY_COMPILE_CACHE: $(find "$PHASE_ENERGY_COMPILE_CACHE" -type f 2>/dev/null | wc -l) files, $(du -sh "$PHASE_ENERGY_COMPILE_CACHE" 2>/dev/null | cut -f1)" | tee -a "$OUT/cache.log"
}
left() { echo $(( 575 - SECONDS )); }  # seconds of the call left for a campaign
cache_state
case $STEP in
refcold) campaign_native refcold "$(left)" "architectures=[qwen3-4b]" ;;
refwarm)
  if [ -z "$(ls -A "$PHASE_ENERGY_COMPILE_CACHE" 2>/dev/null)" ]; then
    echo "a fresh machine: the compile cache is empty; warming it with the short protocol first" | tee -a "$OUT/cache.log"
    campaign_native refwarm0 260 "architectures=[qwen3-4b] $SHORT"
    cache_state
  fi
  campaign_native refwarm "$(left)" "architectures=[qwen3-4b]"
  ;;
q35)
  POINTS="architectures=[qwen3.5-4b] batch_sizes=[1,32,128] contexts=[512,2048]"
  campaign_native q35w0 300 "$POINTS $SHORT"
  cache_state
  campaign_native q35 "$(left)" "$POINTS"
  ;;
*) echo "unknown step $STEP; accepted: refcold refwarm q35" >&2; exit 2 ;;
esac
echo "call's wall time: $SECONDS s" | tee -a "$OUT/cache.log"
