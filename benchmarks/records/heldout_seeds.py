"""The tuned grid's predicted gain over many held-out traces (CPU; a record).

    python benchmarks/records/heldout_seeds.py [--costs configs/costs_h100.yaml] [--max-graphs 40]
        [--seeds 3102-3121]

Tunes within ``--max-graphs`` on the tuning trace (seed 3101, 40 s at 20 requests/s), then prices
the default grid and the tuned one on each held-out seed: every cuDNN graph built (a process that
has run the trace before) and as a first run. One line per seed, then the mean, least and most.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from omnienc.runtime.costs import CostModel
from omnienc.runtime.grid import BucketGrid
from omnienc.runtime.simulator import simulate
from omnienc.runtime.trace import read_trace
from omnienc.runtime.tune import tune


def trace(seed: int, folder: Path) -> list:
    path = folder / f"trace_{seed}.jsonl"
    subprocess.run([sys.executable, "-m", "omnienc.tools.cli", "tracegen", "-o", str(path), "--seconds", "40",
                    "--rate", "20", "--seed", str(seed)], check=True, capture_output=True)
    return read_trace(path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--costs", default="configs/costs_h100.yaml")
    p.add_argument("--max-graphs", type=int, default=40)
    p.add_argument("--seeds", default="3102-3121")
    args = p.parse_args()
    first, last = (int(x) for x in args.seeds.split("-"))
    costs, base = CostModel.load(args.costs), BucketGrid.default()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        grid = tune(trace(3101, folder), costs, args.max_graphs, None, None, base).grid
        steady, cold = [], []
        for seed in range(first, last + 1):
            held = trace(seed, folder)
            gain = [simulate(held, base, None, costs, warmup=w).ms / simulate(held, grid, None, costs, warmup=w).ms - 1
                    for w in (len(held), 0)]
            steady.append(gain[0])
            cold.append(gain[1])
            print(f"seed {seed}: {len(held)} requests; tuned faster by {gain[0]:+.1%} (cuDNN graphs built), "
                  f"{gain[1]:+.1%} (first run)")
    print(f"{args.max_graphs} graphs, {args.costs}: mean {statistics.fmean(steady):+.1%} (least {min(steady):+.1%}, "
          f"most {max(steady):+.1%}) with cuDNN graphs built; first runs mean {statistics.fmean(cold):+.1%}")


if __name__ == "__main__":
    main()
