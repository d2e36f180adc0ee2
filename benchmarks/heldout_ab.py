"""Grids measured on a held-out trace in one process, against their predictions.

    python benchmarks/heldout_ab.py --trace HELD.jsonl --costs MODEL.yaml [--grid NAME=GRID.yaml ...]
        [--also-costs NAME=MODEL.yaml ...] [--rounds 2] [--exact-graphs off] [--json-out FILE]
        [--warm-trace OTHER.jsonl] [--fresh-shapes]

The packaged default grid and each ``--grid`` are measured as ``omnienc tune --verify`` measures
(``tools.tune.measure_grids``: one set of encoders, a fresh runtime per run; each grid once untimed,
then ``--rounds`` rounds in turns, A B ... B A). Runs of the same trace on an H100 differed by more
than a prediction may miss, even in one process (docs/BENCHMARKS.md): one run per grid cannot tell
grids a few percent apart; each grid's mean over runs in turns can, and every run is shown.

For each grid and modality: the prediction of ``--costs`` (and of each ``--also-costs`` model) beside
the mean of the timed runs. The timed runs follow a whole untimed run, so their prediction counts
every batch as seen before (no cuDNN graph builds left to pay); the untimed run is compared with the
prediction of a first run in a process (warmed by its first batch only, as ``simulate --measure``).
Prints markdown; ``--json-out`` keeps every figure. Runs on the CPU too (reduced encoders): a check.

Serving is neither a process's first run nor the same trace again: a warm process meets shapes it
has not seen. ``--warm-trace`` runs the untimed runs on another trace (its first run is then
compared with that trace's prediction); ``--fresh-shapes`` empties the encoders' per-frame-shape
cache before every run, so no timed run finds the shapes an earlier run left there (their prediction
then prices every frame shape's layout, where the model has layout points). The timed runs are
still priced with every cuDNN graph of the trace built and, without ``--fresh-shapes``, every frame
shape laid out (after ``--warm-trace``, the first timed run does both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from omnienc.encoders.vision import forget_frame_layouts
from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel
from omnienc.runtime.grid import BucketGrid
from omnienc.runtime.simulator import compare, simulate
from omnienc.runtime.trace import read_trace
from omnienc.tools.tune import measure_grids


def named(values: list[str], flag: str) -> dict[str, str]:
    """``NAME=PATH`` pairs, in order."""
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} wants NAME=PATH, got {v!r}")
        out[name] = path
    return out


def error(predicted: float, measured: float) -> float | None:
    return predicted / measured - 1 if measured else None


def pct(e: float | None) -> str:
    return "-" if e is None else f"{e:+.1%}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", required=True)
    p.add_argument("--costs", required=True, help="the card's model: its predictions lead the table")
    p.add_argument("--also-costs", action="append", default=[], metavar="NAME=MODEL.yaml",
                   help="another model to price the same runs with")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=GRID.yaml", help="a grid beside the default")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--exact-graphs", choices=("on", "off"), default="off")
    p.add_argument("--json-out", default=None)
    p.add_argument("--warm-trace", default=None, help="the untimed runs' trace (default: --trace)")
    p.add_argument("--fresh-shapes", action="store_true",
                   help="empty the vision encoder's per-frame-shape cache before every run")
    args = p.parse_args(argv)
    import torch

    card = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    models = {"card": CostModel.load(args.costs, card=card)}
    models.update({n: CostModel.load(path, card=card) for n, path in named(args.also_costs, "--also-costs").items()})
    grids = {"default": BucketGrid.default()}
    grids.update({n: BucketGrid.from_yaml(path) for n, path in named(args.grid, "--grid").items()})
    records = read_trace(args.trace)
    batching, config = BatchPolicy(), RuntimeConfig(exact_graphs=args.exact_graphs == "on")

    warm = read_trace(args.warm_trace) if args.warm_trace else None
    got = measure_grids(records, grids, batching, config, rounds=args.rounds, warmup=1, warm_records=warm,
                        before_each=forget_frame_layouts if args.fresh_shapes else None)
    out = {"card": got.get("card"), "trace": args.trace, "warm_trace": args.warm_trace,
           "fresh_shapes": args.fresh_shapes, "requests": len(records), "rounds": args.rounds,
           "exact_graphs": args.exact_graphs, "models": {n: m.describe() for n, m in models.items()}, "grids": {}}
    md = [f"# Held-out trace {Path(args.trace).name} ({len(records)} requests) on {got.get('card')}", "",
          f"Each grid once untimed, then {args.rounds} timed runs in turns; measured: their mean GPU ms.", "",
          "| grid | modality | " + " | ".join(f"predicted ({n})" for n in models) + " | measured | "
          + " | ".join(f"error ({n})" for n in models) + " | timed runs |",
          "|---|---|" + "---:|" * (2 * len(models) + 2)]
    for name, grid in grids.items():
        bound = got[f"{name}_bound_units"]
        steady = {n: simulate(records, grid, batching, m, config=config, card=card, warmup=len(records),
                              bound_units=bound, forget_shapes=args.fresh_shapes) for n, m in models.items()}
        first = {n: simulate(warm or records, grid, batching, m, config=config, card=card, warmup=1,
                             bound_units=bound) for n, m in models.items()}
        runs = got[f"{name}_modality_runs"]
        modalities = sorted({m for r in runs for m in r})
        measured = {m: statistics.fmean(r.get(m, 0.0) for r in runs) for m in modalities}
        measured["total"] = statistics.fmean(got[f"{name}_runs"])
        predicted = {n: {**{mm.modality: mm.ms for mm in rep.modalities}, "total": rep.ms} for n, rep in steady.items()}
        for m in [*modalities, "total"]:
            each = [sum(r.values()) if m == "total" else r.get(m, 0.0) for r in runs]
            md.append(f"| {name} | {m} | " + " | ".join(f"{predicted[n].get(m, 0.0):.1f}" for n in models)
                      + f" | {measured[m]:.1f} | " + " | ".join(pct(error(predicted[n].get(m, 0.0), measured[m]))
                                                              for n in models)
                      + " | " + ", ".join(f"{x:.1f}" for x in each) + " |")
        untimed = got[f"{name}_untimed"]
        out["grids"][name] = {
            "measured": measured, "runs": got[f"{name}_runs"], "modality_runs": runs, "untimed": untimed,
            "failed": got[f"{name}_failed"], "bound_units": bound, "predicted": predicted,
            "first_run_predicted": {n: rep.ms for n, rep in first.items()},
            "comparison_last_run": compare(steady["card"], got[f"{name}_stats"]),
        }
        if untimed:
            what = "first run (untimed, warm trace)" if warm else "first run (untimed)"
            md.append(f"| {name} | {what} | " + " | ".join(f"{first[n].ms:.1f}" for n in models)
                      + f" | {untimed[0]:.1f} | " + " | ".join(pct(error(first[n].ms, untimed[0])) for n in models)
                      + " | |")
        if got[f"{name}_failed"]:
            md.append(f"| {name} | {got[f'{name}_failed']} requests FAILED | | | | |")
    md.append("")
    base = out["grids"]["default"]["measured"]["total"]
    for name in grids:
        if name == "default":
            continue
        g = out["grids"][name]
        pred = g["predicted"]["card"]["total"], out["grids"]["default"]["predicted"]["card"]["total"]
        md.append(f"- {name}: measured {base / g['measured']['total'] - 1:+.1%} faster than the default "
                  f"({g['measured']['total']:.1f} against {base:.1f} ms); predicted {pred[1] / pred[0] - 1:+.1%}")
    print("\n".join(md))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
