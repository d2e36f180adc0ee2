#!/usr/bin/env bash
# A record: the GPU call after dense attention for uncaptured runs went off by default. The cost
# model on the card (benchmarks/costs_gpu.sh: calibrate, the default grid and the grid tuned in
# call6 on the same trace seeds, predicted vs measured on the held-out trace), then the GPU tests changed since call7 (the size-failure test on a
# 4-minute video, encode's float32 reference on the GPU, dense runs with dense_after set).
set -uo pipefail
out=${OUT:-out/gpu}; mkdir -p "$out"; work=/tmp/call8; mkdir -p "$work"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/soundfile-*.whl .whl/cffi-*.whl \
  .whl/pycparser-*.whl >>"$work/install.log" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-cudnn .whl/nvidia_cudnn_frontend*.whl \
  >>"$work/install.log" 2>&1
export PYTHONPATH=/tmp/site-cudnn:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
pack() { tar -czf "$out/results.tgz" -C "$work" . 2>/dev/null; }
t0=$SECONDS
name=costs_h100.yaml; grep -q H200 "$out/card.txt" && name=costs_h200.yaml
TUNED_GRID=docs/benchmarks/2026-12-07-s14/call6/grid_tuned_grid.yaml COSTS_NAME=$name OUT=$work/costs BUDGET=${COSTS_S:-120} timeout $((${COSTS_S:-120} + 10)) bash benchmarks/costs_gpu.sh \
  >"$work/costs.log" 2>&1
echo "== costs: exit $? in $((SECONDS - t0)) s"
cp "$work/costs/costs_summary.md" "$work/costs/$name" "$out/" 2>/dev/null; head -n 40 "$out/costs_summary.md" 2>/dev/null
pack
t0=$SECONDS
timeout "${TESTS_S:-60}" python3 -m pytest -q -m gpu -p no:cacheprovider -v \
  "tests/test_gpu_long.py::test_runtime_serves_after_a_request_failed_for_its_size" \
  "tests/test_encode.py::test_encode_on_cuda" "tests/test_gpu.py::test_dense_eager_runs_match_hf" >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error|^E  " "$out/tests.log" | cut -c1-400 | tail -n 12
pack
