"""EncoderRuntime: packs many users' requests into bucket replays of CUDA graphs.

``launch(requests)`` validates every request (host metadata only), packs each modality's requests
into its buckets (``packing.pack``), enqueues the runs on the device and returns a ``Batch`` at once;
``Batch.result()`` waits for that work and checks each request's outputs. ``encode`` is both.
The runs themselves live in ``lane.Lane`` (one per modality, generic over ``modality.*Modality``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence

import torch

from ..encoders.attention import BACKENDS, resolve_backend
from .grid import BucketGrid
from .lane import Check, Lane
from .modality import AudioModality, VisionModality
from .packing import EAGER_MERGE
from .requests import (
    AudioRequest, NonFiniteOutput, VisionRequest, check_finite, validate_audio, validate_vision,
)


_NO_DEVICE = contextlib.nullcontext()  # reusable: what ``_on_device`` enters off CUDA


class Batch:
    """The work one ``launch`` enqueued.

    ``outputs`` are the requests' outputs on the runtime's device (``VisionOutput``/``AudioOutput``,
    or None where the request failed while enqueuing), ready in the device's stream order: a consumer
    on the same stream may use them at once. ``results()``/``result()`` wait for the work and check
    every request's outputs for NaN/inf; a request that fails does not affect the others.
    """

    def __init__(self, requests: list, results: list, event: torch.cuda.Event | None):
        self._requests = requests
        self._raw = results  # per request: (output, Check) or (exception, None)
        self._event = event
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
                if c is not None:
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
        kind, field = type(r).__name__, ("pixel_values" if isinstance(r, VisionRequest) else "input_features")
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
        use_cuda_graphs: None -> graphs on CUDA when attention is capturable, eager elsewhere.
        trace_path: if given, every request's shape is appended to this JSONL trace.
        attention: ``"auto"`` (each encoder's own ``attn_backend``: FlashAttention varlen on CUDA),
            ``"fastest"`` (each graph bucket captures every capturable backend -- cuDNN too, with the
            ``cudnn`` extra -- times them on a typical fill and keeps the fastest; eager runs keep the
            encoder's backend), or one backend name for every run.
        eager_attention: the backend of uncaptured runs (eager buckets, fallbacks): ``"auto"``
            takes cuDNN's varlen attention for vision calls of at least ``eager_cudnn_tokens`` where the
            ``cudnn`` extra is installed, else ``dense`` -- torch's cuDNN attention over runs of
            equal-length segments, e.g. one large image or a video's frames -- where the layout suits
            it, else ``attention``'s backend; or one backend name.
        eager_cudnn_tokens: the fewest tokens of an uncaptured vision call that takes cuDNN's varlen
            attention under ``eager_attention="auto"`` (None: ``VisionModality.eager_cudnn_tokens``,
            8,192; 0: never).
        exact_graphs: capture a CUDA graph of a pack's exact layout when it comes back (its
            ``Lane.EXACT_AT``-th sighting) and replay it, unpadded, from then on (``runtime.lane``);
            None: on with CUDA graphs. Such a capture runs while serving and, as every torch
            capture, marks the device's default CUDA generator capturing: another thread's random
            op on that generator meanwhile fails (README, "Known hazard"); threads that sample
            concurrently should use their own ``torch.Generator``, or pass False.
        eager_merge: a launch's packs on eager buckets run as one eager call of at most this many
            times the grid's largest bucket size (``packing.eager_groups``); 0: each alone. Out of
            memory in a merged call, its packs run one by one.
    """

    def __init__(self, vision=None, audio=None, grid: BucketGrid | None = None, device=None,
                 use_cuda_graphs: bool | None = None, trace_path=None, attention: str = "auto",
                 eager_attention: str = "auto", exact_graphs: bool | None = None, eager_merge: int = EAGER_MERGE,
                 eager_cudnn_tokens: int | None = None):
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
        if attention not in ("auto", "fastest", *BACKENDS):
            raise ValueError(f"attention={attention!r}: use 'auto', 'fastest' or one of {BACKENDS}")
        if eager_attention not in BACKENDS:
            raise ValueError(f"eager_attention={eager_attention!r}: use one of {BACKENDS}")
        if isinstance(eager_merge, bool) or not isinstance(eager_merge, int) or eager_merge < 0:
            raise ValueError(f"eager_merge={eager_merge!r}: use an integer >= 0 (0: each eager pack alone)")
        if eager_cudnn_tokens is not None and (isinstance(eager_cudnn_tokens, bool) or not isinstance(eager_cudnn_tokens, int)
                                               or eager_cudnn_tokens < 0):
            raise ValueError(f"eager_cudnn_tokens={eager_cudnn_tokens!r}: use None (the default) or an integer >= 0 (0: never)")
        names = [e.attn_backend if attention in ("auto", "fastest") else attention for e in encoders]
        capturable = all(resolve_backend(n, self.device, e.dtype, e.head_dim) not in ("sdpa", "dense")
                         for n, e in zip(names, encoders))
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
        exact = use_cuda_graphs if exact_graphs is None else bool(exact_graphs)
        _check_memory(self.device, grid, vision, audio, use_cuda_graphs, exact)
        self.vision = (Lane(VisionModality(vision), grid.vision, self.device, use_cuda_graphs, attention,
                            eager_attention, exact, eager_merge)
                       if vision is not None else None)
        if self.vision is not None and eager_cudnn_tokens is not None:
            self.vision.eager_cudnn_tokens = eager_cudnn_tokens
        self.audio = (Lane(AudioModality(audio), grid.audio, self.device, use_cuda_graphs, attention,
                           eager_attention, exact, eager_merge)
                      if audio is not None else None)
        self._cuda = self.device.type == "cuda"
        self._lane_of = {lane.spec.request_type: lane for lane in self.lanes()}  # exact request type -> lane
        self._vision_dims = (vision.in_features, vision.merge) if vision is not None else None
        self._mel_bins = audio.config.num_mel_bins if audio is not None else None
        self._lock = threading.Lock()
        self.captures = 0
        self.recorder = None
        if trace_path is not None:
            from .trace import TraceRecorder

            self.recorder = TraceRecorder(trace_path)

    @property
    def exact_graphs(self) -> bool:
        """Whether packs of a repeated exact layout replay that layout's graph (``runtime.lane``)."""
        return any(lane.exact for lane in self.lanes())

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
        it already is, nothing to switch (the usual case: the context's enter and exit cost ~4 us of
        host time on an H200 host)."""
        if not self._cuda or torch.cuda.current_device() == self.device.index:
            return _NO_DEVICE
        return torch.cuda.device(self.device)

    def lanes(self) -> list[Lane]:
        return [lane for lane in (self.vision, self.audio) if lane is not None]

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
        if bar is not None:
            bar.close()
        return {
            "capture_s": sum(lane.capture_s for lane in self.lanes()),
            "graph_memory_bytes": sum(lane.graph_memory_bytes for lane in self.lanes()),
            "graphs": sum(br.graph is not None for lane in self.lanes() for br in lane.buckets.values()),
        }

    def validate(self, requests: Sequence) -> list:
        """Checks every request's structure; returns their host-side shapes. Raises ``ValueError``
        naming the first bad request's index and field. On the CPU it also checks that inputs are
        finite; on CUDA that is done per request on the outputs, without waiting for the GPU."""
        shapes, finite = [], self.device.type != "cuda"
        for i, r in enumerate(requests):
            if isinstance(r, VisionRequest):
                if self.vision is None:
                    raise ValueError(f"request {i} (VisionRequest): this runtime has no vision encoder")
                in_features, merge = self._vision_dims
                shapes.append(validate_vision(r, i, in_features, merge, finite))
            elif isinstance(r, AudioRequest):
                if self.audio is None:
                    raise ValueError(f"request {i} (AudioRequest): this runtime has no audio encoder")
                shapes.append(validate_audio(r, i, self._mel_bins, finite))
            else:
                raise ValueError(f"request {i}: expected VisionRequest or AudioRequest, got {type(r).__name__}")
        return shapes

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
                lane = self._lane_of.get(type(r)) or next(
                    (ln for ln in self.lanes() if isinstance(r, ln.spec.request_type)), None)  # a subclass
                if lane is not None:
                    results = lane.run(requests, shapes, [0])
                    last = lane
            else:
                for lane in self.lanes():
                    kind = lane.spec.request_type
                    idx = [i for i, r in enumerate(requests) if isinstance(r, kind)]
                    if idx:
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
                    (self.recorder.record_vision if isinstance(r, VisionRequest) else self.recorder.record_audio)(s)
            for lane in self.lanes():  # earlier runs' GPU times into the statistics, after this call's enqueue
                lane.drain_timings()
        return Batch(requests, results, event)

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


def _check_memory(device: torch.device, grid: BucketGrid, vision, audio, graphs: bool, exact: bool = False) -> None:
    """Refuses a grid whose static buffers (and, with graphs, an estimate of the largest graph's
    activations; with exact graphs, of any bucket's) cannot fit the device's free memory, before
    allocating anything."""
    need, parts = 0, []
    graphs = graphs or exact
    for name, enc, g in (("vision", vision, grid.vision), ("audio", audio, grid.audio)):
        if enc is None or g is None:
            continue
        candidates = g.buckets if exact else g.graph_buckets
        if not candidates:
            continue
        top = max(candidates)
        row, act = _row_bytes(name, enc)
        rows = top.size if name == "vision" else top.size // 100
        n = rows * (row + (act if graphs else 0))
        need += n
        parts.append(f"{name} {top.size}x{top.batch}: {n / 2**30:.2f} GiB")
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


def _row_bytes(modality: str, enc) -> tuple[int, int]:
    """(static input bytes, estimated peak activation bytes) per input row (patch or audio chunk)."""
    size = enc.dtype.itemsize if hasattr(enc.dtype, "itemsize") else 2
    c = enc.config
    if modality == "vision":
        values = 3 * c.hidden_size + 2 * c.intermediate_size + c.out_hidden_size * (len(enc.deepstack_visual_indexes) + 1)
        return enc.in_features * size, values * size + 56
    tokens = enc.tokens_per_chunk
    conv = 2 * c.downsample_hidden_size * (c.num_mel_bins // 2) * (enc.chunk_frames // 2)
    values = conv + tokens * (3 * c.d_model + 2 * c.encoder_ffn_dim + c.output_dim)
    return c.num_mel_bins * enc.chunk_frames * size, values * size + 24 * tokens


__all__ = ["Batch", "EncoderRuntime"]
