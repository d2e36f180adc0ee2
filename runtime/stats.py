"""One statistics schema for the runtime (measured) and the simulator (predicted).

Words, used the same way in code, stats keys, command-line tables and docs:

    graph bucket   a bucket at or below its grid's ``graphs_up_to``: its packs run *padded* to the
                   bucket's size on static buffers; a run is a *replay* (of a captured CUDA graph,
                   or of the same bucket code eagerly when graphs are off, e.g. on the CPU).
    eager bucket   a bucket above ``graphs_up_to``: packs land in it the same way but run eagerly,
                   *unpadded*, on exactly their requests; a run is an *eager run*, not a replay.
    fallback       a request that fits no bucket: it runs eagerly, alone.
    exact replay   a pack on either kind of bucket whose exact layout (its items' sizes, in order)
                   was seen before replays a CUDA graph captured for that layout, unpadded; it counts
                   among its bucket's runs (replays or eager runs) and in ``exact``.

Each run is also one of ``KINDS``, timed (or priced) separately, so a prediction's error can be
located by kind: ``replay`` (a graph bucket's graph, padded), ``exact_replay`` (the graph of the
pack's exact layout, unpadded), ``exact_capture`` (a layout's due sighting: an eager run on its exact
plan, then the capture of that work), ``eager`` (an eager bucket's pack, one uncaptured call),
``merged`` (several eager buckets' packs in one uncaptured call; each pack counts as a run of its
bucket, the call's time shared by units) and ``fallback``.

Units are patches (vision) or mel frames (audio); ``ms`` is GPU time: measured with CUDA events by
the runtime (wall time on the CPU), predicted by a cost model in the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .grid import Bucket

UNITS = {"vision": "patches", "audio": "frames"}
KINDS = ("replay", "exact_replay", "exact_capture", "eager", "merged", "fallback")
EXACT_KINDS = ("exact_replay", "exact_capture")  # unpadded runs on the pack's exact layout


def byte_size(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1 (``"1.50 GiB"``, ``"640.0 KiB"``)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


@dataclass
class KindStats:
    """Runs of one kind: how many, their real units and their GPU time."""

    runs: int = 0
    units: int = 0
    ms: float = 0.0

    @property
    def ms_mean(self) -> float:
        return self.ms / self.runs if self.runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "units": self.units, "ms": self.ms, "ms_mean": self.ms_mean}


@dataclass
class BucketStats:
    """What one bucket did.

    Attributes:
        bucket: The bucket.
        graph: True for a graph bucket (padded runs: replays), False for an eager bucket.
        runs: Replays (graph bucket) or eager runs (eager bucket).
        units: Real units over those runs.
        padded_units: Padding units computed over those runs (always 0 for an eager bucket).
        ms: GPU time of those runs.
        exact: Those runs on their exact layout (``EXACT_KINDS``: unpadded).
        kinds: The runs per kind of run (``KINDS``), only kinds that ran.
    """

    bucket: Bucket
    graph: bool = True
    runs: int = 0
    units: int = 0
    padded_units: int = 0
    ms: float = 0.0
    exact: int = 0
    kinds: dict[str, KindStats] = field(default_factory=dict)

    def add(self, units: int, ms: float = 0.0, kind: str | None = None) -> None:
        """Counts one run of ``units`` real units of ``kind`` (default: ``replay`` on a graph bucket,
        ``eager`` on an eager bucket); a ``replay`` is padded up to the bucket's size."""
        kind = kind or ("replay" if self.graph else "eager")
        self.runs += 1
        self.units += units
        if kind in EXACT_KINDS:
            self.exact += 1
        elif kind == "replay":
            self.padded_units += self.bucket.size - units
        k = self.kinds.get(kind)
        if k is None:
            k = self.kinds[kind] = KindStats()
        k.runs += 1
        k.units += units
        k.ms += ms
        self.ms += ms

    def add_ms(self, kind: str, ms: float) -> None:
        """Adds GPU time to a run of ``kind`` counted before (timings resolve after the count)."""
        self.ms += ms
        self.kinds[kind].ms += ms

    @property
    def padded_share(self) -> float:
        """Padding / computed units; 0.0 without runs."""
        total = self.units + self.padded_units
        return self.padded_units / total if total else 0.0

    @property
    def ms_mean(self) -> float:
        return self.ms / self.runs if self.runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.bucket.size, "batch": self.bucket.batch, "graph": self.graph, "runs": self.runs,
            "units": self.units, "padded_units": self.padded_units, "padded_share": self.padded_share,
            "ms": self.ms, "ms_mean": self.ms_mean, "exact": self.exact,
            "kinds": {k: v.to_dict() for k, v in self.kinds.items()},
        }


