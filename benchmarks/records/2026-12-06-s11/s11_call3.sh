#!/usr/bin/env bash
# Session 11, GPU call 3: omnienc bench (native encoders, runtime, GEMM floor) and the service bench.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=14 bash tools/gpu_check.sh bench,service --workloads image448,image720p,images8x448,video16x448,audio10s,audios8x10s,mixed32 \
  --columns native_eager,runtime,floor --cell-budget 1 > $OUT/check.txt 2>&1; cat $OUT/check.txt | grep -v "^$" | tail -45
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
