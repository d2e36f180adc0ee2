#!/usr/bin/env bash
# A record: the renovation's A/B (omnienc bench of the pre-renovation tree in .old vs this one, in
# turns), then eager memory with a block's temporaries freed early (.old2: the tree before that
# change) vs this one, then capture --verify on this tree.
set -uo pipefail
out=${OUT:-out/gpu}; mkdir -p "$out"
OUT=$out/ab timeout 330 bash benchmarks/ab_old_new.sh ec39d47 2>&1 | tail -n 30
export PYTHONPATH=/tmp/site-cudnn:/tmp/site
P=benchmarks/records/long_video_probe.py
for tree in .old2 ""; do
  PYTHONPATH=${tree:+$tree:}$PYTHONPATH timeout 120 python3 $P memory >"$out/memory-${tree:-new}.log" 2>&1
  echo "== memory ${tree:-new}: exit $?"; grep '^{' "$out/memory-${tree:-new}.log" | cut -c1-220
done
timeout 90 python3 -m omnienc.tools.cli capture --verify >"$out/verify.log" 2>&1; echo "== verify: exit $?"; tail -n 25 "$out/verify.log"
tar -czf "$out/results.tgz" -C "$out" --exclude results.tgz . 2>/dev/null
