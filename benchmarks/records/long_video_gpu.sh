#!/usr/bin/env bash
# The long-video probe's GPU run (a record): bisection of the illegal memory access, the fixed code
# at and past the sizes that crashed, eager memory per unit, and the Triton kernels' times before
# and after the fix (the pre-fix tree in .old/omnienc, carried), then the GPU tests that cover it.
set -uo pipefail
out=${OUT:-out/gpu}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
if compgen -G ".whl/nvidia_cudnn_frontend*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-cudnn .whl/nvidia_cudnn_frontend*.whl \
    >>"$out/install.log" 2>&1 && export PYTHONPATH=/tmp/site-cudnn
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
P=benchmarks/records/long_video_probe.py
probe() {  # probe SECONDS [old] CASE ARGS...: one case in its own process
  local limit=$1; shift
  local path=${PYTHONPATH:-}
  if [[ $1 == old ]]; then shift; path=.old${path:+:$path}; fi
  local t0=$SECONDS
  PYTHONPATH=$path timeout "$limit" python3 "$P" "$@" >"$out/probe-$*.log" 2>&1; local r=$?
  echo "== ${path%%:*} $*: exit $r in $((SECONDS - t0)) s" | tee -a "$out/probe.log"
  grep -E '^\{|Error|error' "$out/probe-$*.log" | tail -n 4 | tee -a "$out/probe.log"
}
probe 90 rotary-new
probe 90 rotary-old
probe 150 encoder 300 triton 1
probe 150 old encoder 200 torch 1
probe 150 old encoder 200 triton 1
probe 150 runtime 250
probe 150 memory
for round in 1 2; do probe 90 old kernels; probe 90 kernels; done
t0=$SECONDS
timeout 300 python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/test_gpu_long.py tests/test_gpu_ops.py \
  "tests/test_gpu.py::test_triton_rotary_matches_torch" >"$out/tests.log" 2>&1
echo "== tests: exit $? in $((SECONDS - t0)) s"; tail -n 15 "$out/tests.log"
tar -czf "$out/results.tgz" -C "$out" --exclude results.tgz . 2>/dev/null
