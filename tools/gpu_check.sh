#!/usr/bin/env bash
# The GPU run, kept here so every run is the same: install, GPU tests, then the benchmark.
# Usage (on the GPU machine, from the repo root): tools/gpu_check.sh [tests|bench|ab|attn|all] [extra bench args]
# Optional wheels in .whl/ (e.g. flashinfer-python, apache-tvm-ffi) are installed to /tmp/site first.
# Writes logs and results under ${OUT:-out/gpu}.
set -uo pipefail
what=${1:-all}; shift || true
out=${OUT:-out/gpu}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$out/install.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  export FLASHINFER_CUDA_ARCH_LIST=${FLASHINFER_CUDA_ARCH_LIST:-9.0}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$out/card.txt"
rc=0
if [[ $what == tests || $what == all ]]; then
  python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/ 2>&1 | tee "$out/gpu_tests.log" | grep -E "^(vision|audio|verify|soak|capture|mixed|replay)|passed|failed|Error" ; rc=${PIPESTATUS[0]}
  python3 -m omnienc.tools.cli capture --verify 2>&1 | tee "$out/capture_verify.log" | grep -v "graph/s" ; rc=$(( rc | PIPESTATUS[0] ))
fi
if [[ $what == bench || $what == all ]]; then
  python3 -m omnienc.tools.cli bench --out "$out" "$@" 2>&1 | tee "$out/bench.log" | grep -v "it/s\]" ; rc=$(( rc | PIPESTATUS[0] ))
fi
if [[ $what == ab || $what == all ]]; then
  python3 -m omnienc.tools.cli ab --json "$out/ab.json" 2>&1 | tee "$out/ab.log" ; rc=$(( rc | PIPESTATUS[0] ))
fi
if [[ $what == attn || $what == all ]]; then
  python3 -m omnienc.tools.attn_bench --out "$out" 2>&1 | tee "$out/attn.log" ; rc=$(( rc | PIPESTATUS[0] ))
fi
exit $rc
