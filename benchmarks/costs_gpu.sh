#!/usr/bin/env bash
# Does the cost model hold on this card? From the repository root on one GPU (the package installed
# editable, cuDNN's frontend importable), within BUDGET seconds (default 240), results under $OUT:
#   1. the quick calibration on the card -> costs_h100.yaml (COSTS_NAME to rename), its wall time;
#      with FULL=1 also the full one (full_<name>), priced beside it;
#   2. two `omnienc tracegen` traces of ~800 requests, seeds used nowhere else: one to tune on, one
#      held out;
#   3. `omnienc tune --verify` on the tuning trace (tuned on its first two thirds, base and tuned
#      measured on the last third, each once untimed, then twice in turns; the faster written);
#      TUNED_GRID=FILE skips it; MORE_GRAPHS=N also tunes a grid of at most N graphs (unverified);
#   4. benchmarks/heldout_ab.py on the held-out trace: the default grid and the tuned ones in one
#      process, each once untimed, then twice in turns; predicted against measured per modality;
#   5. with EXACT_AB=1, `simulate --measure` of the default grid with exact-layout graphs on, and a
#      grid tuned for them, as far as the budget goes;
#   6. costs_summary.md, written last, from whatever of the above finished.
# Every step runs under `timeout`, within what is left of the budget, so the script always ends and
# writes its summary. A run of the held-out trace is ~10 s of GPU time (docs/BENCHMARKS.md).
set -uo pipefail
out=${OUT:-out/costs}; mkdir -p "$out"
budget=${BUDGET:-240}
costs_name=${COSTS_NAME:-costs_h100.yaml}
seconds=${TRACE_SECONDS:-40}  # x 20 requests per second: ~800 requests per trace
scale=${LIMIT_SCALE:-1}  # step limits x this (a dry run on a CPU needs more)
cli=(python3 -m omnienc.tools.cli)
start=$(date +%s)
deadline=$((start + budget - 8))  # the summary's few seconds

