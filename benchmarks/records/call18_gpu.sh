#!/usr/bin/env bash
# A record, written for the next GPU call (session 18 had no device time left for it): (1) the
# start-up calibration as M*'s node runs it, after capturing the serving grid in the same process,
# on a machine just started (startup_calibration_probe.py); (2) call 15's held-out trace
# as serving meets it: the process warmed on the tuning trace (seed 3101), the per-frame-shape
# cache emptied before every run, the default grid and call 15's 40-graph grid in turns, priced by
# the packaged H100 model and call 16's two calibrations. On an H200 (calls for either card may
# get one) the card's packaged model prices instead, the H100 models are flagged as another card's,
# and a 40-graph grid tuned with the H200 model on the tuning trace is measured too.
# Run with COMMIT=<hash> (~250 s on an H100, ~330 s on an H200).
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
costs=(--costs configs/costs_h100.yaml --also-costs "second=$prev/call16/quick2.yaml"
  --also-costs "call15_full=$prev/call15/full_costs_h100.yaml")
grids=(--grid "tuned_40=$prev/call15/grid_tuned_grid_40.yaml")
if [[ $costs_name == costs_h200.yaml ]]; then
  costs=(--costs configs/costs_h200.yaml --also-costs "h100=configs/costs_h100.yaml")
  t0=$SECONDS
  timeout 120 "${cli[@]}" tune --trace "$work/trace_tune.jsonl" --costs configs/costs_h200.yaml --max-graphs 40 \
    -o "$out/grid_h200_40.yaml" >"$work/tune.log" 2>&1
  echo "== tune (H200 model, 40 graphs): exit $? in $((SECONDS - t0)) s"; grep -E "^(writing|tuned:|base :)" "$work/tune.log"
  [[ -s $out/grid_h200_40.yaml ]] && grids+=(--grid "h200_40=$out/grid_h200_40.yaml")
fi
t0=$SECONDS
timeout 330 python3 benchmarks/heldout_ab.py --trace "$work/trace_heldout.jsonl" --warm-trace "$work/trace_tune.jsonl" \
  --fresh-shapes "${costs[@]}" "${grids[@]}" \
  --json-out "$out/heldout_serving.json" >"$out/heldout_serving.md" 2>"$work/heldout.err"
echo "== heldout, warm process and fresh shapes: exit $? in $((SECONDS - t0)) s"; cat "$out/heldout_serving.md"
tail -n 3 "$work/heldout.err"
