#!/usr/bin/env bash
# A record: the GPU call after exact-layout graphs went off by default and calibration priced each
# replay's host plan. In order, each part under its own limit: the cost model on the card
# (benchmarks/costs_gpu.sh: calibrate, default and tuned grid predicted vs measured on a held-out
# trace), every GPU test, the long-media probe (bounded memory, cut vs uncut, piece size A/B; its
# cases in PROBE_CASES), then M*'s nodes against omnienc's. Few files under $OUT; the rest in results.tgz, rebuilt after each part.
set -uo pipefail
out=${OUT:-out/gpu}; mkdir -p "$out"; work=/tmp/call5; mkdir -p "$work"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/mstar_ai-*.whl .whl/pyzmq-*.whl \
  .whl/soundfile-*.whl .whl/cffi-*.whl .whl/pycparser-*.whl >>"$work/install.log" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-cudnn .whl/nvidia_cudnn_frontend*.whl \
  >>"$work/install.log" 2>&1
export PYTHONPATH=/tmp/site-cudnn:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
python3 -c "import soundfile, cudnn, mstar; print('soundfile, cudnn frontend, mstar: importable')" 2>&1 | tail -n 1
pack() { tar -czf "$out/results.tgz" -C "$work" . 2>/dev/null; }
t0=$SECONDS
name=costs_h100.yaml; grep -q H200 "$out/card.txt" && name=costs_h200.yaml
COSTS_NAME=$name OUT=$work/costs BUDGET=${COSTS_S:-190} timeout $((${COSTS_S:-190} + 10)) bash benchmarks/costs_gpu.sh \
  >"$work/costs.log" 2>&1
echo "== costs: exit $? in $((SECONDS - t0)) s"
cp "$work/costs/costs_summary.md" "$work/costs/$name" "$out/" 2>/dev/null; head -n 40 "$out/costs_summary.md" 2>/dev/null
pack
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
