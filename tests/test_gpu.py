"""GPU tests (marked ``gpu``; skipped without CUDA): real sizes, random weights, bf16.

Parity: native bf16 and HF bf16 are both compared with HF fp32 on the same weights; native's
relative error must be at most 1.5x HF's, and its cosine similarity at least 0.999.
Runtime: every bucket of the default grid replays to the eager forward's result; no capture
happens inside ``encode``; the graph pool's memory is reported.
"""

from __future__ import annotations

import copy
import random
import sys

import pytest
import torch
from conftest import randomize_, rel_err

from omnienc.encoders import AudioEncoder, VisionEncoder, load_hf_weights

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def cosine(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def real_vision_config():
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeVisionEncoderConfig

    cfg = Qwen3OmniMoeVisionEncoderConfig(out_hidden_size=2048)
    cfg._attn_implementation = "sdpa"
    return cfg


def real_audio_config():
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeAudioEncoderConfig

    cfg = Qwen3OmniMoeAudioEncoderConfig(output_dim=2048)
    cfg._attn_implementation = "sdpa"
    return cfg


@pytest.fixture(scope="module")
def vision_models():
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeVisionEncoder

    cfg = real_vision_config()
    with torch.device(CUDA):
        hf32 = randomize_(Qwen3OmniMoeVisionEncoder(cfg).eval())
        native = VisionEncoder(cfg).to(torch.bfloat16).eval()
    hf16 = copy.deepcopy(hf32).to(torch.bfloat16)
    load_hf_weights(native, hf32.state_dict())
    yield hf32, hf16, native
    del hf32, hf16, native
    torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def audio_models():
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeAudioEncoder

    cfg = real_audio_config()
    with torch.device(CUDA):
        hf32 = randomize_(Qwen3OmniMoeAudioEncoder(cfg).eval())
        native = AudioEncoder(cfg).to(torch.bfloat16).eval()
    hf16 = copy.deepcopy(hf32).to(torch.bfloat16)
    load_hf_weights(native, hf32.state_dict())
    yield hf32, hf16, native
    del hf32, hf16, native
    torch.cuda.empty_cache()


FIGURES: list[str] = []
REPLAY_ERR: list[float] = []


def report(name, ref, hf16, native):
    e_hf, e_nat = rel_err(hf16, ref), rel_err(native, ref)
    c = cosine(native, ref)
    FIGURES.append(f"{name}: rel err native {e_nat:.3e} vs HF bf16 {e_hf:.3e} (ratio {e_nat / e_hf:.2f}), cosine {c:.6f}")
    print(FIGURES[-1])
    assert e_nat <= 1.5 * e_hf, FIGURES[-1]
    assert c >= 0.999, FIGURES[-1]


VISION = {"image448": [[1, 28, 28]], "image224": [[1, 14, 14]], "image720p": [[1, 46, 80]],
          "video16x448": [[8, 28, 28]], "mixed": [[1, 28, 28], [2, 14, 20], [1, 8, 8]]}


@pytest.mark.parametrize("grid", VISION.values(), ids=VISION.keys())
@torch.inference_mode()
def test_vision_bf16_parity(vision_models, grid, request):
    hf32, hf16, native = vision_models
    n = sum(t * h * w for t, h, w in grid)
    px = torch.randn(n, native.in_features, device=CUDA)
    g = torch.tensor(grid, device=CUDA)
    ref = hf32(px, grid_thw=g)
    h16 = hf16(px.bfloat16(), grid_thw=g)
    emb, ds = native(px, g)
    name = request.node.callspec.id
    report(f"vision {name} embeds", ref.pooler_output, h16.pooler_output, emb)
    for i, (a, b, c) in enumerate(zip(ref.deepstack_features, h16.deepstack_features, ds)):
        report(f"vision {name} deepstack[{i}]", a, b, c)


AUDIO = {"1s": [100], "10s": [1000], "30s": [3000], "odd": [137], "several": [1000, 455, 2600, 37]}


@pytest.mark.parametrize("lens", AUDIO.values(), ids=AUDIO.keys())
@torch.inference_mode()
def test_audio_bf16_parity(audio_models, lens, request):
    hf32, hf16, native = audio_models
    feats = [torch.randn(128, T, device=CUDA) for T in lens]
    # The reference for each audio is HF on that audio alone.
    ref = torch.cat([hf32(f, feature_lens=torch.tensor([f.shape[1]], device=CUDA)).last_hidden_state for f in feats])
    h16 = torch.cat([hf16(f.bfloat16(), feature_lens=torch.tensor([f.shape[1]], device=CUDA)).last_hidden_state for f in feats])
    out = native(torch.cat(feats, 1), torch.tensor(lens, device=CUDA))
    report(f"audio {request.node.callspec.id}", ref, h16, out)


@pytest.mark.parametrize("tokens", [1, 257, 6272])
def test_triton_rotary_matches_torch(tokens):
    """The fused rotary kernel against the plain PyTorch rotary (float32 math in both; the outputs
    may differ by one bf16 rounding where FMA contraction moves a product's rounding)."""
    from omnienc.encoders.rotary import rotary_qkv_torch, rotary_qkv_triton, triton_available

    if not triton_available():
        pytest.skip("triton is not installed")
    H, D = 16, 72
    qkv = torch.randn(tokens, 3 * H * D, device=CUDA, dtype=torch.bfloat16)
    angles = torch.rand(tokens, D // 2, device=CUDA) * 40
    ref = rotary_qkv_torch(qkv, angles.cos(), angles.sin(), H)
    got = rotary_qkv_triton(qkv, angles.cos(), angles.sin(), H)
    for a, b in zip(got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=2 ** -7, atol=1e-2)
    assert torch.equal(got[2], ref[2])
    assert got[0].is_contiguous() and got[1].is_contiguous()


@pytest.mark.parametrize("heads,dim", [(16, 72), (20, 64)], ids=["vision", "audio"])
def test_varlen_attention_matches_fp32_and_replays(heads, dim):
    """The capturable backend on a packed layout with unequal and zero-length segments (what a
    bucket's padding makes) and a loose max_seqlen bound: eager and CUDA-graph replay both match
    per-segment fp32 SDPA."""
    from omnienc.encoders.attention import varlen_attention

    seqlens = [random.randint(1, 900) for _ in range(3)] + [0, 256, 0, 37]
    random.shuffle(seqlens)
    T = sum(seqlens)
    cu = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32, device=CUDA)
    q, k, v = (torch.randn(T, heads, dim, device=CUDA, dtype=torch.bfloat16) for _ in range(3))
    ref = varlen_attention(q.float(), k.float(), v.float(), cu, max(seqlens), seqlens, "sdpa")
    eager = varlen_attention(q, k, v, cu, 1024, None, "varlen")
    torch.testing.assert_close(eager.float(), ref, rtol=0, atol=2e-2)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = varlen_attention(q, k, v, cu, 1024, None, "varlen")
    for x in (q, k, v):
        x.copy_(torch.randn_like(x))
    g.replay()
    ref = varlen_attention(q.float(), k.float(), v.float(), cu, max(seqlens), seqlens, "sdpa")
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=2e-2)


