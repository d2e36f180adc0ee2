"""Long video and audio through the runtime in bounded memory (a record of what ran on the GPU).

    python benchmarks/records/long_media_probe.py [--out DIR]

Real encoder sizes, random bf16 weights, the default grid, captured. Inputs are put on the GPU
before each launch is measured (they are the caller's). For each request: the wall time of one
launch to its results (median of 3 after one warm-up), the peak memory allocated during it above
what was allocated before, the size of its outputs (the caller's result, as long as the input), and
the runtime's bound (``EncoderRuntime.memory()``). Cut (the default) against uncut
(``split_requests=False``, unbounded) where the uncut run fits: a 1-minute 720p video, a 10-minute
audio; cut only: a 10-minute 720p video at 2 fps, a 60-minute audio. The 1-minute video also runs
cut into pieces of at most the largest bucket (``cut_bucket_pieces``: the rule before pieces of an
eager largest bucket grew to what one uncaptured call may hold) and into filled pieces
(``cut_filled``: the rule before such pieces were made even), A/Bs of the piece size;
``video1m_turns`` runs those four in turns, eight rounds. Then the 32-request mix with the default
bound against an unbounded one (merged eager calls are capped by the bound).
One JSON line per result. ``--dry-run`` runs the same steps on the CPU with tiny encoders and
inputs a hundredth of the size (memory figures 0): a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_video_probe import CUDA, real_audio, real_vision  # noqa: E402

DEVICE, SCALE = CUDA, 1.0  # --dry-run: the CPU, inputs a hundredth of the size


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def allocated() -> int:
    return torch.cuda.memory_allocated() if DEVICE.type == "cuda" else 0


def peak_allocated() -> int:
    return torch.cuda.max_memory_allocated() if DEVICE.type == "cuda" else 0


def tiny_encoders():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from conftest import hf_and_native_audio, hf_and_native_vision

    return hf_and_native_vision()[1], hf_and_native_audio()[1]


def emit(out, **kw):
    line = json.dumps(kw)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def measure(rt, req, repeats=3):
    """Median seconds of a launch, its peak allocation above what was allocated before it, the
    outputs' bytes, what stays allocated after the caller dropped every result (0 unless something
    holds them), and what the warm-up left allocated when the first timed launch began."""
    sync()
    before = allocated()
    rt.encode([req])  # warm-up: exact-layout sightings, cuDNN plans, the allocator's cache
    times, peak, warm_left = [], 0, None
    for _ in range(repeats):
        sync()
        base = allocated()
        if warm_left is None:
            warm_left = base - before
        if DEVICE.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = rt.encode([req])[0]
        sync()
        times.append(time.perf_counter() - t0)
        peak = max(peak, peak_allocated() - base)
        outputs = sum(t.numel() * t.element_size() for t in ([out.embeds, *out.deepstack] if hasattr(out, "deepstack") else [out.embeds]))
        del out
    sync()
    return statistics.median(times), peak, outputs, allocated() - before, warm_left


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--cases", default="video10m,audio60m,video1m,audio10m,mixed32")
    p.add_argument("--dry-run", action="store_true", help="tiny encoders on the CPU, inputs a hundredth of the size")
    a = p.parse_args()
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
    out = a.out and str(Path(a.out) / "long_media.jsonl")
    from omnienc.runtime import AudioRequest, BucketGrid, EncoderRuntime, RuntimeConfig, VisionRequest
    from omnienc.runtime.split import PieceLimit

    global DEVICE, SCALE
    if a.dry_run:
        DEVICE, SCALE = torch.device("cpu"), 0.01
        vis, aud = tiny_encoders()
    else:
        vis, aud = real_vision(), real_audio()
    dtype = next(vis.parameters()).dtype
    cut = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default())
    cut.capture(progress=False)
    whole = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default(),
                           config=RuntimeConfig(split_requests=False, max_transient_bytes=2**40))
    whole.capture(progress=False)
    mem = cut.memory()
    emit(out, case="memory", card=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu (dry run)", **mem)
    cases = a.cases.split(",")

    def bucket_pieces(rt):  # pieces of at most the largest bucket, within the bound
        top = max(rt.vision.bucket_set.buckets, key=lambda b: (b.size, b.batch))
        return PieceLimit(min(top.size, rt.vision.units_within(mem["max_transient_bytes"])), top.batch)

    def other_limits(rt):  # the piece limits the default is A/B'd against
        limit = rt.vision.piece_limit
        return {"cut_bucket_pieces": bucket_pieces(rt), "cut_filled": PieceLimit(limit.size, limit.batch)}

    def video(minutes):
        t = max(1, int(SCALE * minutes * 60 * 2 / 2))  # 2 fps, two frames a temporal patch
        return VisionRequest(torch.randn(t * 46 * 80, vis.in_features, device=DEVICE, dtype=dtype),
                             torch.tensor([[t, 46, 80]])), t

    def clip(minutes):
        frames = int(SCALE * minutes * 60 * 100)
        return AudioRequest(torch.randn(aud.config.num_mel_bins, frames, device=DEVICE), torch.tensor([frames])), frames / 100

    plan = [("video10m", lambda: video(10), "frame pairs", False), ("audio60m", lambda: clip(60), "s", False),
            ("video1m", lambda: video(1), "frame pairs", True), ("audio10m", lambda: clip(10), "s", True)]
    for name, make, unit, both in plan:
        if name not in cases:
            continue
        req, n = make()
        runs = [("cut", cut)] + ([("uncut", whole)] if both else [])
        others = other_limits(cut)
        if name == "video1m":
            runs += [(label, cut) for label in others]
        for label, rt in runs:
            limit = rt.vision.piece_limit
            rt.vision.piece_limit = others.get(label, limit)
            try:
                s, peak, outputs, held, warm_left = measure(rt, req, repeats=1 if name == "video10m" else 3)
            except Exception as e:  # noqa: BLE001 - record and go on
                emit(out, case=name, runtime=label, error=f"{type(e).__name__}: {str(e)[:300]}")
                continue
            finally:
                rt.vision.piece_limit = limit
            st = rt.stats()
            emit(out, case=name, runtime=label, units=n, unit=unit, s=round(s, 4), ms_per_unit=round(1e3 * s / n, 4),
                 peak_gib=round(peak / 2**30, 3), outputs_gib=round(outputs / 2**30, 3),
                 transient_gib=round((peak - outputs) / 2**30, 3), bound_gib=round(mem["max_transient_bytes"] / 2**30, 3),
                 within_bound=peak - outputs <= mem["max_transient_bytes"], held_after_gib=round(held / 2**30, 3),
                 warm_up_left_gib=round(warm_left / 2**30, 3),
                 replays=st["replays"], eager_runs=st["eager_runs"], fallbacks=st["fallbacks"],
                 piece_patches=others.get(label, rt.vision.piece_limit).size)
            rt.reset_stats()
        del req
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
    if "video1m_turns" in cases:  # the piece-size A/B again, the three runs in turns (noise shows)
        req, n = video(1)
        limit, others = cut.vision.piece_limit, other_limits(cut)

        def run(label):
            rt = whole if label == "uncut" else cut
            cut.vision.piece_limit = others.get(label, limit)
            try:
                sync()
                t0 = time.perf_counter()
                rt.encode([req])
                sync()
                return time.perf_counter() - t0
            finally:
                cut.vision.piece_limit = limit

        labels = ("cut", "uncut", *others)
        for label in labels:
            run(label)  # warm-up
        times = {label: [] for label in labels}
        for _ in range(8):
            for label in labels:
                times[label].append(run(label))
        emit(out, case="video1m_turns", units=n, piece_patches=[limit.size, None, *(o.size for o in others.values())],
             pieces={k: len(cut.vision.spec.pieces([(n, 46, 80)], others.get(k, limit)))
                     for k in labels if k != "uncut"},
             **{f"{k}_ms_per_unit": [round(1e3 * t / n, 3) for t in v] for k, v in times.items()},
             **{f"{k}_median": round(1e3 * statistics.median(v) / n, 3) for k, v in times.items()})
        del req
    if "mixed32" in cases:
        from omnienc.tools.workloads import mixed_requests

        reqs = []
        for kind, shape in mixed_requests(n=32 if DEVICE.type == "cuda" else 4):
            if kind == "vision":
                reqs.append(VisionRequest(torch.randn(sum(t * h * w for t, h, w in shape), vis.in_features, device=DEVICE,
                                                      dtype=dtype), torch.tensor(shape)))
            else:
                reqs.append(AudioRequest(torch.randn(aud.config.num_mel_bins, sum(shape), device=DEVICE), torch.tensor(shape)))
        unbounded = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default(),
                                   config=RuntimeConfig(max_transient_bytes=2**40, exact_graphs=False))
        unbounded.capture(progress=False)
        bounded = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default(), config=RuntimeConfig(exact_graphs=False))
        bounded.capture(progress=False)
        times = {"bounded": [], "unbounded": []}
        for _ in range(3):
            bounded.encode(reqs), unbounded.encode(reqs)
        for _ in range(8):  # in turns
            for label, rt in (("bounded", bounded), ("unbounded", unbounded)):
                sync()
                t0 = time.perf_counter()
                rt.encode(reqs)
                sync()
                times[label].append(time.perf_counter() - t0)
        emit(out, case="mixed32", bound_gib=round(bounded.memory()["max_transient_bytes"] / 2**30, 3),
             merge_units=bounded.vision.eager_merge_units, unbounded_merge_units=unbounded.vision.eager_merge_units,
             **{k: round(1e3 * statistics.median(v), 2) for k, v in times.items()})


if __name__ == "__main__":
    main()
