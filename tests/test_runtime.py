"""The runtime's eager path (the same plan/buffer code the graphs replay) on the CPU."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import hf_and_native_audio, hf_and_native_vision, random_pixels, rel_err

from omnienc.runtime import (
    AudioOutput, AudioRequest, BucketGrid, EncoderRuntime, RuntimeConfig, VisionOutput, VisionRequest,
)

TOL = 1e-5
GRID = BucketGrid.from_dict(
    {
        "dtype": "float32",
        "vision": {"patches": [64, 256], "batch": [1, 4]},
        "audio": {"frames": [200, 800], "batch": [1, 4]},
    }
)


# Room for a single frame larger than every bucket to run eagerly, as these tests' requests do (the
# bound itself is tested in tests/test_split_runtime.py).
ROOMY = RuntimeConfig(max_transient_bytes=2**34)


@pytest.fixture(scope="module")
def encoders():
    _, vis = hf_and_native_vision()
    _, aud = hf_and_native_audio()
    return vis, aud


@pytest.fixture()
def runtime(encoders):
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=ROOMY)
    rt.capture(progress=False)
    return rt


def vision_request(grid, cfg) -> VisionRequest:
    return VisionRequest(random_pixels(grid, cfg), torch.tensor(grid))


def audio_request(lens, cfg) -> AudioRequest:
    return AudioRequest(torch.randn(cfg.num_mel_bins, sum(lens)), torch.tensor(lens))


def random_mix(vcfg, acfg, n, rng):
    """Requests that each fit some bucket of GRID (<= 256 patches / 4 frames, <= 800 frames / 4 audios)."""
    reqs = []
    for _ in range(n):
        if rng.random() < 0.5:
            items = [[rng.choice([1, 1, 2]), 2 * rng.randint(1, 4), 2 * rng.randint(1, 4)] for _ in range(rng.randint(1, 2))]
            reqs.append(vision_request(items, vcfg))
        else:
            reqs.append(audio_request([rng.randint(1, 300) for _ in range(rng.randint(1, 2))], acfg))
    return reqs


def check_against_direct(encoders, reqs, outs):
    vis, aud = encoders
    assert len(outs) == len(reqs)
    for r, o in zip(reqs, outs):
        if isinstance(r, VisionRequest):
            assert isinstance(o, VisionOutput)
            ref, ref_ds = vis(r.pixel_values, r.grid_thw)
            assert o.embeds.shape == ref.shape
            assert rel_err(o.embeds, ref) <= TOL
            assert len(o.deepstack) == len(ref_ds)
            assert all(rel_err(a, b) <= TOL for a, b in zip(o.deepstack, ref_ds))
        else:
            assert isinstance(o, AudioOutput)
            ref = aud(r.input_features, r.feature_lens)
            assert o.embeds.shape == ref.shape
            assert rel_err(o.embeds, ref) <= TOL


@torch.no_grad()
def test_mixed_packed_batch_matches_encoders_alone(encoders, runtime):
    rng = random.Random()
    vis, aud = encoders
    reqs = random_mix(vis.config, aud.config, 12, rng)
    big_v = vision_request([[1, 20, 16]], vis.config)  # one frame of 320 patches > 256: eager, alone
    big_a = audio_request([900], aud.config)  # 900 frames > 800: cut at a window into 800 + 100
    many = vision_request([[1, 2, 2]] * 5, vis.config)  # 5 segments > batch 4: cut into 4 + 1 frames
    reqs[3:3] = [big_v]
    reqs[7:7] = [big_a, many]
    outs = runtime.encode(reqs)
    check_against_direct(encoders, reqs, outs)
    s = runtime.stats()
    assert s["fallbacks"] == 1 and s["vision"]["fallbacks"] == 1 and s["audio"]["fallbacks"] == 0
    assert s["replays"] >= 2
    assert s["requests"] == len(reqs)
    assert 0.0 <= s["padded_share"] < 1.0
    runs = sum(b["runs"] for m in ("vision", "audio") for b in s[m]["buckets"].values())
    assert runs == s["replays"] + s["eager_runs"]


@torch.no_grad()
def test_two_mixes_through_the_same_bucket_give_their_own_results(encoders, runtime):
    """No stale data: the second replay of a bucket is not contaminated by the first."""
    vis, aud = encoders
    first = [vision_request([[1, 8, 8]], vis.config), audio_request([700], aud.config)]
    second = [vision_request([[1, 4, 4]], vis.config), audio_request([150], aud.config)]
    check_against_direct(encoders, first, runtime.encode(first))
    check_against_direct(encoders, second, runtime.encode(second))


@torch.no_grad()
def test_plan_cache_reuses_plans_and_stays_bounded(encoders, runtime):
    """Repeated shapes reuse the cached host plan (same object) with fresh inputs giving their own
    results; interleaved other shapes in the same bucket do not leak; the cache never grows past
    its bound."""
    vis, aud = encoders
    buckets = runtime.vision.buckets
    shape_a, shape_b = [[1, 8, 8]], [[1, 6, 10]]
    reqs = [vision_request(shape_a, vis.config), vision_request(shape_b, vis.config), vision_request(shape_a, vis.config)]
    for r in reqs:
        check_against_direct(encoders, [r], runtime.encode([r]))
    shapes = runtime.validate(reqs[:1])
    br = buckets[runtime.vision.sizes(shapes[0]).bucket]
    held = buckets.plans_cached
    assert held == sum(br.stats.graph for br in buckets.values()) + 2  # capture's empty plans, one per shape
    cached = buckets.host_plan(br, shapes)
    assert buckets.plans_cached == held  # the encode's plan: a hit
    runtime.encode([vision_request(shape_a, vis.config)])
    assert buckets.host_plan(br, shapes) is cached
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=RuntimeConfig(plan_cache_size=3))
    rt.capture(progress=False)
    for T in range(110, 400, 37):
        r = audio_request([T], aud.config)
        check_against_direct(encoders, [r], rt.encode([r]))
    assert rt.audio.buckets.plans_cached == 3


def test_stats_reset_and_empty(runtime, encoders):
    vis, _ = encoders
    assert runtime.encode([]) == []
    runtime.encode([vision_request([[1, 4, 4]], vis.config)])
    assert runtime.stats()["replays"] == 1
    runtime.reset_stats()
    s = runtime.stats()
    assert s["replays"] == 0 and s["fallbacks"] == 0
    assert all(b["runs"] == 0 for b in s["vision"]["buckets"].values())


def test_modality_left_out_of_grid_runs_eagerly(encoders):
    vis, aud = encoders
    grid = BucketGrid.from_dict({"dtype": "float32", "vision": {"patches": [256], "batch": [4]}})
    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid)
    rt.capture(progress=False)
    reqs = [audio_request([120], aud.config), vision_request([[1, 4, 4]], vis.config)]
    check_against_direct(encoders, reqs, rt.encode(reqs))
    s = rt.stats()
    assert s["audio"]["fallbacks"] == 1 and s["vision"]["replays"] == 1


def test_trace_recording(encoders, tmp_path):
    from omnienc.runtime import read_trace

    vis, aud = encoders
    path = tmp_path / "t.jsonl"
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, trace_path=path)
    rt.encode([vision_request([[1, 4, 6], [2, 2, 2]], vis.config), audio_request([130, 7], aud.config)])
    rt.close()
    recs = read_trace(path)
    assert [r.modality for r in recs] == ["vision", "audio"]
    assert recs[0].grid_thw == ((1, 4, 6), (2, 2, 2))
    assert recs[1].frames == (130, 7)


def test_service_many_threads_each_get_their_own_result(encoders):
    """16 threads x 50 mixed requests through one service: every future gets its request's result."""
    from concurrent.futures import ThreadPoolExecutor

    from omnienc.runtime import EncoderService

    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID)
    rt.capture(progress=False)
    rng = random.Random()
    per_thread = [random_mix(vis.config, aud.config, 50, rng) for _ in range(16)]
    with EncoderService(rt, max_wait_ms=2) as svc:
        def worker(reqs):
            futures = [svc.submit(r) for r in reqs]
            return [f.result(timeout=120) for f in futures]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(worker, per_thread))
        assert svc.batches < 16 * 50  # requests of several users shared runtime calls
    for reqs, outs in zip(per_thread, results):
        check_against_direct(encoders, reqs, outs)
    assert rt.stats()["requests"] == 16 * 50


