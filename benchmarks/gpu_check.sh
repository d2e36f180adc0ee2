#!/usr/bin/env bash
# The GPU run, kept here so every run is the same. On the GPU machine, from anywhere in the checkout:
#   benchmarks/gpu_check.sh STAGE[,STAGE...] [extra bench args]
# Stages (each bounded by its own timeout; a failing stage does not stop the others):
#   tests      every GPU test (pytest -m gpu): parity, buckets, soak, fused ops, cuDNN, preprocessing
#   verify     omnienc capture --verify (per-bucket attention choice and replay-vs-eager check)
#   calibrate  omnienc capture --calibrate -o $OUT/costs_h200.yaml (the tuner's measured cost model)
#   kernels    benchmarks/kernel_bench.py (fused ops vs unfused, achieved bandwidth)
#   ab         omnienc ab (default variants; AB_ARGS="--variants ..." for others)
#   bench      omnienc bench (all columns; pass e.g. --columns native_eager,runtime to shorten it)
#   raw        omnienc bench on the raw workloads (raw_image448, raw_audio10s, raw_mixed32): transformers CPU
#              processor + HF / + runtime, GPU preprocessing + runtime vs the runtime on ready inputs
#              (raw-to-embeddings ratios); a few minutes
#   preprocess benchmarks/bench_preprocess.py (CPU processors vs GPU preprocessing alone, host-to-device
#              copy strategies, kernel counts; about a minute)
#   service    benchmarks/service_bench.py (8 closed-loop clients; the 2,000-request throughput mix on
#              one GPU, then all visible; idle latency on one and all; about a minute)
#   attn       benchmarks/attn_bench.py (attention kernels; ~10 minutes)
#   mstar      benchmarks/mstar_nodes.py (M*'s stock encoder nodes vs omnienc's; needs the mstar_ai and
#              pyzmq wheels in .whl/, see benchmarks/mstar_gpu.sh; ~3 minutes; BENCH_ARGS for its options)
#   all        tests,verify,bench,ab,kernels
# Wheels in .whl/ are installed to /tmp/site first (nothing downloads on the GPU machine). Fetch them here:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     nvidia-cudnn-frontend==1.32.0 soundfile scikit-image auditok==0.2.0 -d .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     cffi==1.17.1 pycparser -d .whl           (soundfile needs cffi's compiled backend)
# WITH_CUDNN=0 leaves the cuDNN frontend out (the runtime then captures FlashAttention only); TESTS=...
# narrows the test stage.
# (cuDNN attention, the extra omnienc[cudnn]; soundfile for audio files; the last two only ship the
# real test media of tests/test_preprocess.py.) Writes logs and results under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."  # the repository root: the package is installed from there
stages=",${1:-all},"; shift || true
[[ $stages == *",all,"* ]] && stages=",tests,verify,bench,ab,kernels,"
out=${OUT:-out/gpu}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
# cuDNN's frontend goes to its own folder: on by default, WITH_CUDNN=0 runs without the backend.
others=$(ls .whl/*.whl 2>/dev/null | grep -v nvidia_cudnn_frontend)
if [[ -n $others ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $others \
    >>"$out/install.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if compgen -G ".whl/nvidia_cudnn_frontend*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-cudnn \
    .whl/nvidia_cudnn_frontend*.whl >>"$out/install.log" 2>&1
  [[ ${WITH_CUDNN:-1} == 1 ]] && export PYTHONPATH=/tmp/site-cudnn${PYTHONPATH:+:$PYTHONPATH}
fi
export FLASHINFER_CUDA_ARCH_LIST=${FLASHINFER_CUDA_ARCH_LIST:-9.0}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'gpus', torch.cuda.device_count())" | tee -a "$out/card.txt"
git rev-parse --short HEAD 2>/dev/null >> "$out/card.txt"
rc=0
stage() {  # stage NAME SECONDS COMMAND...: runs COMMAND if NAME was asked for, logs to $out/NAME.log
  local name=$1 limit=$2; shift 2
  [[ $stages == *",$name,"* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1; local r=$?
  echo "== $name: exit $r in $((SECONDS - t0)) s"
  grep -v -E "it/s\]|graph/s|bucket/s" "$out/$name.log" | tail -n "${TAILS:-25}"
  rc=$(( rc | r ))
}
stage tests 300 python3 -m pytest -q -m gpu -s -p no:cacheprovider ${TESTS:-tests/}
stage verify 120 python3 -m omnienc.tools.cli capture --verify
stage calibrate 180 python3 -m omnienc.tools.cli capture --calibrate -o "$out/costs_h200.yaml"
stage kernels 90 python3 benchmarks/kernel_bench.py --out "$out"
stage ab 300 python3 -m omnienc.tools.cli ab --repeats 30 --json "$out/ab.json" ${AB_ARGS:-}
stage bench 420 python3 -m omnienc.tools.cli bench --no-progress --out "$out" "$@"
stage raw 300 python3 -m omnienc.tools.cli bench --no-progress --out "$out/raw" --cell-budget 2 \
  --workloads raw_image448,raw_audio10s,raw_mixed32 \
  --columns runtime,raw_hf,raw_cpu_runtime,raw_gpu_runtime,pre_cpu,pre_gpu
stage preprocess 180 python3 benchmarks/bench_preprocess.py --device cuda --out "$out/bench-preprocess.json"
stage service 300 python3 benchmarks/service_bench.py --out "$out/service.json"
stage attn 600 python3 benchmarks/attn_bench.py --out "$out"
stage mstar 300 python3 benchmarks/mstar_nodes.py --out "$out" ${BENCH_ARGS:-}
# Few files come back from a lent machine: every log and result in one archive.
tar -czf "$out/results.tgz" -C "$out" --exclude results.tgz . 2>/dev/null
exit $rc
