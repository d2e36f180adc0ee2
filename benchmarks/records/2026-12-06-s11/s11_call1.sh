#!/usr/bin/env bash
# Session 11, GPU call 1: the new GPU test; mixed32 per variant in one process; the throughput mix per variant.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=6 TESTS="tests/test_gpu.py::test_big_uncaptured_calls_on_cudnn_varlen_match_hf" bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1
grep -E "^== |passed|failed|rel err" $OUT/check.txt | tail -12; cat $OUT/card.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 scratch/s11.py mix > $OUT/mix.log 2>&1; echo "== mix $?"; cat $OUT/mix.log | grep -v Warn | tail -14
for v in fa both cudnn fa both; do
  timeout 90 python3 scratch/s11.py tput $v > $OUT/tput-$v.log 2>&1; echo "== tput $v $?"; grep -E "variant=|cached" $OUT/tput-$v.log
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