def test_verify_buckets_on_cpu(runtime):
    """The capture --verify check, fp32: every bucket's path equals the eager forward per request."""
    from omnienc.runtime.verify import verify_buckets

    checks = verify_buckets(runtime, mixes=2, max_rel_err=TOL, min_cosine=1 - 1e-9)
    assert {(c.modality, c.bucket) for c in checks} == {(lane.modality, b) for lane in runtime.lanes() for b in lane.buckets}
    assert all(c.ok and c.requests >= 2 for c in checks), checks


def test_verify_buckets_catches_a_broken_bucket(runtime, monkeypatch):
    """A replay that reads the wrong rows must be reported, not passed."""
    from omnienc.runtime.verify import verify_buckets

    buckets = runtime.vision.buckets
    real_replay = buckets.replay
    monkeypatch.setattr(buckets, "replay", lambda *a: tuple(o.roll(1, 0) for o in real_replay(*a)))
    checks = verify_buckets(runtime, mixes=1, max_rel_err=TOL)
    assert any(not c.ok for c in checks if c.modality == "vision")
    assert all(c.ok for c in checks if c.modality == "audio")


EAGER_GRID = BucketGrid.from_dict(
    {
        "dtype": "float32",
        "vision": {"patches": [64, 256], "batch": [1, 4], "graphs_up_to": 64},
        "audio": {"frames": [200, 800], "batch": [1, 4], "graphs_up_to": 200},
    }
)


@pytest.mark.parametrize("grid", [GRID, EAGER_GRID], ids=["all_graphs", "graphs_up_to"])
@torch.no_grad()
def test_simulator_agrees_with_the_runtime(encoders, grid, tmp_path):
    """The runtime records a trace of one mixed call; the simulator (`omnienc simulate`), packing that trace
    in one window, predicts the runtime's per-bucket hits, padding and eager fallbacks exactly."""
    from omnienc.runtime.simulator import simulate
    from omnienc.runtime.trace import read_trace

    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid, config=ROOMY, trace_path=tmp_path / "t.jsonl")
    rt.capture(progress=False)
    rng = random.Random()
    reqs = random_mix(vis.config, aud.config, 16, rng) + [vision_request([[1, 20, 16]], vis.config),
                                                         audio_request([900], aud.config)]
    rng.shuffle(reqs)
    check_against_direct(encoders, reqs, rt.encode(reqs))
    got = rt.stats()
    sim = simulate(read_trace(tmp_path / "t.jsonl"), grid, step_ms=1e9)
    for m in ("vision", "audio"):
        assert got[m]["fallbacks"] == sim[m].fallbacks
        for s in sim[m].buckets:
            b = got[m]["buckets"][f"{s.bucket.size}x{s.bucket.batch}"]
            assert b["runs"] == s.runs and b["graph"] == s.graph
            assert b["padded_share"] == pytest.approx(s.padded_share)
    assert got["replays"] + got["eager_runs"] + got["fallbacks"] == sim.runs


