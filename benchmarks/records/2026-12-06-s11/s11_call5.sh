#!/usr/bin/env bash
# Session 11, GPU call 5 (an H200, where issue 12's targets are set): bench; ab of mixed32 and image720p; service.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=14 AB_ARGS="--variants native_eager,graphs,graphs_no_eager_cudnn --workloads mixed32,images8x448,image448,audio10s" \
  bash tools/gpu_check.sh bench,ab,service --workloads image448,image720p,images8x448,video16x448,audio10s,audios8x10s,mixed32 \
  --columns native_eager,runtime,floor --cell-budget 1 > $OUT/check.txt 2>&1; grep -v "^$" $OUT/check.txt | grep -v "^- \|Notes" | tail -50
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
