#!/usr/bin/env bash
# A record: the second GPU call of session 15. (1) The A/B of big vision graph buckets on cuDNN
# varlen against FlashAttention varlen (graph_cudnn_ab.py: call9's held-out trace on call9's tuned
# grid, in turns); (2) the GPU tests of it and of cuDNN's uncaptured calls; (3) the cost model on the
# card with a grid tuned there, with cuDNN graph buckets the default (costs_gpu.sh in full);
# (4) split_gap_probe.py --overlap: a long video's pieces one after another, alternating two
# streams, and time per frame pair against piece size.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call10
source "$(dirname "$0")/gpu_setup.sh"
c9=docs/benchmarks/2026-12-07-s15/call9
t0=$SECONDS
timeout "${AB_S:-130}" python3 benchmarks/records/graph_cudnn_ab.py "$c9/trace_heldout.jsonl" "$c9/grid_tuned_grid.yaml" \
  --rounds 1 --out "$out/graph_cudnn_ab.jsonl" >"$work/graph_cudnn_ab.log" 2>&1
echo "== graph cudnn A/B: exit $? in $((SECONDS - t0)) s"; cut -c1-300 "$work/graph_cudnn_ab.log" | tail -n 6
t0=$SECONDS
timeout "${TESTS_S:-80}" python3 -m pytest -q -m gpu -p no:cacheprovider -v \
  "tests/test_gpu.py::test_big_graph_bucket_on_cudnn_varlen_matches_hf" \
  "tests/test_gpu.py::test_big_uncaptured_calls_on_cudnn_varlen_match_hf" \
  "tests/test_gpu.py::test_every_bucket_replays_to_the_eager_result" >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error|^E  |cudnn graph bucket" "$out/tests.log" | cut -c1-300 | tail -n 14
pack
costs_part "${COSTS_S:-205}"
t0=$SECONDS
timeout "${PROBE_S:-100}" python3 benchmarks/records/split_gap_probe.py --overlap --rounds 2 --out "$out/split_gap" >"$work/split_gap.log" 2>&1
echo "== split gap: exit $? in $((SECONDS - t0)) s"; grep -v '"case": "profile"' "$work/split_gap.log" | cut -c1-900 | tail -n 4
rm -f "$out"/split_gap/trace_*.json.gz
pack