# -- runtime ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(vision_models, audio_models):
    from omnienc.runtime import BucketGrid, EncoderRuntime, RuntimeConfig

    # Exact-layout graphs and dense admission on (both off by default): this module also tests
    # their captures and replays, and dense runs.
    rt = EncoderRuntime(vision=vision_models[2], audio=audio_models[2], grid=BucketGrid.default(),
                        config=RuntimeConfig(exact_graphs=True, dense_after=8))
    info = rt.capture(progress=False)
    print(f"capture: {info}")
    return rt, info


def check_outputs(native_vis, native_aud, reqs, outs):
    from omnienc.runtime import VisionRequest

    for r, o in zip(reqs, outs):
        if isinstance(r, VisionRequest):
            ref, ref_ds = native_vis(r.pixel_values.to(CUDA), r.grid_thw)
            pairs = [(o.embeds, ref), *zip(o.deepstack, ref_ds)]
        else:
            pairs = [(o.embeds, native_aud(r.input_features.to(CUDA), r.feature_lens))]
        for a, b in pairs:
            # Same bf16 forward, other GEMM shapes: only rounding may differ.
            assert a.shape == b.shape
            REPLAY_ERR.append(rel_err(a, b))
            assert REPLAY_ERR[-1] < 3e-2 and cosine(a, b) > 0.9995


