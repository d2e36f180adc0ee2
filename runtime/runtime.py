"""EncoderRuntime: packs many users' requests into bucket replays of CUDA graphs.

``launch(requests)`` validates every request (host metadata only), packs each modality's requests
into its buckets (``packing.pack``), enqueues the runs on the device and returns a ``Batch`` at once;
``Batch.result()`` waits for that work and checks each request's outputs. ``encode`` is both.
The runs themselves live in ``lane.Lane`` (one per modality, generic over ``modality.Modality``);
every knob is in ``config.RuntimeConfig``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence

import torch

from ..encoders.attention import resolve_backend
from .config import RuntimeConfig
from .grid import BucketGrid
from .lane import Check, Lane
from .modality import BUILT_IN, AudioModality, Modality, VisionModality
from .requests import NonFiniteOutput, check_finite


_NO_DEVICE = contextlib.nullcontext()  # reusable: what ``_on_device`` enters off CUDA
_UNSET = object()  # a keyword argument not given: the config's value stands


class Batch:
    """The work one ``launch`` enqueued.

    ``outputs`` are the requests' outputs on the runtime's device (``VisionOutput``/``AudioOutput``,
    or None where the request failed while enqueuing), ready in the device's stream order: a consumer
    on the same stream may use them at once. ``results()``/``result()`` wait for the work and check
    every request's outputs for NaN/inf; a request that fails does not affect the others.
    """

    def __init__(self, requests: list, results: list, event: torch.cuda.Event | None, runtime: EncoderRuntime):
        self._requests = requests
        self._raw = results  # per request: (output, Check) or (exception, None)
        self._event = event
        self._runtime = runtime  # names a failed request's input field
        self._results: list | None = None

    @property
    def outputs(self) -> list:
        return [None if isinstance(o, BaseException) else o for o, _ in self._raw]

    def done(self) -> bool:
        """Whether the device has finished this batch (never waits)."""
        return self._event is None or self._event.query()

    def wait(self) -> None:
        if self._event is not None:
            self._event.synchronize()

    def results(self) -> list:
        """Per request, its output or the exception it failed with (waits for the batch)."""
        if self._results is None:
            self.wait()
            packs: dict = {}  # id(flags) -> every row of that pack finite
            out = []
            for i, (o, c) in enumerate(self._raw):
                if isinstance(c, Check):
                    ok = packs.get(id(c.flags))
                    if ok is None:
                        ok = packs[id(c.flags)] = bool(c.flags.all())
                    if ok:
                        c = None
                out.append(self._checked(i, o, c))
            self._results = out
        return self._results

    def result(self) -> list:
        """The outputs, in request order; raises the first request's error if any failed."""
        out = self.results()
        for o in out:
            if isinstance(o, BaseException):
                raise o
        return out

    def _checked(self, i: int, output, check: Check | None):
        if check is None or check.ok():
            return output
        r = self._requests[i]
        kind, field = type(r).__name__, self._runtime.lane_of(r).spec.input_field
        try:
            check_finite(getattr(r, field), i, kind, field)
        except ValueError as e:
            return e
        return NonFiniteOutput(
            f"request {i} ({kind}): the encoder's output holds NaN or infinite values although "
            f"'{field}' is finite (values beyond the range of the encoder's dtype? float16 overflows "
            "where bfloat16 does not)")


