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
cd "$(dirname "$0")/.."
if [[ -z $(ls .whl/mstar_ai-*.whl 2>/dev/null) ]]; then echo "no .whl/mstar_ai-*.whl: see the header"; exit 1; fi
want=${1:-tests,bench}
stages=${want/bench/mstar}  # gpu_check.sh's stage names: tests (only the M* tests here), mstar (the benchmark)
OUT=${OUT:-out/mstar} TESTS=${TESTS:-tests/test_gpu_mstar.py} TAILS=${TAILS:-30} exec benchmarks/gpu_check.sh "$stages"
