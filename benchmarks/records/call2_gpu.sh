#!/usr/bin/env bash
# A record: the M* nodes' GPU tests and benchmark, then the position-embedding blocks' A/B (eager
# memory and time per unit, pre-change tree in .old/omnienc vs this one, alternated).
set -uo pipefail
out=${OUT:-out/gpu}; mkdir -p "$out"
OUT=$out/mstar bash benchmarks/mstar_gpu.sh tests,bench 2>&1 | tail -n 45
export PYTHONPATH=/tmp/site-mstar  # the cuDNN frontend went there with M*'s wheels
P=benchmarks/records/long_video_probe.py
for round in 1; do
  for tree in .old ""; do
    PYTHONPATH=${tree:+$tree:}$PYTHONPATH timeout 150 python3 $P memory >"$out/memory-${tree:-new}-$round.log" 2>&1
    echo "== memory ${tree:-new} round $round: exit $?"; grep '^{' "$out/memory-${tree:-new}-$round.log"
  done
done
tar -czf "$out/results.tgz" -C "$out" --exclude results.tgz . 2>/dev/null
