"""``omnienc tune``: choose the bucket grid that fits a request trace best.

Objective, per modality in its units: padded units over all replays plus ``fallback_penalty``
times the units that run eagerly; the modalities are added weighted by ``estimate_flops`` per
unit, so a padded vision patch weighs about 4x a padded audio frame.

Method: for requests packed alone the optimum is exact, by the classic optimal-breakpoints
dynamic program over the sorted distinct demand sizes (a bucket per chosen size, covering the
sizes down to the previous chosen one, its batch the largest batch among them; larger demands
run eagerly). With a batching window (``step_ms > 0``) arrivals are packed first, so the DP is
also run on whole-window demands and then, repeatedly, on the demands of the replays the best
grid so far produces; every candidate is scored by the real simulator and the best per graph
count is kept (a heuristic, never worse than the packed-alone optimum). The graph budget is
then split between the modalities by trying every split.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omnienc.runtime.grid import (
    Bucket, BucketGrid, GridError, ModalityGrid, estimate_activation_bytes, estimate_flops,
)
from omnienc.runtime.packing import Demand, Replay
from omnienc.runtime.simulate import ModalityReport, SimReport, batches, simulate, simulate_modality
from omnienc.runtime.trace import MODALITIES, TraceRecord, read_trace

_BLOCK = 512  # DP rows per numpy block: memory O(_BLOCK * distinct sizes)


def modality_cost(report: ModalityReport, fallback_penalty: float) -> float:
    """Cost of one modality in its units: padded units + penalty * eager units."""
    return report.padded_units + fallback_penalty * report.eager_units


def objective(report: SimReport, fallback_penalty: float = 1.0) -> float:
    """Cost of a whole simulation in estimated FLOPs (modalities weighted by ``estimate_flops``)."""
    return sum(estimate_flops(m.modality, modality_cost(m, fallback_penalty)) for m in report.modalities)


def optimal_buckets(
    items: Sequence[Demand], max_buckets: int, fallback_penalty: float, max_size: int | None = None
) -> list[tuple[Bucket, ...]]:
    """Optimal buckets for items that each run alone, for every bucket count.

    Minimises ``sum(bucket(x).size - x.size) + fallback_penalty * sum(eager sizes)`` where
    ``bucket(x)`` is the smallest bucket holding x and items that fit none run eagerly. Bucket
    sizes are drawn from the distinct item sizes (an optimum always exists there), at most
    ``max_size``. O(max_buckets * n^2) for n distinct sizes, vectorised.

    Args:
        items: The demands.
        max_buckets: Largest bucket count to solve for.
        fallback_penalty: Cost of one eager unit relative to one padded unit.
        max_size: Largest allowed bucket size; None for no limit.

    Returns:
        ``result[k]``: the best grid with at most k buckets, ascending, for k = 0..max_buckets.
    """
    sizes = np.array(sorted({d.size for d in items}), dtype=np.int64)
    n = len(sizes)
    if n == 0:
        return [()] * (max_buckets + 1)
    idx = {int(s): i for i, s in enumerate(sizes)}
    cnt, tot, maxb = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    for d in items:
        i = idx[d.size]
        cnt[i], tot[i], maxb[i] = cnt[i] + 1, tot[i] + d.size, max(maxb[i], d.batch)
    pc, ps = np.concatenate([[0.0], np.cumsum(cnt)]), np.concatenate([[0.0], np.cumsum(tot)])
    x = sizes.astype(np.float64)
    allowed = np.ones(n, dtype=bool) if max_size is None else sizes <= max_size
    tail = fallback_penalty * (ps[n] - ps[1:])  # eager cost of the items above size index j
    # f[j]: least padding of the items up to size index j with k buckets, the largest at j.
    f = np.where(allowed, x * pc[1:] - ps[1:], np.inf)
    layers: list[np.ndarray] = [f]
    args: list[np.ndarray] = [np.full(n, -1)]
    for _ in range(1, min(max_buckets, int(allowed.sum()))):
        a, b = f + ps[1:], pc[1:]  # f_k[j] = x_j pc_j+1 - ps_j+1 + min_{i<j} (a_i - x_j b_i)
        nf, arg = np.full(n, np.inf), np.full(n, -1)
        for j0 in range(1, n, _BLOCK):
            j = np.arange(j0, min(n, j0 + _BLOCK))
            m = a[None, :j[-1]] - x[j, None] * b[None, :j[-1]]
            m[np.arange(j[-1])[None, :] >= j[:, None]] = np.inf
            arg[j] = np.argmin(m, axis=1)
            nf[j] = m[np.arange(len(j)), arg[j]] + x[j] * pc[j + 1] - ps[j + 1]
        f = np.where(allowed, nf, np.inf)
        layers.append(f)
        args.append(arg)

    result: list[tuple[Bucket, ...]] = [()]
    best = fallback_penalty * ps[n]
    for k in range(1, max_buckets + 1):
        if k <= len(layers):
            total = layers[k - 1] + tail
            j = int(np.argmin(total))
            if total[j] < best:
                best, ends = total[j], [j]
                for layer in range(k - 1, 0, -1):
                    ends.append(int(args[layer][ends[-1]]))
                ends.reverse()
                lows = [0] + [e + 1 for e in ends[:-1]]
                result.append(tuple(Bucket(int(sizes[e]), int(maxb[lo : e + 1].max()))
                                    for lo, e in zip(lows, ends)))
                continue
        result.append(result[-1])
    return result


def tune_modality(
    records: Sequence[TraceRecord],
    modality: str,
    max_graphs: int,
    step_ms: float,
    fallback_penalty: float = 1.0,
    max_graph_bytes: float | None = None,
    dtype: str = "bfloat16",
    iterations: int = 4,
) -> list[tuple[float, tuple[Bucket, ...]]]:
    """Best buckets of one modality for each graph count, scored by the simulator.

    Args:
        records: The trace (records of other modalities are ignored).
        modality: ``"vision"`` or ``"audio"``.
        max_graphs: Largest bucket count to solve for.
        step_ms: Batching window (0: each request alone, where the result is optimal).
        fallback_penalty: Cost of an eager unit relative to a padded unit.
        max_graph_bytes: Largest estimated activation memory of a bucket; None for no limit.
        dtype: Activation dtype for the memory estimate.
        iterations: Most re-packing rounds when ``step_ms > 0``.

    Returns:
        ``result[k] = (cost, buckets)``: the best grid found with at most k buckets and its cost
        in units (``modality_cost``), for k = 0..max_graphs; cost is non-increasing in k.
    """
    groups = batches(records, modality, step_ms)
    items = [d for g in groups for d in g]
    max_size = None
    if max_graph_bytes is not None:  # largest size within the limit (the estimate grows with size)
        lo, hi, batch = 0, sum(d.size for d in items), sum(d.batch for d in items)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            ok = estimate_activation_bytes(modality, Bucket(mid, batch), dtype) <= max_graph_bytes
            lo, hi = (mid, hi) if ok else (lo, mid - 1)
        max_size = lo

    scored: dict[tuple[Bucket, ...], tuple[float, list[Replay]]] = {}

    def score(buckets: tuple[Bucket, ...]) -> tuple[float, list[Replay]]:
        if buckets not in scored:
            report, replays = simulate_modality(groups, modality, buckets)
            scored[buckets] = modality_cost(report, fallback_penalty), replays
        return scored[buckets]

    best: list[tuple[float, tuple[Bucket, ...]]] = [(np.inf, ())] * (max_graphs + 1)

    def fit(demands: list[Demand]) -> bool:
        """Scores the optimal grids of ``demands``, keeps those that improve; True if any did."""
        improved = False
        for k, buckets in enumerate(optimal_buckets(demands, max_graphs, fallback_penalty, max_size)):
            cost = score(buckets)[0]
            if cost < best[k][0] - 1e-9:
                best[k], improved = (cost, buckets), True
        for k in range(1, max_graphs + 1):  # at most k graphs: never worse than k - 1
            if best[k - 1][0] <= best[k][0]:
                best[k] = best[k - 1]
        return improved

    fit(items)  # requests alone: exact when step_ms == 0
    if step_ms > 0:  # whole windows (what a large bucket packs), then the best grid's replays
        fit([Demand(sum(d.size for d in g), sum(d.batch for d in g)) for g in groups])
        for _ in range(iterations):
            if not fit([Demand(r.size, r.batch) for r in score(best[max_graphs][1])[1]]):
                break
    return best


def tune(
    records: Sequence[TraceRecord],
    max_graphs: int = 24,
    step_ms: float = 10.0,
    fallback_penalty: float = 1.0,
    max_graph_bytes: float | None = None,
    dtype: str = "bfloat16",
    iterations: int = 4,
) -> BucketGrid:
    """Chooses the grid of at most ``max_graphs`` graphs that minimises ``objective`` on a trace.

    A modality absent from the trace gets no buckets (it runs eagerly only).

    Args:
        records: The trace.
        max_graphs: Largest total number of graphs (both modalities), >= 0.
        step_ms: Batching window of the simulation (0: each request alone).
        fallback_penalty: Cost of an eager unit relative to a padded unit.
        max_graph_bytes: Largest estimated activation memory of any bucket
            (``estimate_activation_bytes``); None for no limit.
        dtype: Activation dtype of the grid (used by the memory estimate).
        iterations: Most re-packing rounds when ``step_ms > 0``.

    Returns:
        The tuned grid.
    """
    if max_graphs < 0:
        raise GridError(f"max_graphs={max_graphs} is negative; pass 0 or more")
    present = [m for m in MODALITIES if any(r.modality == m for r in records)]
    tuned = {m: tune_modality(records, m, max_graphs, step_ms, fallback_penalty, max_graph_bytes,
                              dtype, iterations) for m in present}
    weight = {m: estimate_flops(m, 1.0) for m in present}
    choice: dict[str, tuple[Bucket, ...]] = {m: () for m in MODALITIES}
    best = np.inf
    for used in range(max_graphs + 1):  # fewest graphs first: a tie keeps the smaller grid
        for k in range(used + 1) if len(present) == 2 else [used]:
            split = dict(zip(present, (k, used - k)))
            c = sum(weight[m] * tuned[m][n][0] for m, n in split.items())
            if c < best and not np.isclose(c, best, rtol=1e-9, atol=0.0):
                best, choice = c, choice | {m: tuned[m][n][1] for m, n in split.items()}
    grids = {m: ModalityGrid(m, b) if b else None for m, b in choice.items()}
    return BucketGrid(dtype, grids["vision"], grids["audio"])


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``tune`` subcommand; its ``func`` default is :func:`run`."""
    p = subparsers.add_parser(
        "tune", help="choose bucket grids that fit a request trace",
        description="Choose the buckets of both modalities that minimise padded work plus an "
        "eager-fallback penalty over a trace, with at most --max-graphs graphs.")
    p.add_argument("--trace", required=True, help="JSONL request trace")
    p.add_argument("--max-graphs", type=int, default=24, help="most graphs in total (default 24)")
    p.add_argument("--max-graph-memory", type=float, default=None, metavar="GB",
                   help="most estimated activation memory of one graph, in GB (default: no limit)")
    p.add_argument("--step-ms", type=float, default=10.0, help="batching window (default 10; 0: alone)")
    p.add_argument("--fallback-penalty", type=float, default=1.0,
                   help="cost of an eagerly run unit relative to a padded unit (default 1)")
    p.add_argument("--base", default=None, help="grid to compare with (default: packaged grid)")
    p.add_argument("-o", "--output", required=True, help="where to write the tuned YAML grid")
    p.set_defaults(func=run)
    return p


