"""Simulates a request trace on a bucket grid, on the host: what the runtime would run, and its
predicted GPU time (``omnienc simulate``).

1. Requests are batched as ``EncoderService`` batches them (``batching.group_arrivals`` with a
   ``BatchPolicy``: wait up to ``max_wait_ms`` after the first pending request, at most ``max_batch``
   requests), or, for comparison with older results, in fixed windows of ``step_ms``.
2. Each batch's requests of one modality are packed with ``packing.pack``, as the runtime packs one
   ``encode`` call.
3. Each pack is a *replay* (a graph bucket, padded), an *eager run* (an eager bucket above
   ``graphs_up_to``, unpadded; a batch's eager runs share one call, ``packing.eager_groups``, as in
   a runtime with the default ``eager_merge``) or a *fallback* (fits no bucket); its GPU time comes from a
   ``CostModel`` (default: the packaged calibration), with vision attention priced by the pack's
   ``attention_segments`` (how its members cut the run into segments).

The report is one ``stats.ModalityStats`` per modality: the schema the runtime measures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from omnienc.runtime.batching import BatchPolicy, group_arrivals, group_windows
from omnienc.runtime.costs import CostModel, attention_segments, estimate_flops
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.grid import Bucket, BucketGrid
from omnienc.runtime.packing import BucketSet, Demand, Pack, eager_groups, pack
from omnienc.runtime.split import piece_demands
from omnienc.runtime.stats import UNITS, ModalityStats, new_modality_stats
from omnienc.runtime.trace import MODALITIES, TraceRecord

Batching = BatchPolicy | float  # a policy (the service's rule), or a fixed window in ms (legacy)


def describe_batching(batching: Batching) -> str:
    """One line naming the batching rule."""
    if isinstance(batching, BatchPolicy):
        return batching.describe()
    return "each request alone" if batching == 0 else f"fixed {batching:g} ms windows (--step-ms)"


def resolve_batching(batching: Batching | None, step_ms: float | None) -> Batching:
    """The batching a call asked for: ``batching`` or fixed ``step_ms`` windows (not both); the
    service's default ``BatchPolicy()`` when neither."""
    if step_ms is not None:
        if batching is not None:
            raise ValueError("give batching or step_ms, not both")
        return step_ms
    return BatchPolicy() if batching is None else batching


def group_records(
    records: Sequence[TraceRecord], batching: Batching, busy_ms: Callable[[list[int]], float] | None = None
) -> list[list[int]]:
    """Batches of record indices (both modalities together, as one ``encode`` call each).

    Args:
        records: The trace.
        batching: A ``BatchPolicy``, or a window length in ms (0: each request alone).
        busy_ms: Only with a policy: how long the worker is busy with a batch (``group_arrivals``).

    Returns:
        Batches in the order they run; indices in arrival order.
    """
    times = [r.ts for r in records]
    if isinstance(batching, BatchPolicy):
        return group_arrivals(times, batching, busy_ms)
    if busy_ms is not None:
        raise ValueError("a busy worker needs the service's rule (a BatchPolicy), not fixed windows")
    return group_windows(times, batching)


def batches(records: Iterable[TraceRecord], modality: str, batching: Batching = BatchPolicy()) -> list[list[Demand]]:
    """The demands of ``modality`` that the runtime sees together, batch by batch (batches without
    requests of ``modality`` are left out)."""
    records = list(records)
    groups = ([records[i].demand for i in g if records[i].modality == modality]
              for g in group_records(records, batching))
    return [g for g in groups if g]


