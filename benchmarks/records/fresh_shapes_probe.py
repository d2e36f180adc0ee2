"""Where a warm process's runs of a held-out trace part from their prediction (a record of a GPU call).

    python benchmarks/records/fresh_shapes_probe.py --trace HELD.jsonl --warm-trace OTHER.jsonl
        --grid NAME=GRID.yaml --costs NAME=MODEL.yaml [--costs ...] [--out FILE.json]

A call priced a warm process's runs of a held-out trace, with the per-frame-shape cache emptied before
each, by a model measured on another machine, and found them slower than predicted, the default grid
more than a graphs-only grid. Three things differed from the earlier call whose predictions held:
the machine, the shapes (fresh), the trace the process had warmed on. Here, in one process: the
default grid and ``--grid`` each run the warm trace once and the held-out trace once untimed (cuDNN
graphs built, shapes cached), then in turns, twice (A B C D, D C B A), with cached shapes and with
the cache emptied before the run. After the runs the process calibrates (quick), so the runs are
priced by a model of this machine and process too. Also: the host time of the trace's frame layouts.
Prints markdown; ``--out`` keeps every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from omnienc.encoders.vision import _frame_layout, forget_frame_layouts
from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.calibrate import calibrate
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel
from omnienc.runtime.grid import BucketGrid
from omnienc.runtime.simulator import compare, simulate
from omnienc.runtime.trace import read_trace
from omnienc.tools.simulate import build_measure_encoders, measure


def named(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def layout_ms(records) -> tuple[int, float]:
    """Distinct frame shapes of the trace and the host ms to lay them all out once."""
    shapes = sorted({(h, w) for r in records if r.modality == "vision" for _, h, w in r.grid_thw})
    t0 = time.perf_counter()
    for h, w in shapes:
        _frame_layout.__wrapped__(h, w, 2, 48)
    return len(shapes), (time.perf_counter() - t0) * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trace", required=True)
    p.add_argument("--warm-trace", required=True)
    p.add_argument("--grid", action="append", default=[])
    p.add_argument("--costs", action="append", default=[])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    records, warm = read_trace(args.trace), read_trace(args.warm_trace)
    grids = {"default": BucketGrid.default(), **{n: BucketGrid.from_yaml(f) for n, f in named(args.grid).items()}}
    batching, config = BatchPolicy(), RuntimeConfig(exact_graphs=False)
    enc = build_measure_encoders()

    def run(trace, grid, fresh):
        if fresh:
            forget_frame_layouts()
        got = measure(trace, grids[grid], batching, config=config, encoders=enc)
        return got

    for g in grids:
        run(warm, g, True)
        run(records, g, True)
    configs = [(g, fresh) for fresh in (False, True) for g in grids]
    runs = {c: [] for c in configs}
    for r in range(2):
        for c in configs if r == 0 else configs[::-1]:
            got = run(records, *c)
            runs[c].append(got)
    t0 = time.perf_counter()
    vis, aud, _ = enc
    models = {n: CostModel.load(f) for n, f in named(args.costs).items()}
    models["inproc"] = calibrate(vis, aud, quick=True, command="fresh_shapes_probe (after the runs)")
    calib_s = time.perf_counter() - t0
    n_shapes, host_ms = layout_ms(records)
    out = {"card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "trace": args.trace,
           "warm_trace": args.warm_trace, "calibrate_s": round(calib_s, 2), "frame_shapes": n_shapes,
           "layout_host_ms": round(host_ms, 2), "models": {n: m.describe() for n, m in models.items()}, "configs": []}
    md = [f"# {out['card']}: held-out {args.trace}, warm on {args.warm_trace}", "",
          f"{n_shapes} distinct frame shapes; laying them all out took {host_ms:.1f} ms on the host. "
          f"In-process quick calibration: {calib_s:.1f} s.", "",
          "| grid | shapes | modality | " + " | ".join(f"pred. ({n})" for n in models) + " | measured (runs) | "
          + " | ".join(f"err. ({n})" for n in models) + " |", "|---|---|---|" + "---:|" * (2 * len(models) + 1)]
    for (g, fresh), got in runs.items():
        bound = got[-1]["bound_units"]
        reps = {n: simulate(records, grids[g], batching, m, config=config, warmup=len(records), bound_units=bound,
                            forget_shapes=fresh) for n, m in models.items()}
        each = [{m: v["ms"] for m, v in x["stats"].items() if isinstance(v, dict) and "ms" in v} for x in got]
        entry = {"grid": g, "fresh": fresh, "runs": each,
                 "predicted": {n: {mm.modality: mm.ms for mm in r.modalities} for n, r in reps.items()},
                 "comparison": {n: compare(r, got[-1]["stats"]) for n, r in reps.items()}}
        out["configs"].append(entry)
        for mod in ("vision", "audio"):
            meas = statistics.fmean(e[mod] for e in each)
            md.append(f"| {g} | {'fresh' if fresh else 'cached'} | {mod} | "
                      + " | ".join(f"{entry['predicted'][n][mod]:.1f}" for n in models)
                      + f" | {meas:.1f} ({', '.join(f'{e[mod]:.0f}' for e in each)}) | "
                      + " | ".join(f"{entry['predicted'][n][mod] / meas - 1:+.1%}" for n in models) + " |")
    print("\n".join(md))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        models["inproc"].save(args.out.rsplit(".", 1)[0] + "_inproc.yaml")


if __name__ == "__main__":
    main()
