#!/usr/bin/env bash
# The GPU run, kept here so every run is the same: install, GPU tests, then the benchmark.
# Usage (on the GPU machine, from the repo root): tools/gpu_check.sh [tests|bench|ab|attn|kernels|all] [extra bench args]
# Optional wheels in .whl/ (e.g. flashinfer-python, apache-tvm-ffi) are installed to /tmp/site first.
# The cuDNN attention backend ('cudnn', the extra omnienc[cudnn]) needs nvidia-cudnn-frontend; fetch it here
# (11.6 MB; it uses the cuDNN torch ships, its other dependencies are not needed) and carry .whl:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     nvidia-cudnn-frontend==1.32.0 -d .whl
# 'kernels' runs the fused-op and cuDNN GPU tests (tests/test_gpu_ops.py) and tools/kernel_bench.py.
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
if [[ $what == kernels || $what == all ]]; then
  if [[ $what == kernels ]]; then  # 'tests' already ran them in 'all'
    python3 -m pytest -q -m gpu -s -p no:cacheprovider tests/test_gpu_ops.py 2>&1 | tee "$out/gpu_ops_tests.log" | grep -E "^(linear_gelu|GELU|fused block|cudnn|fastest)|passed|failed|Error" ; rc=${PIPESTATUS[0]}
  fi
  python3 -m omnienc.tools.kernel_bench --out "$out" 2>&1 | tee "$out/kernel_bench.log" | grep -v " / " ; rc=$(( rc | PIPESTATUS[0] ))
fi
if [[ $what == attn || $what == all ]]; then
  python3 -m omnienc.tools.attn_bench --out "$out" 2>&1 | tee "$out/attn.log" ; rc=$(( rc | PIPESTATUS[0] ))
fi
exit $rc