@dataclass
class ModalityStats:
    """Totals of one modality.

    Attributes:
        modality: ``"vision"`` or ``"audio"``.
        buckets: Every bucket's stats, ascending by bucket (zero runs included).
        requests: Requests seen.
        fallbacks: Requests that fit no bucket (one eager run each).
        fallback_units: Their units.
        fallback_ms: Their GPU time.
        merged_calls: Uncaptured calls that ran several eager buckets' packs (each pack is a
            ``merged`` run of its bucket).
    """

    modality: str
    buckets: list[BucketStats] = field(default_factory=list)
    requests: int = 0
    fallbacks: int = 0
    fallback_units: int = 0
    fallback_ms: float = 0.0
    merged_calls: int = 0

    def add_fallback(self, units: int, ms: float = 0.0) -> None:
        self.fallbacks += 1
        self.fallback_units += units
        self.fallback_ms += ms

    def bucket(self, bucket: Bucket) -> BucketStats:
        """The stats of ``bucket`` (KeyError if it is not in the grid)."""
        for b in self.buckets:
            if b.bucket == bucket:
                return b
        raise KeyError(bucket)

    @property
    def replays(self) -> int:
        """Runs of graph buckets."""
        return sum(b.runs for b in self.buckets if b.graph)

    @property
    def eager_runs(self) -> int:
        """Runs of eager buckets."""
        return sum(b.runs for b in self.buckets if not b.graph)

    @property
    def graph_buckets(self) -> int:
        """How many of its buckets are graph buckets (captured as CUDA graphs where graphs are on)."""
        return sum(b.graph for b in self.buckets)

    @property
    def eager_buckets(self) -> int:
        """How many of its buckets are eager buckets (above ``graphs_up_to``)."""
        return sum(not b.graph for b in self.buckets)

    @property
    def replay_ms(self) -> float:
        """GPU time of the replays (graph buckets)."""
        return sum(b.ms for b in self.buckets if b.graph)

    @property
    def eager_run_ms(self) -> float:
        """GPU time of the eager runs (eager buckets), fallbacks not included."""
        return sum(b.ms for b in self.buckets if not b.graph)

    @property
    def eager_run_units(self) -> int:
        """Real units run in eager buckets."""
        return sum(b.units for b in self.buckets if not b.graph)

    @property
    def exact_replays(self) -> int:
        """Runs (of either kind of bucket) on their exact layout: its graph's replays and the eager
        runs of its capture (``kinds`` tells them apart)."""
        return sum(b.exact for b in self.buckets)

    def kinds(self) -> dict[str, KindStats]:
        """Runs, units and GPU time per kind of run (``KINDS``, every kind, fallbacks included)."""
        out = {k: KindStats() for k in KINDS}
        for b in self.buckets:
            for k, v in b.kinds.items():
                o = out[k]
                o.runs, o.units, o.ms = o.runs + v.runs, o.units + v.units, o.ms + v.ms
        out["fallback"] = KindStats(self.fallbacks, self.fallback_units, self.fallback_ms)
        return out

    @property
    def runs(self) -> int:
        """Replays, eager runs and fallbacks: every forward this modality ran."""
        return self.replays + self.eager_runs + self.fallbacks

    @property
    def units(self) -> int:
        """Real units in buckets (graph and eager)."""
        return sum(b.units for b in self.buckets)

    @property
    def padded_units(self) -> int:
        return sum(b.padded_units for b in self.buckets)

    @property
    def padded_share(self) -> float:
        """Padding / computed units over all bucket runs; 0.0 without runs."""
        total = self.units + self.padded_units
        return self.padded_units / total if total else 0.0

    @property
    def fallback_share(self) -> float:
        """Share of requests that were fallbacks; 0.0 without requests."""
        return self.fallbacks / self.requests if self.requests else 0.0

    @property
    def work(self) -> int:
        """Units computed: real and padded units of bucket runs plus fallback units."""
        return self.units + self.padded_units + self.fallback_units

    @property
    def ms(self) -> float:
        """GPU time of all runs, fallbacks included."""
        return sum(b.ms for b in self.buckets) + self.fallback_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": UNITS.get(self.modality, "units"), "requests": self.requests, "replays": self.replays,
            "eager_runs": self.eager_runs, "exact_replays": self.exact_replays, "fallbacks": self.fallbacks,
            "runs": self.runs, "fallback_share": self.fallback_share,
            "units": self.units, "padded_units": self.padded_units, "padded_share": self.padded_share,
            "fallback_units": self.fallback_units, "work": self.work, "ms": self.ms, "replay_ms": self.replay_ms,
            "eager_run_ms": self.eager_run_ms, "fallback_ms": self.fallback_ms,
            "graph_buckets": self.graph_buckets, "eager_buckets": self.eager_buckets,
            "merged_calls": self.merged_calls, "kinds": {k: v.to_dict() for k, v in self.kinds().items()},
            "buckets": {f"{b.bucket.size}x{b.bucket.batch}": b.to_dict() for b in self.buckets},
        }


def new_modality_stats(modality: str, buckets, is_graph=None) -> ModalityStats:
    """Empty stats over ``buckets``; ``is_graph(bucket)`` (the grid's ``ModalityGrid.is_graph``) marks
    eager buckets; without it every bucket is a graph bucket."""
    return ModalityStats(modality, [BucketStats(b, is_graph is None or is_graph(b)) for b in sorted(buckets)])


__all__ = ["EXACT_KINDS", "KINDS", "BucketStats", "KindStats", "ModalityStats", "UNITS", "new_modality_stats"]
