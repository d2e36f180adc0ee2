"""Calibration: measures what each kind of run costs on the encoders, into a ``CostModel``.

``calibrate`` captures a *probe grid* (every replay probe bucket as a graph) with ``EncoderRuntime``,
then times, each run through the runtime's own path:

* the replay of every probe bucket, filled with ``batch`` equal segments (vision: ``batch`` frames
  of about ``size / batch`` patches; audio: ``batch`` clips of ``size / batch`` frames), through the
  lane's pack path (staging, replay, output split: what the runtime times per replay);
* eager runs over a spread of sizes and item counts through the lane's uncaptured path
  (``eager.EagerRunner``: its input fill, plan, attention choice -- cuDNN varlen for big vision
  calls where installed, never ``dense`` -- and row flags);
* the *host floor*: the smallest request's uncaptured call;
* exact-layout *captures* of small layouts (a layout's second sighting: its eager run and the capture
  of that work), through the lane's pack path with exact graphs on;
* where big uncaptured vision calls take cuDNN's varlen attention, the *build* of a new cuDNN graph:
  the first call of a layout whose graph no probe built, less its next calls;
* the *layout* of a new frame shape: a replay of ``LAYOUT_FRAMES`` frames of distinct shapes with the
  encoder's frame layouts forgotten, less the same replay with them cached, per shape.

Each point: ``warmup`` untimed runs, then ``repeats`` timed ones, each started on an idle GPU and
bracketed by CUDA events (``perf_counter`` on the CPU); the model uses the median, the file keeps
every sample. ``quick`` (start-up: ``omnienc capture --calibrate --quick``, M*'s ``calibrate``)
measures fewer points (``PROBES["quick"]``: vision replays and eager runs at 6 sizes x 3 batches,
audio replays and eager runs at 3 x 2) with fewer repeats (3 replays, 2 eager runs and 3 captures
per point, one warm-up); the full one (``PROBES["real"]``) 6 x 3 and 5 x 2 points, 7 replays, 4 eager runs, 5
captures, two warm-ups. Timings of both are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import datetime
import functools
import gc
import math
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from ..cuda import elapsed_ms
from ..encoders.vision import forget_frame_layouts
from .costs import KINDS, MODALITIES, CostModel, Probe
from .grid import AUDIO_CHUNK_FRAMES, Bucket, BucketGrid, ModalityGrid
from .packing import audio_demand, vision_demand
from .requests import AudioRequest, VisionRequest

# (modality, kind) -> (sizes, batches): where to measure. Sizes in patches / mel frames; batches are
# segments carried (replay) or items (eager). Every size must hold every batch's segments.
ProbeSet = Mapping[tuple[str, str], tuple[Sequence[int], Sequence[int]]]
PROBES: dict[str, ProbeSet] = {
    # The real encoders: vision up to one 128x128-patch frame, audio up to 128 s; 31 graphs. Vision
    # has a point each side of 8192 patches, where big calls (graph or not) change to cuDNN varlen
    # by default (``graph_cudnn_tokens``, ``eager_cudnn_tokens``): prices between two points
    # are interpolated, and across the change they would mix two kernels.
    "real": {
        ("vision", "replay"): ((256, 784, 1600, 3136, 6400, 8192, 16384), (1, 4, 16)),
        ("vision", "eager"): ((256, 784, 1600, 3136, 6400, 8192, 16384), (1, 4, 16)),
        ("audio", "replay"): ((400, 1200, 3200, 6400, 12800), (1, 4)),
        ("audio", "eager"): ((400, 1200, 3200, 6400, 12800), (1, 4)),
    },
    # Start-up: the same range, fewer points (24 graphs); eager vision keeps a point each side of
    # the default graphs_up_to (3000), where most of a trace's eager work is, and of 8192. Vision
    # replays keep 3136, inside the span of a trace's mid-sized buckets: priced without it, a
    # tuned grid's replays missed by more; an audio point at 1200 changed nothing measurable
    # (docs/BENCHMARKS.md).
    "quick": {
        ("vision", "replay"): ((256, 1600, 3136, 6400, 8192, 16384), (1, 4, 16)),
        ("vision", "eager"): ((256, 1600, 3136, 6400, 8192, 16384), (1, 4, 16)),
        ("audio", "replay"): ((400, 3200, 12800), (1, 4)),
        ("audio", "eager"): ((400, 3200, 12800), (1, 4)),
    },
    # Reduced-size random encoders on the CPU (`capture --calibrate --sizes reduced`): a quick check
    # that the path works and writes a loadable file, not a model of anything worth tuning for.
    "reduced": {
        ("vision", "replay"): ((64, 256), (1, 4)),
        ("vision", "eager"): ((64, 256), (1, 4)),
        ("audio", "replay"): ((400, 800), (1, 4)),
        ("audio", "eager"): ((400, 800), (1, 4)),
    },
}
# Repeats per point of each calibration: (replays, eager runs, captures, warm-up runs).
REPEATS = {"full": (7, 4, 5, 2), "quick": (3, 2, 3, 1)}
WARM_CALLS = 8  # the most runs ``warm_ms`` adds before a point
# The device's busy time before each point on CUDA by default: so warmed, a quick calibration
# predicted a measured trace closer on both modalities than one without (docs/BENCHMARKS.md).
WARM_MS = 300.0
# The smallest request (its uncaptured call is the host floor) and small layouts whose captures give
# the capture cost: host-bound, so what they measure is host work. Vision's are images as a trace's
# (one frame of >= 128 patches, each of a size not seen before): their capture's eager run takes
# ``dense`` attention and builds its cuDNN plan, as a trace's new layouts do.
FLOOR_SHAPE = {"vision": [(1, 4, 4)], "audio": [100]}
CAPTURE_SHAPES = {
    "vision": [[(1, 12, 12)], [(1, 12, 14)], [(1, 14, 14)], [(1, 14, 16)], [(1, 16, 16)], [(1, 12, 16)], [(1, 16, 18)]],
    "audio": [[100 - k] for k in range(7)],
}
SMALL_BUCKET = {"vision": Bucket(288, 1), "audio": Bucket(100, 1)}  # holds every capture layout
# The layout point: this many frames of distinct shapes in one replay, on the vision replay probe
# bucket whose share per frame is nearest LAYOUT_PATCHES (a trace's frames average about this).
LAYOUT_FRAMES, LAYOUT_PATCHES = 4, 1600
# Big uncaptured vision calls, each of a cuDNN varlen graph (segment count, bound) no other probe
# uses, with its default rounding: (32, 1024), (16, 2048), (16, 3072), (16, 5120), (48, 1024).
BUILD_SHAPES = [[(1, 20, 20)] * 24, [(1, 30, 40)] * 12, [(1, 40, 70)] * 5, [(1, 60, 80)] * 2, [(1, 12, 20)] * 40]


def vision_items(size: int, batch: int, merge: int = 2) -> list[tuple[int, int, int]]:
    """``batch`` single frames ``(1, h, w)`` of about ``size / batch`` patches each (h, w multiples of
    ``merge``, as square as possible), together at most ``size`` patches.

    Raises:
        ValueError: ``size / batch`` is smaller than one ``merge x merge`` window.
    """
    per = size // batch
    if per < merge * merge:
        raise ValueError(f"vision probe {size}x{batch}: {per} patches per segment is less than one "
                         f"{merge}x{merge} window; use fewer segments or a larger size")
    h = merge * max(1, math.isqrt(per // (merge * merge)))
    w = merge * max(1, per // (h * merge))
    return [(1, h, w)] * batch


def audio_items(size: int, batch: int) -> list[int]:
    """``batch`` clips of ``size / batch`` frames each, whole 100-frame chunks, together at most ``size``.

    Raises:
        ValueError: ``size / batch`` is less than one chunk.
    """
    per = size // batch // AUDIO_CHUNK_FRAMES * AUDIO_CHUNK_FRAMES
    if per < AUDIO_CHUNK_FRAMES:
        raise ValueError(f"audio probe {size}x{batch}: less than {AUDIO_CHUNK_FRAMES} frames per clip; "
                         "use fewer clips or a larger size")
    return [per] * batch


def probe_grid(probes: ProbeSet, dtype: str) -> BucketGrid:
    """The grid of every replay probe bucket, all captured as graphs."""
    grids = {}
    for m in MODALITIES:
        sizes, batches = probes[m, "replay"]
        grids[m] = ModalityGrid(m, tuple(Bucket(s, b) for s in sizes for b in batches))
    return BucketGrid(dtype, grids["vision"], grids["audio"])


def run_pack(lane, bucket: Bucket, requests: list, shapes: list) -> list:
    """Runs one pack of validated ``requests`` on ``bucket`` of ``lane`` (staging, replay, split);
    returns ``(output, check)`` per request."""
    return lane.run_pack(bucket, requests, shapes, list(range(len(requests))))


def _samples(fn: Callable[[], object], timer, warmup: int, repeats: int,
             before: Callable[[], None] | None = None, warm_ms: float = 0.0) -> tuple[float, ...]:
    """``repeats`` timings of ``fn`` after ``warmup`` calls, and after more (at most ``WARM_CALLS``)
    until the warm-up has kept the device busy ``warm_ms``; ``before`` runs ahead of each, untimed."""
    busy, n = 0.0, 0
    while n < warmup or (busy < warm_ms and n < warmup + WARM_CALLS):
        if warm_ms:
            busy += timer(fn)
        else:
            fn()
        n += 1
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        samples.append(timer(fn))
    return tuple(samples)


def _request(lane, shape):
    """A request of ``shape`` with random inputs on the lane's device."""
    enc, device = lane.encoder, lane.encoder.device
    if lane.modality == "vision":
        n = sum(t * h * w for t, h, w in shape)
        return VisionRequest(torch.randn(n, enc.in_features, dtype=enc.dtype, device=device), torch.tensor(shape))
    return AudioRequest(torch.randn(enc.config.num_mel_bins, sum(shape), dtype=enc.dtype, device=device),
                        torch.tensor(shape))


