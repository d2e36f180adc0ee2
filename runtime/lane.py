"""One lane per modality: packs a launch's requests, routes each pack, counts and times the runs.

A lane runs a modality's requests in three ways (the words of ``runtime.stats``):

    replay       a pack on a graph bucket, padded to it (``buckets.Buckets.replay``);
    eager run    a pack on an eager bucket (above ``graphs_up_to``): one eager call, unpadded (a
                 launch's eager packs share one call, ``packing.eager_groups``; ``eager.EagerRunner``);
    fallback     a request that fits no bucket: one eager call on it alone.

and, with exact graphs, a fourth in front of the first two: a pack whose exact layout comes back
replays a graph captured for that layout, unpadded (an *exact replay*, ``exact.ExactGraphs``). The
attention backend of each run is ``attention_policy.AttentionPolicy``'s.

Every run also computes, on the device, whether each output row is finite; a ``Check`` reads that
flag vector once the run has finished, so nothing waits for the GPU while work is enqueued.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import accumulate

import torch

from ..cuda import PendingTimings
from .attention_policy import AttentionPolicy
from .buckets import Buckets
from .config import RuntimeConfig
from .eager import EagerRunner
from .exact import ExactGraphs, exact_stats
from .grid import Bucket, ModalityGrid
from .modality import Modality
from .packing import BucketSet, Demand, Pack, eager_groups, pack
from .split import Unsplittable, piece_limit
from .stats import BucketStats, ModalityStats, new_modality_stats


class Check:
    """Where one request's output-row finiteness flags are: ``flags[start:stop]`` (host tensor, valid
    once its run has finished; a pack's requests share one)."""

    __slots__ = ("flags", "start", "stop")

    def __init__(self, flags: torch.Tensor, start: int, stop: int):
        self.flags, self.start, self.stop = flags, start, stop

    def ok(self) -> bool:
        return bool(self.flags[self.start : self.stop].all())