@torch.no_grad()
def test_simulator_runs_what_the_runtime_runs(encoders, monkeypatch):
    """A trace replayed batch by batch through a runtime with exact-layout graphs (captures stood in on
    the CPU) and through the simulator with the same configuration: the same runs per bucket and per
    kind (replays, exact replays, exact captures, eager runs, merged calls; requests larger than every
    bucket as their pieces), the same padding, the same exact-graph captures, replays, refusals and
    evictions (one GraphCache rule), and as many frame shapes laid out.
    The runtime times every kind, and its kinds' times add up to its buckets' and modalities'."""
    from omnienc.cuda import graphs as cuda_graphs
    from omnienc.encoders.vision import forget_frame_layouts, frame_layouts_made
    from omnienc.runtime.batching import BatchPolicy
    from omnienc.runtime.costs import CostModel
    from omnienc.runtime.simulator import compare, group_records, simulate
    from omnienc.runtime.trace import TraceRecord

    vis, aud = encoders
    monkeypatch.setattr(cuda_graphs, "capture_live", lambda fn, pool=None: (g := FakeGraph(fn), g.outputs))
    config = RuntimeConfig(exact_graphs=True, exact_max_graphs=2, exact_credit=2, exact_refill=3,
                           max_transient_bytes=2**40)  # merged calls bounded by eager_merge alone
    rt = EncoderRuntime(vision=vis, audio=aud, grid=EAGER_GRID, config=config)
    rt.capture(progress=False)
    pools = {  # EAGER_GRID: graph buckets up to 64 patches / 200 frames, eager up to 256 / 800; then requests
        # larger than every bucket, cut into pieces of whole frames
        "vision": ([[(1, 4, 6)], [(1, 6, 6)], [(2, 2, 4)], [(1, 2, 8)]], [[(1, 12, 12)], [(1, 10, 12)], [(1, 8, 16)]],
                   [[(2, 12, 12)], [(3, 10, 10)]]),
        "audio": ([[150], [90], [60, 40]], [[420], [650], [300, 200]], [[700], [300, 300]]),
    }
    rng = random.Random()
    batches = []
    for k in range(14):
        if k % 3 == 0:  # one layout again and again: sighted, captured (while credit lasts), replayed
            m = rng.choice(["vision", "audio"])
            shape = rng.choice(pools[m][1] + pools[m][0])
            batches += [[(m, shape)]] * rng.randint(2, 4)
        else:  # a mix: graph and eager packs, merged eager calls, fallbacks
            batches.append([(m, rng.choice(rng.choice(pools[m][:2] if rng.random() < 0.85 else pools[m])))
                            for m in rng.choices(["vision", "audio"], k=rng.randint(3, 6))])
    records = [TraceRecord(k + 1e-4 * j, m, **{"grid_thw" if m == "vision" else "frames": shape})
               for k, batch in enumerate(batches) for j, (m, shape) in enumerate(batch)]
    groups = group_records(records, BatchPolicy())
    assert [len(g) for g in groups] == [len(b) for b in batches]
    forget_frame_layouts()  # as the simulator starts: no frame shape laid out
    for g in groups:
        reqs = [vision_request([list(x) for x in records[i].grid_thw], vis.config) if records[i].modality == "vision"
                else audio_request(list(records[i].frames), aud.config) for i in g]
        check_against_direct(encoders, reqs, rt.encode(reqs))
    got = rt.stats()
    sim = simulate(records, EAGER_GRID, BatchPolicy(), CostModel.load(), config=config)
    assert sim.counts["vision"]["new_frame_shapes"] == frame_layouts_made() > 0
    cmp = compare(sim, got)
    for m in ("vision", "audio"):
        c = cmp["modalities"][m]
        assert {k: v["predicted"]["runs"] for k, v in c["kinds"].items()} == {
            k: v["measured"]["runs"] for k, v in c["kinds"].items()}, m
        assert all(b["predicted"]["runs"] == b["measured"]["runs"] for b in c["buckets"].values()), m
        assert c["merged_calls"]["predicted"] == c["merged_calls"]["measured"]
        assert all(v["predicted"] == v["measured"] for v in c["exact"].values()), (m, c["exact"])
        assert sim[m].padded_units == got[m]["padded_units"]
        kinds = got[m]["kinds"]
        assert sum(k["ms"] for k in kinds.values()) == pytest.approx(got[m]["ms"])
        assert all(k["ms"] > 0 for k in kinds.values() if k["runs"])
        for b in got[m]["buckets"].values():
            assert sum(k["ms"] for k in b["kinds"].values()) == pytest.approx(b["ms"])
    ran = {k for m in ("vision", "audio") for k, v in got[m]["kinds"].items() if v["runs"]}
    assert {"replay", "exact_replay", "exact_capture", "eager"} <= ran  # the trace exercised the rules
    assert got["vision"]["exact_captures"] + got["audio"]["exact_captures"] >= 1


