#!/usr/bin/env bash
# Session 11, GPU call 6: where each workload's time goes now; mixed32's audio side eager vs replays.
export OUT=${OUT:-out/gpu}; mkdir -p $OUT
bash tools/gpu_check.sh none > $OUT/check.txt 2>&1; cat $OUT/card.txt
export PYTHONPATH=/tmp/site-cudnn:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
timeout 420 python3 scratch/s11_profile.py > $OUT/profile.log 2>&1; echo "== profile $?"; grep -v -i "warn" $OUT/profile.log | tail -25
