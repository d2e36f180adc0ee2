#!/usr/bin/env bash
# A record: the last GPU call of the M*, renovation, long-media and cost-model work: the long-media
# probe (bounded memory; cut vs uncut; mixed32 bounded vs unbounded), the cost model on the card
# (benchmarks/costs_gpu.sh), then the GPU tests, the newest first, for the time left. Each part
# bounded; few files under $OUT (what comes back is capped), the rest in results.tgz, rebuilt after each part.
set -uo pipefail
out=${OUT:-out/gpu}; mkdir -p "$out"; work=/tmp/call4; mkdir -p "$work"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/mstar_ai-*.whl .whl/pyzmq-*.whl \
  >>"$work/install.log" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-cudnn .whl/nvidia_cudnn_frontend*.whl \
  >>"$work/install.log" 2>&1
export PYTHONPATH=/tmp/site-cudnn:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
pack() { tar -czf "$out/results.tgz" -C "$work" . 2>/dev/null; }
t0=$SECONDS
timeout "${PROBE_S:-90}" python3 benchmarks/records/long_media_probe.py --out "$out" >"$work/long_media.log" 2>&1
echo "== long media: exit $? in $((SECONDS - t0)) s"; cut -c1-400 "$out/long_media.jsonl" 2>/dev/null
pack
t0=$SECONDS
name=costs_h100.yaml; grep -q H200 "$out/card.txt" && name=costs_h200.yaml
COSTS_NAME=$name OUT=$work/costs BUDGET=${COSTS_S:-150} timeout $((${COSTS_S:-150} + 10)) bash benchmarks/costs_gpu.sh \
  >"$work/costs.log" 2>&1
echo "== costs: exit $? in $((SECONDS - t0)) s"
cp "$work/costs/costs_summary.md" "$work/costs/$name" "$out/" 2>/dev/null; head -n 60 "$out/costs_summary.md" 2>/dev/null
pack
t0=$SECONDS
timeout "${TESTS_S:-200}" python3 -m pytest -q -m gpu -s -p no:cacheprovider -v tests/test_gpu_long.py \
  tests/test_gpu_mstar.py tests/test_gpu_costs.py tests/test_gpu.py tests/test_gpu_ops.py tests/test_preprocess.py tests/test_encode.py \
  tests/test_gpu_multi.py >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error" "$out/tests.log" | tail -n 12
pack
