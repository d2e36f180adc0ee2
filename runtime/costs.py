"""What runs cost: the GPU-time model of replays and eager runs (measured), and the FLOP and
activation-memory estimates of the real encoders (computed).

**CostModel** predicts GPU milliseconds from calibration points (``omnienc capture --calibrate``):

* a *replay* of a graph bucket, as a function of (bucket size, segments it carries): the graph
  computes the bucket's whole padded size, and attention depends on how the size is cut into
  segments (one 6400-patch frame costs more than eight 800-patch ones; ``attention_segments``);
* an *eager run* (an eager bucket's pack, or a fallback), as a function of (units, items), unpadded;
  its fixed launch cost is part of every measured point (small eager runs are almost all launch).

Each of the four surfaces (vision/audio x replay/eager) is measured on a full grid of sizes x batches.
Between sizes it is piecewise linear; below the smallest size it stays at that size's value (launch
bound); above the largest it continues with the last segment's slope. The medians are made
non-decreasing in size (a running maximum over sizes, per batch), so a larger bucket never predicts
cheaper (but across a kernel change, below). Between batches it is linear in 1/batch (attention over
b equal segments of S units costs S^2/b), clamped outside the measured batches. Where the
calibration says a surface changes kernel at a size (``cudnn_from``: big vision calls and graph
buckets on cuDNN varlen from 8192 patches by default), the surface is two: sizes below it priced
from the points below only (continued with their last slope), sizes from it from the points from
it, so no price mixes two kernels.

Besides the surfaces, what the runtime does beyond replays and eager runs (``simulate`` prices
each kind of run by one small rule here):

* an *exact replay* (a graph of the pack's exact layout) is an unpadded replay: the replay surface
  at the pack's own size (``exact_replay_ms``);
* an uncaptured call cannot go below its host time: the *host floor*, one uncaptured call of the
  smallest request through the runtime's eager path, measured (``floor_ms``; a model without it
  takes the cheapest eager point); an eager run costs at least the floor (``eager_ms``);
* an *exact capture* runs the pack eagerly and then captures that work on the host while the GPU
  may still run it: ``max(eager run, floor + capture cost)`` (``capture_ms``), the capture cost
  measured as capture runs of host-bound layouts less the floor (without such points: one floor,
  the capture recording about as many launches as the eager call made);
* a *first sighting*: the first uncaptured call of each cuDNN varlen graph (``sightings.cudnn_key``,
  rounded by the calibration's ``cudnn_steps``) pays its build (``build_ms``: measured as a new
  key's first call less its next ones; without build points, none is priced);
* a *new frame shape*: a vision frame shape (h, w) the encoder has not laid out, among the last
  ``FRAME_LAYOUT_CACHE`` it has, costs its layout on the host while the GPU waits (``layout_ms``, per
  shape: measured as a replay of new shapes less the same replay with them cached; without layout
  points, none is priced).

On disk (YAML, ``format: 2``; ``format: 1`` files, without ``floor`` and ``capture``, load too)::

    format: 2
    card: NVIDIA H200            # torch.cuda.get_device_name of the card it was measured on
    torch: 2.11.0+cu130
    date: '2026-11-28T10:00:00+00:00'
    command: omnienc capture --calibrate -o costs.yaml
    dtype: bfloat16
    measured: true               # false: derived from other figures (see note)
    quick: false                 # true: the start-up calibration (fewer points and repeats)
    cudnn_steps: [16, 1024]      # where big uncaptured vision calls took cuDNN varlen: its rounding
    cudnn_from: {vision: {replay: 8192, eager: 8192}}  # sizes from which runs took cuDNN varlen
    note: free text
    vision:
      replay:                    # size: bucket patches, batch: segments carried, samples: ms per repeat
      - {size: 256, batch: 1, ms: 2.41, samples: [2.40, 2.41, 2.43]}
      eager:                     # size: patches, batch: items (segments), unpadded
      - {size: 256, batch: 1, ms: 8.3, samples: [8.3, 8.2, 8.4]}
      floor:                     # optional: the smallest uncaptured call
      - {size: 16, batch: 1, ms: 7.9, samples: [7.9, 8.0, 7.9]}
      capture:                   # optional: exact-layout captures (eager run + capture) of small layouts
      - {size: 16, batch: 1, ms: 19.0, samples: [18.8, 19.0, 19.3]}
      build:                     # optional: a new cuDNN varlen graph's first call less its next ones
      - {size: 9600, batch: 24, ms: 21.0, samples: [21.0]}
      layout:                    # optional: per new frame shape (size: its patches; batch: shapes timed)
      - {size: 1512, batch: 4, ms: 2.4, samples: [2.3, 2.4, 2.6]}
    audio: {replay: [...], eager: [...], floor: [...], capture: [...]}  # size in mel frames, batch in audios

``ms`` is the median of ``samples`` (the raw timings, every repeat, kept so anyone can refit); on
load it is recomputed from the samples. Units: patches (vision), mel frames (audio), milliseconds.
A model predicts for the card it was measured on; ``packaged(card)`` picks the packaged model of a
card (``configs/costs_<card>.yaml``), and ``card_note`` says when a prediction uses another card's.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .grid import AUDIO_CHUNK_FRAMES, DTYPES, PATCHES_PER_TOKEN, Bucket, GridError
from .packing import Demand, Pack

MODALITIES = ("vision", "audio")
KINDS = ("replay", "eager")  # the surfaces, measured on a full grid of sizes x batches
POINTS = ("floor", "capture", "build", "layout")  # optional measured points per modality (format 2)
DEFAULT_COSTS = "costs_h200.yaml"  # packaged in omnienc/configs; costs_<card>.yaml for other cards
FORMAT = 2
FORMATS = (1, 2)  # readable; format 1 has no floor or capture points
META = ("card", "torch", "date", "command", "dtype", "measured", "quick", "cudnn_steps", "cudnn_from", "note")


class CostError(ValueError):
    """An invalid cost model or cost file; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Probe:
    """One calibration point.

    Attributes:
        size: Units (patches or mel frames): the bucket's size for a replay, the units run for an
            eager run.
        batch: Segments carried by the replay, or items of the eager run.
        samples: Every measured time in ms (one per repeat), non-empty, finite, >= 0.
    """

    size: int
    batch: int
    samples: tuple[float, ...]

    @property
    def ms(self) -> float:
        """Median of the samples, ms."""
        return float(statistics.median(self.samples))

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "batch": self.batch, "ms": round(self.ms, 4),  # ms: for readers; the samples count
                "samples": [float(s) for s in self.samples]}


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CostError(f"{where}: {value!r} must be a positive integer")
    return int(value)


