#!/usr/bin/env bash
# omnienc's M* encoder nodes on the GPU machine, from the repo root:
#   benchmarks/mstar_gpu.sh [tests|bench|tests,bench]     (default: both; ~4-5 min on an H100)
# Nothing downloads there: M* and pyzmq come as wheels in .whl/ (carry it). Fetch them here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     mstar-ai==0.2.1 pyzmq -d .whl        (0.9 MB + 0.9 MB)
# They install to a side folder on PYTHONPATH, never into the machine's packages. M*'s Qwen3-Omni
# module also imports flashinfer (the Thinker's and Talker's kernels, never the encoder nodes'); its
# 0.7.2.post1 wheel (62 MB, plus apache-tvm-ffi 3.3 MB) would fill the 64 MiB a command carries, so
# benchmarks/mstar_harness.py stands in for it while that module imports unless it is installed
# (the GPU machine has triton). nvidia-cudnn-frontend in .whl/ (11.6 MB) is installed too when present.
# Writes logs, mstar_nodes.json and mstar_nodes.md under ${OUT:-out/mstar}.
set -uo pipefail
stages=",${1:-tests,bench},"
out=${OUT:-out/mstar}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
wheels=$(ls .whl/mstar_ai-*.whl .whl/pyzmq-*.whl .whl/flashinfer_python-*.whl .whl/apache_tvm_ffi-*.whl \
  .whl/nvidia_cudnn_frontend-*.whl 2>/dev/null)
if [[ -z $(ls .whl/mstar_ai-*.whl 2>/dev/null) ]]; then echo "no .whl/mstar_ai-*.whl: see the header"; exit 1; fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-mstar $wheels \
  >>"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
export PYTHONPATH=/tmp/site-mstar${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
python3 -c "import torch, transformers, mstar; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$out/card.txt"
git rev-parse --short HEAD 2>/dev/null >> "$out/card.txt"
rc=0
stage() {  # stage NAME SECONDS COMMAND...: runs COMMAND if NAME was asked for, logs to $out/NAME.log
  local name=$1 limit=$2; shift 2
  [[ $stages == *",$name,"* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1; local r=$?
  echo "== $name: exit $r in $((SECONDS - t0)) s"
  grep -v -E "it/s\]|bucket/s" "$out/$name.log" | tail -n "${TAILS:-30}"
  rc=$(( rc | r ))
}
stage tests 150 python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/test_gpu_mstar.py
stage bench 300 python3 benchmarks/mstar_nodes.py --out "$out" ${BENCH_ARGS:-}
exit $rc