def _shapes(modality: str, size: int, batch: int, merge: int) -> list:
    """``batch`` one-item request shapes of ``size`` units together (``vision_items``, ``audio_items``)."""
    if modality == "vision":
        return [[it] for it in vision_items(size, batch, merge)]
    return [[T] for T in audio_items(size, batch)]


def _replay_points(rt, probes: ProbeSet, merge: int, timer, warmup: int, repeats: int,
                   say: Callable[[str], None], warm_ms: float = 0.0) -> dict[tuple[str, str], list[Probe]]:
    """Times every replay probe bucket of ``rt`` (captured on the probe grid), filled with ``batch``
    equal segments, one request each (as many users' requests packed together). Each sample starts
    on an idle device with its host plan built anew: traffic of varied requests brings a new layout
    to nearly every pack, and the device waits for that host work (a cached plan would price
    replays below what a trace measures)."""
    points: dict[tuple[str, str], list[Probe]] = {}
    for lane in rt.lanes():
        m = lane.modality
        sizes, batches = probes[m, "replay"]
        points[m, "replay"] = []
        for s in sizes:
            for b in batches:
                shapes = _shapes(m, s, b, merge)
                reqs = [_request(lane, sh) for sh in shapes]
                bucket = Bucket(s, b)
                p = Probe(s, b, _samples(lambda: run_pack(lane, bucket, reqs, shapes), timer, warmup, repeats,
                                         before=lane.buckets.drop_plans, warm_ms=warm_ms))
                points[m, "replay"].append(p)
                say(f"{m:6s} replay {s:>6d}x{b:<3d} {p.ms:8.2f} ms")
        if m == "vision":
            p = _layout_point(lane, [Bucket(s, b) for s in sizes for b in batches], merge, timer, repeats)
            points[m, "layout"] = [p]
            say(f"{m:6s} layout {p.size:>6d}x{p.batch:<3d} {p.ms:8.2f} ms per new frame shape")
    return points


