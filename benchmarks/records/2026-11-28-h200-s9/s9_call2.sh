#!/usr/bin/env bash
# Session 9, GPU call 2: the generator test (fixed), host step costs, mixed32 bench per dense rule.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TESTS="tests/test_gpu.py::test_live_captures_and_other_threads_random_ops" TAILS=4 bash tools/gpu_check.sh tests > $OUT/check.txt 2>&1; grep -E "^== |passed|failed|live captures" $OUT/tests.log | head
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 scratch/s9_host2.py > $OUT/host2.log 2>&1; echo "== host2 $?"; grep -v -i warn $OUT/host2.log | tail -18
for r in auto after8 varlen auto; do
  timeout 100 python3 scratch/s9_bench_rule.py $r --no-progress --out $OUT/bench-$r --workloads mixed32 --columns native_eager,runtime --cell-budget 2 > $OUT/bench-$r.log 2>&1
  echo "== bench $r $?"; grep -E "^\| mixed" $OUT/bench-$r/bench.md | head -2
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