def _probe(where: str, d: Any) -> Probe:
    if not isinstance(d, Mapping) or not {"size", "batch", "samples"} <= set(d):
        raise CostError(f"{where}: expected {{size: <int>, batch: <int>, samples: [ms, ...]}}, got {d!r}")
    unknown = sorted(set(d) - {"size", "batch", "samples", "ms"})
    if unknown:
        raise CostError(f"{where}: unknown key(s) {unknown}; allowed: size, batch, ms, samples")
    samples = d["samples"]
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
        raise CostError(f"{where}.samples: expected a list of ms, got {samples!r}")
    samples = list(samples)
    if not samples:
        raise CostError(f"{where}.samples: empty; give at least one measured time in ms")
    for s in samples:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise CostError(f"{where}.samples: {s!r} is not a finite time >= 0 in ms")
    return Probe(_positive_int(f"{where}.size", d["size"]), _positive_int(f"{where}.batch", d["batch"]),
                 tuple(float(s) for s in samples))


class Surface:
    """Predicted ms of one (modality, kind) as a function of (size, batch); see the module docstring.

    Args:
        where: Name for error messages (e.g. ``"vision replay"``).
        probes: Points on a full grid: every size at every batch, at least two sizes, each
            (size, batch) once.
        split: the size from which the runs took another kernel (``cudnn_from``); where at least two
            sizes lie each side, each side is priced from its own points only.
    """

    def __init__(self, where: str, probes: Sequence[Probe], split: int | None = None) -> None:
        self.where = where
        self.split, self._parts = None, None
        if isinstance(split, int) and not isinstance(split, bool):  # else invalid: the model's check says so
            below = [p for p in probes if p.size < split]
            above = [p for p in probes if p.size >= split]
            if len({p.size for p in below}) >= 2 and len({p.size for p in above}) >= 2:
                self.split = split
                self._parts = (Surface(f"{where} below {split}", below), Surface(f"{where} from {split}", above))
        self.probes = tuple(sorted(probes, key=lambda p: (p.size, p.batch)))
        sizes = sorted({p.size for p in self.probes})
        batches = sorted({p.batch for p in self.probes})
        if len(sizes) < 2:
            raise CostError(f"{where}: probes at {len(sizes)} size(s); measure at least two sizes "
                            "(the model extrapolates with the slope between the largest two)")
        table: dict[tuple[int, int], float] = {}
        for p in self.probes:
            if (p.size, p.batch) in table:
                raise CostError(f"{where}: size {p.size}, batch {p.batch} is measured twice; keep one")
            table[p.size, p.batch] = p.ms
        missing = [(s, b) for s in sizes for b in batches if (s, b) not in table]
        if missing:
            s, b = missing[0]
            raise CostError(f"{where}: no point at size {s}, batch {b} ({len(missing)} missing); "
                            f"probe every size {sizes} at every batch {batches}")
        ms = np.array([[table[s, b] for b in batches] for s in sizes])  # [size, batch]
        self.sizes = np.array(sizes, dtype=np.float64)
        self.batches = np.array(batches, dtype=np.float64)
        self.table = np.maximum.accumulate(ms, axis=0)  # non-decreasing in size, per batch
        self.slope = (self.table[-1] - self.table[-2]) / (self.sizes[-1] - self.sizes[-2])  # >= 0
        self._sizes = sizes
        self._inv = [1.0 / b for b in reversed(batches)]  # ascending 1/batch
        self._cols = [self.table[:, j].tolist() for j in range(len(batches))]

    def _column(self, j: int, size: float) -> float:
        col, sizes = self._cols[j], self._sizes
        if size <= sizes[0]:
            return col[0]
        if size >= sizes[-1]:
            return col[-1] + float(self.slope[j]) * (size - sizes[-1])
        i = bisect.bisect_right(sizes, size)
        s0, s1 = sizes[i - 1], sizes[i]
        return col[i - 1] + (col[i] - col[i - 1]) * (size - s0) / (s1 - s0)

    def __call__(self, size: float, batch: float) -> float:
        """Predicted ms at ``size`` units and ``batch`` segments/items (batch may be fractional)."""
        if self._parts is not None:
            return self._parts[int(size >= self.split)](size, batch)
        inv, n = 1.0 / max(batch, 1.0), len(self._inv)
        if n == 1 or inv <= self._inv[0]:  # at or above the largest batch
            return self._column(n - 1, size)
        if inv >= self._inv[-1]:
            return self._column(0, size)
        i = bisect.bisect_right(self._inv, inv) - 1  # between batch columns n-1-i (larger) and n-2-i
        w = (inv - self._inv[i]) / (self._inv[i + 1] - self._inv[i])
        return (1 - w) * self._column(n - 1 - i, size) + w * self._column(n - 2 - i, size)

    def many(self, sizes: np.ndarray, batches: np.ndarray) -> np.ndarray:
        """Vectorised ``__call__`` over broadcastable arrays (same values)."""
        sizes, batches = np.broadcast_arrays(np.asarray(sizes, np.float64), np.asarray(batches, np.float64))
        if self._parts is not None:
            lo, hi = self._parts
            return np.where(sizes < self.split, lo.many(sizes, batches), hi.many(sizes, batches))
        cols = [np.interp(sizes, self.sizes, self.table[:, j])
                + self.slope[j] * np.maximum(sizes - self.sizes[-1], 0.0) for j in range(len(self.batches))]
        if len(cols) == 1:
            return cols[0]
        inv = 1.0 / np.maximum(batches, 1.0)  # position among the batch columns, linear in 1/batch
        pos = np.interp(-inv, -1.0 / self.batches, np.arange(len(cols), dtype=np.float64))
        j = np.minimum(np.floor(pos).astype(np.int64), len(cols) - 2)
        w = pos - j
        stack = np.stack([c.ravel() for c in cols])  # [batch column, point]
        flat = np.arange(sizes.size)
        lo = stack[j.ravel(), flat].reshape(sizes.shape)
        hi = stack[j.ravel() + 1, flat].reshape(sizes.shape)
        return (1 - w) * lo + w * hi


