#!/usr/bin/env bash
# Session 11, GPU call 2 (1757490): every GPU test; mixed32 per variant (the default now: cuDNN varlen before
# dense for big calls, the frontend started at capture); the cuDNN bound for smaller uncaptured calls.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=4 bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1; grep -E "^== |passed|failed" $OUT/check.txt; cat $OUT/card.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 scratch/s11.py small > $OUT/small.log 2>&1; echo "== small $?"; grep -v Warn $OUT/small.log | tail -6
timeout 150 python3 scratch/s11.py mix > $OUT/mix.log 2>&1; echo "== mix $?"; grep -v Warn $OUT/mix.log | tail -14
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
