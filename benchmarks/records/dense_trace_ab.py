"""A record: does ``dense`` attention for uncaptured runs (admitted at a [B, L] shape's
``dense_after``-th sighting) pay on a trace? The default grid on a held-out trace, measured as
``omnienc simulate --measure`` does, with the runtime's default (dense from the 8th sighting) and
with dense never (``dense_after`` past any count), in turns, each in its own process (torch keeps
cuDNN's plans per process), each against the simulator's prediction with the given cost model.

    python benchmarks/records/dense_trace_ab.py --trace T.jsonl --costs C.yaml --out DIR [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {"dense8": 8, "never": 2**31 - 1}


def one(args) -> None:
    from omnienc.runtime import BucketGrid, RuntimeConfig
    from omnienc.runtime.costs import CostModel
    from omnienc.runtime.simulator import compare, resolve_batching, simulate
    from omnienc.runtime.trace import read_trace
    from omnienc.tools.simulate import measure

    records, grid = read_trace(args.trace), BucketGrid.default()
    config = RuntimeConfig(dense_after=VARIANTS[args.one])
    batching = resolve_batching(None, None)
    got = measure(records, grid, batching, args.device, config)
    report = simulate(records, grid, batching, CostModel.load(args.costs), config=config, card=got["card"], warmup=1,
                      bound_units=got["bound_units"])
    cmp = compare(report, got["stats"])
    lanes = {m: {k: got["stats"][m].get(k) for k in ("eager_attention", "dense_shapes")} for m in ("vision", "audio")
             if isinstance(got["stats"].get(m), dict)}
    print(json.dumps({"variant": args.one, "card": got["card"], "measured_ms": cmp["total"]["measured_ms"],
                      "predicted_ms": cmp["total"]["predicted_ms"], "lanes": lanes,
                      "kinds": {m: {k: {"runs": v["measured"]["runs"], "ms": v["measured"]["ms"],
                                        "predicted_ms": v["predicted"]["ms"]}
                                    for k, v in c["kinds"].items() if v["measured"]["runs"]}
                                for m, c in cmp["modalities"].items()},
                      "table": report.format_table(got["stats"])}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trace", required=True)
    p.add_argument("--costs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cuda", help="cpu: a dry run with reduced encoders")
    p.add_argument("--one", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for v in order:
            res = subprocess.run([sys.executable, __file__, "--trace", args.trace, "--costs", args.costs,
                                  "--out", args.out, "--device", args.device, "--one", v], capture_output=True, text=True)
            line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("{")), None)
            if line is None:
                print(f"round {r} {v}: exit {res.returncode}\n{res.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(line)
            row["round"] = r
            rows.append(row)
            (out / "dense_ab.jsonl").open("a").write(json.dumps(row) + "\n")
            print(f"round {r} {v:7s} measured {row['measured_ms']:8.1f} ms, predicted {row['predicted_ms']:8.1f}; "
                  f"vision kinds {json.dumps(row['kinds'].get('vision'))}; lanes {json.dumps(row['lanes'])}", flush=True)
    for v in VARIANTS:
        ms = sorted(r["measured_ms"] for r in rows if r["variant"] == v)
        if ms:
            print(f"{v}: measured ms {ms}")


if __name__ == "__main__":
    main()