def layout_shapes(buckets: Sequence[Bucket], merge: int) -> tuple[Bucket, list]:
    """The layout point's bucket and its ``LAYOUT_FRAMES`` one-frame request shapes, each distinct:
    sides ``a`` x ``a``, ``a`` x ``a - merge``, ... within the bucket's share per frame."""
    fits = [b for b in buckets if b.batch >= LAYOUT_FRAMES and b.size // LAYOUT_FRAMES >= merge * LAYOUT_FRAMES]
    if not fits:
        raise ValueError(f"no vision replay probe holds {LAYOUT_FRAMES} frames for the layout point")
    bucket = min(fits, key=lambda b: (abs(b.size // LAYOUT_FRAMES - LAYOUT_PATCHES), b.size, b.batch))
    a = merge * (math.isqrt(bucket.size // LAYOUT_FRAMES) // merge)
    return bucket, [[(1, a, a - merge * i)] for i in range(LAYOUT_FRAMES)]


def _layout_point(lane, buckets: Sequence[Bucket], merge: int, timer, repeats: int) -> Probe:
    """Per new frame shape: a replay whose frames' layouts were forgotten, less the same replay next
    (layouts cached), each with its host plan built anew."""
    bucket, shapes = layout_shapes(buckets, merge)
    reqs = [_request(lane, sh) for sh in shapes]

    def run():
        lane.buckets.drop_plans()
        return run_pack(lane, bucket, reqs, shapes)

    run()  # the bucket's first replay of these requests, untimed
    samples = []
    for _ in range(repeats):
        forget_frame_layouts()
        fresh = timer(run)
        samples.append(max(0.0, (fresh - timer(run)) / LAYOUT_FRAMES))
    return Probe(units("vision", [s for sh in shapes for s in sh]) // LAYOUT_FRAMES, LAYOUT_FRAMES, tuple(samples))


def _uncaptured_points(rt, probes: ProbeSet, merge: int, timer, warmup: int, repeats: int, eager_repeats: int,
                       captures: int, say: Callable[[str], None],
                       warm_ms: float = 0.0) -> dict[tuple[str, str], list[Probe]]:
    """The host floor, eager runs and exact-layout captures, through ``rt``'s lanes (exact graphs on,
    a small graph bucket per modality)."""
    points: dict[tuple[str, str], list[Probe]] = {}
    for lane in rt.lanes():
        m = lane.modality
        floor = [_request(lane, FLOOR_SHAPE[m])]
        p = Probe(units(m, FLOOR_SHAPE[m]), 1, _samples(lambda: lane.eager.run(floor, [FLOOR_SHAPE[m]]), timer,
                                                         warmup + 2, repeats))  # the first eager calls warm up
        points[m, "floor"] = [p]
        say(f"{m:6s} floor  {p.size:>6d}x1   {p.ms:8.2f} ms")
        sizes, batches = probes[m, "eager"]
        points[m, "eager"] = []
        for s in sizes:
            for b in batches:
                shapes = _shapes(m, s, b, merge)
                reqs = [_request(lane, sh) for sh in shapes]
                p = Probe(s, b, _samples(lambda: lane.eager.run(reqs, shapes), timer, min(warmup, 1), eager_repeats,
                                         warm_ms=warm_ms))
                points[m, "eager"].append(p)
                say(f"{m:6s} eager  {s:>6d}x{b:<3d} {p.ms:8.2f} ms")
        by_size: dict[int, list[float]] = {}
        for shape in CAPTURE_SHAPES[m][:captures]:  # each layout new: its second sighting captures
            req = [_request(lane, shape)]
            run_pack(lane, SMALL_BUCKET[m], req, [shape])  # first sighting: a replay of the bucket
            by_size.setdefault(units(m, shape), []).append(timer(lambda: run_pack(lane, SMALL_BUCKET[m], req, [shape])))
        points[m, "capture"] = [Probe(size, 1, tuple(ms)) for size, ms in sorted(by_size.items())]
        kinds = lane.stats.kinds()
        say(f"{m:6s} capture {sum(len(v) for v in by_size.values())} layouts, median "
            f"{statistics.median(x for v in by_size.values() for x in v):.2f} ms "
            f"({kinds['exact_capture'].runs} exact captures counted)")
        if m == "vision" and lane.attention.cudnn_suits((rt.config.eager_cudnn_tokens,)):
            points[m, "build"] = []
            for shape in BUILD_SHAPES[:captures]:
                req = [_request(lane, shape)]
                first = timer(lambda: lane.eager.run(req, [shape]))
                then = statistics.median(timer(lambda: lane.eager.run(req, [shape])) for _ in range(2))
                points[m, "build"].append(Probe(units(m, shape), len(shape), (max(0.0, first - then),)))
            say(f"{m:6s} build  {len(points[m, 'build'])} new cuDNN graphs, median "
                f"{statistics.median(p.ms for p in points[m, 'build']):.2f} ms")
    return points


def units(modality: str, shape) -> int:
    """The units (patches, chunk-padded mel frames) of a request shape."""
    return (vision_demand(shape) if modality == "vision" else audio_demand(shape)).size


def _card(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@torch.inference_mode()
def calibrate(
    vision, audio, probes: ProbeSet | None = None, repeats: int | None = None, warmup: int | None = None,
    eager_repeats: int | None = None, command: str = "", progress: Callable[[str], None] | None = None,
    *, quick: bool = False, captures: int | None = None, warm_ms: float | None = None,
) -> CostModel:
    """Measures a cost model on ``vision`` and ``audio`` encoders (same device and dtype).

    Args:
        vision, audio: The encoders (``VisionEncoder``, ``AudioEncoder``).
        probes: Where to measure (default ``PROBES["quick"]`` if ``quick`` else ``PROBES["real"]``).
        repeats: Timed replays per replay probe, and floor samples (median used).
        warmup: Untimed runs before each point (each timed replay then builds its host plan anew).
        eager_repeats: Timed runs per eager probe (eager runs of large sizes are slow).
        command: The command line, recorded in the file.
        progress: Called with one line per measured point.
        quick: The start-up calibration: fewer points and repeats (``REPEATS``); the file says so.
        captures: Exact-layout captures timed per modality (distinct small layouts, at most
            ``len(CAPTURE_SHAPES[m])``).
        warm_ms: Before each replay and eager point, keep the device busy with it at least this
            long (at most ``WARM_CALLS`` more runs), so each point is timed as a trace's sustained
            load runs it. None: ``WARM_MS`` on CUDA, none elsewhere (the CPU's wall clock gains
            nothing by it).

    Returns:
        The model; ``meta`` records the card (``torch.cuda.get_device_name``), torch version, date,
        command, dtype and whether quick.
    """
    from .config import RuntimeConfig
    from .runtime import EncoderRuntime

    d_repeats, d_eager, d_captures, d_warmup = REPEATS["quick" if quick else "full"]
    probes = PROBES["quick" if quick else "real"] if probes is None else probes
    repeats, eager_repeats = repeats or d_repeats, eager_repeats or d_eager
    warmup = d_warmup if warmup is None else warmup
    captures = d_captures if captures is None else captures
    if repeats < 1 or eager_repeats < 1 or warmup < 0 or not 1 <= captures <= len(CAPTURE_SHAPES["vision"]):
        raise ValueError("repeats and eager_repeats must be >= 1, warmup >= 0, captures "
                         f"1..{len(CAPTURE_SHAPES['vision'])}")
    if vision is None or audio is None:
        raise ValueError("calibration measures both encoders; give vision and audio")
    device, dtype = vision.device, vision.dtype
    if warm_ms is None:
        warm_ms = WARM_MS if device.type == "cuda" else 0.0
    if audio.device != device or audio.dtype != dtype:
        raise ValueError(f"vision is {device}/{dtype} but audio is {audio.device}/{audio.dtype}; use one device and dtype")
    dtype_name = str(dtype).removeprefix("torch.")
    merge = getattr(vision, "merge", 2)
    for m in MODALITIES:  # fail before any work on a probe that cannot be filled
        for k in KINDS:
            sizes, batches = probes[m, k]
            for s in sizes:
                for b in batches:
                    _shapes(m, s, b, merge)
    say = progress or (lambda line: None)
    timer = functools.partial(elapsed_ms, device=device)
    t0 = time.perf_counter()
    rt = EncoderRuntime(vision=vision, audio=audio, grid=probe_grid(probes, dtype_name),
                        config=RuntimeConfig(exact_graphs=False))
    rt.capture(progress=False)
    say(f"captured the probe grid ({sum(len(lane.buckets) for lane in rt.lanes())} buckets) in "
        f"{time.perf_counter() - t0:.1f} s")
    graphs = rt.use_cuda_graphs
    points = _replay_points(rt, probes, merge, timer, warmup, repeats, say, warm_ms)
    t1 = time.perf_counter()
    del rt  # free the probe graphs' pool before the eager runs (the lanes hold cycles: collect)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # Uncaptured runs as the runtime makes them by default, never dense;
    # exact graphs on for the captures, a small graph bucket per modality to sight them on.
    small = BucketGrid(dtype_name, *(ModalityGrid(m, (SMALL_BUCKET[m],)) for m in MODALITIES))
    rt = EncoderRuntime(vision=vision, audio=audio, grid=small,
                        config=RuntimeConfig(exact_graphs=True, dense_after=0))
    rt.capture(progress=False)
    cudnn = rt.vision.attention.cudnn_suits((rt.config.eager_cudnn_tokens,))
    graph_cudnn = rt.vision.attention.candidates(rt.config.graph_cudnn_tokens) == ["cudnn"]
    rt_config = rt.config
    points.update(_uncaptured_points(rt, probes, merge, timer, warmup, repeats, eager_repeats, captures, say,
                                     warm_ms))
    del rt
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elapsed = time.perf_counter() - t0
    note = ("replays of captured CUDA graphs" if graphs else "replays ran the bucket path eagerly (no CUDA graphs: "
            "CPU, or a dtype without capturable attention)")
    warmed = f" and {warm_ms:g} ms of warming" if warm_ms else ""
    note += (f"; {'quick: ' if quick else ''}medians of {repeats} replays / {eager_repeats} eager runs after "
             f"{warmup} warm-up{warmed}, {captures} captures per modality; uncaptured vision calls of >= "
             f"{rt_config.eager_cudnn_tokens} tokens on {'cuDNN varlen' if cudnn else 'the captured backend'}; "
             f"vision graph buckets of >= {rt_config.graph_cudnn_tokens} tokens on "
             f"{'cuDNN varlen' if graph_cudnn else 'the captured backend'}; took {elapsed:.0f} s "
             f"(replays {t1 - t0:.0f} s)")
    say(f"calibrated in {elapsed:.1f} s")
    steps = {}
    if cudnn:
        from ..encoders.attention import CUDNN_BOUND_STEP, CUDNN_SEGMENT_STEP

        steps = {"cudnn_steps": [CUDNN_SEGMENT_STEP, CUDNN_BOUND_STEP]}
    split = {k: n for k, n, on in (("replay", rt_config.graph_cudnn_tokens, graph_cudnn),
                                   ("eager", rt_config.eager_cudnn_tokens, cudnn)) if on and n > 0}
    if split:
        steps["cudnn_from"] = {"vision": split}
    return CostModel.from_probes(
        points, card=_card(device), torch=str(torch.__version__),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command, dtype=dtype_name, measured=True, quick=bool(quick), **steps, note=note,
    )


__all__ = ["BUILD_SHAPES", "CAPTURE_SHAPES", "FLOOR_SHAPE", "LAYOUT_FRAMES", "PROBES", "REPEATS", "audio_items",
           "calibrate", "layout_shapes", "probe_grid", "run_pack", "units", "vision_items"]
