"""``omnienc tune``: the command line of the bucket tuner (``runtime/tune.py``)."""

from __future__ import annotations

import argparse
import shlex
from collections import Counter
from pathlib import Path

from omnienc.runtime.costs import CostModel
from omnienc.runtime.grid import BucketGrid
from omnienc.runtime.simulator import SimReport, compare, describe_batching, simulate
from omnienc.runtime.trace import read_trace
from omnienc.runtime.tune import tune
from omnienc.tools.args import HelpFormatter, add_number, check_output, command, error
from omnienc.tools.simulate import EPILOG, add_trace_args, batching_from_args, config_from_args

OUTPUT_SUFFIXES = (".yaml", ".yml")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``tune`` subcommand; its ``func`` default is :func:`run`."""
    p = subparsers.add_parser(
        "tune", help="choose the bucket grid with the least predicted GPU time on a trace",
        formatter_class=HelpFormatter, epilog=EPILOG,
        description="Choose the buckets of both modalities, and which of them are graphs (graphs_up_to),\n"
        "that minimise the predicted GPU time of a trace (replays + eager runs + fallbacks, from a\n"
        "measured cost model), with at most --max-graphs graph buckets. The base grid is scored the\n"
        "same way; if the search cannot beat it, the base is written unchanged. With --verify on a GPU,\n"
        "the grid is tuned on the trace's first two thirds, base and tuned are measured on the last\n"
        "third (each once untimed, then twice each in turns), and the faster is written.")
    add_trace_args(p)
    add_number(p, "--max-graphs", lo=0, hi=512, default=24, metavar="N", unit="graphs",
               why="each graph holds its own memory and capture time",
               help="most graph buckets (captured CUDA graphs) in total; eager buckets are free (default 24)")
    add_number(p, "--max-graph-memory", kind=float, lo=0, open_lo=True, hi=1024, default=None, metavar="GB",
               unit="GB", help="most estimated activation memory of one graph, in GB (default: no limit)")
    p.add_argument("--base", default=None, metavar="GRID.yaml", help="grid to beat (default: packaged grid)")
    p.add_argument("--verify", action="store_true",
                   help="on a GPU: tune on the first two thirds of the trace, measure the base and the tuned grid on "
                   "the last third (as omnienc simulate --measure; each once untimed, then twice each in turns: "
                   "base, tuned, tuned, base) and write the faster; without CUDA, say so and write the tuned grid")
    p.add_argument("-o", "--output", required=True, metavar="GRID.yaml",
                   help="where to write the tuned YAML grid (written whole or not at all; never an input)")
    p.set_defaults(func=command("tune", run))
    return p


def _command(args: argparse.Namespace) -> str:
    """The command line, rebuilt from the parsed options."""
    parts = ["omnienc", "tune", "--trace", str(args.trace)]
    for flag in ("max_graphs", "max_graph_memory", "step_ms", "max_wait_ms", "max_batch", "quiet_ms", "costs", "base",
                 "card", "exact_graphs"):
        value = getattr(args, flag, None)
        if value is not None:
            parts += ["--" + flag.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts + (["--verify"] if getattr(args, "verify", False) else []) + ["-o", str(args.output)])


def cuda_available() -> bool:
    """Whether a GPU is there to measure on (torch imported only to ask)."""
    import torch

    return torch.cuda.is_available()


def split_held_out(records: list) -> tuple[list, list]:
    """The trace's first two thirds (to tune on) and last third (held out, to measure on)."""
    cut = len(records) - len(records) // 3
    return records[:cut], records[cut:]


