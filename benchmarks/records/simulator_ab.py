"""The simulator of an older commit against this checkout's, alternated in one process (CPU).

    python benchmarks/records/simulator_ab.py OLD_REF [--rounds 5]

Both simulate the default grid over a 6,000-request `tracegen` trace (seed 0), five times per
modality per round; prints each round's seconds and whether the two gave the same predictions.
"""

from __future__ import annotations

import argparse
import time

from old_code import load_old

from omnienc.runtime import BucketGrid, CostModel, RuntimeConfig
from omnienc.runtime import simulator as new
from omnienc.tools.tracegen import generate_trace


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("old_ref")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    old = load_old(a.old_ref, "runtime/simulator.py", "omnienc.runtime.simulator_old")
    trace, grid, costs = generate_trace(300, 20, seed=0), BucketGrid.default(), CostModel.load()
    seconds, outputs = {"old": [], "new": []}, {}
    for _ in range(a.rounds):
        for name, mod in (("old", old), ("new", new)):
            t0, out = time.perf_counter(), []
            for modality, g in (("vision", grid.vision), ("audio", grid.audio)):
                groups = mod.batches(trace, modality, mod.BatchPolicy())
                for _ in range(5):
                    stats, packs = mod.simulate_modality(groups, modality, g.buckets, g.is_graph, costs, RuntimeConfig())
                    out.append((round(stats.ms, 6), len(packs)))
            seconds[name].append(round(time.perf_counter() - t0, 3))
            outputs[name] = out
    print({k: v for k, v in seconds.items()}, "same predictions:", outputs["old"] == outputs["new"])


if __name__ == "__main__":
    main()
