#!/usr/bin/env bash
# A record, written for the next GPU call (session 18 had no device time left for it): (1) the
# start-up calibration as M*'s node runs it, after capturing the serving grid in the same process,
# on a machine just started (startup_calibration_probe.py); (2) call 15's held-out trace
# as serving meets it: the process warmed on the tuning trace (seed 3101), the per-frame-shape
# cache emptied before every run, the default grid and call 15's 40-graph grid in turns, priced by
# the packaged H100 model and call 16's two calibrations. Run with COMMIT=<hash> (~250 s).
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call18
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
t0=$SECONDS
timeout 200 python3 benchmarks/records/startup_calibration_probe.py --out "$out/startup.jsonl" >"$work/probe.log" 2>&1
echo "== start-up probe: exit $? in $((SECONDS - t0)) s"; tail -n 2 "$work/probe.log"
cli=(python3 -m omnienc.tools.cli)
"${cli[@]}" tracegen -o "$work/trace_tune.jsonl" --seconds 40 --rate 20 --seed 3101 | tail -n 1
"${cli[@]}" tracegen -o "$work/trace_heldout.jsonl" --seconds 40 --rate 20 --seed 3102 | tail -n 1
prev=docs/benchmarks/2026-12-07-s18
t0=$SECONDS
timeout 300 python3 benchmarks/heldout_ab.py --trace "$work/trace_heldout.jsonl" --warm-trace "$work/trace_tune.jsonl" \
  --fresh-shapes --costs configs/costs_h100.yaml --also-costs "second=$prev/call16/quick2.yaml" \
  --also-costs "call15_full=$prev/call15/full_costs_h100.yaml" --grid "tuned_40=$prev/call15/grid_tuned_grid_40.yaml" \
  --json-out "$out/heldout_serving.json" >"$out/heldout_serving.md" 2>"$work/heldout.err"
echo "== heldout, warm process and fresh shapes: exit $? in $((SECONDS - t0)) s"; cat "$out/heldout_serving.md"
tail -n 3 "$work/heldout.err"
