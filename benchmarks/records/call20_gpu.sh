#!/usr/bin/env bash
# A record of a GPU call: the layout of a new frame shape priced. fresh_shapes_probe.py as in call 19
# (held-out seed 3102, warm on 3101, the default grid and call 19's 40-graph grid, cached and fresh
# frame shapes in turns), now priced by the quick calibration taken in the probe's process after its
# runs, which measures the layout point, fresh runs priced with every shape new. Run with
# COMMIT=<hash> (~150 s). Written in session 19, not yet run: its device time was spent.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call20
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
cli=(python3 -m omnienc.tools.cli)
for seed in 3101 3102; do
  "${cli[@]}" tracegen -o "$work/trace_$seed.jsonl" --seconds 40 --rate 20 --seed $seed | tail -n 1
done
t0=$SECONDS
timeout 170 python3 benchmarks/records/fresh_shapes_probe.py --trace "$work/trace_3102.jsonl" \
  --warm-trace "$work/trace_3101.jsonl" --grid "tuned_40=docs/benchmarks/2026-12-08-s19/call19/grid_tuned_40.yaml" \
  --costs "packaged=configs/$costs_name" --out "$out/probe.json" >"$out/probe.md" 2>"$work/probe.err"
echo "== fresh-shapes probe: exit $? in $((SECONDS - t0)) s"; cat "$out/probe.md"; tail -n 3 "$work/probe.err"
grep -A2 "layout:" "$out/probe_inproc.yaml"
