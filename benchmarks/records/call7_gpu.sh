#!/usr/bin/env bash
# A record: the GPU call after pieces of an eager largest bucket grew to one uncaptured call's size
# and float32 stopped taking the cuBLASLt GELU epilogue. In order, each part under its own limit:
# the float32 GELU epilogue against torch's GELU (why float32 encode missed its reference); the cost
# model on the card (benchmarks/costs_gpu.sh, on an H200 only); dense attention for uncaptured runs on its held-out
# trace, on and off in turns (benchmarks/records/dense_trace_ab.py); the GPU tests of the changed
# code; the long-media probe (the piece-size A/B in turns, the 10-minute video's memory).
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call7
source "$(dirname "$0")/gpu_setup.sh"
timeout 60 python3 - <<'PY' 2>&1 | tee "$out/gelu_fp32.txt"
import torch
from omnienc.encoders.ops.linear_gelu import linear_gelu
torch.manual_seed(0)
for n in (64, 1152):
    x, w, b = torch.randn(4096, n, device="cuda"), torch.randn(4 * n, n, device="cuda") / n**0.5, torch.randn(4 * n, device="cuda")
    ref = linear_gelu(x.double(), w.double(), b.double(), "tanh", impl="torch")
    for impl in ("torch", "epilogue"):
        y = linear_gelu(x, w, b, "tanh", impl=impl).double()
        print(f"float32 linear+tanh-GELU, K={n}, {impl}: relative error vs float64 {((y - ref).norm() / ref.norm()).item():.2e}")
PY
# The cost model on the card only where it has not been measured today (an H200; COSTS=1 forces);
# else the dense A/B runs on the held-out trace of the costs script (same seed) with the H100 model
# calibrated in call6 on another host (its predictions are then indicative only).
if [[ $costs_name == costs_h200.yaml || ${COSTS:-0} == 1 ]]; then
  costs_part "${COSTS_S:-190}"
else
  mkdir -p "$work/costs"
  python3 -m omnienc.tools.cli tracegen -o "$work/costs/trace_heldout.jsonl" --seconds 40 --rate 20 --seed 3102 | tail -n 1
  model=docs/benchmarks/2026-12-07-s14/call6/costs_h100.yaml
fi
t0=$SECONDS
[[ -s $model ]] && timeout "${DENSE_S:-110}" python3 benchmarks/records/dense_trace_ab.py \
  --trace "$work/costs/trace_heldout.jsonl" --costs "$model" --out "$work/dense" --rounds "${DENSE_ROUNDS:-2}" \
  >"$work/dense.log" 2>&1
echo "== dense A/B: exit $? in $((SECONDS - t0)) s"; cut -c1-700 "$work/dense.log"
cp "$work/dense/dense_ab.jsonl" "$out/" 2>/dev/null
pack
t0=$SECONDS
timeout "${TESTS_S:-130}" python3 -m pytest -q -m gpu -p no:cacheprovider -v tests/test_gpu_long.py \
  tests/test_encode.py tests/test_gpu.py tests/test_gpu_mstar.py >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; grep -E "passed|failed|FAILED|Error|^E  " "$out/tests.log" | tail -n 14
pack
t0=$SECONDS
timeout "${PROBE_S:-70}" python3 benchmarks/records/long_media_probe.py --out "$out" \
  --cases "${PROBE_CASES:-video1m_turns,video10m}" >"$work/long_media.log" 2>&1
echo "== long media: exit $? in $((SECONDS - t0)) s"; cut -c1-400 "$out/long_media.jsonl" 2>/dev/null
pack
