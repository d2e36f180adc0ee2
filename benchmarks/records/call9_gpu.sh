#!/usr/bin/env bash
# A record: the first GPU call of session 15. On whatever card comes (H100 or H200): the cost model
# on the card with a grid tuned there (benchmarks/costs_gpu.sh in full: calibrate, default grid,
# tune --verify, tuned grid, predicted vs measured on the held-out trace); the GPU tests changed
# since call7 (the size-failure test on a 4-minute video, encode's float32 reference on the GPU,
# dense runs with dense_after set); then where a 1-minute video's cut run loses time against its
# uncut run (split_gap_probe.py: turns, then one profiled run of each).
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call9
source "$(dirname "$0")/gpu_setup.sh"
costs_part "${COSTS_S:-205}"
t0=$SECONDS
timeout "${TESTS_S:-70}" python3 -m pytest -q -m gpu -p no:cacheprovider -v \
  "tests/test_gpu_long.py::test_runtime_serves_after_a_request_failed_for_its_size" \
  "tests/test_encode.py::test_encode_on_cuda" "tests/test_gpu.py::test_dense_eager_runs_match_hf" >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error|^E  " "$out/tests.log" | cut -c1-400 | tail -n 12
t0=$SECONDS
timeout "${PROBE_S:-90}" python3 benchmarks/records/split_gap_probe.py --out "$out/split_gap" >"$work/split_gap.log" 2>&1
echo "== split gap: exit $? in $((SECONDS - t0)) s"; grep -v '"case": "profile"' "$work/split_gap.log" | cut -c1-600 | tail -n 6
pack