class _Tally:
    """Packs one modality's batches and adds their runs to a ``ModalityStats`` with predicted ms."""

    def __init__(self, modality: str, buckets: Iterable[Bucket], is_graph: Callable[[Bucket], bool] | None,
                 costs: CostModel) -> None:
        self.modality, self.costs = modality, costs
        self.buckets = BucketSet(buckets)
        # a launch's eager packs merge as in a runtime of the default configuration
        self._merge_units = RuntimeConfig.eager_merge * max((b.size for b in self.buckets.buckets), default=0)
        # a request larger than every bucket is cut into pieces of at most the largest one, as the
        # runtime cuts it under its default bound (``split``)
        self._largest = max(self.buckets.buckets, key=lambda b: (b.size, b.batch), default=None)
        self.stats = new_modality_stats(modality, self.buckets.buckets, is_graph)
        self._by_bucket = {b.bucket: b for b in self.stats.buckets}
        self._ms: dict[tuple, float] = {}

    def _run_ms(self, r: Pack, graph: bool, demands: Sequence[Demand]) -> float:
        segs = r.batch
        if self.modality == "vision" and (len(r.members) > 1 or graph):  # else: one member, its own segments
            size = r.bucket.size if graph else r.size
            segs = attention_segments("vision", size, (demands[i] for i in r.members))
        key = (r.bucket if graph else None, r.size if not graph else 0, segs)
        ms = self._ms.get(key)
        if ms is None:
            ms = self._ms[key] = self.costs.run_ms(self.modality, r, graph, segs)
        return ms

    def add(self, demands: Sequence[Demand]) -> tuple[float, list[Pack]]:
        """Packs one batch; returns its predicted ms and its packs."""
        self.stats.requests += len(demands)
        if not demands:
            return 0.0, []
        if self._largest is not None and RuntimeConfig.split_requests:
            demands = [p for d in demands
                       for p in (piece_demands(self.modality, d, self._largest)
                                 if self.buckets.smallest(d.size, d.batch) is None else (d,))]
        total = 0.0
        packs = pack(demands, self.buckets)
        eager = [r.bucket is not None and not self._by_bucket[r.bucket].graph for r in packs]
        for group in eager_groups(packs, eager, self._merge_units):
            if len(group) > 1:  # one eager call over the packs' members, its time shared by units
                members = tuple(i for r in group for i in r.members)
                merged = Pack(None, members, sum(r.size for r in group), sum(r.batch for r in group))
                ms = self._run_ms(merged, False, demands)
                for r in group:
                    self._by_bucket[r.bucket].add(r.size, ms * r.size / merged.size)
            elif (r := group[0]).bucket is None:
                ms = self._run_ms(r, False, demands)
                self.stats.add_fallback(r.size, ms)
            else:
                b = self._by_bucket[r.bucket]
                ms = self._run_ms(r, b.graph, demands)
                b.add(r.size, ms)
            total += ms
        return total, packs


def simulate_modality(
    groups: Iterable[Sequence[Demand]], modality: str, buckets: Iterable[Bucket],
    is_graph: Callable[[Bucket], bool] | None = None, costs: CostModel | None = None,
) -> tuple[ModalityStats, list[Pack]]:
    """Packs each batch of one modality and tallies its runs with predicted ms.

    Args:
        groups: The batches' demands (``batches``).
        modality: ``"vision"`` or ``"audio"``.
        buckets: The modality's buckets (none: every request is a fallback).
        is_graph: The grid's ``ModalityGrid.is_graph``; buckets where it is False are eager buckets.
            None: every bucket is a graph bucket.
        costs: The cost model; None is the packaged default.

    Returns:
        The stats, and every pack in order (batch after batch; members index into their batch).
    """
    tally = _Tally(modality, buckets, is_graph, costs or CostModel.load())
    packs: list[Pack] = []
    for group in groups:
        packs += tally.add(group)[1]
    return tally.stats, packs


