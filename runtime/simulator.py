"""Simulates a request trace on a bucket grid, on the host: what the runtime would run, and its
predicted GPU time (``omnienc simulate``).

1. Requests are batched as ``EncoderService`` batches them (``batching.group_arrivals`` with a
   ``BatchPolicy``: wait up to ``max_wait_ms`` after the first pending request, at most ``max_batch``
   requests), or, for comparison with older results, in fixed windows of ``step_ms``.
2. Each batch's requests of one modality run through a ``SimLane``, which follows the runtime's lane
   with the same functions and objects: packing (``packing.pack``), a batch's eager packs merged into
   one call (``packing.eager_groups``, ``RuntimeConfig.eager_merge``), and, with exact-layout graphs
   (on by default, as on a GPU), the same ``GraphCache`` built from the same ``RuntimeConfig``
   (``sightings``: a layout's second sighting runs eagerly and is captured, later ones replay its
   graph; capture credit and least-recently-used eviction as the runtime's).
3. Each run is priced by the ``CostModel`` rule of its kind (``stats.KINDS``, ``CostModel.price``):
   a padded replay of its bucket, an unpadded replay of its exact size, a capture (its eager run and
   the capture's host work), or an uncaptured call (an eager bucket's pack, a merged call, a
   fallback) never below the host floor, plus a cuDNN graph build at the first sighting of its
   attention layout where the model measured those (``sightings.cudnn_key``); vision attention by
   the run's ``attention_segments``.

The report is one ``stats.ModalityStats`` per modality, per bucket and per kind of run: the schema the
runtime measures; ``compare`` sets the two side by side.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omnienc.runtime.batching import BatchPolicy, group_arrivals, group_windows
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel, attention_segments, card_note, estimate_flops
from omnienc.runtime.grid import Bucket, BucketGrid
from omnienc.runtime.packing import BucketSet, Demand, Pack, eager_groups, layout, pack
from omnienc.runtime.sightings import (EXACT_CAPTURE, FRAME_LAYOUT_CACHE, cudnn_key, exact_cache, exact_counts,
                                       exact_route, segment_lengths)
from omnienc.runtime.split import piece_demands, piece_limit
from omnienc.runtime.stats import KINDS, UNITS, ModalityStats, new_modality_stats
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


_CAPTURED = object()  # a simulated capture's graph entry: the cache only keeps it


class SimLane:
    """One modality's lane, simulated: the runtime lane's rules with the same functions and objects,
    each run priced by the ``CostModel`` rule of its kind (``CostModel.price``).

    A batch is packed (``packing.pack``); with exact-layout graphs each pack's layout meets a
    ``GraphCache`` built from ``config`` as the runtime's is (``sightings``): packs on eager buckets
    whose layout has no graph and is not due merge into one call (``packing.eager_groups``, sighted
    after it), every other pack on a bucket is an exact replay, an exact capture, or a run of its
    bucket (a padded replay, or an eager run). A request that fits no bucket is a fallback. An
    uncaptured call of at least ``eager_cudnn_tokens`` also pays a cuDNN graph build the first time
    its attention layout's key is seen, where the cost model prices those. A vision run also pays the
    layout of each frame shape the encoder has not cached (the last ``FRAME_LAYOUT_CACHE`` shapes laid
    out), where the cost model prices those (``CostModel.layout_ms``).

    Args:
        modality: ``"vision"`` or ``"audio"``.
        buckets: the modality's buckets.
        is_graph: marks graph buckets (None: every bucket is one).
        costs: the cost model.
        config: the runtime's configuration; ``exact_graphs`` None counts as on (as on a GPU), and
            ``eager_merge`` as the runtime reads it.
        bound_units: the most units one uncaptured call may hold under the runtime's bound on
            transient memory (``Lane.units_within``; known once a runtime is built on the device);
            merged calls and pieces of split requests follow it as the runtime's. None: no bound.
    """

    def __init__(self, modality: str, buckets: Iterable[Bucket], is_graph: Callable[[Bucket], bool] | None,
                 costs: CostModel, config: RuntimeConfig, bound_units: int | None = None) -> None:
        self.modality, self.costs = modality, costs
        self.buckets = BucketSet(buckets)
        # a request larger than every bucket is cut into pieces as the runtime cuts it
        # (``split.piece_limit``: the largest bucket, or one uncaptured call where that is eager)
        largest = max(self.buckets.buckets, key=lambda b: (b.size, b.batch), default=None)
        self._largest = largest if config.split_requests else None
        self.stats = new_modality_stats(modality, self.buckets.buckets, is_graph)
        self._by_bucket = {b.bucket: b for b in self.stats.buckets}
        merge_units = config.eager_merge * max((b.size for b in self.buckets.buckets), default=0)
        self.merge_units = merge_units if bound_units is None else min(merge_units, bound_units)
        self._piece = None if self._largest is None else piece_limit(
            largest, self._by_bucket[largest].graph, merge_units, bound_units)
        exact = config.exact_graphs is not False and bool(self.buckets.buckets)
        self.cache = exact_cache(config) if exact else None
        self._ms: dict[tuple, float] = {}
        self.cudnn_steps, self.cudnn_tokens = costs.cudnn_steps(modality), config.eager_cudnn_tokens
        self.cudnn_builds = 0
        # the runtime builds one key at capture (``AttentionPolicy.warm_cudnn``: one 64-token segment)
        self._cudnn_keys = {cudnn_key([64], self.cudnn_steps)} if self.cudnn_steps else set()
        # frame shapes laid out, least recent first: the encoder's cache of layouts
        self._layouts: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.layout_price = costs.layout_ms(modality) if modality == "vision" else 0.0
        self.new_shapes = 0

    def forget_shapes(self) -> None:
        """As ``encoders.vision.forget_frame_layouts``: every frame shape is new again."""
        self._layouts.clear()

    def _lay_out(self, members: Iterable[Demand], count: bool = True) -> float:
        """The layouts a run of ``members`` computes: each frame shape not cached is laid out and
        cached (the least recent dropped beyond ``FRAME_LAYOUT_CACHE``); ms, where priced."""
        if self.modality != "vision":
            return 0.0
        new = 0
        for d in members:
            for _, h, w in d.shape or ():
                key = (int(h), int(w))
                if key in self._layouts:
                    self._layouts.move_to_end(key)
                    continue
                self._layouts[key] = None
                if len(self._layouts) > FRAME_LAYOUT_CACHE:
                    self._layouts.popitem(last=False)
                new += 1
        if count:
            self.new_shapes += new
        return new * self.layout_price

    def _first_sighting(self, units: int, members: Iterable[Demand]) -> float:
        """The build an uncaptured call of ``units`` over ``members`` pays if its cuDNN graph is new."""
        if self.cudnn_steps is None or not 0 < self.cudnn_tokens <= units:
            return 0.0
        shapes = [d.shape for d in members]
        if any(s is None for s in shapes):
            return 0.0
        key = cudnn_key(segment_lengths(shapes), self.cudnn_steps)
        if key in self._cudnn_keys:
            return 0.0
        self._cudnn_keys.add(key)
        self.cudnn_builds += 1
        return self.costs.build_ms(self.modality)

    def _cut(self, demands: Sequence[Demand]) -> list[Demand]:
        """The batch as the runtime runs it: a request larger than every bucket as its pieces."""
        top = self._largest
        if top is None or all(d.size <= top.size and d.batch <= top.batch for d in demands):
            return demands  # the largest bucket holds each of them: nothing to cut
        return [p for d in demands for p in (piece_demands(self.modality, d, self._piece)
                                             if self.buckets.smallest(d.size, d.batch) is None else (d,))]

    def warm(self, demands: Sequence[Demand]) -> None:
        """A batch run before the trace with exact graphs off and not counted (``measure``'s warm-up):
        only the first sightings of its uncaptured calls and its frame layouts remain."""
        demands = self._cut(demands)
        self._lay_out(demands, count=False)
        packs = pack(demands, self.buckets)
        mergeable = [p.bucket is not None and not self._by_bucket[p.bucket].graph for p in packs]
        for group in eager_groups(packs, mergeable, self.merge_units):
            if len(group) > 1 or group[0].bucket is None or not self._by_bucket[group[0].bucket].graph:
                self._first_sighting(sum(p.size for p in group), [demands[i] for p in group for i in p.members])
        self.cudnn_builds = 0

    def _price(self, kind: str, bucket: Bucket | None, units: int, members: Iterable[Demand]) -> float:
        size = bucket.size if kind == "replay" else units  # a replay computes its padded bucket
        segments = attention_segments(self.modality, size, members)
        key = (kind, bucket if kind == "replay" else None, units if kind != "replay" else 0, round(segments, 9))
        ms = self._ms.get(key)
        if ms is None:
            ms = self._ms[key] = self.costs.price(self.modality, kind, units, segments, bucket)
        return ms

    def add(self, demands: Sequence[Demand]) -> tuple[float, list[Pack]]:
        """Runs one batch; returns its predicted ms and its packs (of the requests as run: an
        oversized one as its pieces). A pack with a member of unknown ``shape`` has no exact layout."""
        self.stats.requests += len(demands)
        if not demands:
            return 0.0, []
        demands = self._cut(demands)
        if len(demands) == 1:  # most batches of a trace: one pack, which runs alone
            d = demands[0]
            p = Pack(self.buckets.smallest(d.size, d.batch), (0,), d.size, d.batch)
            return self._alone(p, demands, self._key(p, demands)), [p]
        packs = pack(demands, self.buckets)
        keys = {p.members: self._key(p, demands) for p in packs} if self.cache is not None else {}
        mergeable = [p.bucket is not None and not self._by_bucket[p.bucket].graph
                     and not (keys.get(p.members) is not None and self.cache.wanted(keys[p.members])) for p in packs]
        total = 0.0
        for group in eager_groups(packs, mergeable, self.merge_units):
            if len(group) > 1:  # one uncaptured call; each pack a run of its bucket, the time shared by units
                units = sum(p.size for p in group)
                members = [demands[i] for p in group for i in p.members]
                ms = (self._price("merged", None, units, members) + self._first_sighting(units, members)
                      + self._lay_out(members))
                for p in group:
                    self._by_bucket[p.bucket].add(p.size, ms * p.size / units, "merged")
                    if keys.get(p.members) is not None:
                        self.cache.sight(keys[p.members])
                self.stats.merged_calls += 1
            else:
                ms = self._alone(group[0], demands, keys.get(group[0].members))
            total += ms
        return total, packs

    def _key(self, p: Pack, demands: Sequence[Demand]) -> tuple | None:
        """The pack's exact layout, or None without exact graphs or with a member of unknown shape."""
        if self.cache is None:
            return None
        shapes = [demands[i].shape for i in p.members]
        return None if any(s is None for s in shapes) else layout(shapes)

    def _alone(self, p: Pack, demands: Sequence[Demand], key: tuple | None) -> float:
        """Runs a pack as its own call: a fallback, an exact replay or capture, or a run of its bucket."""
        members = [demands[i] for i in p.members]
        if p.bucket is None:
            ms = (self._price("fallback", None, p.size, members) + self._first_sighting(p.size, members)
                  + self._lay_out(members))
            self.stats.add_fallback(p.size, ms)
            return ms
        b, kind = self._by_bucket[p.bucket], None
        if key is not None:
            kind = exact_route(self.cache, key)[0]
            if kind == EXACT_CAPTURE:
                self.cache.capture(key, lambda: _CAPTURED)
        kind = kind or ("replay" if b.graph else "eager")
        ms = self._price(kind, p.bucket, p.size, members) + self._lay_out(members)
        if kind == "eager":
            ms += self._first_sighting(p.size, members)
        b.add(p.size, ms, kind)
        return ms

    def counts(self) -> dict[str, int]:
        """The exact graphs' counts (as the runtime's lane reports them), the cuDNN graph builds and
        the frame shapes laid out."""
        return {**exact_counts(self.cache), "cudnn_builds": self.cudnn_builds, "new_frame_shapes": self.new_shapes}


def simulate_modality(
    groups: Iterable[Sequence[Demand]], modality: str, buckets: Iterable[Bucket],
    is_graph: Callable[[Bucket], bool] | None = None, costs: CostModel | None = None,
    config: RuntimeConfig | None = None,
) -> tuple[ModalityStats, list[Pack]]:
    """Runs each batch of one modality through a ``SimLane``.

    Args:
        groups: The batches' demands (``batches``; their ``shape`` gives each pack's exact layout).
        modality: ``"vision"`` or ``"audio"``.
        buckets: The modality's buckets (none: every request is a fallback).
        is_graph: The grid's ``ModalityGrid.is_graph``; buckets where it is False are eager buckets.
            None: every bucket is a graph bucket.
        costs: The cost model; None is the packaged default.
        config: The runtime's configuration (default ``RuntimeConfig()``: exact graphs on).

    Returns:
        The stats, and every pack in order (batch after batch; members index into their batch as
        run, an oversized request as its pieces).
    """
    lane = SimLane(modality, buckets, is_graph, costs or CostModel.load(), config or RuntimeConfig())
    packs: list[Pack] = []
    for group in groups:
        packs += lane.add(group)[1]
    return lane.stats, packs


@dataclass(frozen=True)
class SimReport:
    """Result of ``simulate``: one ``ModalityStats`` per modality (vision, audio) plus totals.

    Attributes:
        batching: The batching used (a ``BatchPolicy``, or a window in ms).
        modalities: Stats of vision and audio, in that order; ``ms`` is predicted GPU time.
        costs: The cost model's description (``CostModel.describe``).
        busy: Whether the worker was modelled busy for each batch's predicted time.
        card: The card the cost model was measured on.
        card_note: Set when the prediction is for another card (``costs.card_note``).
        exact_graphs: Whether exact-layout graphs were simulated.
        counts: Per modality, the exact graphs' counts (``sightings.exact_counts``) and the cuDNN graph
            builds (``SimLane.counts``).
    """

    batching: Batching
    modalities: tuple[ModalityStats, ...]
    costs: str = ""
    busy: bool = False
    card: str = ""
    card_note: str | None = None
    exact_graphs: bool = False
    counts: dict = field(default_factory=dict)

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
        """JSON-able report (per modality: ``ModalityStats.to_dict`` and the exact graphs' counts)."""
        return {
            "batching": describe_batching(self.batching), "busy": self.busy, "costs": self.costs,
            "card": self.card, "foreign_card": self.card_note is not None, "card_note": self.card_note,
            "exact_graphs": self.exact_graphs,
            "modalities": {m.modality: {**m.to_dict(), **self.counts.get(m.modality, {})} for m in self.modalities},
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
            x = self.counts.get(m.modality, {})
            exact = (f"; exact layouts: {x['exact_captures']} captures, {x['exact_graph_replays']} replays"
                     if self.exact_graphs and x else "")
            exact += f"; {x['cudnn_builds']} cuDNN graph builds" if x.get("cudnn_builds") else ""
            exact += f"; {x['new_frame_shapes']} new frame shapes" if x.get("new_frame_shapes") else ""
            lines.append(
                f"{m.modality}: {m.requests} requests; {m.replays} replays ({m.graph_buckets} graph buckets), "
                f"{m.eager_runs} eager runs ({m.eager_buckets} eager buckets), {m.fallbacks} fallbacks "
                f"({m.fallback_share:.1%} of requests){exact}; padded {m.padded_share:.1%}; predicted {m.ms:.1f} ms "
                f"GPU (replays {m.replay_ms:.1f}, eager runs {m.eager_run_ms:.1f}, fallbacks {m.fallback_ms:.1f})")
        lines.append(
            f"total: {self.requests} requests; {self.replays} replays, {self.eager_runs} eager runs, "
            f"{self.fallbacks} fallbacks ({self.fallback_share:.1%}); padded {self.padded_share:.1%} "
            f"(FLOP-weighted); work {self.work_tflop:.1f} TFLOP; predicted {self.ms:.1f} ms GPU")
        return lines

    def format_table(self, measured: dict | None = None) -> str:
        """Plain-text tables: one row per bucket and one for fallbacks, then one per kind of run,
        per modality (with ``measured``, the runtime's ``stats()``: measured runs and ms beside the
        predicted ones); then the summary lines, the batching, the cost model and its card."""
        cmp = compare(self, measured) if measured is not None else None
        head = ["modality", "bucket", "kind", "runs", "units", "padded", "pred. ms", "ms/run"]
        if cmp:
            head += ["meas. runs", "meas. ms", "error"]
        rows = [tuple(head)]
        for m in self.modalities:
            c = cmp["modalities"].get(m.modality) if cmp else None
            for s in m.buckets:
                name = f"{s.bucket.size}x{s.bucket.batch}"
                row = [m.modality, name, "graph" if s.graph else "eager", str(s.runs), str(s.units),
                       f"{s.padded_share:.1%}" if s.graph else "-", f"{s.ms:.1f}", f"{s.ms_mean:.2f}"]
                if cmp:
                    row += _measured_cells(c["buckets"].get(name) if c else None)
                rows.append(tuple(row))
            row = [m.modality, "fallback", "-", str(m.fallbacks), str(m.fallback_units), "-", f"{m.fallback_ms:.1f}",
                   f"{m.fallback_ms / m.fallbacks:.2f}" if m.fallbacks else "0.00"]
            if cmp:
                row += _measured_cells(c["kinds"].get("fallback") if c else None)
            rows.append(tuple(row))
        lines = _table(rows, 3)
        rows = [("modality", "kind of run", "runs", "units", "pred. ms", "ms/run")
                + (("meas. runs", "meas. ms", "error") if cmp else ())]
        for m in self.modalities:
            c = cmp["modalities"].get(m.modality) if cmp else None
            for kind, k in m.kinds().items():
                if not k.runs and not (c and c["kinds"][kind]["measured"]["runs"]):
                    continue
                row = [m.modality, kind, str(k.runs), str(k.units), f"{k.ms:.1f}", f"{k.ms_mean:.2f}"]
                if cmp:
                    row += _measured_cells(c["kinds"][kind] if c else None)
                rows.append(tuple(row))
        lines += ["", *_table(rows, 2), "", *self.summary_lines()]
        if cmp:
            lines += ["", *format_comparison(cmp)]
        units = ", ".join(f"{m}: {u}" for m, u in UNITS.items())
        busy = "; worker busy for each batch" if self.busy else ""
        lines.append(f"batching: {describe_batching(self.batching)}{busy}; "
                     f"exact-layout graphs {'on' if self.exact_graphs else 'off'}")
        lines.append(f"costs: {self.costs}; units {units}")
        lines.append(f"card: predictions of a model measured on {self.card}"
                     + (f"\nFOREIGN CARD: {self.card_note}" if self.card_note else ""))
        lines.append("kinds: replay = graph bucket's graph (padded), exact_replay = graph of the pack's exact layout, "
                     "exact_capture = eager run + capture of a due layout, eager = eager bucket's pack, merged = eager "
                     "packs in one call, fallback = fits no bucket")
        return "\n".join(lines)


def _table(rows: list[tuple], left: int) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def _measured_cells(c: dict | None) -> list[str]:
    if c is None:
        return ["-", "-", "-"]
    err = c.get("error")
    return [str(c["measured"]["runs"]), f"{c['measured']['ms']:.1f}", "-" if err is None else f"{err:+.1%}"]


def _error(predicted: float, measured: float) -> float | None:
    """Prediction error relative to the measurement; None without a measurement."""
    return predicted / measured - 1 if measured else None


def compare(report: SimReport, measured: dict) -> dict:
    """The prediction beside the runtime's measured statistics (``EncoderRuntime.stats()`` of the same
    trace): per modality, bucket and kind of run, predicted and measured runs and ms and the error
    (predicted / measured - 1), and the exact graphs' counts of both."""
    out: dict[str, Any] = {"modalities": {}}
    for m in report.modalities:
        got = measured.get(m.modality)
        if not isinstance(got, dict):
            continue
        pred = {**m.to_dict(), **report.counts.get(m.modality, {})}
        buckets = {}
        for name, b in pred["buckets"].items():
            mb = got.get("buckets", {}).get(name, {})
            buckets[name] = {"predicted": {"runs": b["runs"], "ms": b["ms"]},
                             "measured": {"runs": mb.get("runs", 0), "ms": mb.get("ms", 0.0)},
                             "error": _error(b["ms"], mb.get("ms", 0.0))}
        kinds = {}
        for kind in KINDS:
            p, q = pred["kinds"][kind], got.get("kinds", {}).get(kind, {"runs": 0, "ms": 0.0})
            kinds[kind] = {"predicted": {"runs": p["runs"], "ms": p["ms"]},
                           "measured": {"runs": q["runs"], "ms": q["ms"]}, "error": _error(p["ms"], q["ms"])}
        counts = ("exact_captures", "exact_graph_replays", "exact_refused", "exact_evictions")
        out["modalities"][m.modality] = {
            "predicted_ms": m.ms, "measured_ms": got["ms"], "error": _error(m.ms, got["ms"]),
            "buckets": buckets, "kinds": kinds,
            "merged_calls": {"predicted": m.merged_calls, "measured": got.get("eager_merges", 0)},
            "exact": {k: {"predicted": pred.get(k, 0), "measured": got.get(k, 0)} for k in counts},
        }
    pm = sum(v["predicted_ms"] for v in out["modalities"].values())
    mm = sum(v["measured_ms"] for v in out["modalities"].values())
    out["total"] = {"predicted_ms": pm, "measured_ms": mm, "error": _error(pm, mm)}
    return out


def format_comparison(cmp: dict) -> list[str]:
    """Lines: per modality and in total, predicted vs measured ms and the error, and whether the
    simulator ran what the runtime ran (runs per kind, merged calls, exact captures)."""
    lines = []
    for name, c in cmp["modalities"].items():
        err = "" if c["error"] is None else f" ({c['error']:+.1%})"
        lines.append(f"{name:6s} measured {c['measured_ms']:10.1f} ms, predicted {c['predicted_ms']:10.1f} ms{err}")
        differ = [f"{k} {v['predicted']['runs']} vs {v['measured']['runs']}" for k, v in c["kinds"].items()
                  if v["predicted"]["runs"] != v["measured"]["runs"]]
        differ += [f"{k} {v['predicted']} vs {v['measured']}" for k, v in c["exact"].items()
                   if v["predicted"] != v["measured"]]
        if c["merged_calls"]["predicted"] != c["merged_calls"]["measured"]:
            differ.append(f"merged calls {c['merged_calls']['predicted']} vs {c['merged_calls']['measured']}")
        same = "yes" if not differ else "no, predicted vs measured: " + ", ".join(differ)
        lines.append(f"       runs as predicted: {same}")
    t = cmp["total"]
    err = "" if t["error"] is None else f" ({t['error']:+.1%})"
    lines.append(f"total  measured {t['measured_ms']:10.1f} ms, predicted {t['predicted_ms']:10.1f} ms{err}")
    return lines


def simulate(
    records: Iterable[TraceRecord], grid: BucketGrid, batching: Batching | None = None,
    costs: CostModel | None = None, *, step_ms: float | None = None, busy: bool = False,
    config: RuntimeConfig | None = None, card: str | None = None, warmup: int = 0,
    bound_units: dict[str, int] | None = None, forget_shapes: bool = False,
) -> SimReport:
    """Simulates what the runtime runs for a trace, and predicts its GPU time.

    Args:
        records: The trace.
        grid: The bucket grid; a modality without buckets runs every request as a fallback.
        batching: A ``BatchPolicy`` (default ``BatchPolicy()``: the service's defaults), or a window
            in ms.
        costs: The cost model; None is the packaged model of ``card`` (``costs.packaged``).
        step_ms: Fixed windows of this many ms instead of a policy (0: each request alone); give
            ``batching`` or ``step_ms``, not both.
        busy: Model the worker busy for each batch's predicted time (arrivals meanwhile wait); needs
            a policy.
        config: The runtime's configuration (default ``RuntimeConfig()``: exact-layout graphs off;
            ``exact_graphs`` None counts as on, as on a GPU). ``dense_after`` (off by default) is
            not priced: uncaptured runs are priced on the backends they take without it.
        card: The card the prediction is for; the report flags a model measured on another.
        warmup: Batches run once before the trace, exact graphs off, not counted (as ``omnienc
            simulate --measure`` warms the runtime up with its first batch).
        bound_units: Per modality, the most units one uncaptured call may hold under the runtime's
            bound on transient memory (``SimLane``); ``simulate --measure`` passes the runtime's.
            None: no bound (the bound depends on what the card's graphs hold).
        forget_shapes: After the warm-up, every frame shape is new again (the encoder's cache of
            frame layouts emptied, ``encoders.vision.forget_frame_layouts``).

    Returns:
        Per-modality stats (runs per bucket and kind, padding, fallbacks, predicted ms) and totals.
    """
    batching = resolve_batching(batching, step_ms)
    costs = costs or CostModel.load(card=card)
    config = config or RuntimeConfig()
    records = list(records)
    lanes = {}
    for m in MODALITIES:
        g = grid.modality(m)
        lanes[m] = SimLane(m, g.buckets if g else (), g.is_graph if g else None, costs, config,
                           (bound_units or {}).get(m))

    def run(group: list[int]) -> float:
        return sum(lanes[m].add([records[i].demand for i in group if records[i].modality == m])[0]
                   for m in MODALITIES)

    for group in group_records(records, batching)[:warmup]:
        for m in MODALITIES:
            lanes[m].warm([records[i].demand for i in group if records[i].modality == m])
    if forget_shapes:
        for lane in lanes.values():
            lane.forget_shapes()
    if busy:
        group_records(records, batching, run)  # tallies while grouping: each batch's time delays the next
    else:
        for group in group_records(records, batching):
            run(group)
    return SimReport(batching, tuple(lanes[m].stats for m in MODALITIES), costs.describe(), busy, costs.card,
                     card_note(costs, card), config.exact_graphs is not False,
                     {m: lanes[m].counts() for m in MODALITIES})


__all__ = ["Batching", "SimLane", "SimReport", "batches", "compare", "describe_batching", "format_comparison",
           "group_records", "simulate", "simulate_modality"]
