#!/usr/bin/env bash
# A record: a short GPU call of session 17, for whichever card comes while H100s are not lent.
# (1) The GPU test of exact-layout graphs, which now holds a layout past graph_cudnn_tokens that
# captures on cuDNN varlen; (2) long media: a 10-minute 720p video within the bound, with what the
# warm-up leaves allocated and what stays after the results are dropped (call11 read a peak below
# the outputs), and the 1-minute video in even pieces against uncut, filled and bucket-sized pieces,
# eight rounds in turns. Run with COMMIT=<hash>, within TOTAL_S seconds.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call13
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
deadline=$((SECONDS + ${TOTAL_S:-300}))
within() { local left=$((deadline - SECONDS)); ((left < 1)) && left=1; ((left < $1)) && echo "$left" || echo "$1"; }  # never 0: timeout 0 waits forever
t0=$SECONDS
timeout "$(within "${TESTS_S:-120}")" python3 -m pytest -q -m gpu -p no:cacheprovider -v -s \
  "tests/test_gpu.py::test_exact_graphs_replay_repeated_layouts" >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error|^E  |^exact" "$out/tests.log" | cut -c1-300 | tail -n 10
pack
t0=$SECONDS
timeout "$(within "${PROBE_S:-200}")" python3 benchmarks/records/long_media_probe.py --cases video10m,video1m_turns \
  --out "$out/long_media" >"$work/long_media.log" 2>&1
echo "== long media: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/long_media.log" | cut -c1-900 | tail -n 3
pack
