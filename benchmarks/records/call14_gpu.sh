#!/usr/bin/env bash
# A record: the third GPU call of session 17. (1) What stays allocated after a launch's results are
# dropped (call12 read 5.8 GiB after an uncut 1-minute video, gone at a later launch), and the
# 10-minute video's transient peak from a clean base (held_memory_probe.py). (2) The cost model on
# the card (costs_gpu.sh) with the calibration warmed by default and `tune --verify` running each
# grid once untimed first. Run with COMMIT=<hash>, within TOTAL_S seconds.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call14
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
deadline=$((SECONDS + ${TOTAL_S:-400}))
within() { local left=$((deadline - SECONDS)); ((left < 1)) && left=1; ((left < $1)) && echo "$left" || echo "$1"; }  # never 0: timeout 0 waits forever
t0=$SECONDS
timeout "$(within "${PROBE_S:-150}")" python3 benchmarks/records/held_memory_probe.py --out "$out/held" >"$work/held.log" 2>&1
echo "== held memory: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/held.log" | cut -c1-400 | tail -n 10
pack
if ((deadline - SECONDS >= 150)); then costs_part "$(within 220)"; else echo "== costs: skipped, $((deadline - SECONDS)) s left"; fi
