#!/usr/bin/env bash
# A record: the third GPU call of session 15. (1) The A/B of big vision graph buckets on cuDNN
# varlen against FlashAttention varlen again (call10's crashed at its 4th run: a dropped runtime's
# graphs destroyed by the garbage collector during the next capture; captures now hold the
# collector off), the runs in turns; (2) the GPU tests of that and of cuDNN graph buckets; (3) on an
# H100 (call10 ran on an H200), the cost model with a grid tuned there; (4) long media through the
# runtime of both encoders with the default bound (since a5af686 it holds a merged eager call): a
# 10-minute video and a 60-minute audio within the bound, and a 1-minute video cut against uncut,
# six rounds in turns. Not run in session 15 (no device time left); run it with COMMIT=<hash>. The
# parts run in the order of what they decide (tests, costs, long media, the A/B) within TOTAL_S seconds.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call11
source "$(dirname "$0")/gpu_setup.sh"
c9=docs/benchmarks/2026-12-07-s15/call9
deadline=$((SECONDS + ${TOTAL_S:-540}))  # the call's own limit: every part gets what is left, up to its share
within() { local left=$((deadline - SECONDS)); ((left < 1)) && left=1; ((left < $1)) && echo "$left" || echo "$1"; }  # never 0: timeout 0 waits forever
t0=$SECONDS
timeout "$(within "${TESTS_S:-80}")" python3 -m pytest -q -m gpu -p no:cacheprovider -v \
  "tests/test_gpu.py::test_capture_survives_a_dropped_runtime_collected_meanwhile" \
  "tests/test_gpu.py::test_big_graph_bucket_on_cudnn_varlen_matches_hf" >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error|^E  " "$out/tests.log" | cut -c1-300 | tail -n 8
pack
if [[ $costs_name == costs_h100.yaml || ${FORCE_COSTS:-0} == 1 ]]; then costs_part "$(within "${COSTS_S:-205}")"; fi
t0=$SECONDS
timeout "$(within "${PROBE_S:-200}")" python3 benchmarks/records/long_media_probe.py --cases video10m,audio60m,video1m_turns \
  --out "$out/long_media" \
  >"$work/long_media.log" 2>&1
echo "== long media: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/long_media.log" | cut -c1-700 | tail -n 3
pack
t0=$SECONDS
if (($(within 150) >= 60)); then
  timeout "$(within "${AB_S:-150}")" python3 benchmarks/records/graph_cudnn_ab.py "$c9/trace_heldout.jsonl" "$c9/grid_tuned_grid.yaml" \
    --rounds 1 --out "$out/graph_cudnn_ab.jsonl" >"$work/graph_cudnn_ab.log" 2>&1
  echo "== graph cudnn A/B: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/graph_cudnn_ab.log" | cut -c1-240 | tail -n 6
else echo "== graph cudnn A/B: skipped, $((deadline - SECONDS)) s left"; fi
pack
