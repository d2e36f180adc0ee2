"""The quick calibration's replay points inside a trace's span, A/B on measured runs (a record).

    python benchmarks/records/quick_points_ab.py DIR

DIR holds what ``costs_gpu.sh`` (through ``heldout_ab.py``) brought back: ``heldout.json``, the
held-out trace, the grids and the quick model (``costs_*.yaml``, with the points vision 3136 and
audio 1200) and the full one (``full_costs_*.yaml``) where it ran. The same measured runs priced by
the quick model, by that model without those two points (the quick calibration before them: the
same samples, one size fewer per modality) and by the full model: error per grid and modality. The
pricing is the simulator's, as the runtime ran (the timed runs follow a whole untimed run; each
grid's measured bound).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel
from omnienc.runtime.grid import BucketGrid
from omnienc.runtime.simulator import simulate
from omnienc.runtime.trace import read_trace

DROPPED = {("vision", "replay"): 3136, ("audio", "replay"): 1200}


def without_points(path: Path) -> CostModel:
    d = yaml.safe_load(path.read_text())
    for (m, k), size in DROPPED.items():
        d[m][k] = [p for p in d[m][k] if p["size"] != size]
    return CostModel.from_dict(d, source=f"{path.name} without {sorted(DROPPED.values())}")


def main(folder: str) -> int:
    root = Path(folder)
    held = json.loads((root / "heldout.json").read_text())
    quick = next(p for p in root.glob("costs_*.yaml"))
    models = {"quick": CostModel.load(quick), "quick without the points": without_points(quick)}
    full = list(root.glob("full_costs_*.yaml"))
    if full:
        models["full"] = CostModel.load(full[0])
    records = read_trace(root / Path(held["trace"]).name)
    grids = {"default": BucketGrid.default()}
    names = {"tuned": "grid_tuned_grid.yaml", "tuned_40": "grid_tuned_grid_40.yaml"}
    grids.update({n: BucketGrid.from_yaml(root / f) for n, f in names.items() if n in held["grids"]})
    print(f"| grid | modality | measured | " + " | ".join(f"error ({n})" for n in models) + " |")
    print("|---|---|---:|" + "---:|" * len(models))
    for name, grid in grids.items():
        g = held["grids"][name]
        reports = {n: simulate(records, grid, BatchPolicy(), m, config=RuntimeConfig(exact_graphs=False),
                               card=held["card"], warmup=len(records), bound_units=g["bound_units"])
                   for n, m in models.items()}
        for mod, measured in g["measured"].items():
            pred = {n: (r.ms if mod == "total" else next(x.ms for x in r.modalities if x.modality == mod))
                    for n, r in reports.items()}
            print(f"| {name} | {mod} | {measured:.1f} | "
                  + " | ".join(f"{pred[n] / measured - 1:+.1%}" for n in models) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