@pytest.mark.parametrize("grid", [[[1, 46, 80]], [[8, 28, 28]], [[1, 60, 60], [1, 20, 34], [1, 20, 34]]],
                         ids=["image720p", "video16x448", "mixed"])
@torch.inference_mode()
def test_dense_eager_runs_match_hf(vision_models, runtime, grid):
    """Uncaptured runs on ``dense`` (once a shape is admitted): as accurate against HF float32
    as HF's own bf16, like the encoder on FlashAttention."""
    hf32, hf16, _ = vision_models
    rt, _ = runtime
    from omnienc.runtime import VisionRequest

    n = sum(t * h * w for t, h, w in grid)
    px = torch.randn(n, rt.vision.encoder.in_features, device=CUDA)
    g = torch.tensor(grid, device=CUDA)
    ref, h16 = hf32(px, grid_thw=g), hf16(px.bfloat16(), grid_thw=g)
    seqlens = [h * w for t, h, w in grid for _ in range(t)]
    assert rt.config.eager_attention == "auto"
    seen = [rt.vision.attention.uncaptured(seqlens) for _ in range(rt.config.dense_after)]
    assert set(seen) <= {"varlen", "dense"} and seen[-1] == "dense"  # admitted by its dense_after-th sighting
    reqs = [VisionRequest(px, torch.tensor(grid))]  # one request: above graphs_up_to, an eager run
    out = rt.encode(reqs)[0]
    name = f"runtime dense {'+'.join(f'{t}x{h}x{w}' for t, h, w in grid)}"
    report(f"{name} embeds", ref.pooler_output, h16.pooler_output, out.embeds)
    for i, (a, b, c) in enumerate(zip(ref.deepstack_features, h16.deepstack_features, out.deepstack)):
        report(f"{name} deepstack[{i}]", a, b, c)


@torch.inference_mode()
def test_big_uncaptured_calls_on_cudnn_varlen_match_hf(vision_models, runtime):
    """An uncaptured call of at least ``eager_cudnn_tokens`` tokens (before ``dense`` admits its
    shapes) runs cuDNN's varlen attention on a rounded plan: as accurate against HF float32 as HF's
    own bf16."""
    from omnienc.encoders.attention import cudnn_available
    from omnienc.runtime import VisionRequest

    if not cudnn_available():
        pytest.skip("nvidia-cudnn-frontend is not installed (the cudnn extra)")
    hf32, hf16, _ = vision_models
    rt, _ = runtime
    grid = [[1, 60, 60], [1, 46, 80], [1, 20, 34], [1, 16, 16]]  # 8,216 patches, four segment lengths
    n = sum(t * h * w for t, h, w in grid)
    assert n >= rt.vision.attention.cudnn_tokens
    px = torch.randn(n, rt.vision.encoder.in_features, device=CUDA)
    g = torch.tensor(grid, device=CUDA)
    ref, h16 = hf32(px, grid_thw=g), hf16(px.bfloat16(), grid_thw=g)
    assert "cudnn.sdpa.fwd.torch_op" in sys.modules  # the frontend started at capture (AttentionPolicy.warm_cudnn)
    before = rt.stats()["vision"]["eager_attention"].get("cudnn", 0)
    out = rt.encode([VisionRequest(px, torch.tensor(grid))])[0]
    assert rt.stats()["vision"]["eager_attention"].get("cudnn", 0) == before + 1
    report("runtime cudnn varlen 4 images 8216 patches embeds", ref.pooler_output, h16.pooler_output, out.embeds)
    for i, (a, b, c) in enumerate(zip(ref.deepstack_features, h16.deepstack_features, out.deepstack)):
        report(f"runtime cudnn varlen 4 images deepstack[{i}]", a, b, c)


