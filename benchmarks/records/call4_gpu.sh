#!/usr/bin/env bash
# A record: the last GPU call of the M*, renovation, long-media and cost-model work: every GPU test,
# the long-media probe (bounded memory; cut vs uncut; mixed32 bounded vs unbounded), then the cost
# model on the card (benchmarks/costs_gpu.sh). Each part bounded; everything also in results.tgz.
set -uo pipefail
out=${OUT:-out/gpu}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/mstar_ai-*.whl .whl/pyzmq-*.whl \
  >>"$out/install.log" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-cudnn .whl/nvidia_cudnn_frontend*.whl \
  >>"$out/install.log" 2>&1
export PYTHONPATH=/tmp/site-cudnn:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
t0=$SECONDS
timeout 220 python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/ >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error" "$out/tests.log" | tail -n 12
t0=$SECONDS
timeout 105 python3 benchmarks/records/long_media_probe.py --out "$out" >"$out/long_media.log" 2>&1
echo "== long media: exit $? in $((SECONDS - t0)) s"; cat "$out/long_media.jsonl" 2>/dev/null | cut -c1-400
t0=$SECONDS
name=costs_h100.yaml; grep -q H200 "$out/card.txt" && name=costs_h200.yaml
COSTS_NAME=$name OUT=$out/costs BUDGET=190 timeout 200 bash benchmarks/costs_gpu.sh >"$out/costs.log" 2>&1
echo "== costs: exit $? in $((SECONDS - t0)) s"; cat "$out/costs/costs_summary.md" 2>/dev/null | head -n 60
tar -czf "$out/results.tgz" -C "$out" --exclude results.tgz . 2>/dev/null
