#!/usr/bin/env bash
# Session 9, final GPU call: every GPU test; fill by one cat A/B; bench; mixed32 after 8 warm-up calls; closed loop.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=4 bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1; grep -E "^== |passed|failed" $OUT/check.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 scratch/s9_launch_ab.py > $OUT/fill-ab.log 2>&1; echo "== fill ab $?"; grep -v -i warn $OUT/fill-ab.log | tail -6
timeout 230 python3 -m omnienc.tools.cli bench --no-progress --out $OUT/bench --workloads image448,image720p,images8x448,video16x448,audio10s,audios8x10s,mixed32 --columns native_eager,runtime --cell-budget 1 > $OUT/bench.log 2>&1; echo "== bench $?"; grep -E "^\| (image|video|audio|mixed)|enqueue" $OUT/bench/bench.md | head -12
timeout 80 python3 -m omnienc.tools.cli bench --no-progress --out $OUT/bench-w8 --workloads mixed32 --columns native_eager,runtime --cell-budget 1 --warmup 8 > $OUT/bench-w8.log 2>&1; echo "== bench warmup 8 $?"; grep -E "^\| mixed" $OUT/bench-w8/bench.md | head -2
timeout 60 python3 -m omnienc.tools.service_bench --parts closed_loop --seconds 2 --out $OUT/service.json > $OUT/service.log 2>&1; echo "== service $?"; grep -E "^\| (image|audio)" $OUT/service.log
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