@torch.no_grad()
def test_eager_buckets_run_unpadded_and_split_on_oom(encoders, monkeypatch):
    """Buckets above graphs_up_to get no graph and no buffers; their packs run as one eager call
    (no padding) with each request's own result; an out-of-memory there retries request by request."""
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=EAGER_GRID)
    rt.capture(progress=False)
    lane = rt.vision
    assert all(not br.stats.graph and br.inputs is None for b, br in lane.buckets.items() if b.size > 64)
    assert lane.buckets.inputs.shape[0] == 64  # static buffers sized by the graph buckets only
    reqs = [vision_request([[1, 8, 8]], vis.config), vision_request([[2, 4, 6]], vis.config)]  # 64 + 48 patches
    check_against_direct(encoders, reqs, rt.encode(reqs))
    s = rt.stats()["vision"]["buckets"]["256x4"]
    assert s["runs"] == 1 and not s["graph"] and s["padded_share"] == 0.0 and not s["captured"]
    from omnienc.runtime.verify import verify_buckets

    checks = verify_buckets(rt, mixes=1, max_rel_err=TOL, min_cosine=1 - 1e-9)
    assert len(checks) == 8 and all(c.ok for c in checks), checks

    calls = []
    real = type(lane.eager).run

    def flaky(self, reqs, shapes):
        items = [g for s in shapes for g in s]
        calls.append(len(items))
        if len(items) > 1:  # the merged call of both requests (two items)
            raise torch.OutOfMemoryError("injected")
        return real(self, reqs, shapes)

    monkeypatch.setattr(type(lane.eager), "run", flaky)
    check_against_direct(encoders, reqs, rt.encode(reqs))
    assert calls == [2, 1, 1]


@torch.no_grad()
def test_eager_packs_of_a_launch_share_one_call(encoders, monkeypatch):
    """A launch's packs on eager buckets run as one eager call (each pack still a run of its bucket,
    each request its own result); out of memory there, pack by pack; with exact graphs, a layout
    due for capture (or held) runs alone and replays after."""
    from omnienc.cuda import graphs as cuda_graphs

    vis, aud = encoders
    monkeypatch.setattr(cuda_graphs, "capture_live", lambda fn, pool=None: (g := FakeGraph(fn), g.outputs))
    rt = EncoderRuntime(vision=vis, audio=aud, grid=EAGER_GRID, config=ROOMY, exact_graphs=True)
    rt.capture(progress=False)
    lane = rt.vision
    calls = []
    real = type(lane.eager).run

    def counted(self, reqs, shapes):
        calls.append(len(reqs))
        return real(self, reqs, shapes)

    monkeypatch.setattr(type(lane.eager), "run", counted)

    def mix():  # two eager packs of 240 and 224 patches (each alone in a 256 bucket), one of 48 (a graph bucket)
        return [vision_request([[1, 12, 20]], vis.config), vision_request([[1, 16, 14]], vis.config),
                vision_request([[1, 6, 8]], vis.config)]

    lone = [vision_request([[1, 14, 18]], vis.config), vision_request([[1, 4, 8]], vis.config)]  # one eager pack
    check_against_direct(encoders, lone, rt.encode(lone))
    s = rt.stats()["vision"]  # its first sighting, counted once: no capture yet
    assert calls == [1] and s["exact_captures"] == 0 and s["eager_merges"] == 0
    calls.clear()
    rt.reset_stats()
    reqs = mix()
    check_against_direct(encoders, reqs, rt.encode(reqs))
    s = rt.stats()["vision"]
    assert calls == [2] and s["eager_merges"] == 1 and s["eager_runs"] == 2 and s["replays"] == 1
    assert sum(b["units"] for b in s["buckets"].values() if not b["graph"]) == 464

    calls.clear()  # second sighting: each layout is due for its exact graph, so runs alone (captured)
    reqs = mix()
    check_against_direct(encoders, reqs, rt.encode(reqs))
    s = rt.stats()["vision"]
    assert s["eager_merges"] == 1 and s["exact_captures"] == 3 and calls == []
    reqs = mix()
    check_against_direct(encoders, reqs, rt.encode(reqs))
    assert rt.stats()["vision"]["exact_graph_replays"] == 3

    rt.exact_graphs = False  # no exact graphs: merged again; out of memory there, pack by pack
    calls.clear()
    fail = [True]

    def flaky(self, reqs, shapes):
        calls.append(len(reqs))
        if len(reqs) > 1 and fail.pop() if fail else False:
            raise torch.OutOfMemoryError("injected")
        return real(self, reqs, shapes)

    monkeypatch.setattr(type(lane.eager), "run", flaky)
    reqs = mix()
    check_against_direct(encoders, reqs, rt.encode(reqs))
    assert calls == [2, 1, 1] and rt.stats()["vision"]["eager_merges"] == 1
    bad = mix()  # a NaN in one merged request (past validation, as CUDA inputs are): it fails alone
    shapes = rt.validate(bad)
    bad[1].pixel_values[7, 3] = float("nan")
    calls.clear()
    out = rt.launch(bad, shapes).results()
    assert calls == [2] and isinstance(out[1], ValueError) and "request 1" in str(out[1])
    check_against_direct(encoders, [bad[0], bad[2]], [out[0], out[2]])
    rt.exact_graphs = True  # out of memory with exact graphs: each layout sighted once, by its own run
    new = [vision_request([[1, 12, 18]], vis.config), vision_request([[1, 14, 16]], vis.config)]
    fail.append(True)
    check_against_direct(encoders, new, rt.encode(new))
    assert [lane.exact.cache.sightings((s,)) for s in ((1, 12, 18), (1, 14, 16))] == [1, 1]
    rt = EncoderRuntime(vision=vis, audio=aud, grid=EAGER_GRID, config=ROOMY, exact_graphs=False, eager_merge=0)  # each pack alone
    calls.clear()
    reqs = mix()
    check_against_direct(encoders, reqs, rt.encode(reqs))
    assert calls == [1, 1]