class Checks:
    """The checks of a request run in pieces: it is finite where every piece is."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Check]):
        self.parts = parts

    def ok(self) -> bool:
        return all(c.ok() for c in self.parts)


class _Assembly:
    """One request run in pieces: each piece's output rows are copied into the request's own
    tensors as soon as its pack has run (so a long request's pieces are not all held at once); the
    first piece to fail fails the request."""

    __slots__ = ("spec", "rows", "tensors", "checks", "error")

    def __init__(self, spec: Modality, rows: int):
        self.spec, self.rows = spec, rows
        self.tensors: tuple[torch.Tensor, ...] | None = None
        self.checks: list[Check] = []
        self.error: BaseException | None = None

    def put(self, at: int, result: tuple[object, Check | None]) -> None:
        out, check = result
        if self.error is not None:
            return
        if isinstance(out, BaseException):
            self.error = out
            return
        parts = self.spec.tensors(out)
        if self.tensors is None:
            self.tensors = tuple(t.new_empty((self.rows, *t.shape[1:])) for t in parts)
        n = parts[0].shape[0]
        for dst, src in zip(self.tensors, parts):
            dst[at : at + n].copy_(src)
        self.checks.append(check)

    def result(self) -> tuple[object, Checks | None]:
        if self.error is not None:
            return self.error, None
        return self.spec.output(self.tensors), Checks(self.checks)


@dataclass(frozen=True, slots=True)
class Sizes:
    """What a lane knows of one request shape: its ``demand``, its output ``rows`` and the smallest
    ``bucket`` that holds it alone (None: none does)."""

    demand: Demand
    rows: int
    bucket: Bucket | None


class Lane:
    """Runs one modality's requests over its buckets.

    Args:
        spec: the modality (its ``encoder`` is on ``device``).
        grid: the modality's buckets; None runs every request as a fallback.
        device: the runtime's device.
        config: the runtime's configuration.
        use_graphs: capture CUDA graphs for graph buckets (CUDA only).
        exact_graphs: capture graphs of repeated exact pack layouts (``exact``).
    """

    def __init__(self, spec: Modality, grid: ModalityGrid | None, device: torch.device, config: RuntimeConfig,
                 use_graphs: bool, exact_graphs: bool = False):
        self.spec, self.modality, self.encoder = spec, spec.name, spec.encoder
        self.device, self._cuda, self.use_graphs = device, device.type == "cuda", use_graphs
        buckets = grid.buckets if grid is not None else ()
        self.stats: ModalityStats = new_modality_stats(self.modality, buckets, grid.is_graph if grid else None)
        self.bucket_set = BucketSet(buckets)
        self._merge_units = config.eager_merge * max((b.size for b in buckets), default=0)
        self.eager_merge_units = self._merge_units  # a merged eager call's most units (``set_bound``)
        self._largest = max(buckets, key=lambda b: (b.size, b.batch), default=None)
        self.split = config.split_requests and self._largest is not None
        self.piece_limit = None  # the most a piece of a split request holds (``set_bound``)
        self.bound_units = None  # the most units one uncaptured call may hold (``set_bound``; None: no bound)
        self.attention = AttentionPolicy(spec.facts, config, spec.eager_cudnn)
        self.eager = EagerRunner(spec, device, self.attention)
        exact = bool(exact_graphs and buckets)
        self.buckets = Buckets(spec, self.stats, device, exact, config.plan_cache_size)
        self.exact = ExactGraphs(spec, self.buckets.inputs, self.attention, config) if exact else None
        self.exact_on = exact
        self._sizes: dict = {}  # shape -> Sizes
        self._size_cache = config.size_cache_size
        self.timings = PendingTimings(self._cuda, self._add_ms, config.timings_pending)
        self.last_event = None  # the end event of the last run_pack, if it completed (CUDA)
        self.captured = False
        self.capture_s = 0.0

    def set_exact(self, on: bool) -> None:
        """Turns exact graphs on or off (off keeps the graphs held; on needs a lane built with
        ``exact_graphs``: their inputs share the static buffer, sized for it)."""
        if on and self.exact is None:
            raise ValueError(f"{self.modality}: exact graphs need a runtime built with exact_graphs=True")
        self.exact_on = bool(on)

    def needed_bytes(self) -> int:
        """What this lane's largest uncaptured call needs (``Modality.eager_bytes``), the default
        bound's share: where the lane has eager buckets, a merged eager call of ``eager_merge`` times
        the largest bucket (the runtime makes such calls itself; capped, mixes of requests and long
        videos ran slower, in calls too small to fill the GPU's last kernel waves,
        docs/BENCHMARKS.md); else one eager run of its largest bucket."""
        if self._largest is None:
            return 0
        eager = any(not br.stats.graph for br in self.buckets.values())
        return self.spec.eager_bytes(max(self._largest.size, self._merge_units) if eager else self._largest.size)

    def set_bound(self, limit: int | None) -> None:
        """Bounds this lane's uncaptured calls by ``limit`` bytes (None: unbounded): eager packs and
        fallbacks check it, merged eager calls and the pieces of split requests are cut to fit it.

        A split request's pieces fill the largest bucket where it is a graph bucket (they replay
        its graph). Where it is an eager bucket they run uncaptured anyway, so each is as large as
        one uncaptured call may be (``eager_merge_units``): a few large pieces, which measured a
        little faster than many bucket-sized ones merged (docs/BENCHMARKS.md), made as equal as
        they can be. Such a piece fits no bucket and runs as a fallback of its own."""
        self.eager.limit = limit
        self.bound_units = within = None if limit is None else self.units_within(limit)
        self.eager_merge_units = self._merge_units if within is None else min(self._merge_units, within)
        top = self._largest
        self.piece_limit = None if top is None else piece_limit(top, self.buckets[top].stats.graph,
                                                                self._merge_units, within)

    def units_within(self, limit: int) -> int:
        """The most units one eager call may hold within ``limit`` bytes (its estimate is monotone)."""
        lo, hi = 0, 1
        while self.spec.eager_bytes(hi) <= limit and hi < 2**40:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.spec.eager_bytes(mid) <= limit else (lo, mid)
        return lo

    def sizes(self, shape) -> Sizes:
        """The ``Sizes`` of a request shape, cached (traffic repeats shapes)."""
        try:
            key = tuple(shape)
            hit = self._sizes.get(key)
        except TypeError:  # unhashable items (lists): not cached
            key = hit = None
        if hit is None:
            demand = self.spec.demand(shape)
            hit = Sizes(demand, self.spec.out_rows(shape), self.bucket_set.smallest(demand.size, demand.batch))
            if key is not None:
                if len(self._sizes) >= self._size_cache:
                    self._sizes.clear()
                self._sizes[key] = hit
        return hit

    def pack(self, shapes: list) -> list[tuple[Pack, bool]]:
        """How requests of ``shapes`` would be packed (``packing.pack``), and per pack whether it
        replays a graph bucket; changes nothing."""
        packs = pack([self.spec.demand(s) for s in shapes], self.bucket_set)
        return [(p, p.bucket is not None and self.buckets[p.bucket].stats.graph) for p in packs]

    def capture(self, progress=None, pool=None):
        """Captures every graph bucket (``Buckets.capture``) into ``pool``; returns the pool."""
        t0 = time.perf_counter()
        if self.exact is not None:
            self.exact.cache.drop_graphs()  # a new capture: layouts are captured again as they come back
        pool = self.buckets.capture(lambda b: self.attention.candidates(b.size), self.use_graphs, progress, pool)
        if self._cuda:
            self.attention.warm_cudnn()  # after the graph memory is measured: none of it is graph memory
        self.capture_s = time.perf_counter() - t0
        self.captured = True
        if self.exact is not None:
            self.exact.cache.pool = pool or self.exact.cache.pool
        return pool

    # -- runs -----------------------------------------------------------------------------------
    def run(self, requests: list, shapes: list, ids: list[int]) -> list[tuple[object, Check | None]]:
        """Packs and runs validated requests (``ids``: their indices in the caller's call, for
        errors). Returns per request ``(output, check)`` or ``(exception, None)``, in order; nothing
        here waits for the GPU (finished runs' timings are read by ``drain_timings``, which the runtime
        calls once the launch's work is enqueued). Packs on eager buckets run as one call
        (``packing.eager_groups``), but for those an exact graph replays or captures."""
        self.stats.requests += len(requests)
        sizes = [self.sizes(s) for s in shapes]
        if self.split and any(z.bucket is None for z in sizes):
            return self._run_split(requests, shapes, ids, sizes)
        if len(requests) == 1:  # the common case, without the packing's bookkeeping
            return [self._alone(requests[0], shapes[0], ids[0], sizes[0])]
        return self._run_packs(requests, shapes, ids, sizes)

    def _run_split(self, requests: list, shapes: list, ids: list[int], sizes: list[Sizes]) -> list:
        """``run`` where some requests fit no bucket: each is cut into pieces (``Modality.pieces``:
        whole frames or audio windows, each within ``piece_limit``) that pack beside the others;
        its outputs are its pieces' rows in order. A request that cannot be cut runs as it is."""
        reqs, shps, pids, szs = [], [], [], []
        owner: list[tuple[_Assembly | None, int]] = []  # per piece: its request's assembly and first row there
        whole: dict[int, int] = {}  # request -> its place among the pieces, when it runs uncut
        assemblies: dict[int, _Assembly] = {}
        for i, (r, s, n, z) in enumerate(zip(requests, shapes, ids, sizes)):
            parts = None
            if z.bucket is None:
                try:
                    parts = self.spec.pieces(s, self.piece_limit)
                except Unsplittable:
                    parts = None
            if parts is None:
                whole[i] = len(reqs)
                reqs.append(r), shps.append(s), pids.append(n), szs.append(z), owner.append((None, 0))
                continue
            assembly = assemblies[i] = _Assembly(self.spec, z.rows)
            row = 0
            for p in parts:
                shape = list(p.shape)
                size = self.sizes(shape)
                reqs.append(self.spec.piece(r, p)), shps.append(shape), pids.append(n), szs.append(size)
                owner.append((assembly, row))
                row += size.rows

        def done(j: int, result):
            assembly, row = owner[j]
            if assembly is None:
                return result
            assembly.put(row, result)
            return None  # the piece's rows are in its request's tensors: its pack's may go

        runs = self._run_packs(reqs, shps, pids, szs, done)
        return [runs[whole[i]] if i in whole else assemblies[i].result() for i in range(len(requests))]

    def _run_packs(self, requests: list, shapes: list, ids: list[int], sizes: list[Sizes],
                   done=None) -> list:
        """Packs and runs requests (``run`` without its fast path); ``done(i, result)``, if given, is
        called for each request as soon as its pack has run, and what it returns is kept."""
        results: list = [None] * len(requests)
        packs = pack([s.demand for s in sizes], self.bucket_set)
        groups = eager_groups(packs, [self._mergeable(p, shapes) for p in packs], self.eager_merge_units)
        for group in groups:
            idx = [i for p in group for i in p.members]
            args = [requests[i] for i in idx], [shapes[i] for i in idx], [ids[i] for i in idx], [sizes[i] for i in idx]
            try:
                outs = self.run_pack(group[0].bucket, *args) if len(group) == 1 else self._run_merged(group, *args)
            except Exception as e:  # noqa: BLE001 - a fault in one pack: find its culprits alone
                if len(idx) == 1:
                    outs = [(e, None)]
                else:
                    outs = [self._alone(requests[i], shapes[i], ids[i], sizes[i]) for i in idx]
            for i, o in zip(idx, outs):
                results[i] = o if done is None else done(i, o)
        return results

    def _mergeable(self, p: Pack, shapes: list) -> bool:
        """Whether a pack may share an eager call with others: it is on an eager bucket and, with
        exact graphs, its layout neither has a graph nor is due for one (changes nothing)."""
        if p.bucket is None or self.buckets[p.bucket].stats.graph:
            return False
        return not self.exact_on or not self.exact.wanted([shapes[i] for i in p.members])

    def _run_merged(self, group: list[Pack], requests: list, shapes: list, ids: list[int],
                    sizes: list) -> list[tuple[object, Check]]:
        """Several eager buckets' packs (``group``, whose members these requests are, in order) as one
        eager call; each pack counts as a run of its bucket, the call's time shared by units, and, with
        exact graphs, a sighting of its layout. On out-of-memory, pack by pack (``run_pack`` counts
        the sightings then)."""
        cuts = list(accumulate((len(p.members) for p in group), initial=0))  # pack k: [cuts[k], cuts[k+1])
        spans = list(zip(cuts, cuts[1:]))
        try:
            outs = self.run_pack(None, requests, shapes, ids, sizes, group=group)
        except torch.OutOfMemoryError:
            self.eager.release()
            return [o for p, (a, b) in zip(group, spans)
                    for o in self.run_pack(p.bucket, requests[a:b], shapes[a:b], ids[a:b], sizes[a:b])]
        if self.exact_on:
            for a, b in spans:
                self.exact.sighted(shapes[a:b])
        return outs

    def _alone(self, request, shape, index: int, size: Sizes | None = None) -> tuple[object, Check | None]:
        size = size or self.sizes(shape)
        try:
            return self.run_pack(size.bucket, [request], [shape], [index], [size])[0]
        except Exception as e:  # noqa: BLE001 - delivered per request
            return e, None

    def run_pack(self, bucket: Bucket | None, requests: list, shapes: list,
                 ids: list[int], sizes: list | None = None, group: list | None = None) -> list[tuple[object, Check]]:
        """Runs one pack on ``bucket`` (None: a fallback of one request); returns ``(output, check)``
        per request. Counts the run in the statistics. ``sizes``: each request's ``sizes(shape)``,
        if known. ``group``: eager buckets' packs whose requests these are, run as one eager call
        (``bucket`` None)."""
        self.last_event = None
        timings = self.timings
        start = timings.start()
        if sizes is None:
            sizes = [self.sizes(s) for s in shapes]
        if len(sizes) == 1:
            units, used = sizes[0].demand.size, sizes[0].rows
        else:
            units, used = sum(s.demand.size for s in sizes), sum(s.rows for s in sizes)
        br = None if bucket is None else self.buckets[bucket]
        kind, outputs = self.exact.run(requests, shapes, used) if self.exact_on and br is not None else (None, None)
        if group is not None:
            kind, outputs = "merged", self.eager.run(requests, shapes)
        elif outputs is None:
            if br is None:
                kind, outputs = "fallback", self.eager.fallback(requests[0], shapes[0], ids[0])
            elif br.stats.graph:
                kind, outputs = "replay", self.buckets.replay(br, requests, shapes, used)
            else:
                kind, outputs = "eager", self.eager.pack(requests, shapes, ids)
        tensors, flags = outputs[:-1], outputs[-1]
        if self._cuda:
            host = torch.empty(flags.shape, dtype=torch.bool, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            flags = host
        end = timings.stop()
        if group is not None:
            target = tuple((self.buckets[p.bucket].stats, p.size / units) for p in group)
            for p in group:
                self.buckets[p.bucket].stats.add(p.size, kind=kind)
            self.stats.merged_calls += 1
        elif br is None:
            target = None
            self.stats.add_fallback(units)
        else:
            target = br.stats
            target.add(units, kind=kind)
        timings.keep((kind, target), start, end)
        if self._cuda:
            self.last_event = end
        output = self.spec.output
        if len(sizes) == 1 and tensors[0].shape[0] == used:  # the whole output is the request's
            return [(output(tensors), Check(flags, 0, used))]
        results, row = [], 0
        for s in sizes:
            n = s.rows
            results.append((output(tuple(t[row : row + n] for t in tensors)), Check(flags, row, row + n)))
            row += n
        return results

    # -- statistics -----------------------------------------------------------------------------
    def _add_ms(self, key: tuple[str, BucketStats | tuple | None], ms: float) -> None:
        """Adds a run's time to its kind of run in its bucket; ``key``: ``(kind, target)``, target
        None for a fallback, a tuple of ``(bucket stats, share)`` for a merged call's packs."""
        kind, target = key
        if target is None:
            self.stats.fallback_ms += ms
        elif isinstance(target, tuple):
            for s, share in target:
                s.add_ms(kind, ms * share)
        else:
            target.add_ms(kind, ms)

    def drain_timings(self, wait: bool = False) -> None:
        """Adds finished runs' GPU times to the statistics (all of them, waiting, if ``wait``)."""
        self.timings.drain(wait)

    def stats_dict(self) -> dict:
        """The modality's statistics (``stats.ModalityStats.to_dict``) plus what capture did and how
        runs were made: ``eager_attention`` (uncaptured runs per backend), ``eager_merges``,
        ``dense_shapes`` and the exact graphs' ``exact_*`` figures."""
        self.drain_timings(wait=True)
        d = self.stats.to_dict()
        self.buckets.stats_into(d)
        d.update(graphs=self.buckets.graphs, capture_s=self.capture_s,
                 graph_memory_bytes=self.buckets.graph_memory_bytes,
                 eager_attention=dict(self.attention.runs), eager_merges=self.stats.merged_calls,
                 dense_shapes=self.attention.dense_shapes())
        d.update(exact_stats(self.exact))
        return d

    def reset_stats(self) -> None:
        self.drain_timings(wait=True)
        self.attention.runs = {}
        self.stats = new_modality_stats(self.modality, list(self.buckets), lambda b: self.buckets[b].stats.graph)
        self.buckets.rebind(self.stats)


__all__ = ["Check", "Checks", "Lane", "Sizes"]
