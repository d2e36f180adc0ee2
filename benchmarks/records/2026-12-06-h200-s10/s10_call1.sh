#!/usr/bin/env bash
# Session 10, GPU call 1: rules of scratch/rules.py (old / merge / both): mixed32 in one process
# (alternating), and the 2,000-request throughput mix, each rule in its own process.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=3 bash tools/gpu_check.sh none > $OUT/check.txt 2>&1; cat $OUT/card.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 scratch/s10_merge.py > $OUT/merge-inproc.log 2>&1; echo "== merge inproc $?"; grep -v -i warn $OUT/merge-inproc.log | tail -7
for r in old merge both; do
  timeout 110 python3 scratch/s10_rule.py $r tput > $OUT/tput-$r.log 2>&1; echo "== tput $r $?"; grep "rule=" $OUT/tput-$r.log; tail -3 $OUT/tput-$r.log | grep -i error
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz . 2>/dev/null