def test_ab_variants_are_real_parameters(encoders):
    """Every `omnienc ab` variant builds from constructor and grid parameters (no patches), and the
    encoder views it makes share the weights and give the same results on the CPU."""
    import dataclasses

    from omnienc.tools.ab import VARIANTS

    vis, aud = encoders
    req = vision_request([[1, 4, 6]], vis.config)
    ref = vis(req.pixel_values, req.grid_thw)[0]
    from omnienc.encoders.ops import triton_available

    for name, v in VARIANTS.items():
        if v.compiled:
            continue  # compile_blocks has its own test (test_encoders)
        if "triton" in (*v.vision.get("fusion", ()), *v.audio.get("fusion", ())) and not triton_available():
            continue  # Triton kernels: CUDA, or its CPU interpreter where triton is installed (test_ops)
        v_vis, v_aud = vis.with_options(**v.vision), aud.with_options(**v.audio)
        assert v_vis.patch_embed is vis.patch_embed and v_aud.layers is aud.layers, name
        if v.direct:
            assert rel_err(v_vis(req.pixel_values, req.grid_thw)[0], ref) <= TOL, name
            continue
        grid = GRID
        if v.every_bucket:
            grid = dataclasses.replace(EAGER_GRID, vision=dataclasses.replace(EAGER_GRID.vision, graphs_up_to=None))
        if v.runtime.get("attention") in ("varlen", "cudnn"):  # CUDA kernels: refused clearly here
            with pytest.raises(ValueError, match="needs CUDA|unavailable"):
                EncoderRuntime(vision=v_vis, audio=v_aud, grid=grid, **v.runtime)
            continue
        rt = EncoderRuntime(vision=v_vis, audio=v_aud, grid=grid, **v.runtime)
        assert rel_err(rt.encode([req])[0].embeds, ref) <= TOL, name
    with pytest.raises(ValueError, match="unknown VisionEncoder option"):
        vis.with_options(fused=True)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="eager_merge"):
            EncoderRuntime(vision=vis, audio=aud, grid=GRID, eager_merge=bad)
        with pytest.raises(ValueError, match="eager_cudnn_tokens"):
            EncoderRuntime(vision=vis, audio=aud, grid=GRID, eager_cudnn_tokens=bad)
    assert EncoderRuntime(vision=vis, audio=aud, grid=GRID, eager_cudnn_tokens=0).vision.attention.cudnn_tokens == 0


def test_attention_is_chosen_per_bucket_by_measurement(encoders, monkeypatch):
    """Capture times every candidate backend on a typical fill of each graph bucket and keeps the
    fastest; stats show the choice and the timings; eager runs use the choice of the largest graph
    asked for. (CPU stand-ins for the CUDA graph and the CUDA-event timer.)"""
    from omnienc.cuda import graphs as cuda_graphs
    from omnienc.encoders import attention
    from omnienc.runtime import buckets as buckets_mod

    class FakeGraph:
        def __init__(self, fn):
            self.fn = fn

        def replay(self):
            return self.fn()

        def pool(self):
            return "pool"

    def fake_capture(fn, pool=None, warmup=2):
        outputs = fn()
        return FakeGraph(fn), outputs

    def fake_fastest(run, backends, repeats=20):
        ms = iter([{"auto": 2.0, "sdpa": 1.0}[b] for b in backends])  # the timer sees them in order

        def timer(fn, repeats):
            fn()
            return next(ms)
        return attention.fastest_backend(run, backends, repeats, timer=timer)

    monkeypatch.setattr(cuda_graphs, "capture", fake_capture)
    monkeypatch.setattr(buckets_mod, "fastest_backend", fake_fastest)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID)
    lane = rt.vision
    assert lane.attention.candidates() == ["sdpa"]  # measuring is asked for with attention="fastest"
    pool = None
    for b, br in lane.buckets.items():
        pool = lane.buckets.capture_bucket(br, ["auto", "sdpa"], pool)
        assert br.attention == "sdpa" and br.attention_ms == {"auto": 2.0, "sdpa": 1.0}
        assert isinstance(br.graph, FakeGraph)
    s = rt.stats()["vision"]["buckets"]
    assert all(v["attention"] == "sdpa" and v["attention_ms"]["sdpa"] == 1.0 for v in s.values())
    for br in lane.buckets.values():  # the CPU runs the bucket code eagerly, with the chosen backend
        br.graph = None
    req = vision_request([[1, 6, 8]], vis.config)
    check_against_direct(encoders, [req], rt.encode([req]))


