#!/usr/bin/env bash
# A record: the GPU call after exact-layout graphs went off by default and calibration priced each
# replay's host plan. In order, each part under its own limit: the cost model on the card
# (benchmarks/costs_gpu.sh: calibrate, default and tuned grid predicted vs measured on a held-out
# trace), every GPU test, the long-media probe (bounded memory, cut vs uncut, piece size A/B; its
# cases in PROBE_CASES), then M*'s nodes against omnienc's. Few files under $OUT; the rest in results.tgz, rebuilt after each part.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call5
source "$(dirname "$0")/gpu_setup.sh"
python3 -c "import soundfile, cudnn, mstar; print('soundfile, cudnn frontend, mstar: importable')" 2>&1 | tail -n 1
costs_part "${COSTS_S:-190}"
t0=$SECONDS
timeout "${TESTS_S:-170}" python3 -m pytest -q -m gpu -p no:cacheprovider -v tests/test_gpu_long.py \
  tests/test_gpu_mstar.py tests/test_gpu_costs.py tests/test_encode.py tests/test_gpu.py tests/test_gpu_ops.py \
  tests/test_preprocess.py tests/test_gpu_multi.py >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error" "$out/tests.log" | tail -n 12
pack
t0=$SECONDS
timeout "${PROBE_S:-110}" python3 benchmarks/records/long_media_probe.py --out "$out" \
  --cases "${PROBE_CASES:-video10m,audio60m,video1m,audio10m,mixed32}" >"$work/long_media.log" 2>&1
echo "== long media: exit $? in $((SECONDS - t0)) s"; cut -c1-330 "$out/long_media.jsonl" 2>/dev/null
pack
t0=$SECONDS
timeout "${MSTAR_S:-80}" python3 benchmarks/mstar_nodes.py --out "$work/mstar" --budget-s 5 --repeats 8 >"$work/mstar.log" 2>&1
echo "== mstar nodes: exit $? in $((SECONDS - t0)) s"; cat "$work/mstar/mstar_nodes.md" 2>/dev/null | head -n 20
pack
