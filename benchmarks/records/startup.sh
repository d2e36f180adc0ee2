#!/bin/bash
# Start-up of the omnienc command line and of the runtime import, before and after, with hyperfine.
#   VENV  a venv with omnienc installed (the "after" code) and torch
#   BASE  a folder holding the base commit unpacked as BASE/omnienc (git archive <commit> | tar -x
#         -C BASE/omnienc); PYTHONPATH=BASE makes Python find it before the installed package
#   warm: 1 warm-up, RUNS runs (default 10); cold: page cache dropped before every run (root), RUNS (3)
# usage: VENV=... BASE=... startup.sh warm|cold OUT.json
set -eu
mode=$1 out=$2
V=$VENV/bin B="env PYTHONPATH=$BASE"
args=()
if [ "$mode" = warm ]; then
  opts=(-w 1 -r "${RUNS:-10}")
  commands=("" demo capture encode replay tune tracegen bench ab)
else
  opts=(-r "${RUNS:-3}" --prepare 'sh -c "sync; echo 3 > /proc/sys/vm/drop_caches"')
  commands=("" encode)
fi
for c in "${commands[@]}"; do
  args+=(-n "before: omnienc $c --help" "$B $V/omnienc $c --help" -n "after: omnienc $c --help" "$V/omnienc $c --help")
done
args+=(-n "torch: import torch" "$V/python -c 'import torch'")
args+=(-n "before: from omnienc.runtime import EncoderRuntime" "$B $V/python -c 'from omnienc.runtime import EncoderRuntime'")
args+=(-n "after: from omnienc.runtime import EncoderRuntime" "$V/python -c 'from omnienc.runtime import EncoderRuntime'")
uptime
hyperfine -N "${opts[@]}" --export-json "$out" "${args[@]}"
uptime