def _summary(name: str, grid: BucketGrid, report: SimReport, penalty: float) -> list[str]:
    lines = [f"{name}: {grid.num_graphs} graphs, cost {objective(report, penalty) / 1e12:.2f} TFLOP "
             f"(padding + {penalty:g} x eager)"]
    for m in report.modalities:
        g = grid.modality(m.modality)
        lines.append(
            f"  {m.modality:6s} {len(g.buckets) if g else 0:2d} graphs  work {m.work:>10d}  padded "
            f"{m.padded_share:6.1%}  eager {m.eager_share:6.1%} of {m.requests} requests")
    return lines


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc tune``; returns 0, or 2 on bad input (message on stderr)."""
    try:
        if args.max_graphs < 0 or args.fallback_penalty < 0:
            raise GridError("--max-graphs and --fallback-penalty must be >= 0")
        if args.step_ms < 0:
            raise GridError(f"--step-ms {args.step_ms} is negative; pass 0 or more")
        if args.max_graph_memory is not None and args.max_graph_memory <= 0:
            raise GridError(f"--max-graph-memory {args.max_graph_memory} must be > 0 (GB)")
        records = read_trace(args.trace)
        base = BucketGrid.default() if args.base is None else BucketGrid.from_yaml(args.base)
        limit = None if args.max_graph_memory is None else args.max_graph_memory * 1e9
        grid = tune(records, args.max_graphs, args.step_ms, args.fallback_penalty, limit, base.dtype)
    except ValueError as e:  # GridError, TraceError
        print(f"omnienc tune: error: {e}", file=sys.stderr)
        return 2
    before, after = simulate(records, base, args.step_ms), simulate(records, grid, args.step_ms)
    lines = _summary("base ", base, before, args.fallback_penalty)
    lines += _summary("tuned", grid, after, args.fallback_penalty)
    header = (f"Tuned by `omnienc tune` on {Path(args.trace).name} ({len(records)} requests), "
              f"step {args.step_ms:g} ms, max {args.max_graphs} graphs, max graph memory "
              f"{'-' if limit is None else f'{args.max_graph_memory:g} GB'}, fallback penalty "
              f"{args.fallback_penalty:g}.\n" + "\n".join(lines[len(lines) // 2:]))
    try:
        grid.to_yaml(args.output, header=header)
        BucketGrid.from_yaml(args.output)  # the written grid must load
    except OSError as e:
        print(f"omnienc tune: error: cannot write {args.output}: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    for m in after.modalities:
        if not m.requests:
            print(f"note: the trace has no {m.modality} requests; the tuned grid runs them eagerly")
    print(f"wrote {args.output}")
    return 0
