#!/usr/bin/env bash
# Session 9, GPU call 1: every GPU test (the mended soak, the generator test); launch host time split;
# dense-admission rules on the throughput mix and mixed32.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=6 bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1; grep -E "^== |passed|failed|FAIL" $OUT/check.txt | head -20
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 scratch/s9_host.py > $OUT/host.log 2>&1; echo "== host $?"; grep -v Warn $OUT/host.log | tail -12
for r in auto varlen after8 runs4; do
  timeout 90 python3 scratch/s9_tput.py $r > $OUT/tput-$r.log 2>&1; echo "== tput $r $?"; grep rule= $OUT/tput-$r.log
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
