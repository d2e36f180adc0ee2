"""Bucket execution: static buffers, one record per bucket, the plan cache, capture and replay.

Static buffers are allocated once, for the largest graph bucket (for the largest bucket of all when
exact-layout graphs read their inputs from the same rows): input rows, and one byte buffer for the
plan, in which each graph bucket has its own layout (``plans.PlanLayout``). A replay stages the
pack's plan into that buffer with one copy (none when it already holds it), copies the inputs into
the bucket's rows and replays the bucket's graph (with graphs off, the same forward runs eagerly on
the same buffers); padding rows form their own attention segments and are never read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

from ..cuda import graphs as cuda_graphs
from ..encoders.attention import fastest_backend
from ..encoders.ops.finite import row_flags  # per output row: all finite (one Triton pass on CUDA)
from .grid import Bucket
from .modality import Modality
from .packing import layout
from .plans import PlanLayout, with_tensors
from .stats import BucketStats, ModalityStats


def forward(modality: Modality, inputs: torch.Tensor, plan, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A captured forward: its outputs stacked ``[n_outputs, rows, width]`` (so copying a pack's
    rows out is one copy) and the rows' finiteness flags."""
    stacked = torch.stack(modality.run(inputs, plan, backend))
    return stacked, row_flags(stacked)  # the flags read the stacked copy: one tensor, no other copy


def rows_out(outputs: tuple[torch.Tensor, torch.Tensor], used: int, cuda: bool) -> tuple[torch.Tensor, ...]:
    """Copies of the first ``used`` rows of stacked outputs, and their flags (on CUDA a view: the
    caller copies them to the host right away, in stream order)."""
    stacked, flags = outputs
    stacked = stacked.narrow_copy(1, 0, used)  # [n_outputs, used, width], one copy
    if cuda:
        flags = flags if flags.shape[0] == used else flags[:used]
    else:
        flags = flags.narrow_copy(0, 0, used)
    return (*stacked.unbind(0), flags)


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


