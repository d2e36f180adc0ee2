#!/usr/bin/env bash
# A record: the second GPU call of session 16. (1) Long media: the 1-minute 720p video cut into even
# pieces (the new rule) against filled pieces (17+17+17+9 frame pairs), bucket-sized pieces and the
# uncut run, eight rounds in turns. (2) Where the H100's measured trace time parts from the
# calibrated prediction (call11: vision -10.8%, audio -5.0% on the default grid): calibration, three
# measured passes of call11's held-out trace and a second calibration in one process, the card's
# clocks and power sampled, and a third calibration with each point warmed up 300 ms
# (prediction_gap_probe.py). Also what stays allocated after a long video's
# results are dropped (call11 saw a peak below the outputs). (3) As far as the time goes, the cost
# model on the card again (costs_gpu.sh), calibrated warm where the probe found that closer.
# Run with COMMIT=<hash>, within TOTAL_S seconds.
set -uo pipefail
out=${OUT:-out/gpu}; work=/tmp/call12
source "$(dirname "$0")/gpu_setup.sh"
echo "${COMMIT:-unknown}" >"$out/commit.txt"
deadline=$((SECONDS + ${TOTAL_S:-540}))
within() { local left=$((deadline - SECONDS)); ((left < 1)) && left=1; ((left < $1)) && echo "$left" || echo "$1"; }  # never 0: timeout 0 waits forever
t0=$SECONDS
timeout "$(within "${PROBE_S:-160}")" python3 benchmarks/records/long_media_probe.py --cases video10m,video1m,video1m_turns \
  --out "$out/long_media" >"$work/long_media.log" 2>&1
echo "== long media: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/long_media.log" | cut -c1-900 | tail -n 3
pack
t0=$SECONDS
timeout "$(within "${GAP_S:-260}")" python3 benchmarks/records/prediction_gap_probe.py \
  docs/benchmarks/2026-12-07-s16/call11/costs/trace_heldout.jsonl --passes 3 --out "$out/gap" >"$work/gap.log" 2>&1
echo "== prediction gap: exit $? in $((SECONDS - t0)) s"; grep -E "^\{|Error" "$work/gap.log" | cut -c1-1500 | tail -n 8
pack
left=$((deadline - SECONDS))
if ((left >= 110)); then
  warm=$(python3 - "$out/gap/prediction_gap.jsonl" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows[d["phase"]] = d
cold = [v for k, v in rows.items() if k.startswith("pass") and "vs_calibrate1" in v][-1]["vs_calibrate1"]
warm = next(v["vs_calibrate_warm"] for k, v in rows.items() if "vs_calibrate_warm" in v)
worst = lambda r: max(abs(m["error"]) for m in r.values())
print(1 if worst(warm) < worst(cold) else 0)
PY
)
  echo "== costs: warm calibration ${warm:-?} (1: the probe found it closer)"
  if [[ ${warm:-0} == 1 ]]; then costs_part "$(within 200)" CALIBRATE_ARGS="--warm-ms 300"; else costs_part "$(within 200)"; fi
else echo "== costs: skipped, $left s left"; fi
pack
