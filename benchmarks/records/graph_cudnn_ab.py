"""Big vision graph buckets on cuDNN varlen against FlashAttention varlen (a record of a GPU A/B).

    python benchmarks/records/graph_cudnn_ab.py TRACE GRID [--rounds 2] [--out FILE]

The trace (e.g. the held-out trace of benchmarks/costs_gpu.sh) through ``simulate.measure`` on GRID
(a grid with vision graph buckets of 8192 patches or more, e.g. a tuned one), one set of encoders,
``graph_cudnn_tokens`` 8192 (cuDNN for those buckets) and 0 (FlashAttention) in turns (ABBA).
Per run: measured GPU ms per modality, and per vision bucket of at least 8192 patches its backend
and ms. One JSON line per run, then the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics

from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.grid import BucketGrid
from omnienc.runtime.trace import read_trace
from omnienc.tools.simulate import build_measure_encoders, measure


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("grid")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    records, grid = read_trace(a.trace), BucketGrid.from_yaml(a.grid)
    encoders = build_measure_encoders()
    totals: dict[int, list] = {8192: [], 0: []}
    for r in range(a.rounds):
        for tokens in ((8192, 0, 0, 8192) if r % 2 == 0 else (0, 8192, 8192, 0)):
            got = measure(records, grid, BatchPolicy(), config=RuntimeConfig(graph_cudnn_tokens=tokens), encoders=encoders)
            s = got["stats"]
            big = {k: {"attention": v.get("attention"), "runs": v.get("runs"), "ms": round(v.get("ms", 0.0), 1)}
                   for k, v in s["vision"]["buckets"].items() if int(k.split("x")[0]) >= 8192}
            line = {"graph_cudnn_tokens": tokens, "card": got["card"], "vision_ms": round(s["vision"]["ms"], 1),
                    "audio_ms": round(s["audio"]["ms"], 1), "failed": got["failed"], "big_buckets": big}
            totals[tokens].append(s["vision"]["ms"] + s["audio"]["ms"])
            print(json.dumps(line), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(line) + "\n")
    on, off = statistics.median(totals[8192]), statistics.median(totals[0])
    summary = {"summary": True, "cudnn_ms_median": round(on, 1), "fa2_ms_median": round(off, 1),
               "cudnn_faster": round(off / on - 1, 4), "runs": {str(k): [round(x, 1) for x in v] for k, v in totals.items()}}
    print(json.dumps(summary), flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
