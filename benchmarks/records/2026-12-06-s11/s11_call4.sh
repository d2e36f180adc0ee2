#!/usr/bin/env bash
# Session 11, GPU call 4: omnienc ab, the session's variants against what ships.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=30 AB_ARGS="--variants native_eager,graphs,graphs_no_eager_cudnn,graphs_eager_varlen,graphs_no_merge,graphs_no_exact --workloads image448,image720p,images8x448,video16x448,audio10s,audios8x10s,mixed32" \
  bash tools/gpu_check.sh ab > $OUT/check.txt 2>&1; grep -v "^$" $OUT/check.txt | tail -40
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