@torch.inference_mode()
def test_big_graph_bucket_on_cudnn_varlen_matches_hf(vision_models):
    """A vision graph bucket of at least ``graph_cudnn_tokens`` is captured on cuDNN's varlen
    attention (padded segments and bound of a bucket) and its replays are as accurate against HF
    float32 as HF's own bf16, for two different mixes in a row (no stale data)."""
    from omnienc.encoders.attention import cudnn_available
    from omnienc.runtime import BucketGrid, EncoderRuntime, VisionRequest

    if not cudnn_available():
        pytest.skip("nvidia-cudnn-frontend is not installed (the cudnn extra)")
    hf32, hf16, native = vision_models
    grid = BucketGrid.from_dict({"vision": {"buckets": [{"patches": 9216, "batch": 6}]}})
    rt = EncoderRuntime(vision=native, grid=grid)
    rt.capture(progress=False)
    assert rt.stats()["vision"]["buckets"]["9216x6"]["attention"] == "cudnn"
    for name, mix in (("3 images", [[[1, 46, 80]], [[1, 40, 60]], [[1, 20, 34]]]),
                      ("a video and an image", [[[4, 28, 42]], [[1, 30, 40]]])):
        reqs = [VisionRequest(torch.randn(sum(t * h * w for t, h, w in g), native.in_features, device=CUDA),
                              torch.tensor(g)) for g in mix]
        outs = rt.encode(reqs)
        assert rt.stats()["vision"]["replays"] >= 1 and rt.stats()["vision"]["fallbacks"] == 0
        for r, g, o in zip(reqs, mix, outs):
            t = torch.tensor(g, device=CUDA)
            ref, h16 = hf32(r.pixel_values, grid_thw=t), hf16(r.pixel_values.bfloat16(), grid_thw=t)
            report(f"cudnn graph bucket 9216x6, {name}, {g} embeds", ref.pooler_output, h16.pooler_output, o.embeds)
            report(f"cudnn graph bucket 9216x6, {name}, {g} deepstack[0]", ref.deepstack_features[0],
                   h16.deepstack_features[0], o.deepstack[0])


@torch.inference_mode()
def test_capture_survives_a_dropped_runtime_collected_meanwhile(vision_models):
    """A runtime dropped but not yet collected (its lanes hold cycles) must not break the next
    runtime's capture: with the collector at its most eager, a collection during that capture
    would destroy the dropped runtime's graphs, which invalidates a capture. Captures hold the
    collector off (``cuda.graphs.no_collection``); the new runtime then replays correctly."""
    import gc

    from omnienc.runtime import BucketGrid, EncoderRuntime, VisionRequest

    _, _, native = vision_models
    grid = BucketGrid.from_dict({"vision": {"buckets": [{"patches": 784, "batch": 1}, {"patches": 1600, "batch": 4}]}})
    old = EncoderRuntime(vision=native, grid=grid)
    old.capture(progress=False)
    del old  # unreachable, not collected: the lanes' cycles wait for the collector
    thresholds = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        rt = EncoderRuntime(vision=native, grid=grid)
        rt.capture(progress=False)
    finally:
        gc.set_threshold(*thresholds)
    gc.collect()
    px = torch.randn(784, native.in_features, device=CUDA, dtype=torch.bfloat16)
    out = rt.encode([VisionRequest(px, torch.tensor([[1, 28, 28]]))])[0]
    ref, _ = native(px, torch.tensor([[1, 28, 28]]))
    assert rt.stats()["vision"]["replays"] == 1
    assert rel_err(out.embeds, ref) < 2e-2


def test_every_bucket_replays_to_the_eager_result(runtime, monkeypatch):
    """Two random mixes per bucket of the default grid (no stale data between them); no capture."""
    from omnienc.cuda import graphs
    from omnienc.runtime.verify import verify_buckets

    rt, _ = runtime

    def no_capture(*a, **k):
        raise AssertionError("capture inside encode")

    monkeypatch.setattr(graphs, "capture", no_capture)
    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin", no_capture)
    buckets = [br for lane in rt.lanes() for br in lane.buckets.values()]
    assert all((br.graph is None) == (not br.stats.graph) for br in buckets) and any(br.graph for br in buckets)
    checks = verify_buckets(rt, mixes=2)
    for c in checks:
        print(f"verify {c.modality} {c.bucket.size}x{c.bucket.batch}: {c.requests} requests, max rel err {c.max_rel_err:.2e}, min cos {c.min_cosine:.6f}")
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