def test_big_vision_graph_buckets_capture_on_cudnn_where_it_runs(encoders, monkeypatch):
    """Under attention=auto a vision graph bucket of at least graph_cudnn_tokens is captured on
    cuDNN varlen where the extra runs the tensors (faked here: the CPU has no cuDNN), smaller ones
    and audio buckets on the captured backend, and so is an exact-layout graph of as many tokens; 0
    turns it off, and so does a backend asked for."""
    from omnienc.runtime import attention_policy

    monkeypatch.setattr(attention_policy, "cudnn_supported", lambda *a: True)
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=RuntimeConfig(graph_cudnn_tokens=256))
    own = rt.vision.attention.captured()
    assert [rt.vision.attention.candidates(n) for n in (64, 255, 256, 4096)] == [[own], [own], ["cudnn"], ["cudnn"]]
    assert rt.audio.attention.candidates(800) == [rt.audio.attention.captured()]  # short windows: no cuDNN
    # an exact-layout graph takes what a bucket of its tokens would (dense is off by default)
    assert [rt.vision.attention.exact([n // 2] * 2) for n in (254, 256, 4096)] == [own, "cudnn", "cudnn"]
    assert rt.audio.attention.exact([100] * 8) == rt.audio.attention.captured()
    # capture asks per bucket (the CPU runs each bucket once, on its first candidate)
    rt.vision.buckets.capture(lambda b: ["sdpa"] if b.size >= 256 else [own], use_graphs=False)
    assert {b.size: br.attention for b, br in rt.vision.buckets.items()} == {64: own, 256: "sdpa"}
    req = vision_request([[1, 10, 12]], vis.config)  # 120 patches: the 256-patch bucket, on its backend
    check_against_direct(encoders, [req], rt.encode([req]))
    assert rt.stats()["vision"]["buckets"]["256x1"]["runs"] == 1
    for config in (RuntimeConfig(graph_cudnn_tokens=0), RuntimeConfig(graph_cudnn_tokens=256, attention="sdpa")):
        lane = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=config).vision
        assert lane.attention.candidates(4096) == [lane.attention.captured()]
        assert lane.attention.exact([2048] * 2) == lane.attention.captured()
    with pytest.raises(ValueError, match="graph_cudnn_tokens"):
        RuntimeConfig(graph_cudnn_tokens=-1)


def test_a_grid_that_cannot_fit_is_refused_before_allocation(encoders, monkeypatch):
    """Static buffers and graph activations of the largest graph buckets are checked against the
    device's free memory before anything is allocated; the message gives the figures."""
    import os

    vis, aud = encoders
    grid = BucketGrid.from_dict({"dtype": "float32", "vision": {"patches": [65536], "batch": [4]}})
    free = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}  # pretend 4 MB are free
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: free.get(name) or real(name))
    with pytest.raises(ValueError, match=r"need about [0-9.]+ GiB .* more than the 0.00 GiB free on cpu"):
        EncoderRuntime(vision=vis, audio=aud, grid=grid)
    monkeypatch.setattr(os, "sysconf", real)
    EncoderRuntime(vision=vis, audio=aud, grid=grid)  # fits the real machine


def test_uncaptured_runs_take_dense_attention_where_the_layout_suits_it(encoders, monkeypatch):
    """``eager_attention="auto"``: long equal-length segments (one big image, a video's frames) run
    ``dense`` where it is supported; anything else keeps the lane's backend. The eager path with
    ``dense`` (torch's default SDPA on the CPU) gives the direct encoder's outputs."""
    from omnienc.runtime import attention_policy as policy_mod

    vis, aud = encoders
    monkeypatch.setattr(policy_mod, "dense_supported", lambda *a: True)
    off = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=ROOMY).vision.attention
    assert {off.uncaptured((3520,)) for _ in range(20)} == {"sdpa"} and off.dense_shapes() == 0  # default: never
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=ROOMY.replace(dense_after=8))
    policy = rt.vision.attention
    monkeypatch.setattr(policy_mod, "dense_supported", lambda *a: False)
    assert policy.uncaptured((3520,)) == "sdpa"  # the CPU: no cuDNN attention
    monkeypatch.setattr(policy_mod, "dense_supported", lambda *a: True)
    # A shape runs dense from its dense_after-th sighting (cuDNN builds a graph per shape) ...
    n = rt.config.dense_after
    assert [policy.uncaptured((3520,)) for _ in range(n + 1)] == ["sdpa"] * (n - 1) + ["dense"] * 2
    assert [policy.uncaptured((784,) * 8) for _ in range(n)] == ["sdpa"] * (n - 1) + ["dense"]
    assert policy.uncaptured((784, 100)) == "sdpa" and rt.audio.attention.uncaptured((104, 26)) == "sdpa"
    assert rt.stats()["vision"]["dense_shapes"] == 2
    # ... and at most dense_shapes shapes ever do: a new one past that keeps the lane's backend.
    policy = policy_mod.AttentionPolicy(rt.vision.spec.facts, rt.config.replace(dense_shapes=3))
    for seqlens in [(3520,)] * (n + 1) + [(784,) * 8] * n:  # the sightings above, again
        policy.uncaptured(seqlens)
    assert [policy.uncaptured((1024,)) for _ in range(n)] == ["sdpa"] * (n - 1) + ["dense"]
    assert [policy.uncaptured((2048,)) for _ in range(n + 1)] == ["sdpa"] * (n + 1)
    assert policy.uncaptured((784,) * 8) == "dense" and policy.dense_shapes() == 3
    named = policy_mod.AttentionPolicy(rt.vision.spec.facts, rt.config.replace(eager_attention="sdpa"))
    assert named.uncaptured((3520,)) == "sdpa"
    with pytest.raises(ValueError, match="eager_attention='flash'"):
        EncoderRuntime(vision=vis, audio=aud, grid=GRID, eager_attention="flash")

    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=ROOMY, eager_attention="dense")
    used = []
    real = vis.run
    monkeypatch.setattr(vis, "run", lambda x, plan, backend=None: used.append(backend) or real(x, plan, backend))
    reqs = [vision_request([[2, 16, 18]], vis.config), vision_request([[1, 20, 20]], vis.config)]  # fit no bucket
    outs = rt.encode(reqs)
    assert used == ["dense", "dense"]  # each a fallback, alone; named, so no sightings wait
    v = rt.stats()["vision"]
    assert v["eager_attention"] == {"dense": 2} and v["dense_shapes"] == 0  # named: no admission kept
    check_against_direct(encoders, reqs, outs)