class EncoderRuntime:
    """Bucketed CUDA-graph runtime over omnienc's native encoders.

    Args:
        vision: a ``VisionEncoder`` (or None: vision requests are refused).
        audio: an ``AudioEncoder`` (or None).
        grid: the bucket grid; a modality absent from it runs every request as a fallback. Default:
            the packaged ``configs/qwen3_omni.yaml``.
        device: where the encoders live (default: their device).
        config: every other knob (``RuntimeConfig``; default: its defaults).
        modalities: other modalities, each a ``(Modality, its ModalityGrid or None)`` pair.
        use_cuda_graphs, trace_path, attention, eager_attention, exact_graphs, eager_merge,
            eager_cudnn_tokens, graph_cudnn_tokens, dense_after: those fields of ``config``, where given
            (``eager_cudnn_tokens=None`` keeps the default).
    """

    def __init__(self, vision=None, audio=None, grid: BucketGrid | None = None, device=None,
                 config: RuntimeConfig | None = None, *, modalities: Sequence[tuple[Modality, object]] = (),
                 use_cuda_graphs=_UNSET, trace_path=_UNSET, attention=_UNSET, eager_attention=_UNSET,
                 exact_graphs=_UNSET, eager_merge=_UNSET, eager_cudnn_tokens=_UNSET, graph_cudnn_tokens=_UNSET,
                 dense_after=_UNSET):
        given = {k: v for k, v in (("use_cuda_graphs", use_cuda_graphs), ("trace_path", trace_path),
                                   ("attention", attention), ("eager_attention", eager_attention),
                                   ("exact_graphs", exact_graphs), ("eager_merge", eager_merge),
                                   ("eager_cudnn_tokens", eager_cudnn_tokens), ("graph_cudnn_tokens", graph_cudnn_tokens),
                                   ("dense_after", dense_after))
                 if v is not _UNSET and not (k == "eager_cudnn_tokens" and v is None)}
        config = config or RuntimeConfig()
        self.config = config = config.replace(**given) if given else config
        grid = grid or BucketGrid.default()
        self.grid = grid
        specs = [(VisionModality(vision), grid.vision)] if vision is not None else []
        specs += [(AudioModality(audio), grid.audio)] if audio is not None else []
        specs += list(modalities)
        if not specs:
            raise ValueError("EncoderRuntime needs at least one encoder (vision= or audio=)")
        facts = [m.facts for m, _ in specs]
        self.device = torch.device(device) if device is not None else facts[0].device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        for f in facts:
            if f.device != self.device:
                raise ValueError(f"encoder is on {f.device} but the runtime's device is {self.device}")
        mode = config.attention
        capturable = all(resolve_backend(f.attn_backend if mode.picks else mode.value, self.device, f.dtype,
                                         f.head_dim) not in ("sdpa", "dense") for f in facts)
        use_cuda_graphs = config.use_cuda_graphs
        if use_cuda_graphs is None:
            use_cuda_graphs = self.device.type == "cuda" and capturable
        if use_cuda_graphs and self.device.type != "cuda":
            raise ValueError("use_cuda_graphs=True needs a CUDA device")
        if use_cuda_graphs and not capturable:
            raise ValueError(
                "CUDA graphs need a capturable attention backend (bf16/fp16, head_dim a multiple of 8); "
                "these encoders resolve to 'sdpa' (or 'dense' was asked for) -- use bf16 weights or use_cuda_graphs=False"
            )
        self.use_cuda_graphs = use_cuda_graphs
        exact = use_cuda_graphs if config.exact_graphs is None else config.exact_graphs
        _check_memory(self.device, specs, use_cuda_graphs, exact)
        self._lanes = [Lane(m, g, self.device, config, use_cuda_graphs, exact) for m, g in specs]
        self._bound()
        named = {lane.modality: lane for lane in self._lanes}
        self.vision, self.audio = named.get("vision"), named.get("audio")
        self._cuda = self.device.type == "cuda"
        self._lane_of = {lane.spec.request_type: lane for lane in self._lanes}  # exact request type -> lane
        self._finite_on_host = not self._cuda
        self._lock = threading.Lock()
        self.captures = 0
        self.recorder = None
        if config.trace_path is not None:
            from .trace import TraceRecorder

            self.recorder = TraceRecorder(config.trace_path)

    @property
    def exact_graphs(self) -> bool:
        """Whether packs of a repeated exact layout replay that layout's graph (``runtime.lane``)."""
        return any(lane.exact_on for lane in self._lanes)

    @exact_graphs.setter
    def exact_graphs(self, on: bool) -> None:
        """Off: every pack runs on its bucket (graphs held are kept); on: needs a runtime built with
        ``exact_graphs`` (ValueError otherwise)."""
        with self._lock:
            for lane in self.lanes():
                if lane.buckets:
                    lane.set_exact(on)

    def _on_device(self):
        """Makes the runtime's device current (Triton launches, streams and events follow it); when
        it already is, nothing to switch (the usual case: the context's enter and exit cost host
        time)."""
        if not self._cuda or torch.cuda.current_device() == self.device.index:
            return _NO_DEVICE
        return torch.cuda.device(self.device)

    def lanes(self) -> list[Lane]:
        """One lane per modality, in order (vision, audio, then the others)."""
        return list(self._lanes)

    def lane_of(self, request) -> Lane | None:
        """The lane that runs ``request`` (by its type; None: no encoder of this runtime takes it)."""
        lane = self._lane_of.get(type(request))
        if lane is None:  # a subclass of a request type
            lane = next((ln for ln in self._lanes if isinstance(request, ln.spec.request_type)), None)
        return lane

    def route(self, requests: Sequence) -> list[tuple[Lane, list[int]]]:
        """Per lane that has some of ``requests``, the indices of those, ascending."""
        routes = []
        for lane in self._lanes:
            kind = lane.spec.request_type
            idx = [i for i, r in enumerate(requests) if isinstance(r, kind)]
            if idx:
                routes.append((lane, idx))
        return routes

    def capture(self, progress: bool = True) -> dict:
        """Captures every graph bucket's CUDA graph (CUDA) or runs each once (elsewhere).

        Returns:
            ``{"capture_s": ..., "graph_memory_bytes": ..., "graphs": ...}`` (graphs captured).
        """
        buckets = [(lane, b) for lane in self.lanes() for b, br in lane.buckets.items() if br.stats.graph]
        bar = None
        if progress and buckets:
            from tqdm import tqdm

            what = "capturing graphs" if self.use_cuda_graphs else "warming up graph buckets (no CUDA graphs)"
            bar = tqdm(total=len(buckets), desc=what, unit="bucket")

        def tick(modality, bucket, seconds):
            if bar is not None:
                bar.set_postfix_str(f"{modality} {bucket.size}x{bucket.batch} {seconds:.2f}s")
                bar.update(1)

        with self._lock, self._on_device():
            pool = None  # one graph memory pool for both lanes
            for lane in self.lanes():
                pool = lane.capture(tick, pool)
            self.captures += 1
            self._bound()
        if bar is not None:
            bar.close()
        return {
            "capture_s": sum(lane.capture_s for lane in self.lanes()),
            "graphs": sum(lane.buckets.graphs for lane in self.lanes()),
            **self.memory(),
        }

    def memory(self) -> dict:
        """What the runtime holds on its device, and the bound on what one launch takes beyond it,
        in bytes: ``graph_memory_bytes`` (the graphs' pool, as reserved at capture),
        ``static_buffers_bytes`` (inputs and plans of the graph buckets), ``max_transient_bytes``
        (the most one uncaptured call may allocate beyond those: ``RuntimeConfig.max_transient_bytes``,
        or what the largest uncaptured call needs (``Lane.needed_bytes``) or the graphs reserve,
        whichever is more; None without buckets: unbounded). An engine sizing its own caches leaves
        room for all three (weights come on top)."""
        static = sum(t.numel() * t.element_size() for lane in self._lanes
                     for t in (lane.buckets.inputs, lane.buckets.plan_buffer) if t is not None)
        return {"graph_memory_bytes": sum(lane.buckets.graph_memory_bytes for lane in self._lanes),
                "static_buffers_bytes": static, "max_transient_bytes": self._transient}

    def _bound(self) -> None:
        """Sets every lane's bound on transient memory (see ``memory``)."""
        limit = self.config.max_transient_bytes
        if limit is None:
            limit = max([lane.needed_bytes() for lane in self._lanes]
                        + [sum(lane.buckets.graph_memory_bytes for lane in self._lanes)]) or None  # no buckets: none
        self._transient = limit
        for lane in self._lanes:
            lane.set_bound(limit)

    def validate(self, requests: Sequence) -> list:
        """Checks every request's structure; returns their host-side shapes. Raises ``ValueError``
        naming the first bad request's index and field. On the CPU it also checks that inputs are
        finite; on CUDA that is done per request on the outputs, without waiting for the GPU."""
        shapes, finite, lane_of = [], self._finite_on_host, self._lane_of
        for i, r in enumerate(requests):
            lane = lane_of.get(type(r)) or self.lane_of(r)
            if lane is None:
                raise ValueError(self._refusal(i, r))
            shapes.append(lane.spec.validate(r, i, finite))
        return shapes

    def _refusal(self, index: int, request) -> str:
        """Why ``request`` has no lane: its modality's encoder is missing, or no modality takes it."""
        kind = type(request).__name__
        for m in BUILT_IN:
            if isinstance(request, m.request_type):
                return f"request {index} ({kind}): this runtime has no {m.name} encoder"
        known = [m.request_type.__name__ for m in BUILT_IN]
        known += [lane.spec.request_type.__name__ for lane in self._lanes if lane.spec.request_type.__name__ not in known]
        return f"request {index}: expected {' or '.join(known)}, got {kind}"

    def launch(self, requests: Sequence, shapes: list | None = None) -> Batch:
        """Validates (unless ``shapes`` from ``validate`` are given), packs and enqueues ``requests``;
        returns their ``Batch`` without waiting for the device.

        A bad request raises ``ValueError`` naming its index and field before any work.
        """
        requests = list(requests)
        if shapes is None:
            shapes = self.validate(requests)
        results: list = [None] * len(requests)
        event = None
        # torch.inference_mode()'s own guard: the decorator costs ~4 us of host time per call.
        with torch._C._InferenceMode(True), self._lock, self._on_device():
            last = None  # the lane that ran last
            if len(requests) == 1:  # the common case: its lane alone
                r = requests[0]
                lane = self._lane_of.get(type(r)) or self.lane_of(r)
                if lane is not None:
                    results = lane.run(requests, shapes, [0])
                    last = lane
            else:
                for lane, idx in self.route(requests):
                    out = lane.run([requests[i] for i in idx], [shapes[i] for i in idx], idx)
                    for i, o in zip(idx, out):
                        results[i] = o
                    last = lane
            if self._cuda and requests:
                # The last run's end event follows all of this call's work on the stream; a new one
                # when that run failed (its pack's requests then carry their errors).
                event = last.last_event if last is not None else None
                if event is None:
                    event = torch.cuda.Event()
                    event.record()
            if self.recorder is not None:
                for r, s in zip(requests, shapes):
                    self.lane_of(r).spec.record(self.recorder, s)
            for lane in self._lanes:  # earlier runs' GPU times into the statistics, after this call's enqueue
                lane.drain_timings()
        return Batch(requests, results, event, self)

    def encode(self, requests: Sequence) -> list:
        """Encodes requests of both modalities; returns ``VisionOutput``/``AudioOutput`` in input order.

        Every request is validated before any work; a bad one raises ``ValueError`` naming its index
        and field, and nothing runs. Waits for the device; a request whose output is not finite (or
        whose run failed) raises its error, naming it, after the others have run.
        """
        return self.launch(requests).result()

    def stats(self) -> dict:
        """Totals over both modalities, and each modality's statistics (see ``stats.ModalityStats``):
        ``replays`` (graph buckets), ``eager_runs`` (eager buckets), ``fallbacks`` (fit no bucket);
        ``exact_replays``: those of the first two that ran on their exact layout's graph."""
        with self._lock:
            per = {lane.modality: lane.stats_dict() for lane in self.lanes()}
        units = sum(s["units"] for s in per.values())
        padded = sum(s["padded_units"] for s in per.values())
        return {
            "requests": sum(s["requests"] for s in per.values()),
            "replays": sum(s["replays"] for s in per.values()),
            "eager_runs": sum(s["eager_runs"] for s in per.values()),
            "exact_replays": sum(s["exact_replays"] for s in per.values()),
            "fallbacks": sum(s["fallbacks"] for s in per.values()),
            "padded_share": padded / (units + padded) if units + padded else 0.0,  # bucket units of both
            "captures": self.captures,
            **per,
        }

    def reset_stats(self) -> None:
        with self._lock:
            for lane in self.lanes():
                lane.reset_stats()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def _check_memory(device: torch.device, specs: list, graphs: bool, exact: bool = False) -> None:
    """Refuses a grid whose static buffers (and, with graphs, an estimate of the largest graph's
    activations; with exact graphs, of any bucket's) cannot fit the device's free memory, before
    allocating anything. ``specs``: ``(modality, its grid or None)`` pairs."""
    need, parts = 0, []
    graphs = graphs or exact
    for m, g in specs:
        if g is None:
            continue
        candidates = g.buckets if exact else g.graph_buckets
        if not candidates:
            continue
        top = max(candidates)
        row, act = m.row_bytes()
        n = m.bucket_rows(top) * (row + (act if graphs else 0))
        need += n
        parts.append(f"{m.name} {top.size}x{top.batch}: {n / 2**30:.2f} GiB")
    if not need:
        return
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return
    if need > free:
        raise ValueError(
            f"the grid's largest graph buckets need about {need / 2**30:.2f} GiB of static buffers"
            f"{' and graph activations' if graphs else ''} ({', '.join(parts)}), more than the "
            f"{free / 2**30:.2f} GiB free on {device}: use smaller buckets (or graphs_up_to) in the grid"
            f"{', or exact_graphs=False' if exact else ''}")


__all__ = ["Batch", "EncoderRuntime"]
