#!/usr/bin/env bash
# Session 8, GPU call B: flags kernel GPU tests, kernel bench, end-to-end A/B; throughput now vs session 4's code.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
TESTS=tests/test_gpu_ops.py TAILS=4 bash tools/gpu_check.sh tests,kernels > $OUT/check.txt 2>&1; grep -E "^== |passed|failed" $OUT/check.txt; grep -iE -A12 "row flags|stack \+ flags" $OUT/kernels.log | head -40
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 scratch/s8_flags_ab.py > $OUT/flags_ab.log 2>&1; echo "== flags ab $?"; grep -v Warn $OUT/flags_ab.log | tail -6
for code in cur s4; do
  if [[ $code == s4 ]]; then P=scratch/s4:$PYTHONPATH; else P=$PYTHONPATH; fi
  PYTHONPATH=$P timeout 120 python3 -m omnienc.tools.service_bench --parts throughput --devices 0 --out $OUT/tput-$code.json > $OUT/tput-$code.log 2>&1; echo "== tput $code $?"; grep -E "req/s|requests_per_s|\| " $OUT/tput-$code.log | head -8
done
tar -czf $OUT/all.tgz -C $OUT --exclude all.tgz --exclude results.tgz . 2>/dev/null