def measure_grids(records: list, grids: dict, batching, config, rounds: int = 2, warmup: int = 1, *,
                  warm_records: list | None = None, before_each=None) -> dict:
    """Measured GPU ms of ``records`` on each grid (``simulate.measure``, one set of encoders), and the card.

    Each grid first runs ``warmup`` times untimed: what a process pays once (kernels loaded at first
    use, cuDNN graphs built for the shapes of uncaptured calls: a grid with eager buckets measured
    slower in its first run than in its next, docs/BENCHMARKS.md) is then paid by neither figure,
    which compare the grids as a serving process runs them. Then the grids run in turns, ``rounds``
    times, each round in the other order (A B B A): a drift over the process (a card warming) falls
    on every grid alike. A grid's figure is the mean of its runs (``NAME_runs`` lists them); its
    statistics and bound are its last run's, its failures the most of any timed run; ``NAME_modality_runs``
    holds each timed run's ms per modality, and ``NAME_untimed`` the untimed runs' ms (what the first
    run in a process costs).

    Args:
        warm_records: The untimed runs' trace, if not ``records``: a process warmed by other traffic.
        before_each: Called before every run, e.g. to forget what a run of the same shapes cached.
    """
    from omnienc.tools.simulate import build_measure_encoders, measure

    def per_modality(stats: dict) -> dict[str, float]:
        return {m: v["ms"] for m, v in stats.items() if isinstance(v, dict) and "ms" in v}

    encoders = build_measure_encoders()
    names = list(grids)
    out: dict = {f"{n}_{k}": [] for n in names for k in ("runs", "modality_runs", "untimed")}

    def run(trace, name):
        if before_each is not None:
            before_each()
        return measure(trace, grids[name], batching, config=config, encoders=encoders)

    for _ in range(warmup):
        for name in names:
            got = run(records if warm_records is None else warm_records, name)
            out[f"{name}_untimed"].append(sum(per_modality(got["stats"]).values()))
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            got = run(records, name)
            ms = per_modality(got["stats"])
            out[f"{name}_runs"].append(sum(ms.values()))
            out[f"{name}_modality_runs"].append(ms)
            out["card"], out[f"{name}_stats"] = got["card"], got["stats"]
            out[f"{name}_failed"] = max(out.get(f"{name}_failed", 0), got["failed"])
            out[f"{name}_bound_units"] = got["bound_units"]
    for n in names:
        out[n] = sum(out[f"{n}_runs"]) / len(out[f"{n}_runs"])
    return out


def breakdown(name: str, report: SimReport, stats: dict) -> str:
    """One line: ``name``'s measured against predicted GPU ms per modality and per kind of run that
    ran (``simulator.compare``), so a verification that misses says where."""
    parts = []
    for m, c in compare(report, stats)["modalities"].items():
        kinds = ", ".join(f"{k} {v['measured']['ms']:.1f}/{v['predicted']['ms']:.1f}"
                          for k, v in c["kinds"].items() if v["measured"]["runs"] or v["predicted"]["runs"])
        parts.append(f"{m} {c['measured_ms']:.1f}/{c['predicted_ms']:.1f} ({kinds})")
    return f"  {name}, measured/predicted ms: " + "; ".join(parts)


