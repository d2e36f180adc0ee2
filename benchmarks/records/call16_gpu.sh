#!/usr/bin/env bash
# A record: the second GPU call of session 18. (1) The quick calibration, as now trimmed (vision
# replay point 3136 kept, audio 1200 dropped), twice, each in its own process: its time on a machine
# just started and on one whose caches are warm, against the 20 s a start-up calibration may take;
# (2) call 15's held-out trace with the default grid and call 15's 40-graph grid, in turns, priced by
# both new calibrations and by call 15's quick and full models: whether the default grid's eager
# runs are priced high again in a process's steady state. Run with COMMIT=<hash> (~200 s).
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call16
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
cli=(python3 -m omnienc.tools.cli)
prev=docs/benchmarks/2026-12-07-s18/call15
for i in 1 2; do
  t0=$SECONDS
  timeout 90 "${cli[@]}" capture --calibrate-quick -o "$out/quick$i.yaml" >"$work/quick$i.log" 2>&1
  echo "quick calibration $i: exit $? in $((SECONDS - t0)) s: $(grep '^wrote' "$work/quick$i.log")" | tee -a "$out/calibrations.txt"
done
"${cli[@]}" tracegen -o "$work/trace_heldout.jsonl" --seconds 40 --rate 20 --seed 3102 | tail -n 1
t0=$SECONDS
timeout 240 python3 benchmarks/heldout_ab.py --trace "$work/trace_heldout.jsonl" --costs "$out/quick1.yaml" \
  --also-costs "second=$out/quick2.yaml" --also-costs "call15_quick=$prev/costs_h100.yaml" \
  --also-costs "call15_full=$prev/full_costs_h100.yaml" --grid "tuned_40=$prev/grid_tuned_grid_40.yaml" \
  --json-out "$out/heldout.json" >"$out/heldout.md" 2>"$work/heldout.err"
echo "== heldout: exit $? in $((SECONDS - t0)) s"; cat "$out/heldout.md"; tail -n 3 "$work/heldout.err"
