#!/usr/bin/env bash
# A record: the GPU call of session 18. (1) The cost model on the card (costs_gpu.sh) with the quick
# calibration's new replay points (vision 3136, audio 1200), the full calibration priced beside it,
# a grid tuned within 24 graphs (verified) and one within 40, and every grid measured on the held-out
# trace in one process, in turns (heldout_ab.py); (2) what stays allocated after a launch's results
# are dropped (held_memory_probe.py), in what time is left. Run with COMMIT=<hash>, within TOTAL_S s.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call15
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
deadline=$((SECONDS + ${TOTAL_S:-560}))
within() { local left=$((deadline - SECONDS)); ((left < 1)) && left=1; ((left < $1)) && echo "$left" || echo "$1"; }  # never 0: timeout 0 waits forever
costs_part "$(within "${COSTS_S:-440}")" FULL=1 MORE_GRAPHS=40 COMMIT="${COMMIT:-unknown}"
cp "$work/costs/heldout.json" "$work/costs/heldout.log" "$work/costs/full_$costs_name" "$out/" 2>/dev/null
for g in "$work"/costs/grid_*.yaml; do cp "$g" "$out/" 2>/dev/null; done
cp "$work"/costs/trace_*.jsonl "$out/" 2>/dev/null
if ((deadline - SECONDS >= 40)); then
  t0=$SECONDS
  timeout "$(within 150)" python3 benchmarks/records/held_memory_probe.py --out "$out/held" >"$work/held.log" 2>&1
  echo "== held memory: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/held.log" | cut -c1-400 | tail -n 10
else
  echo "== held memory: skipped, $((deadline - SECONDS)) s left"
fi
pack