def keep_faster(base_ms: float, tuned_ms: float, base_ok: bool, base_failed: int = 0, tuned_failed: int = 0) -> str:
    """Which grid to write, measured: the tuned one unless the base, within the constraints, was at
    least as fast or the tuned one failed more requests (a request too large for it, say)."""
    return "base" if base_ok and (base_ms <= tuned_ms or tuned_failed > base_failed) else "tuned"


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
        config = config_from_args(args)
        records = read_trace(args.trace)
        base_name = args.base or "omnienc/configs/qwen3_omni.yaml"
        base = BucketGrid.default() if args.base is None else BucketGrid.from_yaml(args.base)
        limit = None if args.max_graph_memory is None else args.max_graph_memory * 1e9
        verify, lines = args.verify, []
        if verify and not cuda_available():
            lines.append("--verify: measuring the grids needs a GPU (no CUDA here); the tuned grid is written "
                         "unverified, tuned on the whole trace")
            verify = False
        card = args.card
        if verify and card is None:
            import torch

            card = torch.cuda.get_device_name()
        costs = CostModel.load(args.costs, card=card)
        tuning, held = split_held_out(records) if verify else (records, [])
        if verify and not held:
            raise ValueError(f"--verify: {args.trace} has {len(records)} requests, too few to hold a third out")
        result = tune(tuning, costs, args.max_graphs, batching, limit, base, config=config)
    except ValueError as e:  # GridError, TraceError, CostError
        return error("tune", str(e))
    before = simulate(tuning, base, batching, costs, config=config, card=card)
    after = simulate(tuning, result.searched, batching, costs, config=config, card=card)
    counts = Counter(r.modality for r in tuning)
    what = "its first two thirds, " if verify else ""
    lines += [f"trace: {args.trace}, {len(records)} requests; tuned on {what}{len(tuning)} requests "
              f"({counts['vision']} vision, {counts['audio']} audio)",
              f"batching: {describe_batching(batching)}; exact-layout graphs {'on' if after.exact_graphs else 'off'}",
              f"costs: {costs.describe()}", f"card: predictions for {card or costs.card} with a model of {costs.card}"]
    if after.card_note:
        lines.append(f"FOREIGN CARD: {after.card_note}")
    base_lines = _summary("base ", base, before)
    if not result.base_admissible:
        base_lines[0] += (f" -- outside the constraints (--max-graphs {args.max_graphs}"
                          f"{'' if limit is None else f', --max-graph-memory {args.max_graph_memory:g} GB'}), "
                          "so not a candidate")
    tuned_lines = _summary("tuned", result.searched, after)
    change = (result.searched_ms - result.base_ms) / result.base_ms if result.base_ms else 0.0
    tuned_lines[0] += f" ({change:+.1%} vs base)"
    grid, from_base = result.grid, result.from_base
    if result.from_base:
        verdict = (f"the search ({result.searched_ms:.1f} ms) did not beat the base ({result.base_ms:.1f} ms): "
                   f"writing the base grid unchanged")
    else:
        verdict = f"writing the tuned grid: predicted {result.ms:.1f} ms vs base {result.base_ms:.1f} ms"
    verified = ""
    if verify and not result.from_base:
        got = measure_grids(held, {"base": base, "tuned": result.searched}, batching, config)
        # The timed runs follow a whole untimed run: every batch was seen before (cuDNN graphs built).
        reports = {n: simulate(held, g, batching, costs, config=config, card=card, warmup=len(held),
                               bound_units=got[f"{n}_bound_units"])
                   for n, g in (("base", base), ("tuned", result.searched))}
        pred = {n: r.ms for n, r in reports.items()}
        gain = got["base"] / got["tuned"] - 1 if got["tuned"] else 0.0

        def runs(n):  # each run's figure, where the grid ran more than once
            each = got.get(f"{n}_runs") or []
            return f"; runs {', '.join(f'{x:.1f}' for x in each)}" if len(each) > 1 else ""

        verified = (f"verified on the held-out last third ({len(held)} requests) on {got['card']}, each grid once "
                    f"untimed, then in turns: base {got['base']:.1f} ms measured "
                    f"(predicted {pred['base']:.1f}{runs('base')}), "
                    f"tuned {got['tuned']:.1f} ms measured (predicted {pred['tuned']:.1f}{runs('tuned')}): "
                    f"the tuned grid {gain:+.1%} faster")
        failed = {n: got.get(f"{n}_failed", 0) for n in ("base", "tuned")}
        if any(failed.values()):
            verified += f"; requests that failed: base {failed['base']}, tuned {failed['tuned']}"
        verified += "".join("\n" + breakdown(n, r, got[f"{n}_stats"]) for n, r in reports.items())
        if keep_faster(got["base"], got["tuned"], result.base_admissible, failed["base"], failed["tuned"]) == "base":
            grid, from_base = base, True
            verdict = ("writing the base grid: the tuned grid " + ("failed more requests" if failed["tuned"] > failed["base"]
                       else "did not measure faster") + " on the held-out third")
        elif got["tuned"] < got["base"]:
            verdict = "writing the tuned grid: it measured faster on the held-out third"
        else:
            verdict = "writing the tuned grid: the base measured faster but is outside the constraints"
    lines += base_lines + tuned_lines + ([verified] if verified else []) + [verdict]
    header = "\n".join([
        f"Tuned by `omnienc tune` on {Path(args.trace).name} ({len(tuning)} of its {len(records)} requests).",
        f"command: {_command(args)}",
        f"costs: {costs.describe()}",
        f"batching: {describe_batching(batching)}",
        f"predicted GPU time of those requests: this grid "
        f"{result.base_ms if from_base else result.searched_ms:.1f} ms; "
        f"base {base_name} {result.base_ms:.1f} ms" + ("" if result.base_admissible else " (outside the constraints)")
        + ("; the search did not beat the base, so this is the base" if result.from_base else ""),
        *([verified, verdict] if verified else []),
        *(_summary("this grid", grid, before if from_base else after)[1:]),
    ])
    try:
        with atomic_path(args.output) as tmp:
            grid.to_yaml(tmp, header=header)
            BucketGrid.from_yaml(tmp)  # the written grid must load before it replaces anything
    except OSError as e:
        return error("tune", f"cannot write {args.output}: {e}; nothing was written")
    print("\n".join(lines))
    for m in after.modalities:
        if not m.requests:
            print(f"note: the trace has no {m.modality} requests; the tuned grid runs them as fallbacks")
    print(f"wrote {args.output}")
    return 0