@torch.inference_mode()
def test_encode_mixed_uses_graphs_and_reports_pool_memory(runtime):
    from omnienc.runtime import AudioRequest, VisionRequest

    rt, info = runtime
    assert info["graphs"] == rt.grid.num_graphs
    assert info["graph_memory_bytes"] > 0
    captures = rt.captures
    rt.reset_stats()
    rng = random.Random()
    reqs = []
    for _ in range(24):
        if rng.random() < 0.5:
            h, w = 2 * rng.randint(4, 30), 2 * rng.randint(4, 30)
            reqs.append(VisionRequest(torch.randn(h * w, 1536), torch.tensor([[1, h, w]])))
        else:
            T = rng.randint(50, 3000)
            reqs.append(AudioRequest(torch.randn(128, T), torch.tensor([T])))
    outs = rt.encode(reqs)
    check_outputs(rt.vision.encoder, rt.audio.encoder, reqs, outs)
    s = rt.stats()
    assert s["replays"] >= 1 and s["replays"] + s["eager_runs"] >= 2 and s["fallbacks"] == 0
    assert rt.captures == captures
    print(f"mixed 24: {s['replays']} replays, padding {s['padded_share']:.3f}")


@torch.inference_mode()
def test_live_captures_and_other_threads_random_ops(runtime):
    """Exact-layout graphs are captured while serving. torch registers the device's default CUDA
    generator with every capture and marks it capturing until the capture ends, so meanwhile a
    random op drawn from the default generator on another thread fails ("Offset increment outside
    graph capture"): a known hazard (README, Limitations), reproduced here. A thread drawing from its
    own ``torch.Generator`` keeps working, and the captured results equal the encoder's."""
    import threading

    from omnienc.runtime import VisionRequest

    rt, _ = runtime
    vis, aud = rt.vision.encoder, rt.audio.encoder

    def run(private: bool, sizes) -> tuple[int, list[str]]:
        rt.vision.exact.cache.reset_admission()  # every new layout may be captured
        before = rt.stats()["vision"]["exact_captures"]
        stop, errors, draws = threading.Event(), [], [0]

        def sampler():
            gen = torch.Generator(device=CUDA) if private else None
            while not stop.is_set():
                try:
                    torch.multinomial(torch.rand(64, 1000, device=CUDA, generator=gen), 1, generator=gen)
                    draws[0] += 1
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(f"{type(e).__name__}: {e}")
                    return

        t = threading.Thread(target=sampler, daemon=True)
        t.start()
        try:
            for h, w in sizes:
                for _ in range(3):  # captured at the second sighting, replayed at the third
                    gen = torch.Generator(device=CUDA)
                    px = torch.randn(h * w, vis.in_features, device=CUDA, generator=gen)
                    reqs = [VisionRequest(px, torch.tensor([[1, h, w]]))]
                    check_outputs(vis, aud, reqs, rt.encode(reqs))
        finally:
            stop.set()
            t.join(30)
        captures = rt.stats()["vision"]["exact_captures"] - before
        print(f"live captures ({'own' if private else 'default'} generator): {captures}, "
              f"sampler draws {draws[0]}, errors {errors[:1]}")
        assert captures == 6 and draws[0] > 0
        return draws[0], errors

    # Layouts new to this runtime in each run (a held graph would replay without a capture).
    assert run(True, ((22, 30), (24, 26), (30, 18), (26, 26), (20, 34), (32, 20)))[1] == []
    _, errors = run(False, ((22, 34), (24, 30), (30, 22), (26, 30), (20, 38), (32, 24)))
    assert all("Offset increment outside graph capture" in e for e in errors)  # the hazard, when hit


