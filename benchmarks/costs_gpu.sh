#!/usr/bin/env bash
# Does the cost model hold on this card? From the repository root on one GPU (the package installed
# editable, cuDNN's frontend importable), within BUDGET seconds (default 205), results under $OUT:
#   1. the quick calibration on the card -> costs_h100.yaml (COSTS_NAME to rename), its wall time;
#   2. two `omnienc tracegen` traces of ~800 requests, seeds used nowhere else: one to tune on, one
#      held out;
#   3. `omnienc simulate --measure` on the held-out trace: the default grid with that model,
#      predicted vs measured per modality, bucket and kind of run (the runtime's default: exact-layout
#      graphs off);
#   4. `omnienc tune --verify` on the tuning trace (tuned on its first two thirds, base and tuned
#      measured on the last third twice each in turns, the faster written); TUNED_GRID=FILE skips it;
#   5. `simulate --measure` of the tuned grid on the held-out trace;
#   6. with EXACT_AB=1, 3 to 5 again with exact-layout graphs on, as far as the budget goes;
#   7. costs_summary.md, written last, from whatever of the above finished.
# Every step runs under `timeout`, within what is left of the budget, so the script always ends and
# writes its summary. Each measurement is ~12 s of GPU time per 800 requests (docs/BENCHMARKS.md)
# plus ~10 s of start-up (torch, random weights, capture).
set -uo pipefail
out=${OUT:-out/costs}; mkdir -p "$out"
budget=${BUDGET:-205}
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
tune() {  # tune NAME EXACT: tune --verify on the tuning trace into NAME.log and grid_NAME.yaml
  step "$1" 80 "${cli[@]}" tune --trace "$out/trace_tune.jsonl" ${costs[@]+"${costs[@]}"} --exact-graphs "$2" \
    --verify -o "$out/grid_$1.yaml"
  grep -E "^(verified|writing|FOREIGN)" "$out/$1.log"
}

measure default "" off
if [[ -n ${TUNED_GRID:-} ]]; then  # a grid tuned before (by tune --verify on the same trace seeds): measured only
  cp "$TUNED_GRID" "$out/grid_tuned_grid.yaml"
else
  tune tuned_grid off
fi
[[ -s $out/grid_tuned_grid.yaml ]] && measure tuned "$out/grid_tuned_grid.yaml" off
if [[ ${EXACT_AB:-0} == 1 ]]; then
  measure exact_on "" on
  tune tuned_grid_on on
  [[ -s $out/grid_tuned_grid_on.yaml ]] && measure tuned_on "$out/grid_tuned_grid_on.yaml" on
fi

timeout 20 python3 - "$out" "$costs_name" <<'EOF'
import json, re, sys
from pathlib import Path

out, costs_name = Path(sys.argv[1]), sys.argv[2]


def read(name):
    p = out / name
    return json.loads(p.read_text()) if p.is_file() else None


def grep(name, pattern):
    p = out / name
    lines = p.read_text(errors="replace").splitlines() if p.is_file() else []
    return [ln for ln in lines if re.search(pattern, ln)]


def pct(e):
    return "-" if e is None else f"{e:+.1%}"


runs = {"default grid": read("default.json"), "default grid ": read("exact_on.json"),
        "tuned grid": read("tuned.json"), "tuned grid ": read("tuned_on.json")}
measured = [r["measured"] for r in runs.values() if r and "measured" in r]
card = measured[0]["card"] if measured else (out / "card.txt").read_text().strip() if (out / "card.txt").is_file() else "?"
commit = (out / "commit.txt").read_text().strip() if (out / "commit.txt").is_file() else "?"
md = [f"# Cost model on the card: {card} (commit {commit}, benchmarks/costs_gpu.sh)", ""]
md += [f"- calibration: {line.strip()}" for line in grep("calibrate.log", r"^wrote ")] or ["- calibration: none"]
for name, r in list(runs.items()):
    if r:
        runs[f"{name.strip()} (exact graphs {'on' if r.get('exact_graphs') else 'off'})"] = runs.pop(name)
md += ["", "## Predicted vs measured GPU ms, held-out trace (tracegen seed 3102)", "",
       "| grid | modality | predicted | measured | error |", "|---|---|---:|---:|---:|"]
for name, r in runs.items():
    if not r or "measured" not in r:
        md.append(f"| {name} | (not run) | | | |")
        continue
    cmp = r["measured"]["comparison"]
    for m, c in cmp["modalities"].items():
        md.append(f"| {name} | {m} | {c['predicted_ms']:.1f} | {c['measured_ms']:.1f} | {pct(c['error'])} |")
    t = cmp["total"]
    md.append(f"| {name} | total | {t['predicted_ms']:.1f} | {t['measured_ms']:.1f} | {pct(t['error'])} |")
    if r.get("foreign_card"):
        md.append(f"| {name} | FOREIGN CARD: {r['card_note']} | | | |")
    if r["measured"].get("failed"):
        md.append(f"| {name} | {r['measured']['failed']} requests FAILED, the first: {r['measured']['first_failure']} | | | |")
for name, r in runs.items():
    if not r or "measured" not in r:
        continue
    md += ["", f"### Per kind of run: {name}", "",
           "| modality | kind | runs predicted | runs measured | predicted ms | measured ms | error |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for m, c in r["measured"]["comparison"]["modalities"].items():
        for k, v in c["kinds"].items():
            if v["predicted"]["runs"] or v["measured"]["runs"]:
                md.append(f"| {m} | {k} | {v['predicted']['runs']} | {v['measured']['runs']} | "
                          f"{v['predicted']['ms']:.1f} | {v['measured']['ms']:.1f} | {pct(v['error'])} |")
        ex = c["exact"]
        md.append(f"| {m} | exact captures / replays / refused | {ex['exact_captures']['predicted']} / "
                  f"{ex['exact_graph_replays']['predicted']} / {ex['exact_refused']['predicted']} | "
                  f"{ex['exact_captures']['measured']} / {ex['exact_graph_replays']['measured']} / "
                  f"{ex['exact_refused']['measured']} | | | |")
md += ["", "## Tuned vs default grid, measured on the held-out trace", ""]
for exact, dn, tn in (("off", "default.json", "tuned.json"), ("on", "exact_on.json", "tuned_on.json")):
    d, t = read(dn), read(tn)
    if d and t and "measured" in d and "measured" in t:
        dm, tm = d["measured"]["ms"], t["measured"]["ms"]
        md.append(f"- exact graphs {exact}: default {dm:.1f} ms, tuned {tm:.1f} ms measured: the tuned grid "
                  f"{dm / tm - 1:+.1%} faster (predicted {d['measured']['predicted_ms']:.1f} vs "
                  f"{t['measured']['predicted_ms']:.1f} ms)")
    else:
        md.append(f"- exact graphs {exact}: (not both measured)")
for log in ("tuned_grid.log", "tuned_grid_on.log"):
    md += ["", f"## omnienc tune --verify ({log}; tuning trace, seed 3101)", ""]
    md += [f"- {line.strip()}" for line in grep(log, r"^(verified|writing|tuned:|base :|FOREIGN|--verify|==)")] \
        or ["- (not run)"]
md += ["", "Logs and JSON: calibrate, default, tuned_grid, tuned (exact graphs off); exact_on, tuned_grid_on, "
       f"tuned_on (EXACT_AB=1); the model: {costs_name}; the tuned grids: grid_tuned_grid.yaml, grid_tuned_grid_on.yaml."]
(out / "costs_summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "== total $(($(date +%s) - start)) s"
