"""Reliability on the CPU: bad input, isolation, injected faults, service shutdown, a bounded soak."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest
import torch
from conftest import random_pixels
from test_runtime import (  # noqa: F401 (encoders, runtime: the same fixtures)
    GRID, audio_request, check_against_direct, encoders, random_mix, runtime, vision_request,
)

from omnienc.runtime import AudioRequest, EncoderRuntime, EncoderService, ServiceClosed, VisionRequest


def good_pair(encoders):
    vis, aud = encoders
    return vision_request([[1, 4, 6]], vis.config), audio_request([150], aud.config)


def bad_vision_cases(cfg):
    d = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
    px = lambda n: torch.randn(n, d)  # noqa: E731
    nan = px(16)
    nan[3, 5] = float("nan")
    inf = px(16)
    inf[0, 0] = float("inf")
    return {
        "rows != sum(t*h*w)": (VisionRequest(px(15), torch.tensor([[1, 4, 4]])), "pixel_values", "sum\\(t\\*h\\*w\\)"),
        "patch dim": (VisionRequest(torch.randn(16, d + 1), torch.tensor([[1, 4, 4]])), "pixel_values", "values per patch"),
        "grid not [n,3]": (VisionRequest(px(16), torch.tensor([1, 4, 4])), "grid_thw", "shape \\[n, 3\\]"),
        "grid float": (VisionRequest(px(16), torch.tensor([[1.0, 4.0, 4.0]])), "grid_thw", "integer"),
        "grid list": (VisionRequest(px(16), [[1, 4, 4]]), "grid_thw", "integer torch.Tensor"),
        "t <= 0": (VisionRequest(px(16), torch.tensor([[0, 4, 4]])), "grid_thw", "positive"),
        "h not even": (VisionRequest(px(12), torch.tensor([[1, 3, 4]])), "grid_thw", "multiples of 2"),
        "nan": (VisionRequest(nan, torch.tensor([[1, 4, 4]])), "pixel_values", "NaN"),
        "inf": (VisionRequest(inf, torch.tensor([[1, 4, 4]])), "pixel_values", "infinite"),
        "int pixels": (VisionRequest(torch.randint(0, 9, (16, d)), torch.tensor([[1, 4, 4]])), "pixel_values", "floating"),
        "empty grid": (VisionRequest(px(0), torch.zeros(0, 3, dtype=torch.long)), "grid_thw", "n >= 1"),
        "meta pixels": (VisionRequest(torch.empty(16, d, device="meta"), torch.tensor([[1, 4, 4]])), "pixel_values", "device 'meta'"),
        "meta grid": (VisionRequest(px(16), torch.tensor([[1, 4, 4]], device="meta")), "grid_thw", "device 'meta'"),
        "float8 pixels": (VisionRequest(px(16).to(torch.float8_e4m3fn), torch.tensor([[1, 4, 4]])), "pixel_values", "dtype torch.float8_e4m3fn"),
        "complex pixels": (VisionRequest(px(16).to(torch.complex64), torch.tensor([[1, 4, 4]])), "pixel_values", "floating"),
    }


def bad_audio_cases(cfg):
    m = cfg.num_mel_bins
    nan = torch.randn(m, 50)
    nan[1, 1] = float("nan")
    return {
        "features not [mel, T]": (AudioRequest(torch.randn(m + 1, 50), torch.tensor([50])), "input_features", "num_mel_bins"),
        "features 3-D": (AudioRequest(torch.randn(1, m, 50), torch.tensor([50])), "input_features", "2 dimensions"),
        "lens 2-D": (AudioRequest(torch.randn(m, 50), torch.tensor([[50]])), "feature_lens", "1-D"),
        "lens float": (AudioRequest(torch.randn(m, 50), torch.tensor([50.0])), "feature_lens", "integer"),
        "length <= 0": (AudioRequest(torch.randn(m, 50), torch.tensor([50, 0])), "feature_lens", "positive"),
        "sum != T": (AudioRequest(torch.randn(m, 50), torch.tensor([20, 20])), "feature_lens", "add up to 40"),
        "nan": (AudioRequest(nan, torch.tensor([50])), "input_features", "NaN"),
        "int features": (AudioRequest(torch.ones(m, 50, dtype=torch.int32), torch.tensor([50])), "input_features", "floating"),
        "meta features": (AudioRequest(torch.empty(m, 50, device="meta"), torch.tensor([50])), "input_features", "device 'meta'"),
        "meta lens": (AudioRequest(torch.randn(m, 50), torch.tensor([50], device="meta")), "feature_lens", "device 'meta'"),
        "float8 features": (AudioRequest(torch.randn(m, 50).to(torch.float8_e5m2), torch.tensor([50])), "input_features", "float8_e5m2"),
    }


def all_bad_cases(encoders):
    vis, aud = encoders
    return {**{f"vision {k}": v for k, v in bad_vision_cases(vis.config).items()},
            **{f"audio {k}": v for k, v in bad_audio_cases(aud.config).items()}}


def test_every_bad_request_is_named_and_nothing_runs(encoders, runtime):
    good_v, good_a = good_pair(encoders)
    for name, (bad, field, why) in all_bad_cases(encoders).items():
        before = runtime.stats()
        with pytest.raises(ValueError, match=f"request 1 .*field '{field}'.*{why}") as e:
            runtime.encode([good_v, bad, good_a])
        assert "request 1" in str(e.value), name
        after = runtime.stats()
        assert (after["replays"], after["fallbacks"], after["requests"]) == (before["replays"], before["fallbacks"], before["requests"]), name
    # Still usable and correct.
    reqs = [good_v, good_a]
    check_against_direct(encoders, reqs, runtime.encode(reqs))


def test_every_accepted_input_dtype_encodes_as_the_encoders_do(encoders, runtime):
    """float16/bfloat16/float64 inputs are cast on the copy into the buffers, as the eager encoders cast."""
    vis, aud = encoders
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        reqs = [vision_request([[1, 4, 6]], vis.config), audio_request([random.randint(1, 300)], aud.config)]
        reqs[0].pixel_values = reqs[0].pixel_values.to(dtype)
        reqs[1].input_features = reqs[1].input_features.to(dtype)
        check_against_direct(encoders, reqs, runtime.encode(reqs))


def test_unknown_request_type_and_missing_encoder(encoders):
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, grid=GRID)
    with pytest.raises(ValueError, match="request 0: expected VisionRequest or AudioRequest"):
        rt.encode([{"pixel_values": 1}])
    with pytest.raises(ValueError, match="request 1 \\(AudioRequest\\): this runtime has no audio encoder"):
        rt.encode([vision_request([[1, 2, 2]], vis.config), audio_request([10], aud.config)])


def test_service_refuses_bad_requests_at_submit_and_serves_the_rest(encoders, runtime):
    good_v, good_a = good_pair(encoders)
    with EncoderService(runtime, max_wait_ms=5) as svc:
        f1 = svc.submit(good_v)
        for name, (bad, field, _) in all_bad_cases(encoders).items():
            with pytest.raises(ValueError, match=f"field '{field}'"):
                svc.submit(bad)
        f2 = svc.submit(good_a)
        outs = [f1.result(timeout=60), f2.result(timeout=60)]
    check_against_direct(encoders, [good_v, good_a], outs)


def test_fault_in_a_replay_fails_only_that_replays_requests(encoders, runtime, monkeypatch):
    """A poisoned request (marked by its length) makes any replay holding it raise; the service fails
    its future only, every other request gets its own correct result, and the runtime recovers."""
    vis, aud = encoders
    buckets = runtime.audio.buckets
    real_replay = buckets.replay
    POISON = 333

    def faulty_replay(br, reqs, shapes, used):
        if any(POISON in s for s in shapes):
            raise RuntimeError("injected fault")
        return real_replay(br, reqs, shapes, used)

    monkeypatch.setattr(buckets, "replay", faulty_replay)
    rng = random.Random()
    reqs = random_mix(vis.config, aud.config, 20, rng)
    poison = audio_request([POISON], aud.config)
    reqs.insert(7, poison)
    gate = threading.Event()
    with EncoderService(runtime, max_wait_ms=50) as svc:
        futures = [svc.submit(r) for r in reqs]
        results = []
        for i, f in enumerate(futures):
            if i == 7:
                with pytest.raises(RuntimeError, match="injected fault"):
                    f.result(timeout=60)
            else:
                results.append(f.result(timeout=60))
        gate.set()
    good = [r for i, r in enumerate(reqs) if i != 7]
    check_against_direct(encoders, good, results)
    monkeypatch.setattr(buckets, "replay", real_replay)
    check_against_direct(encoders, [poison], runtime.encode([poison]))  # recovered, buffers consistent


def test_out_of_memory_in_eager_fallback_splits_or_fails_clearly(encoders, runtime, monkeypatch):
    vis, aud = encoders
    runner = runtime.vision.eager
    real_eager = runner.run
    limit = 200  # pretend anything above 200 patches does not fit in memory

    def eager(reqs, shapes):
        if sum(t * h * w for s in shapes for t, h, w in s) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_eager(reqs, shapes)

    monkeypatch.setattr(runner, "run", eager)
    two_items = vision_request([[1, 12, 12], [1, 10, 12]], vis.config)  # 264 > 256 patches: eager; split fits
    outs = runtime.encode([two_items])
    check_against_direct(encoders, [two_items], outs)
    single = vision_request([[1, 16, 18]], vis.config)  # 288 patches, one item: cannot split
    with pytest.raises(RuntimeError, match=r"request 1 \(VisionRequest\): \[\(1, 16, 18\)\]: out of device memory in its eager run"):
        runtime.encode([vision_request([[1, 2, 2]], vis.config), single])
    check_against_direct(encoders, [two_items], runtime.encode([two_items]))


def test_clean_up_after_out_of_memory_never_raises(monkeypatch):
    # On a device whose context already failed, empty_cache itself throws: the clean-up must not
    # replace the request's own error with that one.
    from omnienc.runtime.eager import release_cached_memory

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    release_cached_memory(torch.device("cuda", 0))
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    release_cached_memory(torch.device("cuda", 0))
    release_cached_memory(torch.device("cpu"))  # nothing cached to hand back off CUDA
    assert calls == [1]


def test_close_finishes_or_cancels_pending_and_submit_after_close_raises(encoders, runtime, monkeypatch):
    vis, aud = encoders
    release = threading.Event()
    real_launch = runtime.launch

    def slow_launch(reqs, shapes=None):
        release.wait(10)
        return real_launch(reqs, shapes)

    monkeypatch.setattr(runtime, "launch", slow_launch)
    # Pending requests finish on close().
    svc = EncoderService(runtime, max_wait_ms=0)
    futures = [svc.submit(vision_request([[1, 2, 4]], vis.config)) for _ in range(5)]
    threading.Timer(0.2, release.set).start()
    svc.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(ServiceClosed, match="closed"):
        svc.submit(vision_request([[1, 2, 2]], vis.config))
    # With cancel_pending, queued requests are cancelled clearly; the one in flight finishes.
    release.clear()
    svc = EncoderService(runtime, max_wait_ms=0, max_batch=1)
    futures = [svc.submit(audio_request([60], aud.config)) for _ in range(6)]
    time.sleep(0.2)
    threading.Timer(0.3, release.set).start()
    svc.close(cancel_pending=True)
    states = ["cancelled" if f.cancelled() else "done" for f in futures]
    assert states[0] == "done" and "cancelled" in states
    for f in futures:
        if f.cancelled():
            with pytest.raises(CancelledError):
                f.result()


def test_bounded_soak_32_threads_x_200_requests(encoders):
    """32 threads x 200 mixed random requests through one service: no deadlock, bounded time, and a
    fixed sample (every 10th request of each thread) checked against direct encoding."""
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID)
    rt.capture(progress=False)
    rng = random.Random()

    def small_mix(n):
        reqs = []
        for _ in range(n):
            if rng.random() < 0.5:
                reqs.append(vision_request([[1, 2 * rng.randint(1, 3), 2 * rng.randint(1, 3)]], vis.config))
            else:
                reqs.append(audio_request([rng.randint(1, 180)], aud.config))
        return reqs

    per_thread = [small_mix(200) for _ in range(32)]
    t0 = time.monotonic()
    with EncoderService(rt, max_wait_ms=1, max_batch=64) as svc:
        def worker(reqs):
            return [f.result(timeout=240) for f in [svc.submit(r) for r in reqs]]

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(worker, per_thread))
    elapsed = time.monotonic() - t0
    assert elapsed < 300, f"soak took {elapsed:.0f} s"
    sample_r = [r for reqs in per_thread for r in reqs[::10]]
    sample_o = [o for outs in results for o in outs[::10]]
    check_against_direct(encoders, sample_r, sample_o)
    assert rt.stats()["requests"] == 32 * 200


def test_nonfinite_checks_resolve_together_and_name_the_first_bad_request(encoders, runtime):
    vis, aud = encoders
    good_v, good_a = good_pair(encoders)
    bad_a = audio_request([40], aud.config)
    bad_a.input_features[0, 3] = float("-inf")
    bad_v = vision_request([[1, 2, 2]], vis.config)
    bad_v.pixel_values[1, 1] = float("nan")
    with pytest.raises(ValueError, match="request 2 \\(AudioRequest\\): field 'input_features' holds NaN"):
        runtime.encode([good_v, good_a, bad_a, bad_v])
