"""``omnienc tune``: the command line of the bucket tuner (``runtime/tune.py``)."""

from __future__ import annotations

import argparse
import shlex
from collections import Counter
from pathlib import Path

from omnienc.runtime.costs import CostModel
from omnienc.runtime.grid import BucketGrid
from omnienc.runtime.simulate import SimReport, describe_batching, simulate
from omnienc.runtime.trace import read_trace
from omnienc.runtime.tune import tune
from omnienc.tools.args import HelpFormatter, add_number, check_output, command, error
from omnienc.tools.simulate import EPILOG, add_trace_args, batching_from_args

OUTPUT_SUFFIXES = (".yaml", ".yml")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``tune`` subcommand; its ``func`` default is :func:`run`."""
    p = subparsers.add_parser(
        "tune", help="choose the bucket grid with the least predicted GPU time on a trace",
        formatter_class=HelpFormatter, epilog=EPILOG,
        description="Choose the buckets of both modalities, and which of them are graphs (graphs_up_to),\n"
        "that minimise the predicted GPU time of a trace (replays + eager runs + fallbacks, from a\n"
        "measured cost model), with at most --max-graphs graph buckets. The base grid is scored the\n"
        "same way; if the search cannot beat it, the base is written unchanged.")
    add_trace_args(p)
    add_number(p, "--max-graphs", lo=0, hi=512, default=24, metavar="N", unit="graphs",
               why="each graph holds its own memory and capture time",
               help="most graph buckets (captured CUDA graphs) in total; eager buckets are free (default 24)")
    add_number(p, "--max-graph-memory", kind=float, lo=0, open_lo=True, hi=1024, default=None, metavar="GB",
               unit="GB", help="most estimated activation memory of one graph, in GB (default: no limit)")
    p.add_argument("--base", default=None, metavar="GRID.yaml", help="grid to beat (default: packaged grid)")
    p.add_argument("-o", "--output", required=True, metavar="GRID.yaml",
                   help="where to write the tuned YAML grid (written whole or not at all; never an input)")
    p.set_defaults(func=command("tune", run))
    return p


def _command(args: argparse.Namespace) -> str:
    """The command line, rebuilt from the parsed options."""
    parts = ["omnienc", "tune", "--trace", str(args.trace)]
    for flag in ("max_graphs", "max_graph_memory", "step_ms", "max_wait_ms", "max_batch", "quiet_ms", "costs", "base"):
        value = getattr(args, flag)
        if value is not None:
            parts += ["--" + flag.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts + ["-o", str(args.output)])


def _grid_words(grid: BucketGrid) -> str:
    eager = sum(len(g.buckets) - len(g.graph_buckets) for g in (grid.vision, grid.audio) if g)
    return f"{grid.num_graphs} graph buckets + {eager} eager buckets"


def _summary(name: str, grid: BucketGrid, report: SimReport) -> list[str]:
    lines = [f"{name}: {_grid_words(grid)}; predicted {report.ms:.1f} ms GPU"]
    for m in report.modalities:
        g = grid.modality(m.modality)
        up_to = "" if g is None or g.graphs_up_to is None else f", graphs up to {g.graphs_up_to}"
        lines.append(
            f"  {m.modality:6s} {m.graph_buckets:2d} graphs + {m.eager_buckets:2d} eager{up_to}: predicted "
            f"{m.ms:9.1f} ms; {m.replays} replays, {m.eager_runs} eager runs, {m.fallbacks} fallbacks "
            f"({m.fallback_share:.1%} of {m.requests} requests); padded {m.padded_share:.1%}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc tune``; returns 0, or 2 on bad input (message on stderr)."""
    from omnienc.runtime.atomic import atomic_path

    check_output("-o", args.output, OUTPUT_SUFFIXES,
                 [("--trace", args.trace), ("--base", args.base), ("--costs", args.costs)])
    try:
        batching = batching_from_args(args)
        costs = CostModel.load(args.costs)
        records = read_trace(args.trace)
        base_name = args.base or "omnienc/configs/qwen3_omni.yaml"
        base = BucketGrid.default() if args.base is None else BucketGrid.from_yaml(args.base)
        limit = None if args.max_graph_memory is None else args.max_graph_memory * 1e9
        result = tune(records, costs, args.max_graphs, batching, limit, base)
    except ValueError as e:  # GridError, TraceError, CostError
        return error("tune", str(e))
    before = simulate(records, base, batching, costs)
    after = simulate(records, result.searched, batching, costs)
    counts = Counter(r.modality for r in records)
    lines = [f"trace: {args.trace}, {len(records)} requests ({counts['vision']} vision, {counts['audio']} audio)",
             f"batching: {describe_batching(batching)}", f"costs: {costs.describe()}"]
    base_lines = _summary("base ", base, before)
    if not result.base_admissible:
        base_lines[0] += (f" -- outside the constraints (--max-graphs {args.max_graphs}"
                          f"{'' if limit is None else f', --max-graph-memory {args.max_graph_memory:g} GB'}), "
                          "so not a candidate")
    tuned_lines = _summary("tuned", result.searched, after)
    change = (result.searched_ms - result.base_ms) / result.base_ms if result.base_ms else 0.0
    tuned_lines[0] += f" ({change:+.1%} vs base)"
    if result.from_base:
        verdict = (f"the search ({result.searched_ms:.1f} ms) did not beat the base ({result.base_ms:.1f} ms): "
                   f"writing the base grid unchanged")
    else:
        verdict = f"writing the tuned grid: predicted {result.ms:.1f} ms vs base {result.base_ms:.1f} ms"
    lines += base_lines + tuned_lines + [verdict]
    header = "\n".join([
        f"Tuned by `omnienc tune` on {Path(args.trace).name} ({len(records)} requests).",
        f"command: {_command(args)}",
        f"costs: {costs.describe()}",
        f"batching: {describe_batching(batching)}",
        f"predicted GPU time of the trace: this grid {result.ms:.1f} ms; base {base_name} {result.base_ms:.1f} ms"
        + ("" if result.base_admissible else " (outside the constraints)")
        + ("; the search did not beat the base, so this is the base" if result.from_base else ""),
        *(_summary("this grid", result.grid, before if result.from_base else after)[1:]),
    ])
    try:
        with atomic_path(args.output) as tmp:
            result.grid.to_yaml(tmp, header=header)
            BucketGrid.from_yaml(tmp)  # the written grid must load before it replaces anything
    except OSError as e:
        return error("tune", f"cannot write {args.output}: {e}; nothing was written")
    print("\n".join(lines))
    for m in after.modalities:
        if not m.requests:
            print(f"note: the trace has no {m.modality} requests; the tuned grid runs them as fallbacks")
    print(f"wrote {args.output}")
    return 0