@dataclass(frozen=True)
class CostModel:
    """Predicted GPU time of replays and eager runs, per modality (see the module docstring).

    Attributes:
        surfaces: ``{(modality, kind): Surface}`` for both modalities and both kinds.
        meta: ``card``, ``torch``, ``date``, ``command``, ``dtype``, ``measured``, ``note``.
        source: Where it was loaded from (for reports); ``""`` if built in code.
    """

    surfaces: Mapping[tuple[str, str], Surface]
    meta: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    points: Mapping[tuple[str, str], tuple[Probe, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [f"{m} {k}" for m in MODALITIES for k in KINDS if (m, k) not in self.surfaces]
        if missing:
            raise CostError(f"cost model lacks {missing}; calibrate both modalities, replays and eager runs")
        unknown = sorted(f"{m} {k}" for m, k in self.points if m not in MODALITIES or k not in POINTS)
        if unknown:
            raise CostError(f"unknown point list(s) {unknown}; allowed per modality: {', '.join(POINTS)}")
        floors, captures = {}, {}
        for m in MODALITIES:  # derived once: the rules below read plain numbers
            floor = self.points.get((m, "floor"))
            floors[m] = (statistics.median(s for p in floor for s in p.samples) if floor
                         else float(self.surfaces[m, "eager"].table.min()))
            capture = self.points.get((m, "capture"))
            captures[m] = (max(0.0, statistics.median(s - floors[m] for p in capture for s in p.samples))
                           if capture else floors[m])
        object.__setattr__(self, "_floor", floors)
        object.__setattr__(self, "_capture", captures)
        for kind in ("build", "layout"):  # one price per modality that measured them: the samples' median
            object.__setattr__(self, f"_{kind}", {
                m: max(0.0, statistics.median(s for p in self.points[m, kind] for s in p.samples))
                for m in MODALITIES if (m, kind) in self.points})
        steps = self.meta.get("cudnn_steps")
        if steps is not None and (isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or len(steps) != 2
                                  or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in steps)):
            raise CostError(f"cudnn_steps: {steps!r} must be two positive integers [segments, tokens]")
        splits = self.meta.get("cudnn_from")
        if splits is not None and (not isinstance(splits, Mapping) or any(
                m not in MODALITIES or not isinstance(v, Mapping) or any(
                    k not in KINDS or isinstance(n, bool) or not isinstance(n, int) or n < 1 for k, n in v.items())
                for m, v in splits.items())):
            raise CostError(f"cudnn_from: {splits!r} must map a modality to {{replay|eager: the first size on cuDNN}}")

    @property
    def card(self) -> str:
        """The card it was measured on (``torch.cuda.get_device_name``), or ``"unknown card"``."""
        return str(self.meta.get("card") or "unknown card")

    def measured_points(self, modality: str, kind: str) -> bool:
        """Whether ``kind`` (``floor``, ``capture``) of ``modality`` was measured, not estimated."""
        return bool(self.points.get((modality, kind)))

    # -- predictions --------------------------------------------------------------------------
    def replay_ms(self, modality: str, bucket: Bucket, segments: float | None = None) -> float:
        """GPU ms of one replay of graph bucket ``bucket`` (padded to its size) whose size is cut into
        ``segments`` equal segments (default: ``bucket.batch``, a full bucket; see
        ``attention_segments`` for packs of unequal ones)."""
        return self._surface(modality, "replay")(bucket.size, bucket.batch if segments is None else segments)

    def eager_ms(self, modality: str, units: int, items: float = 1) -> float:
        """GPU ms of one eager run of ``units`` units in ``items`` equal items (segments), unpadded,
        fixed launch cost included; never below the host floor."""
        return max(self._surface(modality, "eager")(units, items), self._floor[modality])

    def eager_many(self, modality: str, units: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Vectorised ``eager_ms``."""
        return np.maximum(self._surface(modality, "eager").many(units, items), self._floor[modality])

    def exact_replay_ms(self, modality: str, units: int, segments: float = 1) -> float:
        """GPU ms of one replay of a graph captured for a pack's exact layout: unpadded, the replay
        surface at the pack's own ``units`` and ``segments``."""
        return self._surface(modality, "replay")(units, segments)

    def floor_ms(self, modality: str) -> float:
        """Host floor: one uncaptured call of the smallest request, ms (measured, else the cheapest
        eager point)."""
        self._surface(modality, "eager")
        return self._floor[modality]

    def capture_cost_ms(self, modality: str) -> float:
        """What capturing a layout's graph adds to the host work of its eager run, ms."""
        self._surface(modality, "eager")
        return self._capture[modality]

    def cudnn_steps(self, modality: str) -> tuple[int, int] | None:
        """The rounding of the cuDNN varlen graphs whose builds were measured for ``modality``
        (``sightings.cudnn_key``); None: its uncaptured calls' first sightings are not priced."""
        steps = self.meta.get("cudnn_steps")
        return tuple(steps) if steps is not None and modality in self._build else None

    def build_ms(self, modality: str) -> float:
        """What the first call of a new cuDNN varlen graph adds, ms (0 where not measured)."""
        return self._build.get(modality, 0.0)

    def layout_ms(self, modality: str) -> float:
        """What a frame shape not laid out before adds to the run that meets it, ms (0 where not
        measured)."""
        return self._layout.get(modality, 0.0)

    def capture_ms(self, modality: str, units: int, items: float = 1) -> float:
        """GPU ms of an exact-layout capture: its eager run, then the capture on the host, which
        overlaps whatever of the eager run the GPU still runs: ``max(eager, floor + capture cost)``."""
        return max(self.eager_ms(modality, units, items), self._floor[modality] + self._capture[modality])

    def price(self, modality: str, kind: str, units: int, segments: float, bucket: Bucket | None = None) -> float:
        """GPU ms of one run of ``kind`` (``stats.KINDS``) by its rule: a ``replay`` of ``bucket``
        (padded to it), an ``exact_replay`` or ``exact_capture`` of ``units``, an uncaptured call
        (``eager``, ``merged``, ``fallback``) of ``units``; ``segments``: as many equal segments as
        its attention costs (``attention_segments``)."""
        if kind == "replay":
            return self.replay_ms(modality, bucket, segments)
        if kind == "exact_replay":
            return self.exact_replay_ms(modality, units, segments)
        if kind == "exact_capture":
            return self.capture_ms(modality, units, segments)
        if kind in ("eager", "merged", "fallback"):
            return self.eager_ms(modality, units, segments)
        raise CostError(f"unknown kind of run {kind!r}")

    def run_ms(self, modality: str, pack: Pack, graph: bool, segments: float | None = None) -> float:
        """GPU ms of one pack from ``packing.pack``: a replay of its bucket when ``graph`` (the bucket
        is a graph bucket), else an eager run of its members (an eager bucket, or a fallback, whose
        ``bucket`` is None). ``segments``: as many equal segments as the pack's attention costs
        (``attention_segments``); default ``pack.batch``."""
        segs = pack.batch if segments is None else segments
        if graph:
            if pack.bucket is None:
                raise CostError("a fallback (bucket None) is an eager run; call run_ms(..., graph=False)")
            return self.replay_ms(modality, pack.bucket, segs)
        return self.eager_ms(modality, pack.size, segs)

    def _surface(self, modality: str, kind: str) -> Surface:
        try:
            return self.surfaces[modality, kind]
        except KeyError:
            raise CostError(f"unknown modality {modality!r}; use 'vision' or 'audio'") from None

    def describe(self) -> str:
        """One line: source, card, torch, date, whether measured (quick: the start-up calibration),
        and what of the host floor and capture cost is estimated."""
        m = self.meta
        what = ("provisional, not measured" if not m.get("measured", True)
                else "measured, quick" if m.get("quick") else "measured")
        date = str(m.get("date", "?"))[:10]
        guessed = [k for k in ("floor", "capture") if not any(self.measured_points(mod, k) for mod in MODALITIES)]
        if guessed:
            what += f"; {' and '.join(guessed)} estimated"
        return f"{self.source or 'in-memory'} ({self.card}, torch {m.get('torch', '?')}, {date}, {what})"

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def from_probes(cls, probes: Mapping[tuple[str, str], Sequence[Probe]], source: str = "",
                    **meta: Any) -> CostModel:
        """Builds a model from ``{(modality, kind): [Probe, ...]}`` (kinds: the surfaces' and the
        optional ``POINTS``); ``meta`` as in the file."""
        splits = meta.get("cudnn_from")

        def split(m: str, k: str):  # a malformed value is the model's check to refuse
            per = splits.get(m) if isinstance(splits, Mapping) else None
            return per.get(k) if isinstance(per, Mapping) else None

        surfaces = {(m, k): Surface(f"{m} {k}", ps, split(m, k)) for (m, k), ps in probes.items() if k not in POINTS}
        points = {key: tuple(ps) for key, ps in probes.items() if key[1] in POINTS and ps}
        return cls(surfaces, dict(meta), source, points)

    @classmethod
    def from_dict(cls, d: Any, source: str = "") -> CostModel:
        """Builds and validates a model from the parsed YAML mapping."""
        if not isinstance(d, Mapping):
            raise CostError(f"expected a mapping with 'format', 'vision', 'audio', got {type(d).__name__}")
        fmt = d.get("format")
        if fmt not in FORMATS:
            raise CostError(f"format: {fmt!r} is not one of {list(FORMATS)}; write 'format: {FORMAT}' "
                            "(or re-run `omnienc capture --calibrate`)")
        meta_keys = set(META)
        unknown = sorted(set(d) - meta_keys - {"format", *MODALITIES})
        if unknown:
            raise CostError(f"unknown top-level key(s) {unknown}; allowed: format, {', '.join(sorted(meta_keys))}, "
                            "vision, audio")
        if d.get("dtype", "bfloat16") not in DTYPES:
            raise CostError(f"dtype: {d.get('dtype')!r} is not one of {list(DTYPES)}")
        if "card" in d and not isinstance(d["card"], str):
            raise CostError(f"card: {d['card']!r} must be the card's name (torch.cuda.get_device_name)")
        optional = POINTS if fmt >= 2 else ()
        probes = {}
        for m in MODALITIES:
            md = d.get(m)
            if not isinstance(md, Mapping) or not set(KINDS) <= set(md) <= {*KINDS, *optional}:
                extra = f", optionally {' and '.join(repr(k) for k in optional)}" if optional else ""
                raise CostError(f"{m}: expected a mapping with 'replay' and 'eager' lists of points{extra}")
            for k in (*KINDS, *(k for k in optional if k in md)):
                points = md[k]
                if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Iterable):
                    raise CostError(f"{m}.{k}: expected a list of {{size, batch, samples}} points")
                probes[m, k] = [_probe(f"{m}.{k}[{i}]", p) for i, p in enumerate(points)]
        return cls.from_probes(probes, source, **{k: d[k] for k in meta_keys if k in d})

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping (``format: 2``)."""
        d: dict[str, Any] = {"format": FORMAT}
        for k in META:
            if k in self.meta:
                v = self.meta[k]
                # plain YAML scalars (torch's version is a str subclass); cudnn_steps a list of ints
                d[k] = (v if isinstance(v, bool) else [int(x) for x in v] if k == "cudnn_steps"
                        else {m: {kind: int(n) for kind, n in kinds.items()} for m, kinds in v.items()}
                        if k == "cudnn_from" else str(v))
        for m in MODALITIES:
            d[m] = {k: [p.to_dict() for p in self.surfaces[m, k].probes] for k in KINDS}
            d[m].update({k: [p.to_dict() for p in self.points[m, k]] for k in POINTS if (m, k) in self.points})
        return d

    def save(self, path: str | Path, header: str | None = None) -> str:
        """Writes the YAML file (one flow-style line per point), ``header`` as comment lines; returns the text."""
        d = self.to_dict()
        top = {k: v for k, v in d.items() if k not in MODALITIES}
        text = "".join(f"# {line}".rstrip() + "\n" for line in (header or "").splitlines())
        text += yaml.safe_dump(top, sort_keys=False, width=100)
        for m in MODALITIES:
            text += f"{m}:\n"
            for k in d[m]:
                text += f"  {k}:\n"
                for p in d[m][k]:
                    text += "  - " + yaml.safe_dump(p, default_flow_style=True, sort_keys=False, width=10**6).strip() + "\n"
        Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def load(cls, path: str | Path | None = None, card: str | None = None) -> CostModel:
        """Loads a cost file; None loads the packaged model of ``card`` (``packaged``)."""
        if path is None:
            return packaged(card)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CostError(f"cost file {str(path)!r} not found; measure one with "
                            "`omnienc capture --calibrate -o costs.yaml` on the GPU, or leave --costs out") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CostError(f"cannot read cost file {str(path)!r}: {e}") from None
        return cls._from_text(text, str(path))

    @classmethod
    def _from_text(cls, text: str, source: str) -> CostModel:
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise CostError(f"{source}: invalid YAML: {e}; fix the syntax") from None
        try:
            return cls.from_dict(d, source)
        except CostError as e:
            raise CostError(f"{source}: {e}") from None


def attention_segments(modality: str, size: float, members: Iterable[Demand]) -> float:
    """How many equal segments of a run of ``size`` units cost the attention its members cost.

    Vision attention over a segment of s patches costs ~s^2, so a replay of a bucket of S patches
    (or an eager run of S = the members' patches) carrying members of s_i patches in b_i segments
    (each member's segments taken as equal) costs as much as S^2 / sum(s_i^2 / b_i) equal segments:
    one 3680-patch frame in a 4320 bucket counts 1.38 segments, eight 784-patch frames in their own
    run count 8. Audio attention runs in fixed windows, so there it is just the segment count.
    Always >= 1 for a non-empty pack that fits ``size``.
    """
    members = list(members)
    if modality != "vision":
        return float(sum(d.batch for d in members))
    quad = sum(d.size * d.size / d.batch for d in members)
    return size * size / quad if quad else 1.0


def card_family(card: str) -> str | None:
    """A card's model family, e.g. ``"H100"`` of ``"NVIDIA H100 80GB HBM3"``; None if none is named."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4})", card or "")
    return m.group(1) if m else None


def card_note(model: CostModel, card: str | None) -> str | None:
    """None when ``model`` was measured on ``card`` (or no card is named), else a line saying that a
    prediction for ``card`` uses another card's model."""
    if not card or model.card.strip().lower() == card.strip().lower():
        return None
    return (f"the cost model ({model.source or 'given'}) was measured on {model.card}, not on {card}: "
            f"its predictions are not a forecast for {card}; calibrate there (omnienc capture --calibrate "
            "[--quick] -o costs.yaml) and pass --costs")


@functools.lru_cache(maxsize=None)
def _packaged_file(name: str) -> CostModel:
    res = importlib.resources.files("omnienc.configs").joinpath(name)
    return CostModel._from_text(res.read_text(encoding="utf-8"), f"omnienc/configs/{name}")


def packaged_models() -> list[CostModel]:
    """Every packaged cost model (``omnienc/configs/costs_*.yaml``), the default first."""
    names = sorted(p.name for p in importlib.resources.files("omnienc.configs").iterdir()
                   if p.name.startswith("costs_") and p.name.endswith(".yaml"))
    return [_packaged_file(n) for n in [DEFAULT_COSTS, *(n for n in names if n != DEFAULT_COSTS)]]


def packaged(card: str | None = None) -> CostModel:
    """The packaged model measured on ``card`` (the same name, else the same family, e.g. H100);
    the default (``costs_h200.yaml``) when none matches or no card is named."""
    models = packaged_models()
    if card:
        for same in (lambda m: m.card.strip().lower() == card.strip().lower(),
                     lambda m: card_family(m.card) is not None and card_family(m.card) == card_family(card)):
            hit = next((m for m in models if same(m)), None)
            if hit is not None:
                return hit
    return models[0]


# --- Approximate FLOPs and activation memory of the real Qwen3-Omni encoders (estimates) ---
# Vision: 27 blocks, hidden 1152, MLP 4304, 16 heads x 72; patch embedding of 3x2x16x16 = 1536
# pixel values; a 2x2 merger (4 x 1152 = 4608 -> 4608 -> 2048) for the output and for each of
# the 3 deepstack taps.
_V_HIDDEN, _V_MLP, _V_LAYERS, _V_PIXELS, _V_MERGE, _V_OUT, _V_TAPS = 1152, 4304, 27, 1536, 4608, 2048, 3
# Audio: per 100-frame chunk of 128 mel bins, three stride-2 3x3 convs with 480 channels
# (64x50 -> 32x25 -> 16x13), then 13 tokens through 32 layers of d_model 1280, FFN 5120.
_A_MEL, _A_CH, _A_TOKENS, _A_MODEL, _A_FFN, _A_LAYERS, _A_OUT = 128, 480, 13, 1280, 5120, 32, 2048
_A_CONV = (64 * 50, 32 * 25, 16 * 13)  # spatial positions after each conv, per chunk
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def estimate_activation_bytes(modality: str, bucket: Bucket, dtype: str = "bfloat16") -> int:
    """Estimates the peak activation memory of one captured graph (its share of the graph pool).

    An approximate per-unit model of the real encoders in inference mode (no autograd), assuming
    memory-efficient varlen attention (no materialised score matrix) and that a layer's
    temporaries are freed before the next layer runs; weights are not included.

    * Vision, per patch: input pixels (1536) + residual (1152) + the larger layer phase, attention
      (norm, qkv, rotated q/k, output, projection: 8 x 1152) or MLP (norm + 2 x 4304 + out),
      + merger temporaries (2 x 4608 / 4) + the output and 3 deepstack features (4 x 2048 / 4).
      About 17.9k values, 35 KiB in bf16, so 16384 patches take about 0.6 GB.
    * Audio, per 100-frame chunk: the mel input (128 x 100) + the first conv's output and its
      GELU (2 x 480 x 64 x 50), which dominate, + 13 tokens of the transformer layer peak.
      About 3.3M values per chunk, 64 KiB per frame in bf16, so 12800 frames take about 0.84 GB.
    * Both: 16 bytes per segment (batch) for int32 index buffers.

    Args:
        modality: ``"vision"`` or ``"audio"``.
        bucket: The bucket (size in patches or frames, batch in segments).
        dtype: Activation dtype, one of ``DTYPES``.

    Returns:
        Estimated bytes.
    """
    if dtype not in _DTYPE_BYTES:
        raise GridError(f"dtype: unknown dtype {dtype!r}; use one of {list(DTYPES)}")
    if modality == "vision":
        layer = max(8 * _V_HIDDEN, 2 * _V_HIDDEN + 2 * _V_MLP)
        merge = (2 * _V_MERGE + (_V_TAPS + 1) * _V_OUT) / PATCHES_PER_TOKEN
        values = bucket.size * (_V_PIXELS + _V_HIDDEN + layer + merge)
    elif modality == "audio":
        chunks = math.ceil(bucket.size / AUDIO_CHUNK_FRAMES)
        conv = max(2 * _A_CH * _A_CONV[0], _A_CH * (_A_CONV[0] + _A_CONV[1]))
        layer = _A_MODEL + max(8 * _A_MODEL, 2 * _A_MODEL + 2 * _A_FFN)
        values = chunks * (_A_MEL * AUDIO_CHUNK_FRAMES + conv + _A_TOKENS * layer)
    else:
        raise GridError(f"unknown modality {modality!r}; use 'vision' or 'audio'")
    return int(values * _DTYPE_BYTES[dtype] + 16 * bucket.batch)


def default_cost(modality: str, pack: Pack, graph: bool) -> float:
    """A stand-in predicted time (ms) of a pack when no cost model is given: proportional to its
    work, with a fixed part per run (vision patches weigh ~4x audio frames; other modalities as audio)."""
    units = pack.bucket.size if (pack.bucket is not None and graph) else pack.size
    return 0.5 + units * (2.5e-3 if modality == "vision" else 6e-4)


def estimate_flops(modality: str, size: float) -> float:
    """Estimates the forward FLOPs of ``size`` units (patches or frames); used to weigh modalities.

    Counts the matmuls and convolutions of the real encoders (2 FLOPs per multiply-add), not the
    attention scores (they depend on segment lengths). About 0.9 GFLOP per vision patch and
    0.2 GFLOP per audio frame (21 GFLOP per 100-frame chunk), an estimate.

    Args:
        modality: ``"vision"`` or ``"audio"``.
        size: Units: patches (vision) or frames (audio).

    Returns:
        Estimated FLOPs.
    """
    if modality == "vision":
        layer = 4 * _V_HIDDEN**2 + 2 * _V_HIDDEN * _V_MLP
        merger = (_V_TAPS + 1) * (_V_MERGE**2 + _V_MERGE * _V_OUT) / PATCHES_PER_TOKEN
        per_unit = 2 * (_V_PIXELS * _V_HIDDEN + _V_LAYERS * layer + merger)
    elif modality == "audio":
        conv = 9 * _A_CH * (_A_CONV[0] + _A_CH * (_A_CONV[1] + _A_CONV[2]))
        layer = 4 * _A_MODEL**2 + 2 * _A_MODEL * _A_FFN
        tokens = _A_TOKENS * (_A_CH * 16 * _A_MODEL + _A_LAYERS * layer + _A_MODEL * _A_OUT)
        per_unit = 2 * (conv + tokens) / AUDIO_CHUNK_FRAMES
    else:
        raise GridError(f"unknown modality {modality!r}; use 'vision' or 'audio'")
    return per_unit * size


__all__ = ["CostError", "CostModel", "DEFAULT_COSTS", "Probe", "Surface", "attention_segments", "card_family",
           "card_note", "default_cost", "estimate_activation_bytes", "estimate_flops", "packaged", "packaged_models"]