class Buckets(Mapping):
    """A lane's buckets (a mapping of ``Bucket`` to its ``BucketRun``) and their static buffers.

    Args:
        modality: the lane's modality.
        stats: the lane's statistics; one ``BucketStats`` per bucket (``graph`` marks graph buckets).
        device: the runtime's device.
        exact_rows: size the input rows for every bucket (exact-layout graphs read them too).
        plan_cache_size: packed host plans kept (least recently used out).
    """

    def __init__(self, modality: Modality, stats: ModalityStats, device: torch.device, exact_rows: bool,
                 plan_cache_size: int):
        self.modality, self.device, self.cuda = modality, device, device.type == "cuda"
        self._runs = {s.bucket: BucketRun(s.bucket, s) for s in stats.buckets}
        self.plan_cache_size = plan_cache_size
        self._plans: OrderedDict = OrderedDict()
        self._staged = None  # (key, plan) whose bytes the plan buffer holds (stream order), or None
        self.inputs = self.plan_buffer = None
        graph_buckets = [b for b, br in self._runs.items() if br.stats.graph]
        if graph_buckets or (exact_rows and self._runs):
            self._allocate(graph_buckets, list(self._runs) if exact_rows else [])
        self.graph_memory_bytes = 0

    def __getitem__(self, bucket: Bucket) -> BucketRun:
        return self._runs[bucket]

    def __iter__(self) -> Iterator[Bucket]:
        return iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def _allocate(self, graph_buckets: list[Bucket], exact_buckets: list[Bucket]) -> None:
        """Static input rows and one plan byte buffer, sized for the largest graph bucket (the
        largest of ``exact_buckets`` too); each graph bucket's views into them."""
        m = self.modality
        layouts = {b: PlanLayout.of(m.plan([], b)) for b in graph_buckets}
        rows = max(m.bucket_rows(b) for b in [*graph_buckets, *exact_buckets])
        plan_bytes = max((lay.nbytes for lay in layouts.values()), default=0)
        self.inputs = m.input_buffer(rows, self.device)
        self.plan_buffer = torch.zeros(plan_bytes, dtype=torch.uint8, device=self.device)
        for b, lay in layouts.items():
            br = self._runs[b]
            br.layout = lay
            br.inputs = self.inputs[: m.bucket_rows(b)]
            br.plan = with_tensors(m.plan([], b), lay.views(self.plan_buffer))

    def rebind(self, stats: ModalityStats) -> None:
        """Points every bucket at its record in ``stats`` (new statistics)."""
        for s in stats.buckets:
            self._runs[s.bucket].stats = s

    # -- plans ----------------------------------------------------------------------------------
    def host_plan(self, br: BucketRun, shapes: list, key: tuple | None = None) -> tuple[object, torch.Tensor]:
        """(host plan, its bytes in the bucket's layout) of a pack of ``shapes``, from a small LRU
        cache keyed by bucket and items: traffic repeats shapes, and cached bytes are pinned, so
        staging is asynchronous."""
        key = key or (br.bucket, layout(shapes))
        hit = self._plans.get(key)
        if hit is not None:
            self._plans.move_to_end(key)
            return hit
        plan = self.modality.plan(shapes, br.bucket)
        hit = plan, br.layout.pack(plan, pin=self.cuda)
        self._plans[key] = hit
        while len(self._plans) > self.plan_cache_size:
            self._plans.popitem(last=False)
        return hit

    def drop_plans(self) -> None:
        """Empties the plan cache and forgets the staged plan (a calibration prices replays of new
        layouts, as traffic brings)."""
        self._plans.clear()
        self._staged = None

    @property
    def plans_cached(self) -> int:
        """Host plans in the cache (at most ``plan_cache_size``)."""
        return len(self._plans)

    def stage(self, br: BucketRun, shapes: list):
        """Puts the pack's plan into the plan buffer (one copy; none when the buffer already holds
        it: the same bucket and items as the last staging, which runs before in stream order)."""
        key = (br.bucket, layout(shapes))
        staged = self._staged
        if staged is not None and staged[0] == key:
            return staged[1]
        plan, packed = self.host_plan(br, shapes, key)
        self._staged = None
        self.plan_buffer[: br.layout.nbytes].copy_(packed, non_blocking=True)
        self._staged = (key, plan)
        return plan

    # -- runs -----------------------------------------------------------------------------------
    def replay(self, br: BucketRun, requests: list, shapes: list, used: int) -> tuple[torch.Tensor, ...]:
        """Stages the pack into the bucket's static views (one plan copy, one input copy per request)
        and replays its graph; returns copies of the ``used`` output rows, and their flags (on CUDA a
        view of the static flags: the caller copies them to the host right away, in stream order)."""
        plan = self.stage(br, shapes)
        self.modality.fill(requests, shapes, br.inputs)
        if br.graph is not None:
            br.graph.replay()
            outputs = br.outputs
        else:
            outputs = forward(self.modality, br.inputs, with_tensors(plan, br.layout.views(self.plan_buffer)),
                              br.attention)
        return rows_out(outputs, used, self.cuda)

    # -- capture --------------------------------------------------------------------------------
    def capture(self, candidates: Callable[[Bucket], list[str]], use_graphs: bool, progress=None, pool=None):
        """Captures every graph bucket, largest first, into ``pool`` (a new one if None) on CUDA with
        ``use_graphs``; runs each once otherwise (on its first candidate). Where several backends are
        ``candidates(bucket)``, each is captured and timed on a typical fill and the fastest kept. Returns
        the pool, so lanes share one (their replays never overlap: they run under the runtime's
        lock, and outputs are copied out right after)."""
        if self.cuda:
            # Graph memory = what the private pool keeps reserved: measured with the allocator's
            # cache emptied before and after (warm-up activations go back to the cache).
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            before = torch.cuda.memory_reserved(self.device)
        for bucket in sorted(self._runs, reverse=True):
            br = self._runs[bucket]
            if not br.stats.graph:
                continue
            t1 = time.perf_counter()
            with torch.inference_mode():
                if self.cuda and use_graphs:
                    pool = self.capture_bucket(br, candidates(bucket), pool)
                else:
                    br.attention = candidates(bucket)[0]
                    plan = self.stage(br, [])
                    forward(self.modality, br.inputs, with_tensors(plan, br.layout.views(self.plan_buffer)),
                            br.attention)
            br.capture_s = time.perf_counter() - t1
            if progress is not None:
                progress(self.modality.name, bucket, br.capture_s)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            self.graph_memory_bytes = torch.cuda.memory_reserved(self.device) - before
        return pool

    def capture_bucket(self, br: BucketRun, candidates: list[str], pool):
        """Captures ``br``'s graph with each candidate backend, keeps the fastest replay; returns the
        pool."""
        m = self.modality
        self.stage(br, [])
        captured = {}

        def run(backend: str):
            nonlocal pool
            captured[backend] = cuda_graphs.capture(lambda: forward(m, br.inputs, br.plan, backend), pool)
            pool = pool or captured[backend][0].pool()
            return captured[backend][0].replay

        if len(candidates) == 1:
            run(candidates[0])
            best = candidates[0]
        else:
            typical = m.typical_shapes(br.bucket)
            m.fill([m.typical_request(s) for s in typical], typical, br.inputs)
            self.stage(br, typical)
            best, br.attention_ms = fastest_backend(run, candidates)
        br.graph, br.outputs = captured.pop(best)
        br.attention = best
        captured.clear()  # the other backends' graphs: their pool memory is reused
        torch.cuda.synchronize(self.device)
        return pool

    def stats_into(self, d: dict) -> None:
        """Adds what capture did per bucket to a ``ModalityStats.to_dict``."""
        for b, br in self._runs.items():
            d["buckets"][f"{b.size}x{b.batch}"].update(
                captured=br.graph is not None, attention=br.attention, attention_ms=dict(br.attention_ms),
                capture_s=br.capture_s)

    @property
    def graphs(self) -> int:
        """Graphs captured."""
        return sum(br.graph is not None for br in self._runs.values())


__all__ = ["BucketRun", "Buckets", "forward", "layout", "rows_out"]
