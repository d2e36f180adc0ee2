#!/usr/bin/env bash
# Session 8, final GPU call: every GPU test; uncaptured long runs on the cuDNN frontend A/B; bench; closed loop.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=4 bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1; grep -E "^== |passed|failed" $OUT/check.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 scratch/s8_eager_cudnn.py > $OUT/eager_cudnn.log 2>&1; echo "== eager cudnn $?"; grep -v Warn $OUT/eager_cudnn.log | tail -6
timeout 200 python3 -m omnienc.tools.cli bench --no-progress --out $OUT/bench --workloads image448,image720p,images8x448,video16x448,audio10s,audios8x10s,mixed32 --columns native_eager,runtime --cell-budget 1 > $OUT/bench.log 2>&1; echo "== bench $?"; grep -E "^\| (image|video|audio|mixed)|enqueue" $OUT/bench/bench.md | head -12
timeout 60 python3 -m omnienc.tools.service_bench --parts closed_loop --seconds 2 --out $OUT/service.json > $OUT/service.log 2>&1; echo "== service $?"; grep -E "^\| (image|audio)" $OUT/service.log
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
