"""Calibration: measures what replays and eager runs cost on the encoders, into a ``CostModel``.

``calibrate`` captures a *probe grid* (every replay probe bucket as a graph) with ``EncoderRuntime``,
then times:

* the replay of every probe bucket, filled with ``batch`` equal segments (vision: ``batch`` frames
  of about ``size / batch`` patches; audio: ``batch`` clips of ``size / batch`` frames), through the
  lane's own pack path (staging, replay, output split: what the runtime times per replay);
* eager runs of the encoder itself (``vision(pixel_values, grid_thw)``, ``audio(input_features,
  feature_lens)``) over a spread of sizes and item counts, on device tensors.

Each point: ``warmup`` untimed runs, then ``repeats`` timed ones, each started on an idle GPU and
bracketed by CUDA events (``perf_counter`` on the CPU); the model uses the median, the file keeps
every sample. The ``real`` probes take a minute or two on a GPU (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import datetime
import functools
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from ..cuda import elapsed_ms
from .costs import KINDS, MODALITIES, CostModel, Probe
from .grid import AUDIO_CHUNK_FRAMES, Bucket, BucketGrid, ModalityGrid
from .requests import AudioRequest, VisionRequest

# (modality, kind) -> (sizes, batches): where to measure. Sizes in patches / mel frames; batches are
# segments carried (replay) or items (eager). Every size must hold every batch's segments.
ProbeSet = Mapping[tuple[str, str], tuple[Sequence[int], Sequence[int]]]
PROBES: dict[str, ProbeSet] = {
    # The real encoders: vision up to one 128x128-patch frame, audio up to 128 s; 28 graphs.
    "real": {
        ("vision", "replay"): ((256, 784, 1600, 3136, 6400, 16384), (1, 4, 16)),
        ("vision", "eager"): ((256, 784, 1600, 3136, 6400, 16384), (1, 4, 16)),
        ("audio", "replay"): ((400, 1200, 3200, 6400, 12800), (1, 4)),
        ("audio", "eager"): ((400, 1200, 3200, 6400, 12800), (1, 4)),
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


def _samples(fn: Callable[[], object], timer, warmup: int, repeats: int) -> tuple[float, ...]:
    for _ in range(warmup):
        fn()
    return tuple(timer(fn) for _ in range(repeats))


def _vision_inputs(enc, items, device) -> tuple[torch.Tensor, list]:
    n = sum(t * h * w for t, h, w in items)
    return torch.randn(n, enc.in_features, dtype=enc.dtype, device=device), list(items)


def _audio_inputs(enc, lens, device) -> tuple[torch.Tensor, list[int]]:
    return torch.randn(enc.config.num_mel_bins, sum(lens), dtype=enc.dtype, device=device), list(lens)


def _replay_points(rt, probes: ProbeSet, merge: int, timer, warmup: int, repeats: int,
                   say: Callable[[str], None]) -> dict[tuple[str, str], list[Probe]]:
    """Times every replay probe bucket of ``rt`` (captured on the probe grid), filled with ``batch``
    equal segments, one request each (as many users' requests packed together)."""
    points: dict[tuple[str, str], list[Probe]] = {}
    for lane in rt.lanes():
        m, enc = lane.modality, lane.encoder
        device = enc.device
        sizes, batches = probes[m, "replay"]
        points[m, "replay"] = []
        for s in sizes:
            for b in batches:
                if m == "vision":
                    reqs = [VisionRequest(_vision_inputs(enc, [it], device)[0], torch.tensor([it]))
                            for it in vision_items(s, b, merge)]
                else:
                    reqs = [AudioRequest(_audio_inputs(enc, [T], device)[0], torch.tensor([T]))
                            for T in audio_items(s, b)]
                shapes = rt.validate(reqs)
                bucket = Bucket(s, b)
                p = Probe(s, b, _samples(lambda: run_pack(lane, bucket, reqs, shapes), timer, warmup, repeats))
                points[m, "replay"].append(p)
                say(f"{m:6s} replay {s:>6d}x{b:<3d} {p.ms:8.2f} ms")
    return points


def _card(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@torch.inference_mode()
def calibrate(
    vision, audio, probes: ProbeSet | None = None, repeats: int = 7, warmup: int = 2,
    eager_repeats: int = 5, command: str = "", progress: Callable[[str], None] | None = None,
) -> CostModel:
    """Measures a cost model on ``vision`` and ``audio`` encoders (same device and dtype).

    Args:
        vision, audio: The encoders (``VisionEncoder``, ``AudioEncoder``).
        probes: Where to measure (default ``PROBES["real"]``); see ``PROBES``.
        repeats: Timed replays per replay probe (median used).
        warmup: Untimed runs before each point (the first also builds and caches the host plan).
        eager_repeats: Timed runs per eager probe (eager runs of large sizes are slow).
        command: The command line, recorded in the file.
        progress: Called with one line per measured point.

    Returns:
        The model; ``meta`` records card, torch version, date, command and dtype.
    """
    from .runtime import EncoderRuntime

    probes = PROBES["real"] if probes is None else probes
    if repeats < 1 or eager_repeats < 1 or warmup < 0:
        raise ValueError("repeats and eager_repeats must be >= 1, warmup >= 0")
    device, dtype = vision.device, vision.dtype
    if audio.device != device or audio.dtype != dtype:
        raise ValueError(f"vision is {device}/{dtype} but audio is {audio.device}/{audio.dtype}; use one device and dtype")
    dtype_name = str(dtype).removeprefix("torch.")
    merge = getattr(vision, "merge", 2)
    for m, items in (("vision", lambda s, b: vision_items(s, b, merge)), ("audio", audio_items)):
        for k in KINDS:  # fail before any work on a probe that cannot be filled
            sizes, batches = probes[m, k]
            for s in sizes:
                for b in batches:
                    items(s, b)
    say = progress or (lambda line: None)
    timer = functools.partial(elapsed_ms, device=device)
    t0 = time.perf_counter()
    rt = EncoderRuntime(vision=vision, audio=audio, grid=probe_grid(probes, dtype_name))
    rt.capture(progress=False)
    say(f"captured the probe grid ({sum(len(lane.buckets) for lane in rt.lanes())} buckets) in "
        f"{time.perf_counter() - t0:.1f} s")
    graphs = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)  # the runtime's rule
    points = _replay_points(rt, probes, merge, timer, warmup, repeats, say)
    del rt  # free the graph pool before the eager runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for m, enc in (("vision", vision), ("audio", audio)):
        sizes, batches = probes[m, "eager"]
        points[m, "eager"] = []
        for s in sizes:
            for b in batches:
                if m == "vision":
                    x, grid = _vision_inputs(enc, vision_items(s, b, merge), device)
                else:
                    x, grid = _audio_inputs(enc, audio_items(s, b), device)
                p = Probe(s, b, _samples(lambda: enc(x, grid), timer, min(warmup, 1), eager_repeats))
                points[m, "eager"].append(p)
                say(f"{m:6s} eager  {s:>6d}x{b:<3d} {p.ms:8.2f} ms")
    elapsed = time.perf_counter() - t0
    note = ("replays of captured CUDA graphs" if graphs else "replays ran the bucket path eagerly (no CUDA graphs: "
            "CPU, or a dtype without capturable attention)")
    note += f"; medians of {repeats} replays / {eager_repeats} eager runs after {warmup} warm-up; took {elapsed:.0f} s"
    say(f"calibrated in {elapsed:.1f} s")
    return CostModel.from_probes(
        points, card=_card(device), torch=str(torch.__version__),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command, dtype=dtype_name, measured=True, note=note,
    )


__all__ = ["PROBES", "audio_items", "calibrate", "probe_grid", "run_pack", "vision_items"]