step() {  # step NAME LIMIT_S COMMAND...: runs COMMAND into NAME.log within LIMIT_S and what is left
  local name=$1 limit=$(($2 * scale)) left; shift 2
  left=$((deadline - $(date +%s)))
  ((left < limit)) && limit=$left
  if ((limit < 15)); then echo "== $name: skipped, ${left} s left" | tee "$out/$name.log"; return 1; fi
  local t=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $(($(date +%s) - t)) s (limit $limit s)"
  return $rc
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1 >"$out/card.txt"
echo "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}" >"$out/commit.txt"  # COMMIT: where the copy's git metadata may be stale

step calibrate 60 "${cli[@]}" capture --calibrate-quick ${CALIBRATE_ARGS:-} -o "$out/$costs_name"  # CALIBRATE_ARGS: e.g. --warm-ms 300
tail -n 2 "$out/calibrate.log"
also=()
if [[ ${FULL:-0} == 1 ]]; then
  step calibrate_full 120 "${cli[@]}" capture --calibrate -o "$out/full_$costs_name"
  tail -n 1 "$out/calibrate_full.log"
  [[ -s $out/full_$costs_name ]] && also=(--also-costs "full=$out/full_$costs_name")
fi
costs=()
[[ -s $out/$costs_name ]] && costs=(--costs "$out/$costs_name")  # else: the packaged model, flagged as another card's

"${cli[@]}" tracegen -o "$out/trace_tune.jsonl" --seconds "$seconds" --rate 20 --seed 3101 | tail -n 1
"${cli[@]}" tracegen -o "$out/trace_heldout.jsonl" --seconds "$seconds" --rate 20 --seed 3102 | tail -n 1

measure() {  # measure NAME GRID EXACT: simulate --measure of the held-out trace into NAME.log and NAME.json
  local grid=()
  [[ -n $2 ]] && grid=(--grid "$2")
  step "$1" 45 "${cli[@]}" simulate --trace "$out/trace_heldout.jsonl" ${grid[@]+"${grid[@]}"} --measure \
    ${costs[@]+"${costs[@]}"} --exact-graphs "$3" --json-out "$out/$1.json"
  grep -E "^(vision|audio|total) +measured" "$out/$1.log"
}
tune() {  # tune NAME EXACT [ARGS...]: tune on the tuning trace into NAME.log and grid_NAME.yaml
  local name=$1 exact=$2; shift 2
  step "$name" 80 "${cli[@]}" tune --trace "$out/trace_tune.jsonl" ${costs[@]+"${costs[@]}"} --exact-graphs "$exact" \
    "$@" -o "$out/grid_$name.yaml"
  grep -E "^(verified|writing|FOREIGN)" "$out/$name.log"
}

if [[ -n ${TUNED_GRID:-} ]]; then  # a grid tuned before (by tune --verify on the same trace seeds): measured only
  cp "$TUNED_GRID" "$out/grid_tuned_grid.yaml"
else
  tune tuned_grid off --verify
fi
grids=()
[[ -s $out/grid_tuned_grid.yaml ]] && grids+=(--grid "tuned=$out/grid_tuned_grid.yaml")
if [[ -n ${MORE_GRAPHS:-} ]]; then
  tune "tuned_grid_$MORE_GRAPHS" off --max-graphs "$MORE_GRAPHS"
  [[ -s $out/grid_tuned_grid_$MORE_GRAPHS.yaml ]] && grids+=(--grid "tuned_$MORE_GRAPHS=$out/grid_tuned_grid_$MORE_GRAPHS.yaml")
fi
if [[ -s $out/$costs_name ]]; then
  step heldout 150 python3 benchmarks/heldout_ab.py --trace "$out/trace_heldout.jsonl" --costs "$out/$costs_name" \
    ${also[@]+"${also[@]}"} ${grids[@]+"${grids[@]}"} --json-out "$out/heldout.json"
  grep -E "^(- |\| .* total )" "$out/heldout.log"
fi
if [[ ${EXACT_AB:-0} == 1 ]]; then
  measure exact_on "" on
  tune tuned_grid_on on --verify
  [[ -s $out/grid_tuned_grid_on.yaml ]] && measure tuned_on "$out/grid_tuned_grid_on.yaml" on
fi

timeout 20 python3 - "$out" "$costs_name" <<'EOF'
import json, re, sys
from pathlib import Path

out, costs_name = Path(sys.argv[1]), sys.argv[2]


def text(name):
    p = out / name
    return p.read_text(errors="replace") if p.is_file() else ""


def grep(name, pattern):
    return [ln for ln in text(name).splitlines() if re.search(pattern, ln)]


commit = text("commit.txt").strip() or "?"
card = text("card.txt").strip() or "?"
md = [f"# Cost model on the card: {card} (commit {commit}, benchmarks/costs_gpu.sh)", ""]
md += [f"- calibration: {line.strip()}" for line in grep("calibrate.log", r"^wrote ")] or ["- calibration: none"]
md += [f"- full calibration: {line.strip()}" for line in grep("calibrate_full.log", r"^wrote ")]
held = [ln for ln in text("heldout.log").splitlines() if ln.startswith(("|", "- "))]
md += ["", "## Held-out trace (tracegen seed 3102), benchmarks/heldout_ab.py", ""] + (held or ["(not run)"])
for log in sorted(p.name for p in out.glob("tuned_grid*.log")):
    md += ["", f"## omnienc tune ({log}; tuning trace, seed 3101)", ""]
    md += [f"- {line.strip()}" for line in grep(log, r"^(verified|writing|tuned:|base :|FOREIGN|--verify|==)")] \
        or ["- (not run)"]
for name in ("exact_on", "tuned_on"):
    p = out / f"{name}.json"
    if p.is_file():
        cmp = json.loads(p.read_text())["measured"]["comparison"]
        md += ["", f"## {name} (simulate --measure, exact-layout graphs on)", ""]
        md += [f"- {m}: predicted {c['predicted_ms']:.1f}, measured {c['measured_ms']:.1f} ms"
               for m, c in [*cmp["modalities"].items(), ("total", cmp["total"])]]
md += ["", f"Logs and JSON: calibrate, tuned_grid*, heldout; the model: {costs_name}; the grids: grid_*.yaml."]
(out / "costs_summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "== total $(($(date +%s) - start)) s"
