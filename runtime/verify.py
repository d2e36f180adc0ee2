"""Replay-vs-eager verification of every bucket: used by ``omnienc capture --verify`` and the tests.

For each bucket, random request mixes sized for it run on that bucket (a replay of its graph, or an
eager run of an eager bucket), and each request's outputs are compared with the encoder's own eager
forward on that request alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .grid import AUDIO_CHUNK_FRAMES, Bucket
from .requests import AudioRequest, VisionRequest


@dataclass
class BucketCheck:
    modality: str
    bucket: Bucket
    requests: int
    max_rel_err: float
    min_cosine: float
    ok: bool


def random_requests_for(modality: str, bucket: Bucket, encoder, rng: random.Random) -> list:
    """A random mix for ``bucket``: at least one request, filling 50-100% of its size within its batch.

    Inputs are fresh ``randn`` on the CPU (as an engine's preprocessing would hand them over).
    """
    reqs, used, segs = [], 0, 0
    target = rng.uniform(0.5, 1.0) * bucket.size
    merge = getattr(encoder, "merge", 2)
    while segs < bucket.batch and used < target:
        room = bucket.size - used
        if modality == "vision":
            t = 2 if rng.random() < 0.2 and segs + 2 <= bucket.batch and room >= 2 * merge * merge else 1
            side = max(1, min(24, int((room / t) ** 0.5) // merge))
            h, w = merge * rng.randint(1, side), merge * rng.randint(1, side)
            if t * h * w > room:
                break
            reqs.append(VisionRequest(torch.randn(t * h * w, encoder.in_features), torch.tensor([[t, h, w]])))
            used, segs = used + t * h * w, segs + t
        else:
            if room < AUDIO_CHUNK_FRAMES:
                break
            T = rng.randint(1, min(3000, room))
            reqs.append(AudioRequest(torch.randn(encoder.config.num_mel_bins, T), torch.tensor([T])))
            used, segs = used + -(-T // AUDIO_CHUNK_FRAMES) * AUDIO_CHUNK_FRAMES, segs + 1
    if not reqs:
        raise ValueError(f"{modality} bucket {bucket} is too small for any request")
    return reqs


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


@torch.inference_mode()
def verify_buckets(runtime, mixes: int = 2, max_rel_err: float = 3e-2, min_cosine: float = 0.9995,
                   seed: int | None = None) -> list[BucketCheck]:
    """Replays ``mixes`` random mixes through every bucket and compares with the eager forward.

    The default tolerances fit bf16 (the same forward with other GEMM shapes only rounds
    differently); use tighter ones for float32.
    """
    rng = random.Random(seed)
    checks = []
    for lane in runtime.lanes():
        enc = lane.encoder
        for bucket in sorted(lane.buckets):
            worst, lowest, count = 0.0, 1.0, 0
            for _ in range(mixes):
                reqs = random_requests_for(lane.modality, bucket, enc, rng)
                shapes = runtime.validate(reqs)
                with runtime._lock:
                    runs = lane.run_pack(bucket, reqs, shapes, list(range(len(reqs))))
                if lane.device.type == "cuda":
                    torch.cuda.synchronize(lane.device)  # the finiteness flags are copied asynchronously
                for r, (o, check) in zip(reqs, runs):
                    if not check.ok():
                        worst, lowest = float("inf"), -1.0
                        continue
                    if isinstance(r, VisionRequest):
                        ref, ref_ds = enc(r.pixel_values.to(lane.device), r.grid_thw)
                        pairs = [(o.embeds, ref), *zip(o.deepstack, ref_ds)]
                    else:
                        pairs = [(o.embeds, enc(r.input_features.to(lane.device), r.feature_lens))]
                    for a, b in pairs:
                        if a.shape != b.shape:
                            worst, lowest = float("inf"), -1.0
                            continue
                        worst, lowest = max(worst, _rel(a, b)), min(lowest, _cos(a, b))
                count += len(reqs)
            ok = worst <= max_rel_err and lowest >= min_cosine
            checks.append(BucketCheck(lane.modality, bucket, count, worst, lowest, ok))
    return checks
