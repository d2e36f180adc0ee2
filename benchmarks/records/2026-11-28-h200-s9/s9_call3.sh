#!/usr/bin/env bash
# Session 9, GPU call 3: launch host trims A/B (HEAD vs tree); dense admission after 4 vs 8 sightings:
# throughput mix and mixed32 at the standard bench budget (1 s), fresh processes.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TAILS=2 bash tools/gpu_check.sh none > $OUT/check.txt 2>&1
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 scratch/s9_launch_ab.py > $OUT/launch-ab.log 2>&1; echo "== launch ab $?"; grep -v -i warn $OUT/launch-ab.log | tail -6
for r in after4 after8; do
  timeout 100 python3 scratch/s9_tput.py $r > $OUT/tput-$r.log 2>&1; echo "== tput $r $?"; grep "rule=.*req/s" $OUT/tput-$r.log
done
for r in after4 after8 auto; do
  timeout 90 python3 scratch/s9_bench_rule.py $r --no-progress --out $OUT/bench-$r --workloads mixed32 --columns native_eager,runtime --cell-budget 1 > $OUT/bench-$r.log 2>&1
  echo "== bench $r $?"; grep -E "^\| mixed" $OUT/bench-$r/bench.md | head -2
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
