#!/usr/bin/env bash
# A record: the third GPU call of session 18, on a machine just started: the start-up calibration as
# M*'s node runs it, after capturing the serving grid in the same process
# (startup_calibration_probe.py). Run with COMMIT=<hash> (~90 s).
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call17
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
t0=$SECONDS
timeout 200 python3 benchmarks/records/startup_calibration_probe.py --out "$out/startup.jsonl" >"$work/probe.log" 2>&1
echo "== probe: exit $? in $((SECONDS - t0)) s"; tail -n 3 "$work/probe.log"
