"""Several GPUs (marked ``gpu``; skipped with fewer than 2 CUDA devices): real sizes, random bf16 weights
copied from cuda:0 to cuda:1, one runtime per device with the default grid.

Results from either device equal the one-device results (cuda:0's runtime alone), within bf16 replay
tolerance (``verify_buckets``' defaults: relative L2 error <= 3e-2, cosine >= 0.9995 per tensor; replay
vs eager measured 1.4e-2 at most on an H200): cuda:1's runtime called directly, and
``EncoderService([rt0, rt1], output_device="cuda:0")`` with both devices serving.
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import randomize_, rel_err

from omnienc.runtime import AudioRequest, BucketGrid, EncoderRuntime, EncoderService, VisionRequest
from omnienc.tools.models import build_encoders, replicate

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")]

MAX_REL, MIN_COS = 3e-2, 0.9995  # as runtime.verify.verify_buckets for bf16


def cosine(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


@pytest.fixture(scope="module")
def runtimes():
    vis, aud = build_encoders(None, "cuda:0", "bfloat16", "real")
    randomize_(vis)  # non-trivial norms and biases everywhere (conftest)
    randomize_(aud)
    rts = []
    for dev, (v, a) in (("cuda:0", (vis, aud)), ("cuda:1", (replicate(vis, "cuda:1"), replicate(aud, "cuda:1")))):
        with torch.cuda.device(dev):
            rt = EncoderRuntime(vision=v, audio=a, grid=BucketGrid.default(), device=dev)
            rt.capture(progress=False)
        rts.append(rt)
    yield rts
    del rts
    torch.cuda.empty_cache()


def mixed_requests(rt, rng: random.Random, n: int) -> list:
    """Images and videos (some larger than any graph bucket), audios of one to three clips; fresh
    random inputs, half of them on cuda:0 (copied across by cuda:1), half on the CPU."""
    vis, aud = rt.vision.encoder, rt.audio.encoder
    reqs = []
    for i in range(n):
        where = "cuda:0" if i % 2 else "cpu"
        if rng.random() < 0.5:
            grid = [[rng.choice([1, 1, 2, 4]), 2 * rng.randint(4, 40), 2 * rng.randint(4, 40)]]
            rows = sum(t * h * w for t, h, w in grid)
            reqs.append(VisionRequest(torch.randn(rows, vis.in_features, device=where), torch.tensor(grid)))
        else:
            lens = [rng.randint(50, 3000) for _ in range(rng.choice([1, 1, 2, 3]))]
            reqs.append(AudioRequest(torch.randn(aud.config.num_mel_bins, sum(lens), device=where), torch.tensor(lens)))
    return reqs


def assert_same(got, ref, device: str) -> None:
    pairs = [(got.embeds, ref.embeds)] + list(zip(getattr(got, "deepstack", []), getattr(ref, "deepstack", [])))
    for a, b in pairs:
        assert a.device == torch.device(device) and a.shape == b.shape
        a = a.to(b.device)
        assert torch.isfinite(a).all()
        e, c = rel_err(a, b), cosine(a, b)
        assert e <= MAX_REL and c >= MIN_COS, (e, c)


@torch.inference_mode()
def test_either_device_gives_the_one_device_results(runtimes):
    rt0, rt1 = runtimes
    reqs = mixed_requests(rt0, random.Random(), 24)
    with torch.cuda.device(0):
        ref = rt0.encode(reqs)
    with torch.cuda.device(1):
        direct = rt1.encode(reqs)
    for got, want in zip(direct, ref):
        assert_same(got, want, "cuda:1")

    with EncoderService([rt0, rt1], max_wait_ms=1, max_batch=4, output_device="cuda:0") as svc:
        outs = [f.result(120) for f in [svc.submit(r) for r in reqs]]
        served = [d["requests"] for d in svc.stats()["devices"]]
    assert sum(served) == len(reqs) and min(served) > 0, served  # both devices encoded some
    for got, want in zip(outs, ref):
        assert_same(got, want, "cuda:0")
