"""Replays a request trace against a bucket grid on the host: hits, padding and fallbacks.

Requests are grouped the way the runtime batches them: all records whose ``ts`` falls in the
same window of ``step_ms`` milliseconds are packed together (per modality) with ``pack``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from omnienc.runtime.grid import Bucket, BucketGrid, estimate_flops
from omnienc.runtime.packing import BucketSet, Demand, Replay, pack
from omnienc.runtime.trace import MODALITIES, TraceRecord

_UNITS = {"vision": "patches", "audio": "frames"}


@dataclass(frozen=True, slots=True)
class BucketStats:
    """What one bucket did over a trace.

    Attributes:
        bucket: The bucket.
        hits: Replays that used it.
        used: Real units over those replays (<= ``hits * bucket.size``).
        graph: False for an eager bucket (above the grid's ``graphs_up_to``): it runs its packed
            requests unpadded, so it computes ``used`` units and pads nothing.
    """

    bucket: Bucket
    hits: int
    used: int
    graph: bool = True

    @property
    def units(self) -> int:
        """Units computed over its replays (padding included for a graph bucket)."""
        return self.hits * self.bucket.size if self.graph else self.used

    @property
    def padded_share(self) -> float:
        """Padded units / bucket units over its replays; 0.0 without hits."""
        cap = self.units
        return 1.0 - self.used / cap if cap else 0.0


@dataclass(frozen=True)
class ModalityReport:
    """Totals of one modality; units are patches (vision) or frames (audio).

    Attributes:
        modality: ``"vision"`` or ``"audio"``.
        requests: Requests of this modality in the trace.
        buckets: Stats of every bucket of the grid, ascending (zero hits included).
        eager: Requests that fit no bucket and ran eagerly (one eager run each).
        eager_units: Their units.
    """

    modality: str
    requests: int
    buckets: tuple[BucketStats, ...]
    eager: int
    eager_units: int

    @property
    def replays(self) -> int:
        """Graph replays plus eager runs."""
        return sum(b.hits for b in self.buckets) + self.eager

    @property
    def graph_units(self) -> int:
        """Bucket units over all replays (real + padding)."""
        return sum(b.units for b in self.buckets)

    @property
    def padded_units(self) -> int:
        """Padding units over all replays."""
        return self.graph_units - sum(b.used for b in self.buckets)

    @property
    def padded_share(self) -> float:
        """Padded units / bucket units over all replays; 0.0 without replays."""
        return self.padded_units / self.graph_units if self.graph_units else 0.0

    @property
    def eager_share(self) -> float:
        """Share of requests that ran eagerly; 0.0 without requests."""
        return self.eager / self.requests if self.requests else 0.0

    @property
    def work(self) -> int:
        """Units computed: bucket sizes of all replays plus the sizes of eager runs."""
        return self.graph_units + self.eager_units

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "unit": _UNITS[self.modality],
            "requests": self.requests,
            "replays": self.replays,
            "eager": self.eager,
            "eager_share": self.eager_share,
            "eager_units": self.eager_units,
            "padded_units": self.padded_units,
            "padded_share": self.padded_share,
            "work": self.work,
            "buckets": [
                {"size": s.bucket.size, "batch": s.bucket.batch, "hits": s.hits,
                 "used": s.used, "padded_share": s.padded_share, "graph": s.graph}
                for s in self.buckets
            ],
        }


@dataclass(frozen=True)
class SimReport:
    """Result of ``simulate``: one report per modality plus totals over both.

    Attributes:
        step_ms: The batching window used.
        modalities: Reports of vision and audio, in that order.
    """

    step_ms: float
    modalities: tuple[ModalityReport, ...]

    def __getitem__(self, modality: str) -> ModalityReport:
        """The report of ``modality`` (``"vision"`` or ``"audio"``)."""
        return next(m for m in self.modalities if m.modality == modality)

    @property
    def requests(self) -> int:
        """Requests of both modalities."""
        return sum(m.requests for m in self.modalities)

    @property
    def replays(self) -> int:
        """Graph replays plus eager runs of both modalities."""
        return sum(m.replays for m in self.modalities)

    @property
    def eager(self) -> int:
        """Requests that ran eagerly, both modalities."""
        return sum(m.eager for m in self.modalities)

    @property
    def eager_share(self) -> float:
        """Share of all requests that ran eagerly; 0.0 without requests."""
        return self.eager / self.requests if self.requests else 0.0

    @property
    def work_tflop(self) -> float:
        """Total work across modalities as estimated TFLOPs (``estimate_flops``)."""
        return sum(estimate_flops(m.modality, m.work) for m in self.modalities) / 1e12

    @property
    def padded_share(self) -> float:
        """Padded share of graph work across modalities, weighted by estimated FLOPs."""
        cap = sum(estimate_flops(m.modality, m.graph_units) for m in self.modalities)
        pad = sum(estimate_flops(m.modality, m.padded_units) for m in self.modalities)
        return pad / cap if cap else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report."""
        return {
            "step_ms": self.step_ms,
            "modalities": {m.modality: m.to_dict() for m in self.modalities},
            "total": {
                "requests": self.requests,
                "replays": self.replays,
                "eager": self.eager,
                "eager_share": self.eager_share,
                "padded_share": self.padded_share,
                "work_tflop": self.work_tflop,
            },
        }

    def format_table(self) -> str:
        """A plain-text table: one row per bucket, a total row per modality, an overall row."""
        rows = [("modality", "bucket", "hits", "used", "padded")]
        for m in self.modalities:
            for s in m.buckets:
                rows.append((m.modality, f"{s.bucket.size}x{s.bucket.batch}" + ("" if s.graph else " (eager)"), str(s.hits),
                             str(s.used), f"{s.padded_share:.1%}"))
            rows.append((m.modality, "eager", str(m.eager), str(m.eager_units), "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                           enumerate(zip(r, widths))) for r in rows]
        lines.append("")
        for m in self.modalities:
            lines.append(
                f"{m.modality}: {m.requests} requests, {m.replays} replays, {m.eager} eager "
                f"({m.eager_share:.1%}), padded {m.padded_share:.1%}, work {m.work} "
                f"{_UNITS[m.modality]}"
            )
        lines.append(
            f"total: {self.requests} requests, {self.replays} replays, {self.eager} eager "
            f"({self.eager_share:.1%}), padded {self.padded_share:.1%} (FLOP-weighted), "
            f"work {self.work_tflop:.1f} TFLOP (step {self.step_ms:g} ms)"
        )
        return "\n".join(lines)


def batches(records: Iterable[TraceRecord], modality: str, step_ms: float) -> list[list[Demand]]:
    """Groups the demands of ``modality`` that the runtime would see together.

    Args:
        records: The trace, in any order.
        modality: ``"vision"`` or ``"audio"``.
        step_ms: Window length; records with equal ``floor(ts * 1000 / step_ms)`` form one group
            (a 1e-9 tolerance absorbs float error at window edges). 0 makes each request a group.

    Returns:
        Groups in window order; within a group, requests in (ts, trace position) order.
    """
    if not (step_ms >= 0 and math.isfinite(step_ms)):
        raise ValueError(f"step_ms={step_ms!r} must be a finite number >= 0")
    rows = sorted((r.ts, i, r) for i, r in enumerate(records) if r.modality == modality)
    if step_ms == 0:
        return [[r.demand] for _, _, r in rows]
    groups: dict[int, list[Demand]] = defaultdict(list)
    for ts, _, r in rows:
        groups[math.floor(ts * 1000.0 / step_ms + 1e-9)].append(r.demand)
    return [groups[k] for k in sorted(groups)]


def simulate_modality(
    groups: Iterable[list[Demand]], modality: str, buckets: tuple[Bucket, ...],
    is_graph: Callable[[Bucket], bool] | None = None,
) -> tuple[ModalityReport, list[Replay]]:
    """Packs each group with ``pack`` and tallies the replays (also returned, group after group).
    Buckets for which ``is_graph`` (the grid's ``ModalityGrid.is_graph``) is False are eager
    buckets (no padding); without it every bucket is a graph."""
    prepared = BucketSet(buckets)
    hits = {b: [0, 0] for b in prepared.buckets}
    eager = eager_units = requests = 0
    replays: list[Replay] = []
    for group in groups:
        requests += len(group)
        for r in pack(group, prepared):
            replays.append(r)
            if r.bucket is None:
                eager, eager_units = eager + 1, eager_units + r.size
            else:
                hits[r.bucket][0] += 1
                hits[r.bucket][1] += r.size
    stats = tuple(BucketStats(b, *hits[b], is_graph is None or is_graph(b)) for b in prepared.buckets)
    return ModalityReport(modality, requests, stats, eager, eager_units), replays


def simulate(records: Iterable[TraceRecord], grid: BucketGrid, step_ms: float = 10.0) -> SimReport:
    """Simulates which buckets a trace hits.

    Args:
        records: The trace.
        grid: The bucket grid; a modality without buckets runs every request eagerly.
        step_ms: Batching window in milliseconds; 0 packs each request alone.

    Returns:
        Per-bucket hits and padding, eager fallbacks and work, per modality and in total.
    """
    records = list(records)
    reports = []
    for m in MODALITIES:
        g = grid.modality(m)
        reports.append(simulate_modality(batches(records, m, step_ms), m, g.buckets if g else (),
                                         g.is_graph if g else None)[0])
    return SimReport(step_ms, tuple(reports))
