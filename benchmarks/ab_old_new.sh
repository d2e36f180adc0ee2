#!/usr/bin/env bash
# `omnienc bench` of an older commit and of this checkout, run after one another in turns, on the GPU
# machine (offline), so a change that should not change speed can be shown not to:
#   benchmarks/ab_old_new.sh OLD_REF [extra bench args]
# The older tree is .old/omnienc when it is there, else `git archive OLD_REF` (needs the history).
# Where the GPU machine gets no history, make it here first and carry it (an ignored folder):
#   benchmarks/ab_old_new.sh --prepare OLD_REF          then run with carry [".old"] (and ".whl")
# Both sides get the same wheels (.whl/, installed as gpu_check.sh does) and the same arguments:
# ROUNDS (default 2) rounds of old then new, each its own process running
#   omnienc bench --no-progress --json $BENCH_ARGS [extra bench args]
# with BENCH_ARGS "--columns native_eager,runtime --cell-budget 1" by default (about a minute a run on
# an H100). Under ${OUT:-out/ab}: ab.md (one table: per workload and column each run's median ms, new
# over old, and whether every new run lies within the old runs' p10-p90 spread), ab.json, ab.log,
# runs/bench-{old,new}-R.json and results.tgz (all of it). PY picks the interpreter (python3); INSTALL=0 skips
# installing this checkout (an editable install already in place).
set -uo pipefail
cd "$(dirname "$0")/.."  # the repository root
PY=${PY:-python3}

prepare() {  # prepare REF: the tree of REF in .old/omnienc (the docs left out), its name in .old/REF
  local ref=$1
  rm -rf .old && mkdir -p .old/omnienc || return 1
  git archive "$ref" -- . ':(exclude)docs' | tar -x -C .old/omnienc || { rm -rf .old; return 1; }
  echo "$ref $(git rev-parse --short "$ref^{commit}")" >.old/REF
}

if [[ ${1:-} == --prepare ]]; then
  [[ -n ${2:-} ]] || { echo "usage: $0 --prepare OLD_REF" >&2; exit 2; }
  prepare "$2" || { echo "git archive $2 failed" >&2; exit 2; }
  echo "prepared .old/omnienc from $(cat .old/REF); carry .old with the GPU run"
  exit 0
fi
[[ -n ${1:-} ]] || { echo "usage: $0 OLD_REF [extra bench args] (or --prepare OLD_REF)" >&2; exit 2; }
ref=$1; shift
out=${OUT:-out/ab}; mkdir -p "$out/runs"
export PYTHONUNBUFFERED=1
if [[ ! -d .old/omnienc ]]; then
  prepare "$ref" || { echo "no .old/omnienc, and git archive $ref failed: run --prepare where the history is" \
    "and carry .old" >&2; exit 2; }
fi
if [[ ${INSTALL:-1} == 1 ]]; then
  $PY -m pip install -q --no-deps --no-build-isolation -e . >>"$out/ab.log" 2>&1 || { cat "$out/ab.log"; exit 1; }
fi
others=$(ls .whl/*.whl 2>/dev/null | grep -v nvidia_cudnn_frontend)
if [[ -n $others ]]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $others \
    >>"$out/ab.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if compgen -G ".whl/nvidia_cudnn_frontend*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-cudnn \
    .whl/nvidia_cudnn_frontend*.whl >>"$out/ab.log" 2>&1
  [[ ${WITH_CUDNN:-1} == 1 ]] && export PYTHONPATH=/tmp/site-cudnn${PYTHONPATH:+:$PYTHONPATH}
fi
site=${PYTHONPATH:-}
old_name=$(cat .old/REF 2>/dev/null || echo "$ref")
new_name=$(git rev-parse --short HEAD 2>/dev/null || echo "this checkout")
read -r -a args <<<"${BENCH_ARGS:---columns native_eager,runtime --cell-budget 1}"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for side in old new; do
    path=$site
    [[ $side == old ]] && path=.old${site:+:$site}  # the older tree first on the path: its omnienc wins
    t0=$SECONDS
    PYTHONPATH=$path timeout "${RUN_LIMIT:-240}" $PY -m omnienc.tools.cli bench --no-progress --json "${args[@]}" "$@" \
      >"$out/runs/bench-$side-$round.json" 2>>"$out/ab.log"
    echo "== $side ($([[ $side == old ]] && echo "$old_name" || echo "$new_name")) round $round: exit $? in" \
      "$((SECONDS - t0)) s" | tee -a "$out/ab.log"
  done
done
$PY - "$out" "$old_name" "$new_name" <<'EOF' | tee "$out/ab.md"
import glob, json, os, sys

out, old_name, new_name = sys.argv[1:4]
runs = {"old": [], "new": []}
for side in runs:
    for path in sorted(glob.glob(os.path.join(out, "runs", f"bench-{side}-*.json"))):
        try:
            with open(path) as f:
                runs[side].append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"{os.path.basename(path)}: no report ({e})")
if not runs["old"] or not runs["new"]:
    sys.exit("a side has no report: see ab.log")
first = runs["new"][0]
meta = first.get("meta", {})
print(f"omnienc bench, old {old_name} vs new {new_name}, {len(runs['old'])} + {len(runs['new'])} runs in turns; "
      f"card {meta.get('card', '?')}, {meta.get('date', '?')}; median ms per run\n")
rounds = max(len(runs["old"]), len(runs["new"]))
head = [f"old {i + 1}" for i in range(rounds)] + [f"new {i + 1}" for i in range(rounds)]
print("| workload | column | " + " | ".join(head) + " | new / old | new within old's p10-p90 |")
print("|---|---|" + "---:|" * len(head) + "---:|---|")
rows = []
for name, entry in first["workloads"].items():
    for col in entry["results"]:
        cell = {side: [r["workloads"].get(name, {}).get("results", {}).get(col, {}) for r in runs[side]]
                for side in runs}
        med = {side: [c["median_ms"] for c in cell[side] if "median_ms" in c] for side in runs}
        if not med["old"] or not med["new"]:
            continue
        lo = min(c["p10_ms"] for c in cell["old"] if "p10_ms" in c)
        hi = max(c["p90_ms"] for c in cell["old"] if "p90_ms" in c)
        ratio = (sum(med["new"]) / len(med["new"])) / (sum(med["old"]) / len(med["old"]))
        verdict = ("yes" if all(lo <= m <= hi for m in med["new"])
                   else "faster" if max(med["new"]) < lo else "slower" if min(med["new"]) > hi else "partly")
        cells = [f"{m:.3f}" for m in med["old"]] + [""] * (rounds - len(med["old"]))
        cells += [f"{m:.3f}" for m in med["new"]] + [""] * (rounds - len(med["new"]))
        print(f"| {name} | {col} | " + " | ".join(cells) + f" | {ratio:.3f} | {verdict} |")
        rows.append({"workload": name, "column": col, "old_ms": med["old"], "new_ms": med["new"],
                     "old_p10_p90": [lo, hi], "new_over_old": ratio, "within": verdict})
errors = [e for side in runs for r in runs[side] for e in r.get("errors", [])]
if errors:
    print("\nErrors:\n" + "\n".join(f"- {e}" for e in errors))
with open(os.path.join(out, "ab.json"), "w") as f:
    json.dump({"old": old_name, "new": new_name, "card": meta.get("card"), "date": meta.get("date"),
               "rows": rows, "errors": errors}, f, indent=2)
EOF
rc=${PIPESTATUS[0]}
tar -czf "$out/results.tgz" -C "$out" --exclude results.tgz . 2>/dev/null
exit "$rc"