@dataclass(frozen=True)
class SimReport:
    """Result of ``simulate``: one ``ModalityStats`` per modality (vision, audio) plus totals.

    Attributes:
        batching: The batching used (a ``BatchPolicy``, or a window in ms).
        modalities: Stats of vision and audio, in that order; ``ms`` is predicted GPU time.
        costs: The cost model's description (``CostModel.describe``).
        busy: Whether the worker was modelled busy for each batch's predicted time.
    """

    batching: Batching
    modalities: tuple[ModalityStats, ...]
    costs: str = ""
    busy: bool = False

    def __getitem__(self, modality: str) -> ModalityStats:
        """The stats of ``modality`` (``"vision"`` or ``"audio"``)."""
        return next(m for m in self.modalities if m.modality == modality)

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.modalities)

    @property
    def replays(self) -> int:
        """Runs of graph buckets, both modalities."""
        return sum(m.replays for m in self.modalities)

    @property
    def eager_runs(self) -> int:
        """Runs of eager buckets, both modalities."""
        return sum(m.eager_runs for m in self.modalities)

    @property
    def fallbacks(self) -> int:
        """Requests that fit no bucket, both modalities."""
        return sum(m.fallbacks for m in self.modalities)

    @property
    def runs(self) -> int:
        """Replays, eager runs and fallbacks of both modalities."""
        return sum(m.runs for m in self.modalities)

    @property
    def fallback_share(self) -> float:
        """Share of all requests that were fallbacks; 0.0 without requests."""
        return self.fallbacks / self.requests if self.requests else 0.0

    @property
    def ms(self) -> float:
        """Predicted GPU time of the whole trace, ms."""
        return sum(m.ms for m in self.modalities)

    @property
    def work_tflop(self) -> float:
        """Units computed (padding included) as estimated TFLOPs (``estimate_flops``)."""
        return sum(estimate_flops(m.modality, m.work) for m in self.modalities) / 1e12

    @property
    def padded_share(self) -> float:
        """Padded share of bucket work across modalities, weighted by estimated FLOPs."""
        total = sum(estimate_flops(m.modality, m.units + m.padded_units) for m in self.modalities)
        pad = sum(estimate_flops(m.modality, m.padded_units) for m in self.modalities)
        return pad / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report (per modality: ``ModalityStats.to_dict``)."""
        return {
            "batching": describe_batching(self.batching), "busy": self.busy, "costs": self.costs,
            "modalities": {m.modality: m.to_dict() for m in self.modalities},
            "total": {
                "requests": self.requests, "replays": self.replays, "eager_runs": self.eager_runs,
                "fallbacks": self.fallbacks, "runs": self.runs, "fallback_share": self.fallback_share,
                "padded_share": self.padded_share, "work_tflop": self.work_tflop, "ms": self.ms,
            },
        }

    def summary_lines(self) -> list[str]:
        """One line per modality and a total line."""
        lines = []
        for m in self.modalities:
            lines.append(
                f"{m.modality}: {m.requests} requests; {m.replays} replays ({m.graph_buckets} graph buckets), "
                f"{m.eager_runs} eager runs ({m.eager_buckets} eager buckets), {m.fallbacks} fallbacks "
                f"({m.fallback_share:.1%} of requests); padded {m.padded_share:.1%}; predicted {m.ms:.1f} ms GPU "
                f"(replays {m.replay_ms:.1f}, eager runs {m.eager_run_ms:.1f}, fallbacks {m.fallback_ms:.1f})")
        lines.append(
            f"total: {self.requests} requests; {self.replays} replays, {self.eager_runs} eager runs, "
            f"{self.fallbacks} fallbacks ({self.fallback_share:.1%}); padded {self.padded_share:.1%} "
            f"(FLOP-weighted); work {self.work_tflop:.1f} TFLOP; predicted {self.ms:.1f} ms GPU")
        return lines

    def format_table(self) -> str:
        """A plain-text table (one row per bucket and one for fallbacks, per modality), then the
        summary lines, the batching and the cost model."""
        rows = [("modality", "bucket", "kind", "runs", "units", "padded", "pred. ms", "ms/run")]
        for m in self.modalities:
            for s in m.buckets:
                rows.append((m.modality, f"{s.bucket.size}x{s.bucket.batch}", "graph" if s.graph else "eager",
                             str(s.runs), str(s.units), f"{s.padded_share:.1%}" if s.graph else "-",
                             f"{s.ms:.1f}", f"{s.ms_mean:.2f}"))
            rows.append((m.modality, "fallback", "-", str(m.fallbacks), str(m.fallback_units), "-",
                         f"{m.fallback_ms:.1f}", f"{m.fallback_ms / m.fallbacks:.2f}" if m.fallbacks else "0.00"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines += ["", *self.summary_lines()]
        units = ", ".join(f"{m}: {u}" for m, u in UNITS.items())
        lines.append(f"batching: {describe_batching(self.batching)}{'; worker busy for each batch' if self.busy else ''}")
        lines.append(f"costs: {self.costs}; units {units}; replay = graph bucket run (padded), eager run = "
                     "eager bucket run (unpadded), fallback = fits no bucket")
        return "\n".join(lines)


def simulate(
    records: Iterable[TraceRecord], grid: BucketGrid, batching: Batching | None = None,
    costs: CostModel | None = None, *, step_ms: float | None = None, busy: bool = False,
) -> SimReport:
    """Simulates what the runtime runs for a trace, and predicts its GPU time.

    Args:
        records: The trace.
        grid: The bucket grid; a modality without buckets runs every request as a fallback.
        batching: A ``BatchPolicy`` (default ``BatchPolicy()``: the service's defaults), or a window
            in ms.
        costs: The cost model; None is the packaged default.
        step_ms: Fixed windows of this many ms instead of a policy (0: each request alone); give
            ``batching`` or ``step_ms``, not both.
        busy: Model the worker busy for each batch's predicted time (arrivals meanwhile wait); needs
            a policy.

    Returns:
        Per-modality stats (runs, padding, fallbacks, predicted ms per bucket) and totals.
    """
    batching = resolve_batching(batching, step_ms)
    costs = costs or CostModel.load()
    records = list(records)
    tallies = {}
    for m in MODALITIES:
        g = grid.modality(m)
        tallies[m] = _Tally(m, g.buckets if g else (), g.is_graph if g else None, costs)

    def run(group: list[int]) -> float:
        return sum(tallies[m].add([records[i].demand for i in group if records[i].modality == m])[0]
                   for m in MODALITIES)

    if busy:
        group_records(records, batching, run)  # tallies while grouping: each batch's time delays the next
    else:
        for group in group_records(records, batching):
            run(group)
    return SimReport(batching, tuple(tallies[m].stats for m in MODALITIES), costs.describe(), busy)


__all__ = ["Batching", "SimReport", "batches", "describe_batching", "group_records", "simulate",
           "simulate_modality"]
