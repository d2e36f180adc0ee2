#!/usr/bin/env bash
# A record of a GPU call: why call 18's warm-process runs were slower than the packaged model
# predicted. The machine's own quick calibration (`omnienc capture --calibrate-quick`, its own
# process), a 40-graph grid tuned with it on the tuning trace (seed 3101), then
# fresh_shapes_probe.py on held-out seed 3102: default and tuned grids with cached and with fresh
# frame shapes, in turns, in one process, priced by this machine's calibration, the packaged model
# and a calibration taken in the probe's own process after its runs. Run with COMMIT=<hash> (~230 s).
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call19
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
cli=(python3 -m omnienc.tools.cli)
t0=$SECONDS
timeout 90 "${cli[@]}" capture --calibrate-quick -o "$out/quick.yaml" >"$work/calibrate.log" 2>&1
echo "== calibrate-quick: exit $? in $((SECONDS - t0)) s"; tail -n 1 "$work/calibrate.log"
for seed in 3101 3102; do
  "${cli[@]}" tracegen -o "$work/trace_$seed.jsonl" --seconds 40 --rate 20 --seed $seed | tail -n 1
done
model=$out/quick.yaml; [[ -s $model ]] || model=configs/$costs_name
timeout 120 "${cli[@]}" tune --trace "$work/trace_3101.jsonl" --costs "$model" --max-graphs 40 \
  -o "$out/grid_tuned_40.yaml" >"$work/tune.log" 2>&1
echo "== tune ($model, 40 graphs): exit $?"; grep -E "^(writing|tuned:|base :)" "$work/tune.log"
t0=$SECONDS
timeout 330 python3 benchmarks/records/fresh_shapes_probe.py --trace "$work/trace_3102.jsonl" \
  --warm-trace "$work/trace_3101.jsonl" --grid "tuned_40=$out/grid_tuned_40.yaml" --costs "machine=$model" \
  --costs "packaged=configs/$costs_name" --out "$out/probe.json" >"$out/probe.md" 2>"$work/probe.err"
echo "== fresh-shapes probe: exit $? in $((SECONDS - t0)) s"; cat "$out/probe.md"; tail -n 3 "$work/probe.err"
