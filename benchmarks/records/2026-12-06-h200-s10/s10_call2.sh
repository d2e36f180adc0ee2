#!/usr/bin/env bash
# Session 10, GPU call 2: every GPU test; lane order A/B (mixed32, varlen); bench;
# closed loop.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=4 bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1; grep -E "^== |passed|failed" $OUT/check.txt; cat $OUT/card.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 scratch/s10_order.py > $OUT/order.log 2>&1; echo "== order $?"; grep -v -i warn $OUT/order.log | tail -7
timeout 230 python3 -m omnienc.tools.cli bench --no-progress --out $OUT/bench --workloads image448,image720p,images8x448,video16x448,audio10s,audios8x10s,mixed32 --columns native_eager,runtime --cell-budget 1 > $OUT/bench.log 2>&1; echo "== bench $?"; grep -E "^\| (image|video|audio|mixed)|enqueue" $OUT/bench/bench.md | head -12
timeout 60 python3 -m omnienc.tools.service_bench --parts closed_loop --seconds 1.5 --out $OUT/service.json > $OUT/service.log 2>&1; echo "== service $?"; grep -E "^\| (image|audio)" $OUT/service.log
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