def test_big_uncaptured_calls_take_cudnn_varlen_with_a_recurring_graph_key(encoders, monkeypatch):
    """``eager_attention="auto"``, the ``cudnn`` extra present: an uncaptured vision call of at least
    ``eager_cudnn_tokens`` tokens runs cuDNN's varlen attention (before ``dense``, whose sightings it
    does not count) on a plan whose segment count and bound are rounded (``cudnn_plan``); smaller
    calls and audio keep their backends; the outputs are the direct encoder's."""
    from omnienc.encoders.attention import CUDNN_BOUND_STEP, CUDNN_SEGMENT_STEP
    from omnienc.runtime import attention_policy as policy_mod

    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=ROOMY.replace(dense_after=8))
    policy = rt.vision.attention
    assert policy.cudnn_tokens == 8192 and rt.audio.attention.cudnn_tokens == 0
    assert policy.uncaptured((9000,)) == "sdpa"  # the CPU: no cuDNN
    monkeypatch.setattr(policy_mod, "cudnn_supported", lambda *a: True)
    assert policy.uncaptured((9000,)) == "cudnn" and policy.uncaptured((4000, 4000, 192)) == "cudnn"
    assert policy.uncaptured((4000, 4000)) == "sdpa"  # below the bound
    assert rt.audio.attention.uncaptured((104,) * 100) == "sdpa"
    monkeypatch.setattr(policy_mod, "dense_supported", lambda *a: True)
    n = rt.config.dense_after
    assert [policy.uncaptured((9000,)) for _ in range(n + 1)] == ["cudnn"] * (n + 1)  # big: before dense
    assert [policy.uncaptured((3000,)) for _ in range(n)] == ["sdpa"] * (n - 1) + ["dense"]  # smaller: as before
    assert policy.dense_shapes() == 1  # the big call's shape was never counted
    monkeypatch.setattr(policy_mod, "dense_supported", lambda *a: False)
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=ROOMY, eager_cudnn_tokens=500)  # the tiny encoders' calls are small
    used = []
    real = vis.run

    def run(x, plan, backend=None):
        used.append((backend, len(plan.seqlens), plan.max_seqlen, plan.cu_seqlens.shape[0]))
        return real(x, plan, "sdpa" if backend == "cudnn" else backend)  # the CPU runs the rounded plan

    monkeypatch.setattr(vis, "run", run)
    reqs = [vision_request([[2, 16, 18]], vis.config), vision_request([[1, 20, 20]], vis.config)]  # fit no bucket
    outs = rt.encode(reqs)
    assert [u[0] for u in used] == ["cudnn", "sdpa"]  # 576 + 400 tokens, each alone
    backend, segments, bound, cu = used[0]
    assert segments == cu - 1 == CUDNN_SEGMENT_STEP and bound == CUDNN_BOUND_STEP
    assert rt.stats()["vision"]["eager_attention"] == {"cudnn": 1, "sdpa": 1}
    check_against_direct(encoders, reqs, outs)


def test_audio_fill_lays_out_chunks_as_chunk_features(encoders):
    """``AudioModality.fill`` writes whole chunks and zero-padded tails straight into a buffer holding
    stale values: the rows equal ``chunk_features`` of each request."""
    from omnienc.encoders.audio import chunk_features
    from omnienc.runtime.modality import AudioModality

    _, aud = encoders
    m = AudioModality(aud)
    rng = random.Random(7)
    shapes = [[rng.randint(1, 450) for _ in range(rng.randint(1, 3))] for _ in range(4)] + [[300], [100, 37]]
    reqs = [audio_request(s, aud.config) for s in shapes]
    mel = aud.config.num_mel_bins
    # strided features: transposed storage, and a view at an offset into a larger tensor
    shapes += [[250, 130], [420]]
    reqs += [AudioRequest(torch.randn(380, mel).t(), torch.tensor([250, 130])),
             AudioRequest(torch.randn(mel + 1, 500)[1:, 40:460], torch.tensor([420]))]
    rows = sum(m.rows(s) for s in shapes)
    out = torch.randn(rows + 2, aud.config.num_mel_bins, aud.chunk_frames)
    stale = out[rows:].clone()
    assert m.fill(reqs, shapes, out) == rows
    expect = torch.cat([chunk_features(r.input_features, s, aud.n_window) for r, s in zip(reqs, shapes)])
    torch.testing.assert_close(out[:rows], expect, rtol=0, atol=0)
    torch.testing.assert_close(out[rows:], stale, rtol=0, atol=0)  # nothing past the pack's rows


class FakeGraph:
    """Stands in for a captured CUDA graph on the CPU: ``replay`` reruns the captured function and
    writes its results into the tensors the capture returned, as a graph rewrites its static outputs."""

    def __init__(self, fn):
        self.fn, self.replays = fn, 0
        self.outputs = fn()

    def replay(self):
        for static, new in zip(self.outputs, self.fn()):
            static.copy_(new)
        self.replays += 1

    def pool(self):
        return "pool"


