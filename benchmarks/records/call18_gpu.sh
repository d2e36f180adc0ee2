#!/usr/bin/env bash
# A record of a GPU call: (1) the start-up calibration as M*'s node runs it, after capturing the
# serving grid in the same process, on a machine just started (startup_calibration_probe.py);
# (2) held-out traces as serving meets them: a grid tuned within 40 graphs with the card's packaged
# model on the tuning trace (seed 3101), then on held-out seeds 3102 and 3103 the default grid and
# that one in turns (benchmarks/heldout_ab.py), the process warmed on the tuning trace and the
# per-frame-shape cache emptied before every run. On an H100 call 16's second calibration prices
# too; on an H200 the H100 model does, flagged as another card's. Seed 3102 is the held-out trace
# of earlier calls; 3103 is the next seed, not chosen by its prediction. Run with COMMIT=<hash>
# (~350 s).
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call18
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
t0=$SECONDS
timeout 200 python3 benchmarks/records/startup_calibration_probe.py --out "$out/startup.jsonl" >"$work/probe.log" 2>&1
echo "== start-up probe: exit $? in $((SECONDS - t0)) s"; tail -n 2 "$work/probe.log"
cli=(python3 -m omnienc.tools.cli)
for seed in 3101 3102 3103; do
  "${cli[@]}" tracegen -o "$work/trace_$seed.jsonl" --seconds 40 --rate 20 --seed $seed | tail -n 1
done
model=configs/$costs_name
costs=(--costs "$model" --also-costs "second=docs/benchmarks/2026-12-07-s18/call16/quick2.yaml")
[[ $costs_name == costs_h200.yaml ]] && costs=(--costs "$model" --also-costs "h100=configs/costs_h100.yaml")
timeout 120 "${cli[@]}" tune --trace "$work/trace_3101.jsonl" --costs "$model" --max-graphs 40 \
  -o "$out/grid_tuned_40.yaml" >"$work/tune.log" 2>&1
echo "== tune ($model, 40 graphs): exit $?"; grep -E "^(writing|tuned:|base :)" "$work/tune.log"
for seed in 3102 3103; do
  t0=$SECONDS
  timeout 240 python3 benchmarks/heldout_ab.py --trace "$work/trace_$seed.jsonl" --warm-trace "$work/trace_3101.jsonl" \
    --fresh-shapes "${costs[@]}" --grid "tuned_40=$out/grid_tuned_40.yaml" \
    --json-out "$out/heldout_$seed.json" >"$out/heldout_$seed.md" 2>"$work/heldout.err"
  echo "== held-out seed $seed, warm process and fresh shapes: exit $? in $((SECONDS - t0)) s"; cat "$out/heldout_$seed.md"
  tail -n 3 "$work/heldout.err"
done
