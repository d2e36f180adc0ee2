#!/usr/bin/env bash
# Session 10, GPU call 3 (after the sighting fix): every GPU test; the throughput mix, old vs both.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=4 bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1; grep -E "^== |passed|failed" $OUT/check.txt; cat $OUT/card.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
for r in old both old both; do
  timeout 100 python3 scratch/s10_rule.py $r tput > $OUT/tput-$r.log 2>&1; echo "== tput $r $?"; grep "rule=" $OUT/tput-$r.log
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
