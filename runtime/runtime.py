"""EncoderRuntime: packs requests into bucket replays of CUDA graphs, with an eager fallback.

One lane per modality. A lane owns static buffers sized for its largest bucket, one ``BucketGraph``
per bucket, and per-bucket statistics. ``encode`` validates every request first, packs each
modality's requests with ``packing.pack``, and for each replay: plans on the host (padded to the
bucket), copies inputs and plan into the static views, replays the graph (or runs the same forward
eagerly on the same views when graphs are off), and slices each request's rows out of the outputs.
Requests that fit no bucket run through the same encoder eagerly, unpadded.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import torch

from ..encoders.attention import resolve_backend
from ..encoders.audio import AudioEncoder, AudioPlan, audio_output_length, chunk_features
from ..encoders.vision import PAD_SEGMENT_TOKENS, VisionEncoder, VisionPlan
from .graphs import BucketGraph, capture
from .grid import AUDIO_CHUNK_FRAMES, Bucket, BucketGrid, ModalityGrid
from .packing import Demand, Replay, audio_demand, pack, vision_demand
from .requests import (
    AudioOutput,
    FiniteChecks,
    AudioRequest,
    VisionOutput,
    VisionRequest,
    validate_audio,
    validate_vision,
)


class _Lane:
    """Bucket graphs, static buffers and statistics of one modality (see subclasses)."""

    modality = ""

    def __init__(self, encoder, grid: ModalityGrid | None, device: torch.device, use_graphs: bool):
        self.encoder = encoder
        self.device = device
        self.use_graphs = use_graphs
        self.buckets: dict[Bucket, BucketGraph] = {}
        self._plans: OrderedDict = OrderedDict()
        self.captured = False
        self.capture_s = 0.0
        self.graph_memory_bytes = 0
        self.reset_stats()
        if grid is not None:
            if grid.graph_buckets:  # static buffers only as large as the largest graph bucket
                self._allocate(ModalityGrid(grid.modality, grid.graph_buckets))
            for b in grid.buckets:
                self.buckets[b] = self._bucket_views(b) if grid.is_graph(b) else BucketGraph(b, None, None, 0, eager=True)

    PLAN_CACHE_SIZE = 64  # host plans kept per lane (pinned on CUDA); at most ~1 MB each

    def _host_plan(self, bg: BucketGraph, key: tuple, build):
        """The host plan of a replay, from a small LRU cache keyed by bucket and request shapes:
        traffic repeats shapes (same image sizes, same clip lengths), and a cached plan is already
        pinned, so its copies to the device are asynchronous."""
        cache = self._plans
        key = (bg.bucket, key)
        plan = cache.get(key)
        if plan is not None:
            cache.move_to_end(key)
            return plan
        plan = build()
        if self.device.type == "cuda":
            plan = dataclasses.replace(plan, **{n: getattr(plan, n).pin_memory() for n in plan.TENSORS})
        cache[key] = plan
        while len(cache) > self.PLAN_CACHE_SIZE:
            cache.popitem(last=False)
        return plan

    def reset_stats(self) -> None:
        self.replays = self.fallbacks = self.requests = 0
        self.fallback_ms = 0.0
        self._pending: list[tuple[BucketGraph | None, object, object]] = []
        for bg in getattr(self, "buckets", {}).values():
            bg.stats = {"hits": 0, "units": 0, "real_units": 0, "time_ms": 0.0}

    # -- subclass hooks -------------------------------------------------------------------------
    def _allocate(self, grid: ModalityGrid) -> None: ...
    def _bucket_views(self, bucket: Bucket) -> BucketGraph: ...
    def _stage(self, bg: BucketGraph, reqs: list, shapes: list): ...
    def _run(self, inputs: torch.Tensor, plan) -> tuple[torch.Tensor, ...]: ...
    def _split(self, outputs: tuple[torch.Tensor, ...], shapes: list) -> list: ...
    def _eager(self, req, shape): ...
    def _demand(self, shape) -> Demand: ...
    def _stage_empty(self, bg: BucketGraph): ...

    # -- capture --------------------------------------------------------------------------------
    def capture(self, progress=None, pool=None):
        """Captures every bucket, largest first, into ``pool`` (a new one if None) on CUDA; warms
        each bucket up otherwise. Returns the pool, so lanes can share one (their replays never
        overlap: they run under the runtime's lock, outputs are copied out right after)."""
        t0 = time.perf_counter()
        cuda = self.device.type == "cuda"
        if cuda:
            # Graph memory = what the private pool keeps reserved: measured with the allocator's
            # cache emptied before and after (warm-up activations go back to the cache).
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            before = torch.cuda.memory_reserved(self.device)
        for bucket in sorted(self.buckets, reverse=True):
            bg = self.buckets[bucket]
            if bg.eager:
                continue
            t1 = time.perf_counter()
            plan = self._stage_empty(bg)
            if cuda and self.use_graphs:
                with torch.inference_mode():
                    bg.graph, bg.outputs = capture(lambda: self._run(bg.inputs, bg.plan), pool)
                pool = pool or bg.graph.pool()
                torch.cuda.synchronize(self.device)
            else:
                with torch.inference_mode():
                    self._run(bg.inputs, plan)
            bg.capture_s = time.perf_counter() - t1
            if progress is not None:
                progress(self.modality, bucket, bg.capture_s)
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            self.graph_memory_bytes = torch.cuda.memory_reserved(self.device) - before
        self.capture_s = time.perf_counter() - t0
        self.captured = True
        return pool

    # -- encode ---------------------------------------------------------------------------------
    def encode(self, reqs: list, shapes: list, ids: list[int]) -> list:
        """Runs validated requests (``ids``: their indices in the caller's list, for errors); returns
        one output per request, in order."""
        out: list = [None] * len(reqs)
        replays = pack([self._demand(s) for s in shapes], list(self.buckets))
        self.requests += len(reqs)
        for rep in replays:
            members = [reqs[i] for i in rep.members]
            member_shapes = [shapes[i] for i in rep.members]
            if rep.bucket is None:
                i = rep.members[0]
                results = [self._timed(None, rep, lambda: self._eager_or_split(reqs[i], shapes[i], ids[i]))]
            else:
                member_ids = [ids[i] for i in rep.members]
                results = self._timed(self.buckets[rep.bucket], rep,
                                      lambda: self._replay(rep, members, member_shapes, member_ids))
            for i, r in zip(rep.members, results):
                out[i] = r
        return out

    def _eager_or_split(self, req, shape, index: int):
        """The eager fallback. On out-of-memory, a request of several items runs item by item; a
        single item that still does not fit fails with an error naming the request."""
        try:
            return self._eager(req, shape)
        except torch.OutOfMemoryError:
            pass
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(shape) > 1:
            try:
                return self._merge([self._eager(*self._item(req, shape, j)) for j in range(len(shape))])
            except torch.OutOfMemoryError:
                pass
        raise RuntimeError(
            f"request {index} ({type(req).__name__}): out of device memory in the eager fallback "
            f"(shape {shape}); it fits no bucket and is too large to run alone -- split it or add a larger bucket"
        )

    def _eager_pack(self, reqs: list, shapes: list, ids: list[int]) -> list:
        """An eager bucket: the packed requests as one eager call, unpadded, then split. On
        out-of-memory, request by request (each through the fallback's own splitting)."""
        if len(reqs) > 1:
            try:
                merged, merged_shape = self._concat(reqs, shapes)
                return self._split(self._as_outputs(self._eager(merged, merged_shape)), shapes)
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return [self._eager_or_split(r, s, i) for r, s, i in zip(reqs, shapes, ids)]

    def _replay(self, rep: Replay, members: list, shapes: list, ids: list[int]) -> list:
        """Runs one pack on its bucket (``ids``: the members' request indices, for errors)."""
        bg = self.buckets[rep.bucket]
        if bg.eager:
            return self._eager_pack(members, shapes, ids)
        plan = self._stage(bg, members, shapes)
        if bg.graph is not None:
            bg.graph.replay()
            outputs = bg.outputs
        else:
            outputs = self._run(bg.inputs, plan)
        return self._split(outputs, shapes)

    def _timed(self, bg: BucketGraph | None, rep: Replay, fn):
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            self._pending.append((bg, start, end))
        else:
            t0 = time.perf_counter()
            result = fn()
            self._pending.append((bg, (time.perf_counter() - t0) * 1e3, None))
        if bg is None:
            self.fallbacks += 1
        else:
            self.replays += 1
            bg.stats["hits"] += 1
            bg.stats["units"] += rep.size if bg.eager else rep.bucket.size
            bg.stats["real_units"] += rep.size
        return result

    def stats(self) -> dict:
        """Counters and per-bucket figures (resolves pending CUDA timings; may synchronize)."""
        if self._pending and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        for bg, a, b in self._pending:
            ms = a.elapsed_time(b) if b is not None else a
            if bg is None:
                self.fallback_ms += ms
            else:
                bg.stats["time_ms"] += ms
        self._pending.clear()
        units = sum(bg.stats["units"] for bg in self.buckets.values())
        real = sum(bg.stats["real_units"] for bg in self.buckets.values())
        per_bucket = {}
        for b, bg in self.buckets.items():
            s = bg.stats
            per_bucket[f"{b.size}x{b.batch}"] = {
                "size": b.size,
                "batch": b.batch,
                "hits": s["hits"],
                "padded_share": 1 - s["real_units"] / s["units"] if s["units"] else 0.0,
                "replay_ms_total": s["time_ms"],
                "replay_ms_mean": s["time_ms"] / s["hits"] if s["hits"] else 0.0,
                "captured": bg.graph is not None,
                "eager": bg.eager,
                "capture_s": bg.capture_s,
            }
        return {
            "requests": self.requests,
            "replays": self.replays,
            "fallbacks": self.fallbacks,
            "fallback_ms_total": self.fallback_ms,
            "padding_ratio": 1 - real / units if units else 0.0,
            "graphs": sum(bg.graph is not None for bg in self.buckets.values()),
            "capture_s": self.capture_s,
            "graph_memory_bytes": self.graph_memory_bytes,
            "buckets": per_bucket,
        }


def _copy_plan(views, host) -> None:
    for name in host.TENSORS:
        getattr(views, name).copy_(getattr(host, name), non_blocking=True)


class _VisionLane(_Lane):
    modality = "vision"
    encoder: VisionEncoder

    @staticmethod
    def segments(bucket: Bucket) -> int:
        return bucket.batch + math.ceil(bucket.size / PAD_SEGMENT_TOKENS)

    def _allocate(self, grid: ModalityGrid) -> None:
        P, S, dev = grid.max_size, max(self.segments(b) for b in grid.buckets), self.device
        self.pixels = torch.zeros(P, self.encoder.in_features, dtype=self.encoder.dtype, device=dev)
        self.static_plan = VisionPlan(
            pos_index=torch.zeros(P, 4, dtype=torch.int64, device=dev),
            pos_weight=torch.zeros(P, 4, dtype=torch.float32, device=dev),
            rope_pos=torch.zeros(P, 2, dtype=torch.float32, device=dev),
            cu_seqlens=torch.zeros(S + 1, dtype=torch.int32, device=dev),
            seqlens=(),
            max_seqlen=0,
            num_real=0,
        )

    def _bucket_views(self, bucket: Bucket) -> BucketGraph:
        n, s, p = bucket.size, self.segments(bucket), self.static_plan
        plan = VisionPlan(p.pos_index[:n], p.pos_weight[:n], p.rope_pos[:n], p.cu_seqlens[: s + 1], (), n, 0)
        return BucketGraph(bucket, self.pixels[:n], plan, s)

    def _demand(self, shape) -> Demand:
        return vision_demand(shape)

    def _stage(self, bg: BucketGraph, reqs: list, shapes: list) -> VisionPlan:
        grids = [tuple(g) for s in shapes for g in s]
        host = self._host_plan(bg, tuple(grids), lambda: self.encoder.plan(
            grids, num_tokens=bg.bucket.size, num_segments=bg.num_segments))
        _copy_plan(bg.plan, host)
        row = 0
        for r in reqs:
            n = r.pixel_values.shape[0]
            bg.inputs[row : row + n].copy_(r.pixel_values, non_blocking=True)
            row += n
        bg.inputs[row:].zero_()
        return VisionPlan(bg.plan.pos_index, bg.plan.pos_weight, bg.plan.rope_pos, bg.plan.cu_seqlens,
                          host.seqlens, bg.plan.max_seqlen, host.num_real)

    def _stage_empty(self, bg: BucketGraph) -> VisionPlan:
        return self._stage(bg, [], [])

    def _run(self, inputs, plan) -> tuple[torch.Tensor, ...]:
        embeds, deepstack = self.encoder.run(inputs, plan)
        return (embeds, *deepstack)

    def _split(self, outputs, shapes) -> list[VisionOutput]:
        result, row = [], 0
        for shape in shapes:
            n = sum(t * h * w for t, h, w in shape) // 4
            embeds, *deepstack = (o[row : row + n].clone() for o in outputs)
            result.append(VisionOutput(embeds, deepstack))
            row += n
        return result

    @staticmethod
    def _item(req: VisionRequest, shape, j: int):
        start = sum(t * h * w for t, h, w in shape[:j])
        t, h, w = shape[j]
        return VisionRequest(req.pixel_values[start : start + t * h * w], req.grid_thw[j : j + 1]), [shape[j]]

    @staticmethod
    def _merge(outs: list[VisionOutput]) -> VisionOutput:
        return VisionOutput(torch.cat([o.embeds for o in outs]),
                            [torch.cat(parts) for parts in zip(*(o.deepstack for o in outs))])

    def _concat(self, reqs: list[VisionRequest], shapes: list):
        shape = [g for s in shapes for g in s]
        pixels = torch.cat([r.pixel_values.to(self.device, non_blocking=True) for r in reqs])
        return VisionRequest(pixels, torch.tensor(shape)), shape

    @staticmethod
    def _as_outputs(out: VisionOutput) -> tuple[torch.Tensor, ...]:
        return (out.embeds, *out.deepstack)

    def _eager(self, req: VisionRequest, shape) -> VisionOutput:
        embeds, deepstack = self.encoder(req.pixel_values.to(self.device, non_blocking=True), shape)
        return VisionOutput(embeds, list(deepstack))


class _AudioLane(_Lane):
    modality = "audio"
    encoder: AudioEncoder

    def window(self) -> int:
        enc = self.encoder
        return enc.tokens_per_chunk * max(enc.n_window_infer // enc.chunk_frames, 1)

    def segments(self, bucket: Bucket) -> int:
        tokens = bucket.size // AUDIO_CHUNK_FRAMES * self.encoder.tokens_per_chunk
        return bucket.batch + 2 * math.ceil(tokens / self.window()) + 1

    def _allocate(self, grid: ModalityGrid) -> None:
        enc, dev = self.encoder, self.device
        if enc.chunk_frames != AUDIO_CHUNK_FRAMES:
            raise ValueError(f"the bucket grid assumes {AUDIO_CHUNK_FRAMES}-frame chunks; this encoder uses {enc.chunk_frames}")
        C, S = grid.max_size // AUDIO_CHUNK_FRAMES, max(self.segments(b) for b in grid.buckets)
        self.chunks = torch.zeros(C, enc.config.num_mel_bins, enc.chunk_frames, dtype=enc.dtype, device=dev)
        self.static_plan = AudioPlan(
            conv_valid=torch.zeros(C, 3, dtype=torch.int64, device=dev),
            token_index=torch.zeros(C * enc.tokens_per_chunk, dtype=torch.int64, device=dev),
            cu_seqlens=torch.zeros(S + 1, dtype=torch.int32, device=dev),
            seqlens=(),
            max_seqlen=0,
            num_real=0,
        )

    def _bucket_views(self, bucket: Bucket) -> BucketGraph:
        C = bucket.size // AUDIO_CHUNK_FRAMES
        s, p = self.segments(bucket), self.static_plan
        L = C * self.encoder.tokens_per_chunk
        plan = AudioPlan(p.conv_valid[:C], p.token_index[:L], p.cu_seqlens[: s + 1], (), self.window(), 0)
        return BucketGraph(bucket, self.chunks[:C], plan, s)

    def _demand(self, shape) -> Demand:
        return audio_demand(shape)

    def _stage(self, bg: BucketGraph, reqs: list, shapes: list) -> AudioPlan:
        lens = [T for s in shapes for T in s]
        C = bg.bucket.size // AUDIO_CHUNK_FRAMES
        host = self._host_plan(bg, tuple(lens), lambda: self.encoder.plan(
            lens, num_chunks=C, num_segments=bg.num_segments))
        _copy_plan(bg.plan, host)
        c = 0
        for r, shape in zip(reqs, shapes):
            chunks = chunk_features(r.input_features, shape, self.encoder.n_window)
            bg.inputs[c : c + chunks.shape[0]].copy_(chunks, non_blocking=True)
            c += chunks.shape[0]
        bg.inputs[c:].zero_()
        return AudioPlan(bg.plan.conv_valid, bg.plan.token_index, bg.plan.cu_seqlens, host.seqlens,
                         self.window(), host.num_real)

    def _stage_empty(self, bg: BucketGraph) -> AudioPlan:
        return self._stage(bg, [], [])

    def _run(self, inputs, plan) -> tuple[torch.Tensor, ...]:
        return (self.encoder.run(inputs, plan),)

    def _split(self, outputs, shapes) -> list[AudioOutput]:
        result, row = [], 0
        for shape in shapes:
            n = sum(audio_output_length(T, self.encoder.n_window) for T in shape)
            result.append(AudioOutput(outputs[0][row : row + n].clone()))
            row += n
        return result

    @staticmethod
    def _item(req: AudioRequest, shape, j: int):
        start = sum(shape[:j])
        return AudioRequest(req.input_features[:, start : start + shape[j]], req.feature_lens[j : j + 1]), [shape[j]]

    @staticmethod
    def _merge(outs: list[AudioOutput]) -> AudioOutput:
        return AudioOutput(torch.cat([o.embeds for o in outs]))

    def _concat(self, reqs: list[AudioRequest], shapes: list):
        shape = [T for s in shapes for T in s]
        feats = torch.cat([r.input_features.to(self.device, non_blocking=True) for r in reqs], dim=1)
        return AudioRequest(feats, torch.tensor(shape)), shape

    @staticmethod
    def _as_outputs(out: AudioOutput) -> tuple[torch.Tensor, ...]:
        return (out.embeds,)

    def _eager(self, req: AudioRequest, shape) -> AudioOutput:
        return AudioOutput(self.encoder(req.input_features.to(self.device, non_blocking=True), shape))


class EncoderRuntime:
    """Bucketed CUDA-graph runtime over omnienc's native encoders.

    Args:
        vision: a ``VisionEncoder`` (or None: vision requests are refused).
        audio: an ``AudioEncoder`` (or None).
        grid: the bucket grid; a modality absent from it runs eagerly only. Default: the packaged
            ``configs/qwen3_omni.yaml``.
        device: where the encoders live (default: their device).
        use_cuda_graphs: None -> graphs on CUDA, eager elsewhere.
        trace_path: if given, every request's shape is appended to this JSONL trace.
    """

    def __init__(self, vision=None, audio=None, grid: BucketGrid | None = None, device=None,
                 use_cuda_graphs: bool | None = None, trace_path=None):
        if vision is None and audio is None:
            raise ValueError("EncoderRuntime needs at least one encoder (vision= or audio=)")
        grid = grid or BucketGrid.default()
        self.grid = grid
        self.device = torch.device(device) if device is not None else (vision or audio).device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        encoders = [e for e in (vision, audio) if e is not None]
        for enc in encoders:
            if enc.device != self.device:
                raise ValueError(f"encoder is on {enc.device} but the runtime's device is {self.device}")
        capturable = all(
            resolve_backend(e.attn_backend, self.device, e.dtype, e.head_dim) == "varlen" for e in encoders
        )
        if use_cuda_graphs is None:
            use_cuda_graphs = self.device.type == "cuda" and capturable
        if use_cuda_graphs and self.device.type != "cuda":
            raise ValueError("use_cuda_graphs=True needs a CUDA device")
        if use_cuda_graphs and not capturable:
            raise ValueError(
                "CUDA graphs need the 'varlen' attention backend (bf16/fp16, head_dim a multiple of 8); "
                "these encoders resolve to 'sdpa' -- use bf16 weights or use_cuda_graphs=False"
            )
        self.use_cuda_graphs = use_cuda_graphs
        self.vision = _VisionLane(vision, grid.vision, self.device, use_cuda_graphs) if vision is not None else None
        self.audio = _AudioLane(audio, grid.audio, self.device, use_cuda_graphs) if audio is not None else None
        self._lock = threading.Lock()
        self.captures = 0
        self.recorder = None
        if trace_path is not None:
            from .trace import TraceRecorder

            self.recorder = TraceRecorder(trace_path)

    def lanes(self):
        return [lane for lane in (self.vision, self.audio) if lane is not None]

    def capture(self, progress: bool = True) -> dict:
        """Captures every bucket's graph (CUDA) or warms each bucket up eagerly (elsewhere).

        Returns:
            ``{"capture_s": ..., "graph_memory_bytes": ..., "graphs": ...}``.
        """
        buckets = [(lane, b) for lane in self.lanes() for b, bg in lane.buckets.items() if not bg.eager]
        bar = None
        if progress and buckets:
            from tqdm import tqdm

            bar = tqdm(total=len(buckets), desc="capturing buckets", unit="graph")
        def tick(modality, bucket, seconds):
            if bar is not None:
                bar.set_postfix_str(f"{modality} {bucket.size}x{bucket.batch} {seconds:.2f}s")
                bar.update(1)
        with self._lock:
            pool = None  # one graph memory pool for both lanes
            for lane in self.lanes():
                pool = lane.capture(tick, pool)
                self.captures += 1
        if bar is not None:
            bar.close()
        return {
            "capture_s": sum(lane.capture_s for lane in self.lanes()),
            "graph_memory_bytes": sum(lane.graph_memory_bytes for lane in self.lanes()),
            "graphs": sum(bg.graph is not None for lane in self.lanes() for bg in lane.buckets.values()),
        }

    def validate(self, requests: Sequence) -> list:
        """Checks every request; returns their host-side shapes. Raises ``ValueError`` naming the
        first bad request's index and field."""
        shapes, checks = [], FiniteChecks()
        for i, r in enumerate(requests):
            if isinstance(r, VisionRequest):
                if self.vision is None:
                    raise ValueError(f"request {i} (VisionRequest): this runtime has no vision encoder")
                enc = self.vision.encoder
                shapes.append(validate_vision(r, i, enc.in_features, enc.merge, checks))
            elif isinstance(r, AudioRequest):
                if self.audio is None:
                    raise ValueError(f"request {i} (AudioRequest): this runtime has no audio encoder")
                shapes.append(validate_audio(r, i, self.audio.encoder.config.num_mel_bins, checks))
            else:
                raise ValueError(f"request {i}: expected VisionRequest or AudioRequest, got {type(r).__name__}")
        checks.resolve()
        return shapes

    @torch.inference_mode()
    def encode(self, requests: Sequence) -> list:
        """Encodes requests of both modalities; returns ``VisionOutput``/``AudioOutput`` in input order.

        Every request is validated before any work; a bad one raises ``ValueError`` naming its index
        and field, and nothing runs. Outputs live on the runtime's device.
        """
        requests = list(requests)
        shapes = self.validate(requests)
        if not requests:
            return []
        out: list = [None] * len(requests)
        with self._lock:
            for lane, kind in ((self.vision, VisionRequest), (self.audio, AudioRequest)):
                idx = [i for i, r in enumerate(requests) if isinstance(r, kind)]
                if not idx:
                    continue
                for i, o in zip(idx, lane.encode([requests[i] for i in idx], [shapes[i] for i in idx], idx)):
                    out[i] = o
            if self.recorder is not None:
                for r, s in zip(requests, shapes):
                    if isinstance(r, VisionRequest):
                        self.recorder.record_vision(s)
                    else:
                        self.recorder.record_audio(s)
        return out

    def stats(self) -> dict:
        """``replays``, ``fallbacks``, ``padding_ratio`` (all modalities) and per-modality details."""
        with self._lock:
            per = {lane.modality: lane.stats() for lane in self.lanes()}
        real = total = 0  # bucket units (patches or frames) over all replays of both modalities
        for lane in self.lanes():
            for bg in lane.buckets.values():
                real += bg.stats["real_units"]
                total += bg.stats["units"]
        return {
            "replays": sum(s["replays"] for s in per.values()),
            "fallbacks": sum(s["fallbacks"] for s in per.values()),
            "requests": sum(s["requests"] for s in per.values()),
            "padding_ratio": 1 - real / total if total else 0.0,
            "captures": self.captures,
            **per,
        }

    def reset_stats(self) -> None:
        with self._lock:
            for lane in self.lanes():
                lane.stats()
                lane.reset_stats()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
