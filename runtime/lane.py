"""One lane per modality: static buffers, the buckets' graphs, packing, runs and statistics.

A lane runs a modality's requests in three ways (the words of ``runtime.stats``):

    replay       a pack on a graph bucket: its plan is padded to the bucket, staged into static
                 buffers with one copy, and the bucket's CUDA graph replays (or, with graphs off, the
                 same forward runs eagerly on the same buffers);
    eager run    a pack on an eager bucket (above ``graphs_up_to``): one eager call, unpadded (a
                 launch's eager packs share one call, ``packing.eager_groups``);
    fallback     a request that fits no bucket: one eager call on it alone.

and, with ``exact_graphs``, a fourth: a pack whose exact layout (its items' sizes, in order) comes
back replays a CUDA graph captured for that layout, unpadded (an *exact replay*). A layout is
captured at its ``EXACT_AT``-th sighting (that run is the eager call whose work the capture then
records: it builds every kernel plan the capture needs) if captures have been paying for themselves
(``EXACT_CREDIT``: a token bucket refilled by exact replays); at most ``EXACT_GRAPHS`` are kept, least
recently used out, in the lanes' one graph memory pool; a layout whose capture fails runs as before
from then on. Repeated single requests (one 448x448 image, one 10 s clip, a camera's frames) and
repeated packs (a closed loop of clients) then cost a replay: no padding, no eager launches, and
attention chosen for the exact layout (``dense`` where it suits).

Every run also computes, on the device, whether each output row is finite; a ``Check`` reads that
flag vector once the run has finished, so nothing waits for the GPU while work is enqueued.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from itertools import accumulate
from dataclasses import dataclass, field

import torch

from ..encoders.attention import (
    available_backends,
    cudnn_layout,
    cudnn_plan,
    cudnn_supported,
    dense_layout,
    dense_supported,
    fastest_backend,
    resolve_backend,
    segment_runs,
    varlen_attention,
)
from ..encoders.ops.finite import row_flags  # per output row: all finite (one Triton pass on CUDA)
from . import graphs
from .graphs import PlanLayout, upload, with_tensors
from .grid import Bucket, ModalityGrid
from .packing import EAGER_MERGE, BucketSet, eager_groups, pack
from .stats import BucketStats, ModalityStats, new_modality_stats


def release_cached_memory(device: torch.device) -> None:
    """Hands the allocator's cached blocks back after an out-of-memory error, so the next try can
    have them. Never raises: a clean-up must not replace the error being handled (on a device whose
    context has already failed, ``empty_cache`` itself throws)."""
    if device.type != "cuda":
        return
    try:
        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - the run's own error is the one to deliver
        pass


class Check:
    """Where one request's output-row finiteness flags are: ``flags[start:stop]`` (host tensor, valid
    once its run has finished; a pack's requests share one)."""

    __slots__ = ("flags", "start", "stop")

    def __init__(self, flags: torch.Tensor, start: int, stop: int):
        self.flags, self.start, self.stop = flags, start, stop

    def ok(self) -> bool:
        return bool(self.flags[self.start : self.stop].all())


def _layout(shapes: list) -> tuple:
    """A pack's exact layout, the key of its exact graph: its items in order, however grouped into
    requests."""
    return tuple(x for s in shapes for x in s)


@dataclass
class ExactGraph:
    """A CUDA graph of one exact pack layout: its plan (kept alive: the graph reads it), the stacked
    outputs and row flags it rewrites on replay, and its attention backend."""

    plan: object
    graph: torch.cuda.CUDAGraph
    outputs: tuple[torch.Tensor, torch.Tensor]
    attention: str


@dataclass
class BucketRun:
    """One bucket of a lane.

    Attributes:
        bucket: its (size, batch).
        stats: its statistics (``stats.graph`` False for an eager bucket).
        layout: a graph bucket's plan layout in the lane's plan buffer; None for an eager bucket.
        inputs: a graph bucket's view of the static input buffer.
        plan: a graph bucket's plan over the static views (what its graph reads).
        graph: the captured graph, if any; ``outputs`` are its output tensors (then the row flags).
        attention: the attention backend its runs use.
        attention_ms: replay time per candidate backend when chosen by measurement.
        capture_s: seconds spent capturing (and choosing) its graph.
    """

    bucket: Bucket
    stats: BucketStats
    layout: PlanLayout | None = None
    inputs: torch.Tensor | None = None
    plan: object = None
    graph: torch.cuda.CUDAGraph | None = None
    outputs: tuple[torch.Tensor, ...] = ()
    attention: str | None = None
    attention_ms: dict[str, float] = field(default_factory=dict)
    capture_s: float = 0.0