def test_exact_graphs_replay_repeated_layouts(runtime):
    """Layouts that come back -- one 448x448 image (a graph bucket), one 1280x736 image, eight
    448x448 images together and three 1280x736 images with a 128x128 one (eager buckets; the last
    captured on cuDNN varlen where it runs), one 10 s clip, eight 10 s clips -- are captured at their
    second sighting and replayed after: each call's results equal the encoder's own on its inputs
    (bf16 rounding apart: other attention kernels) and stay intact after later replays; launching a
    replayed layout, a bucket replay or an eager run never waits for the GPU."""
    from omnienc.runtime import AudioRequest, VisionRequest

    rt, _ = runtime
    vis, aud = rt.vision.encoder, rt.audio.encoder
    for lane in rt.lanes():  # earlier tests' sightings forgotten: each layout's first call is its first
        lane.exact.cache.reset_admission()

    def image(h, w):
        return VisionRequest(torch.randn(h * w, vis.in_features, device=CUDA), torch.tensor([[1, h, w]]))

    def clip(frames=1000):
        return AudioRequest(torch.randn(aud.config.num_mel_bins, frames, device=CUDA), torch.tensor([frames]))

    layouts = {"image448": lambda: [image(28, 28)], "image720p": lambda: [image(46, 80)],
               "images8x448": lambda: [image(28, 28) for _ in range(8)],
               # past graph_cudnn_tokens, a short segment keeping dense out: captured on cuDNN varlen
               "images3x720p_and_8x8": lambda: [image(46, 80) for _ in range(3)] + [image(8, 8)],
               "audio10s": lambda: [clip()],
               "audios8x10s": lambda: [clip() for _ in range(8)]}
    for name, make in layouts.items():
        before = rt.stats()
        kept = []
        for _ in range(4):
            reqs = make()
            outs = rt.encode(reqs)
            check_outputs(vis, aud, reqs, outs)
            kept.append(([o.embeds.clone() for o in outs], outs))
        after = rt.stats()
        lane = "audio" if name.startswith("audio") else "vision"
        captures = after[lane]["exact_captures"] - before[lane]["exact_captures"]
        exact = after["exact_replays"] - before["exact_replays"]
        print(f"exact {name}: {captures} capture, {exact} exact runs, attention {after[lane]['exact_attention']}")
        assert captures == 1 and exact == 3 and after[lane]["exact_failures"] == before[lane]["exact_failures"]
        for copies, outs in kept:
            assert all(torch.equal(c, o.embeds) for c, o in zip(copies, outs))
        if name == "images3x720p_and_8x8" and rt.vision.attention.candidates(11104) == ["cudnn"]:
            assert after[lane]["exact_attention"].get("cudnn", 0) == before[lane]["exact_attention"].get("cudnn", 0) + 1

    def no_sync(reqs, what):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            batch = rt.launch(reqs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert len(batch.result()) == len(reqs), what

    no_sync(layouts["image448"](), "exact replay")
    no_sync([image(20, 30)], "bucket replay")
    no_sync(layouts["image720p"]() + [image(46, 78)], "eager run")


@torch.inference_mode()
def test_gpu_overload_soak_20000_requests_through_the_service(runtime):
    """16 threads push 20,000 mixed requests at a service of max_pending 256: clients that get
    ServiceBusy back off and retry, no future is lost, a sample (every 250th) matches eager encoding,
    host and GPU memory stay flat after warm-up, timing records stay bounded, nothing is captured."""
    import os
    import threading
    import time

    from omnienc.cuda import graphs
    from omnienc.runtime import AudioRequest, EncoderService, ServiceBusy, VisionRequest

    rt, _ = runtime
    rng = random.Random()
    captures = rt.captures
    real_capture = graphs.capture
    graphs.capture = lambda *a, **k: (_ for _ in ()).throw(AssertionError("capture during soak"))

    def make(i):
        r = random.Random(rng.random() + i)
        # each client draws from its own generator: exact graphs are captured live meanwhile, and a
        # capture marks the default generator capturing (test_live_captures_and_other_threads_random_ops)
        gen = torch.Generator(device=CUDA)
        gen.manual_seed(r.randrange(2**31))
        if r.random() < 0.5:
            t = 1 if r.random() < 0.9 else 2 * r.randint(1, 4)
            h, w = 2 * r.randint(4, 28), 2 * r.randint(4, 28)
            return VisionRequest(torch.randn(t * h * w, 1536, device=CUDA, generator=gen), torch.tensor([[t, h, w]]))
        lens = [r.randint(20, 3000) for _ in range(1 if r.random() < 0.8 else 2)]
        return AudioRequest(torch.randn(128, sum(lens), device=CUDA, generator=gen), torch.tensor(lens))

    def rss() -> int:  # resident bytes now
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def kept(sample) -> int:  # bytes of the test's own sample (requests and outputs kept on the host)
        values = [v for pair in sample for x in pair for v in vars(x).values()]
        tensors = [t for v in values for t in (v if isinstance(v, (list, tuple)) else [v])]
        return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))

    total, threads, warm = 20_000, 16, 2_000
    sample: list = []
    lock = threading.Lock()
    mem: dict[str, int] = {}
    busy = [0]
    done = [0]
    try:
        t0 = time.perf_counter()
        with EncoderService(rt, max_wait_ms=2, max_batch=32, max_pending=256) as svc:
            def worker(k):
                pending = []
                for i in range(k, total, threads):
                    q = make(i)
                    while True:
                        try:
                            pending.append((i, q, svc.submit(q, timeout=0.05)))
                            break
                        except ServiceBusy:
                            with lock:
                                busy[0] += 1
                            while pending:  # back off: collect what is done
                                j, pq, f = pending.pop(0)
                                out = f.result(timeout=300)
                                if j % 250 == 0:  # kept on the host so the sample does not count as GPU growth
                                    with lock:
                                        sample.append((_to(pq, "cpu"), _to(out, "cpu")))
                                with lock:
                                    done[0] += 1
                    with lock:
                        if done[0] >= warm and "warm" not in mem:
                            torch.cuda.synchronize()
                            mem["warm"] = torch.cuda.memory_allocated()
                            mem["warm_rss"] = rss() - kept(sample)
                        if done[0] >= (total + warm) // 2 and "mid_rss" not in mem:
                            mem["mid_rss"] = rss() - kept(sample)
                for j, pq, f in pending:
                    out = f.result(timeout=300)
                    if j % 250 == 0:
                        with lock:
                            sample.append((_to(pq, "cpu"), _to(out, "cpu")))
                    with lock:
                        done[0] += 1
            ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            left_outstanding = svc.stats()["outstanding"]
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        mem["end"] = torch.cuda.memory_allocated()
        mem["end_rss"] = rss() - kept(sample)
        mem["sample"] = kept(sample)
    finally:
        graphs.capture = real_capture
    s = rt.stats()
    growth = mem["end"] - mem.get("warm", mem["end"])
    line = (f"soak: {total} requests from {threads} threads in {elapsed:.1f} s ({total / elapsed:.0f} req/s), "
            f"{busy[0]} ServiceBusy retries, {s['replays']} replays, {s['eager_runs']} eager runs, "
            f"{s['fallbacks']} fallbacks, padding {s['padded_share']:.3f}; GPU memory allocated after warm-up "
            f"{mem.get('warm', 0) / 2**20:.0f} MiB, at end {mem['end'] / 2**20:.0f} MiB; host RSS less the "
            f"{mem['sample'] / 2**20:.0f} MiB sample kept "
            f"{mem.get('warm_rss', 0) / 2**20:.0f} -> {mem.get('mid_rss', 0) / 2**20:.0f} (half way) -> "
            f"{mem['end_rss'] / 2**20:.0f} MiB; captures {rt.captures - captures}; "
            f"pending timings {max(len(lane.timings) for lane in rt.lanes())}")
    FIGURES.append(line)
    print(line)
    assert done[0] == total and left_outstanding == 0
    assert busy[0] > 0  # the clients did meet backpressure
    assert rt.captures == captures
    assert s["requests"] >= total
    assert growth < 256 * 2**20, line
    # Host memory (less the sample) levels off: caches that fill once (plans, cuDNN's graphs of
    # admitted dense shapes, allocator arenas) fill early; the second half adds little.
    assert mem["end_rss"] - mem.get("mid_rss", mem["end_rss"]) < 128 * 2**20, line
    assert mem["end_rss"] - mem.get("warm_rss", mem["end_rss"]) < 384 * 2**20, line
    assert all(len(lane.timings) <= rt.config.timings_pending for lane in rt.lanes())
    check_outputs(rt.vision.encoder, rt.audio.encoder, [q for q, _ in sample], [_to(o, CUDA) for _, o in sample])


def _to(x, device):
    """A copy of a request or output dataclass with its tensors on ``device``."""
    import dataclasses

    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if isinstance(v, (list, tuple)):
            return type(v)(move(u) for u in v)
        return v

    return dataclasses.replace(x, **{f.name: move(getattr(x, f.name)) for f in dataclasses.fields(x)})


def test_print_figures():
    """Summary of the parity figures (for the closing note)."""
    print("\nSUMMARY\n" + "\n".join(FIGURES))
    if REPLAY_ERR:
        print(f"replay vs eager: {len(REPLAY_ERR)} outputs, max rel err {max(REPLAY_ERR):.3e}")