@torch.no_grad()
def test_exact_graphs_replay_repeated_layouts(encoders, monkeypatch):
    """A pack whose exact layout comes back is captured at its second sighting (that run is eager and
    unpadded) and replayed after; results are each call's own (a later replay does not change an
    earlier result), unpadded, and a bad request in a replayed pack fails alone. A layout whose
    capture fails is never captured again; the graphs kept are bounded, least recently used out."""
    from omnienc.cuda import graphs as cuda_graphs

    vis, aud = encoders
    captured, fail = [], set()

    def fake_capture(fn, pool=None):
        key = len(captured)
        captured.append(key)
        if key in fail:
            raise RuntimeError("injected capture failure")
        g = FakeGraph(fn)
        return g, g.outputs

    monkeypatch.setattr(cuda_graphs, "capture_live", fake_capture)
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=RuntimeConfig(exact_graphs=True, exact_max_graphs=2))
    rt.capture(progress=False)

    def layout():  # two vision requests in one pack, one audio request; fresh inputs each call
        return [vision_request([[1, 4, 6]], vis.config), vision_request([[2, 2, 4]], vis.config),
                audio_request([230], aud.config)]

    results = []
    for call in range(4):
        reqs = layout()
        outs = rt.encode(reqs)
        check_against_direct(encoders, reqs, outs)
        results.append((reqs, [o.embeds.clone() for o in outs], outs))
        s = rt.stats()
        assert s["vision"]["exact_captures"] == s["audio"]["exact_captures"] == (1 if call >= 1 else 0)
        assert s["exact_replays"] == (0 if call == 0 else 2 * call)  # the capture's eager run counts too
    for reqs, before, outs in results:  # every result still its own after later replays
        assert all(torch.equal(b, o.embeds) for b, o in zip(before, outs))
    s = rt.stats()
    b = s["vision"]["buckets"]["64x4"]  # 40 patches in 3 segments
    assert b["exact"] == 3 and b["runs"] == 4 and s["vision"]["exact_graphs"] == 1
    assert b["padded_units"] == 64 - 40  # the first call only

    bad = layout()
    shapes = rt.validate(bad)  # then a NaN: the check on outputs (what CUDA runs) must catch it
    bad[0].pixel_values[3, 5] = float("nan")
    batch = rt.launch(bad, shapes)
    out = batch.results()
    assert isinstance(out[0], ValueError) and "request 0" in str(out[0])
    check_against_direct(encoders, bad[1:], out[1:])

    # A failing capture: that layout runs on its bucket from then on, never captured again.
    fail.add(len(captured))
    one = lambda: [vision_request([[1, 6, 6]], vis.config)]  # noqa: E731
    for _ in range(4):
        reqs = one()
        check_against_direct(encoders, reqs, rt.encode(reqs))
    s = rt.stats()["vision"]
    assert s["exact_failures"] == 1 and s["exact_graphs"] == 1 and len(captured) == 3

    # Off: packs run on their buckets (padded replays), graphs kept; on again: replays. A runtime
    # built without them cannot turn them on.
    rt.exact_graphs = False
    before = rt.stats()
    reqs = layout()
    check_against_direct(encoders, reqs, rt.encode(reqs))
    after = rt.stats()
    assert after["exact_replays"] == before["exact_replays"] and after["replays"] == before["replays"] + 2
    rt.exact_graphs = True
    with pytest.raises(ValueError, match="exact_graphs=True"):
        EncoderRuntime(vision=vis, audio=aud, grid=GRID).exact_graphs = True

    # At most exact_max_graphs kept (one held so far).
    for side in (2, 4, 8):
        for _ in range(2):
            reqs = [vision_request([[1, 2, side]], vis.config)]
            check_against_direct(encoders, reqs, rt.encode(reqs))
    s = rt.stats()["vision"]
    assert s["exact_graphs"] == 2 and s["exact_evictions"] == 2 and s["exact_captures"] == 4


@torch.no_grad()
def test_exact_captures_are_paid_for_by_replays(encoders, monkeypatch):
    """Layouts that come back once and never again (a trace replayed twice) stop costing captures
    once the credit is spent: at most the credit plus one capture per exact_refill other packs; a
    layout that keeps coming back is still captured, and its replays earn credit back."""
    from omnienc.cuda import graphs as cuda_graphs

    vis, _ = encoders
    captures = []

    def fake_capture(fn, pool=None):
        g = FakeGraph(fn)
        captures.append(g)
        return g, g.outputs

    monkeypatch.setattr(cuda_graphs, "capture_live", fake_capture)
    rt = EncoderRuntime(vision=vis, grid=GRID, config=RuntimeConfig(exact_graphs=True, exact_credit=3, exact_refill=4))
    lane = rt.vision
    runs = 0
    for side in range(1, 11):  # ten layouts, each seen twice in a row: every second sighting wants a capture
        for _ in range(2):
            rt.encode([vision_request([[1, 2, 2 * side]], vis.config)])
            runs += 1
    s = rt.stats()["vision"]
    assert s["exact_refused"] > 0 and s["exact_captures"] + s["exact_refused"] == 10
    assert s["exact_captures"] <= 3 + runs // 4 and s["exact_graph_replays"] == 0
    for _ in range(12):  # one layout, again and again: captured once credit allows, then replayed
        reqs = [vision_request([[1, 4, 4]], vis.config)]
        check_against_direct(encoders, reqs, rt.encode(reqs))
    s = rt.stats()["vision"]
    assert s["exact_graphs"] >= 1 and s["exact_graph_replays"] >= 6 and lane.exact.cache.credit >= 1.0