class Lane:
    """Runs one modality's requests over its buckets.

    Args:
        spec: the modality: a ``VisionModality`` or ``AudioModality`` (its ``encoder`` is on ``device``).
        grid: the modality's buckets; None runs every request as a fallback.
        device: the runtime's device.
        use_graphs: capture CUDA graphs for graph buckets (CUDA only).
        attention: the attention backend of every run, or ``"auto"``: the encoder's default.
        eager_attention: uncaptured runs' backend: ``"auto"`` takes ``dense`` (cuDNN over runs of
            equal-length segments) where the layout suits it (``encoders.attention.dense_layout``)
            and ``attention`` is ``"auto"`` or ``"fastest"`` -- but a call of at least the modality's
            ``eager_cudnn_tokens`` takes ``cudnn`` where the extra is installed (on a rounded plan,
            ``encoders.attention.cudnn_plan``) -- else the lane's backend; or a backend name.
        exact_graphs: capture graphs of repeated exact pack layouts (see the module docstring).
        eager_merge: a launch's eager packs share one call of at most this many times the largest
            bucket's size (``EAGER_MERGE``; 0: each alone).
    """

    PLAN_CACHE_SIZE = 64  # packed host plans kept (pinned on CUDA); a few hundred KB each at most
    SIZE_CACHE_SIZE = 4096  # request shapes whose demand and output rows are kept
    TIMINGS_PENDING = 4096  # unresolved CUDA timings kept; past that the oldest is waited for
    # ``dense`` builds and keeps one cuDNN graph per [B, L] shape (~45 ms to build, ~1.1 MiB of host
    # memory kept, on an H200), and saves well under a millisecond per use: a shape runs dense from
    # its DENSE_AFTER-th sighting (shapes that recur), and at most DENSE_SHAPES shapes ever do (later
    # new shapes keep the lane's backend). torch's cache is per thread: the bound holds per launching
    # thread. Measured on an H200, the 2,000-request mix of the throughput bench (315 distinct shapes,
    # 141 of them seen once): admitted at the 2nd sighting 129.5 req/s, the 4th 130.9, the 8th 139.9,
    # never 139.6 (a plan-build credit at the 2nd sighting, as exact captures have: 127.8 vs 141.5 at
    # the 8th, same call: the dense runs themselves lose on packs of many small images). A 32-request
    # mix repeated (its shapes every call) keeps dense's 7-9% from its 8th call; before, at 1.05-1.08x
    # of the native encoders.
    DENSE_AFTER = 8
    DENSE_SHAPES = 128
    EXACT_AT = 2  # a layout's graph is captured at this sighting
    EXACT_GRAPHS = 16  # exact graphs kept (least recently used out)
    EXACT_SEEN = 1024  # layouts whose sightings are remembered
    # Captures are paid for by replays (a token bucket): a capture spends a credit, an exact replay
    # earns one, and every EXACT_REFILL packs run otherwise earn one, up to EXACT_CREDIT. Traffic whose
    # layouts come back a second time but not a third (a replayed trace of big mixed packs) would
    # otherwise capture at every pack: measured on an H200, a 2,000-request chat mix run twice fell
    # from 105.8 to 83.5 req/s with 371 captures (docs/BENCHMARKS.md); repeated layouts earn their
    # credits back at once.
    EXACT_CREDIT = 16
    EXACT_REFILL = 64

    def __init__(self, spec, grid: ModalityGrid | None, device: torch.device, use_graphs: bool,
                 attention: str = "auto", eager_attention: str = "auto", exact_graphs: bool = False,
                 eager_merge: int = EAGER_MERGE):
        self.spec = spec
        self.modality = spec.name
        self.encoder = spec.encoder
        self.device = device
        self._cuda = device.type == "cuda"
        self.use_graphs = use_graphs
        self.attention = attention
        self.eager_attention = eager_attention
        self._dense_seen: dict[tuple[int, int], int] = {}  # [B, L] shape -> sightings (<= DENSE_SHAPES keys)
        self.eager_cudnn_tokens = spec.eager_cudnn_tokens  # uncaptured calls this big take ``cudnn`` (0: never)
        self._eager_attention_runs: dict[str, int] = {}  # backend -> uncaptured runs on it (stats)
        buckets = grid.buckets if grid is not None else ()
        self.stats: ModalityStats = new_modality_stats(self.modality, buckets, grid.is_graph if grid else None)
        self.buckets: dict[Bucket, BucketRun] = {s.bucket: BucketRun(s.bucket, s) for s in self.stats.buckets}
        self.bucket_set = BucketSet(buckets)
        self._largest = max((b.size for b in buckets), default=0)
        self.eager_merge = eager_merge  # a merged eager call's most units, in largest bucket sizes (0: off)
        self.eager_merges = 0  # eager calls that ran several packs
        self.inputs = self.plan_buffer = None
        self.exact = self._exact_ready = bool(exact_graphs and buckets)
        graph_buckets = [b for b, br in self.buckets.items() if br.stats.graph]
        if graph_buckets or self.exact:
            self._allocate(graph_buckets, list(self.buckets) if self.exact else [])
        self._plans: OrderedDict = OrderedDict()
        self._staged = None  # (key, plan) whose bytes the plan buffer holds (stream order), or None
        self._sizes: dict = {}  # shape -> (demand, output rows, smallest bucket holding it or None)
        self.last_event = None  # the end event of the last run_pack, if it completed (CUDA)
        self._timings: deque = deque()
        self.captured = False
        self.capture_s = 0.0
        self.graph_memory_bytes = 0
        self.pool = None  # the graph memory pool (shared with the other lane), once one exists
        self._exact_graphs: OrderedDict[tuple, ExactGraph] = OrderedDict()
        self._exact_seen: OrderedDict[tuple, int] = OrderedDict()  # layout -> sightings; -1: capture failed
        # graph_replays: replays of held exact graphs (exact runs less the captures' eager runs)
        self.exact_counts = {"captures": 0, "graph_replays": 0, "failures": 0, "evictions": 0, "refused": 0}
        self._exact_credit = float(self.EXACT_CREDIT)

    # -- static buffers -------------------------------------------------------------------------
    def _allocate(self, graph_buckets: list[Bucket], exact_buckets: list[Bucket]) -> None:
        """Static input rows and one plan byte buffer, sized for the largest graph bucket (the
        largest of ``exact_buckets`` too: exact graphs read their inputs from the same rows); each
        graph bucket's views into them."""
        m = self.spec
        layouts = {b: PlanLayout.of(m.plan([], b)) for b in graph_buckets}
        rows = max(m.bucket_rows(b) for b in [*graph_buckets, *exact_buckets])
        plan_bytes = max((layout.nbytes for layout in layouts.values()), default=0)
        self.inputs = m.input_buffer(rows, self.device)
        self.plan_buffer = torch.zeros(plan_bytes, dtype=torch.uint8, device=self.device)
        for b, layout in layouts.items():
            br = self.buckets[b]
            br.layout = layout
            br.inputs = self.inputs[: m.bucket_rows(b)]
            br.plan = with_tensors(m.plan([], b), layout.views(self.plan_buffer))

    def _host_plan(self, key: tuple, br: BucketRun, shapes: list) -> tuple[object, torch.Tensor]:
        """(host plan, its bytes in the bucket's layout) from a small LRU cache keyed by bucket and
        items (``key``): traffic repeats shapes, and cached bytes are pinned, so staging is
        asynchronous."""
        hit = self._plans.get(key)
        if hit is not None:
            self._plans.move_to_end(key)
            return hit
        plan = self.spec.plan(shapes, br.bucket)
        hit = plan, br.layout.pack(plan, pin=self.device.type == "cuda")
        self._plans[key] = hit
        while len(self._plans) > self.PLAN_CACHE_SIZE:
            self._plans.popitem(last=False)
        return hit

    # -- capture --------------------------------------------------------------------------------
    def backend(self) -> str:
        """The attention backend asked for (the lane's ``attention``, else the encoder's), resolved."""
        enc = self.encoder
        name = enc.attn_backend if self.attention in ("auto", "fastest") else self.attention
        return resolve_backend(name, self.device, enc.dtype, enc.head_dim)

    def eager_backend(self, seqlens) -> str:
        """The backend of an uncaptured run over segments ``seqlens`` (see ``eager_attention``)."""
        if self.eager_attention != "auto":
            enc = self.encoder
            return resolve_backend(self.eager_attention, self.device, enc.dtype, enc.head_dim)
        if self._cudnn_suits(seqlens):
            return "cudnn"
        return "dense" if self._dense_suits(seqlens) and self._admit_dense(segment_runs(seqlens)) else self.backend()

    def _cudnn_suits(self, seqlens) -> bool:
        """Whether cuDNN's varlen attention takes an uncaptured call over ``seqlens``: the lane's
        attention is ``auto`` or ``fastest``, the call holds at least ``eager_cudnn_tokens`` tokens,
        and the ``cudnn`` extra runs these tensors."""
        enc = self.encoder
        return (0 < self.eager_cudnn_tokens <= sum(seqlens) and self.attention in ("auto", "fastest")
                and cudnn_supported(self.device, enc.dtype, enc.head_dim))

    def _dense_suits(self, seqlens) -> bool:
        """Whether ``dense`` may take a run over ``seqlens``: the lane's attention is ``auto`` or
        ``fastest``, cuDNN runs these tensors, and the layout suits it (``dense_layout``)."""
        enc = self.encoder
        return (self.attention in ("auto", "fastest") and dense_supported(self.device, enc.dtype, enc.head_dim)
                and dense_layout(seqlens))

    def _admit_dense(self, runs: list[tuple[int, int]]) -> bool:
        """Counts a sighting of each run's shape; True when every one has been seen ``DENSE_AFTER``
        times and holds a place among the ``DENSE_SHAPES`` admitted."""
        ok = True
        for shape in runs:
            seen = self._dense_seen.get(shape)
            if seen is None:
                if len(self._dense_seen) >= self.DENSE_SHAPES:
                    ok = False
                    continue
                seen = 0
            seen = min(seen + 1, self.DENSE_AFTER)
            self._dense_seen[shape] = seen
            ok = ok and seen >= self.DENSE_AFTER
        return ok

    def candidates(self) -> list[str]:
        """Backends a graph bucket chooses from by measurement: every capturable one with
        ``attention="fastest"``, else the one asked for."""
        enc = self.encoder
        if self.attention == "fastest":
            return available_backends(self.device, enc.dtype, enc.head_dim) or [self.backend()]
        return [self.backend()]


    def _forward(self, inputs: torch.Tensor, plan, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A captured forward: its outputs stacked ``[n_outputs, rows, width]`` (so copying a pack's
        rows out is one copy) and the rows' finiteness flags."""
        outputs = self.spec.run(inputs, plan, backend)
        stacked = torch.stack(outputs)
        return stacked, row_flags(stacked)  # the flags read the stacked copy: one tensor, no other copy

    def _stage(self, br: BucketRun, shapes: list):
        """Puts the pack's plan into the plan buffer (one copy; none when the buffer already holds
        it: the same bucket and items as the last staging, which runs before in stream order)."""
        key = (br.bucket, _layout(shapes))
        staged = self._staged
        if staged is not None and staged[0] == key:
            return staged[1]
        plan, packed = self._host_plan(key, br, shapes)
        self._staged = None
        self.plan_buffer[: br.layout.nbytes].copy_(packed, non_blocking=True)
        self._staged = (key, plan)
        return plan

    def sizes(self, shape) -> tuple:
        """``(demand, output rows, bucket)`` of a request shape, ``bucket`` the smallest that holds
        it alone (None: none does), cached (traffic repeats shapes)."""
        try:
            key = tuple(shape)
            hit = self._sizes.get(key)
        except TypeError:  # unhashable items (lists): not cached
            key = hit = None
        if hit is None:
            demand = self.spec.demand(shape)
            hit = (demand, self.spec.out_rows(shape), self.bucket_set.smallest(demand.size, demand.batch))
            if key is not None:
                if len(self._sizes) >= self.SIZE_CACHE_SIZE:
                    self._sizes.clear()
                self._sizes[key] = hit
        return hit

    def capture(self, progress=None, pool=None):
        """Captures every graph bucket, largest first, into ``pool`` (a new one if None) on CUDA;
        runs each once otherwise. Where several attention backends can run, each is captured and
        timed on a typical fill of the bucket and the fastest kept (eager runs keep ``backend()``).
        Returns the pool, so lanes share one (their replays never overlap: they run under the
        runtime's lock, and outputs are copied out right after)."""
        t0 = time.perf_counter()
        cuda = self.device.type == "cuda"
        self._exact_graphs.clear()  # a new capture: layouts are captured again as they come back
        if cuda:
            # Graph memory = what the private pool keeps reserved: measured with the allocator's
            # cache emptied before and after (warm-up activations go back to the cache).
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            before = torch.cuda.memory_reserved(self.device)
        candidates = self.candidates()
        for bucket in sorted(self.buckets, reverse=True):
            br = self.buckets[bucket]
            if not br.stats.graph:
                continue
            t1 = time.perf_counter()
            with torch.inference_mode():
                if cuda and self.use_graphs:
                    pool = self._capture_bucket(br, candidates, pool)
                else:
                    br.attention = candidates[0]
                    plan = self._stage(br, [])
                    self._forward(br.inputs, with_tensors(plan, br.layout.views(self.plan_buffer)), br.attention)
            br.capture_s = time.perf_counter() - t1
            if progress is not None:
                progress(self.modality, bucket, br.capture_s)
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            self.graph_memory_bytes = torch.cuda.memory_reserved(self.device) - before
            self._warm_cudnn()  # after the graph memory is measured: none of it is graph memory
        self.capture_s = time.perf_counter() - t0
        self.captured = True
        self.pool = pool or self.pool
        return pool

    def _warm_cudnn(self) -> None:
        """Where big uncaptured calls may take ``cudnn``, one small such call now: the frontend's
        start-up (its import, a handle, its first graph: ~1 s on a warm H100 machine, ~11 s on a
        fresh one) is paid by the capture, not by the first big request."""
        enc = self.encoder
        if not self._cudnn_suits((self.eager_cudnn_tokens,)):
            return
        q, k, v = torch.randn(3, 64, enc.num_heads, enc.head_dim, device=self.device, dtype=enc.dtype).unbind(0)
        cu, _, bound = cudnn_layout(torch.tensor([0, 64], dtype=torch.int32), (64,), 64)
        with torch.inference_mode():
            varlen_attention(q, k, v, cu.to(self.device), bound, None, "cudnn")

    def _capture_bucket(self, br: BucketRun, candidates: list[str], pool):
        """Captures ``br``'s graph with each candidate backend, keeps the fastest replay."""
        self._stage(br, [])
        captured = {}

        def run(backend: str):
            nonlocal pool
            captured[backend] = graphs.capture(lambda: self._forward(br.inputs, br.plan, backend), pool)
            pool = pool or captured[backend][0].pool()
            return captured[backend][0].replay

        if len(candidates) == 1:
            run(candidates[0])
            best = candidates[0]
        else:
            typical = self.spec.typical_shapes(br.bucket)
            self.spec.fill([self.spec.typical_request(s) for s in typical], typical, br.inputs)
            self._stage(br, typical)
            best, br.attention_ms = fastest_backend(run, candidates)
        br.graph, br.outputs = captured.pop(best)
        br.attention = best
        captured.clear()  # the other backends' graphs: their pool memory is reused
        torch.cuda.synchronize(self.device)
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
        if len(requests) == 1:  # the common case, without the packing's bookkeeping
            return [self._alone(requests[0], shapes[0], ids[0], sizes[0])]
        results: list = [None] * len(requests)
        reps = pack([s[0] for s in sizes], self.bucket_set)
        groups = eager_groups(reps, [self._mergeable(r, shapes) for r in reps], self.eager_merge * self._largest)
        for group in groups:
            idx = [i for rep in group for i in rep.members]
            args = [requests[i] for i in idx], [shapes[i] for i in idx], [ids[i] for i in idx], [sizes[i] for i in idx]
            try:
                outs = self.run_pack(group[0].bucket, *args) if len(group) == 1 else self._run_merged(group, *args)
            except Exception as e:  # noqa: BLE001 - a fault in one pack: find its culprits alone
                if len(idx) == 1:
                    outs = [(e, None)]
                else:
                    outs = [self._alone(requests[i], shapes[i], ids[i], sizes[i]) for i in idx]
            for i, o in zip(idx, outs):
                results[i] = o
        return results

    def _mergeable(self, rep, shapes: list) -> bool:
        """Whether a pack may share an eager call with others: it is on an eager bucket and, with
        exact graphs, its layout has no graph and is not due for one (changes nothing)."""
        if rep.bucket is None or self.buckets[rep.bucket].stats.graph:
            return False
        if not self.exact:
            return True
        key = _layout([shapes[i] for i in rep.members])
        return key not in self._exact_graphs and not self._exact_due(key)  # else run_pack replays or captures it

    def _run_merged(self, group: list, requests: list, shapes: list, ids: list[int],
                    sizes: list) -> list[tuple[object, Check]]:
        """Several eager buckets' packs (``group``, whose members these requests are, in order) as one
        eager call; each pack counts as a run of its bucket, the call's time shared by units, and, with
        exact graphs, a sighting of its layout. On out-of-memory, pack by pack (``run_pack`` counts
        the sightings then)."""
        cuts = list(accumulate((len(rep.members) for rep in group), initial=0))  # pack k: [cuts[k], cuts[k+1])
        spans = list(zip(cuts, cuts[1:]))
        try:
            outs = self.run_pack(None, requests, shapes, ids, sizes, group=group)
        except torch.OutOfMemoryError:
            release_cached_memory(self.device)
            return [o for rep, (a, b) in zip(group, spans)
                    for o in self.run_pack(rep.bucket, requests[a:b], shapes[a:b], ids[a:b], sizes[a:b])]
        if self.exact:
            for a, b in spans:
                self._sighted(_layout(shapes[a:b]))
        return outs

    def _alone(self, request, shape, index: int, size: tuple | None = None) -> tuple[object, Check | None]:
        size = size or self.sizes(shape)
        try:
            return self.run_pack(size[2], [request], [shape], [index], [size])[0]
        except Exception as e:  # noqa: BLE001 - delivered per request
            return e, None

    def run_pack(self, bucket: Bucket | None, requests: list, shapes: list,
                 ids: list[int], sizes: list | None = None, group: list | None = None) -> list[tuple[object, Check]]:
        """Runs one pack on ``bucket`` (None: a fallback of one request); returns ``(output, check)``
        per request. Counts the run in the statistics. ``sizes``: each request's ``sizes(shape)``,
        if known. ``group``: eager buckets' packs whose requests these are, run as one eager call
        (``bucket`` None)."""
        self.last_event = None
        cuda = self._cuda
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        if sizes is None:
            sizes = [self.sizes(s) for s in shapes]
        if len(sizes) == 1:
            units, used = sizes[0][0].size, sizes[0][1]
        else:
            units, used = sum(s[0].size for s in sizes), sum(s[1] for s in sizes)
        br = None if bucket is None else self.buckets[bucket]
        outputs = self._exact(requests, shapes, used) if self.exact and br is not None else None
        exact = outputs is not None
        if group is not None:
            outputs = self._eager(requests, shapes)
        elif outputs is None:
            if br is None:
                outputs = self._fallback(requests[0], shapes[0], ids[0])
            elif br.stats.graph:
                outputs = self._replay(br, requests, shapes, used)
            else:
                outputs = self._eager_pack(requests, shapes, ids)
        tensors, flags = outputs[:-1], outputs[-1]
        if cuda:
            host = torch.empty(flags.shape, dtype=torch.bool, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            flags = host
            end.record()
        if group is not None:
            stat = tuple((self.buckets[r.bucket].stats, r.size / units) for r in group)
            for r in group:
                self.buckets[r.bucket].stats.add(r.size)
            self.eager_merges += 1
        elif br is None:
            stat = None
            self.stats.add_fallback(units)
        else:
            stat = br.stats
            stat.add(units, exact=exact)
        if cuda:
            self._timings.append((stat, start, end))
            while len(self._timings) > self.TIMINGS_PENDING:
                self._resolve(*self._timings.popleft())
            self.last_event = end
        else:
            self._add_ms(stat, (time.perf_counter() - t0) * 1e3)
        output = self.spec.output
        if len(sizes) == 1 and tensors[0].shape[0] == used:  # the whole output is the request's
            return [(output(tensors), Check(flags, 0, used))]
        results, row = [], 0
        for s in sizes:
            n = s[1]
            results.append((output(tuple(t[row : row + n] for t in tensors)), Check(flags, row, row + n)))
            row += n
        return results

    def _replay(self, br: BucketRun, requests: list, shapes: list, used: int) -> tuple[torch.Tensor, ...]:
        """Stages the pack into the bucket's static views (one plan copy, one input copy per request)
        and replays its graph; returns copies of the ``used`` output rows, and their flags (on CUDA a
        view of the static flags: the caller copies them to the host right away, in stream order)."""
        plan = self._stage(br, shapes)
        self.spec.fill(requests, shapes, br.inputs)
        if br.graph is not None:
            br.graph.replay()
            outputs = br.outputs
        else:
            outputs = self._forward(br.inputs, with_tensors(plan, br.layout.views(self.plan_buffer)), br.attention)
        return self._rows_out(outputs, used)

    def set_exact(self, on: bool) -> None:
        """Turns exact graphs on or off (off keeps the graphs held; on needs a lane built with
        ``exact_graphs``: their inputs share the static buffer, sized for it)."""
        if on and not self._exact_ready:
            raise ValueError(f"{self.modality}: exact graphs need a runtime built with exact_graphs=True")
        self.exact = bool(on)

    def _exact(self, requests: list, shapes: list, used: int) -> tuple[torch.Tensor, ...] | None:
        """The pack by its exact layout's graph: a replay if it has one; at the layout's
        ``EXACT_AT``-th sighting an eager run of exactly these requests, then the capture of that
        run's work. None: the pack runs on its bucket as usual."""
        key = _layout(shapes)
        entry = self._exact_graphs.get(key)
        if entry is not None:
            self._exact_graphs.move_to_end(key)
            self.exact_counts["graph_replays"] += 1
            self._exact_credit = min(self._exact_credit + 1.0, self.EXACT_CREDIT)
            self.spec.fill(requests, shapes, self.inputs)
            entry.graph.replay()
            return self._rows_out(entry.outputs, used)
        seen = self._sighted(key)
        if seen < 0 or seen + 1 < self.EXACT_AT:
            return None
        if self._exact_credit < 1.0:  # captures have not been paying: this layout waits its turn
            self.exact_counts["refused"] += 1
            return None
        self._exact_credit -= 1.0
        return self._exact_capture(key, requests, shapes, used)

    def _sighted(self, key: tuple) -> int:
        """Counts a sighting of a layout that has no graph (each earns captures a fraction of a
        credit); returns its sightings before this one (-1: its capture failed)."""
        self._exact_credit = self._credit_after_sighting()
        seen = self._exact_seen.pop(key, 0)
        self._exact_seen[key] = seen if seen < 0 else seen + 1
        while len(self._exact_seen) > self.EXACT_SEEN:
            self._exact_seen.popitem(last=False)
        return seen

    def _exact_due(self, key: tuple) -> bool:
        """Whether a sighting of this layout (no graph held) now would capture it; changes nothing."""
        seen = self._exact_seen.get(key, 0)
        return seen >= 0 and seen + 1 >= self.EXACT_AT and self._credit_after_sighting() >= 1.0

    def _credit_after_sighting(self) -> float:
        """The capture credit once a sighting has earned its fraction (at most ``EXACT_CREDIT``)."""
        return min(self._exact_credit + 1.0 / self.EXACT_REFILL, self.EXACT_CREDIT)

    def _exact_capture(self, key: tuple, requests: list, shapes: list, used: int) -> tuple[torch.Tensor, ...] | None:
        """Runs the pack eagerly on its exact plan (its results), then captures that work as the
        layout's graph; a failed capture marks the layout (it runs on its bucket from then on). None
        if even the eager run is out of memory (the bucket path then retries as usual)."""
        m = self.spec
        host_plan = m.plan(shapes)  # unpadded
        backend = self.exact_backend(host_plan.seqlens)
        inputs = self.inputs[: sum(m.rows(s) for s in shapes)]
        try:
            plan = upload(host_plan, self.device)
            m.fill(requests, shapes, inputs)
            first = self._forward(inputs, plan, backend)  # this pack's results; warms up what the capture needs
        except torch.OutOfMemoryError:
            self._exact_seen[key] = -1
            self.exact_counts["failures"] += 1
            return None
        try:
            graph, outputs = graphs.capture_live(lambda: self._forward(inputs, plan, backend), self.pool)
        except Exception:  # noqa: BLE001 - an uncapturable layout runs on its bucket from now on
            self._exact_seen[key] = -1
            self.exact_counts["failures"] += 1
        else:
            self.pool = self.pool or graph.pool()
            self.exact_counts["captures"] += 1
            if len(self._exact_graphs) >= self.EXACT_GRAPHS:
                self._exact_graphs.popitem(last=False)
                self.exact_counts["evictions"] += 1
            self._exact_graphs[key] = ExactGraph(plan, graph, outputs, backend)
        return self._rows_out(first, used)

    def exact_backend(self, seqlens) -> str:
        """The attention backend of an exact graph over segments ``seqlens``: ``dense`` where the
        layout suits it (as uncaptured runs; its cuDNN plans count against ``DENSE_SHAPES``), else
        the lane's backend."""
        return "dense" if self._dense_suits(seqlens) and self._dense_room(segment_runs(seqlens)) else self.backend()

    def _dense_room(self, runs: list[tuple[int, int]]) -> bool:
        """Admits every run's shape to ``dense`` at once if all fit among the ``DENSE_SHAPES``."""
        new = {shape for shape in runs if shape not in self._dense_seen}
        if len(self._dense_seen) + len(new) > self.DENSE_SHAPES:
            return False
        for shape in runs:
            self._dense_seen[shape] = self.DENSE_AFTER
        return True

    def _rows_out(self, outputs: tuple[torch.Tensor, torch.Tensor], used: int) -> tuple[torch.Tensor, ...]:
        """Copies of the first ``used`` rows of stacked outputs, and their flags (on CUDA a view: the
        caller copies them to the host right away, in stream order)."""
        stacked, flags = outputs
        stacked = stacked.narrow_copy(1, 0, used)  # [n_outputs, used, width], one copy
        if self._cuda:
            flags = flags if flags.shape[0] == used else flags[:used]
        else:
            flags = flags.narrow_copy(0, 0, used)
        return (*stacked.unbind(0), flags)

    def _eager(self, requests: list, shapes: list) -> tuple[torch.Tensor, ...]:
        """One eager call on exactly these requests (no padding); outputs and their row flags."""
        m = self.spec
        inputs = m.input_buffer(sum(m.rows(s) for s in shapes), self.device, zero=False)
        m.fill(requests, shapes, inputs)
        host_plan = m.plan(shapes)
        backend = self.eager_backend(host_plan.seqlens)
        if backend == "cudnn":
            host_plan = cudnn_plan(host_plan)  # a segment count and bound whose cuDNN graph recurs
        plan = upload(host_plan, self.device)
        self._eager_attention_runs[backend] = self._eager_attention_runs.get(backend, 0) + 1
        outputs = m.run(inputs, plan, backend)
        return (*outputs, row_flags(outputs))

    def _fallback(self, request, shape, index: int) -> tuple[torch.Tensor, ...]:
        """A request that fits no bucket. On out-of-memory, a request of several items runs item by
        item; a single item that still does not fit fails with an error naming the request."""
        try:
            return self._eager([request], [shape])
        except torch.OutOfMemoryError:
            pass
        release_cached_memory(self.device)
        if len(shape) > 1:
            try:
                parts = [self._eager([r], [s]) for r, s in self.spec.items(request, shape)]
                return tuple(torch.cat(ts) for ts in zip(*parts))
            except torch.OutOfMemoryError:
                pass
        raise RuntimeError(
            f"request {index} ({type(request).__name__}): out of device memory in the eager fallback "
            f"(shape {shape}); it fits no bucket and is too large to run alone -- split it or add a larger bucket"
        )

    def _eager_pack(self, requests: list, shapes: list, ids: list[int]) -> tuple[torch.Tensor, ...]:
        """An eager bucket's pack as one call. On out-of-memory, request by request (each through the
        fallback's own splitting)."""
        if len(requests) > 1:
            try:
                return self._eager(requests, shapes)
            except torch.OutOfMemoryError:
                release_cached_memory(self.device)
        parts = [self._fallback(r, s, i) for r, s, i in zip(requests, shapes, ids)]
        return tuple(torch.cat(ts) for ts in zip(*parts))

    # -- statistics -----------------------------------------------------------------------------
    def _add_ms(self, stat: BucketStats | tuple | None, ms: float) -> None:
        """Adds a run's time to its bucket (None: the fallbacks; a tuple of ``(bucket stats, share)``:
        a merged call's packs)."""
        if isinstance(stat, tuple):
            for s, share in stat:
                s.ms += ms * share
        elif stat is None:
            self.stats.fallback_ms += ms
        else:
            stat.ms += ms

    def _resolve(self, stat, start, end) -> None:
        end.synchronize()
        self._add_ms(stat, start.elapsed_time(end))

    def drain_timings(self, wait: bool = False) -> None:
        """Adds finished runs' GPU times to the statistics (all of them, waiting, if ``wait``)."""
        while self._timings and (wait or self._timings[0][2].query()):
            self._resolve(*self._timings.popleft())

    def stats_dict(self) -> dict:
        """The modality's statistics (``stats.ModalityStats.to_dict``) plus what capture did."""
        self.drain_timings(wait=True)
        d = self.stats.to_dict()
        for b, br in self.buckets.items():
            d["buckets"][f"{b.size}x{b.batch}"].update(
                captured=br.graph is not None, attention=br.attention, attention_ms=dict(br.attention_ms),
                capture_s=br.capture_s)
        d.update(graphs=sum(br.graph is not None for br in self.buckets.values()), capture_s=self.capture_s,
                 graph_memory_bytes=self.graph_memory_bytes,
                 eager_attention=dict(self._eager_attention_runs),  # uncaptured runs per attention backend
                 eager_merges=self.eager_merges,
                 dense_shapes=sum(n >= self.DENSE_AFTER for n in self._dense_seen.values()),
                 exact_graphs=len(self._exact_graphs), exact_attention=self._exact_attention(),
                 **{f"exact_{k}": v for k, v in self.exact_counts.items()})
        return d

    def _exact_attention(self) -> dict[str, int]:
        """Exact graphs held per attention backend."""
        return dict(Counter(e.attention for e in self._exact_graphs.values()))

    def reset_stats(self) -> None:
        self.drain_timings(wait=True)
        self._eager_attention_runs = {}
        self.eager_merges = 0
        self.stats = new_modality_stats(self.modality, list(self.buckets), lambda b: self.buckets[b].stats.graph)
        for s in self.stats.buckets:
            self.buckets[s.bucket].stats = s


__all__ = ["BucketRun", "Check", "ExactGraph", "Lane", "row_flags"]
