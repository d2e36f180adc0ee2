#!/usr/bin/env bash
# A record: the third GPU call of session 17. What stays allocated after a launch's results are
# dropped (call12 read 5.8 GiB after an uncut 1-minute video, gone at a later launch), and the
# 10-minute video's transient peak from a clean base (held_memory_probe.py). Run with COMMIT=<hash>.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call14
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
t0=$SECONDS
timeout "${PROBE_S:-240}" python3 benchmarks/records/held_memory_probe.py --out "$out/held" >"$work/held.log" 2>&1
echo "== held memory: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/held.log" | cut -c1-400 | tail -n 10
pack
