#!/usr/bin/env bash
# Session 9, GPU call 5: dense plan builds paid by re-use (credit 16, at the 2nd sighting; the tree)
# vs admission at the 8th sighting: throughput mix and mixed32 at the standard bench budget.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=2 bash tools/gpu_check.sh none > $OUT/check.txt 2>&1
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
for r in auto after8; do
  timeout 90 python3 scratch/s9_tput.py $r > $OUT/tput-$r.log 2>&1; echo "== tput $r $?"; grep "rule=.*req/s" $OUT/tput-$r.log
done
for r in auto after8; do
  timeout 70 python3 scratch/s9_bench_rule.py $r --no-progress --out $OUT/bench-$r --workloads mixed32 --columns native_eager,runtime --cell-budget 1 > $OUT/bench-$r.log 2>&1
  echo "== bench $r $?"; grep -E "^\| mixed" $OUT/bench-$r/bench.md | head -2
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
