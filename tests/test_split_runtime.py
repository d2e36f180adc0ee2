"""Requests larger than every bucket, cut into pieces at attention-segment boundaries, and the bound
on one uncaptured call's transient memory (CPU, fp32, tiny configs)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import hf_and_native_audio, hf_and_native_vision, random_pixels, rel_err, tiny_audio_config

from omnienc.runtime import AudioRequest, BucketGrid, EncoderRuntime, RuntimeConfig, VisionRequest, read_trace, simulate

TOL = 1e-5
# A small grid: the largest vision bucket holds 3 frames of 8x8 patches, the largest audio one 800
# frames (the tiny audio encoder attends within windows of 200 frames).
GRID = BucketGrid.from_dict({
    "dtype": "float32",
    "vision": {"buckets": [{"patches": 64, "batch": 2}, {"patches": 192, "batch": 4}]},
    "audio": {"buckets": [{"frames": 400, "batch": 2}, {"frames": 800, "batch": 4}]},
})


@pytest.fixture(scope="module")
def encoders():
    _, vis = hf_and_native_vision()
    _, aud = hf_and_native_audio()
    return vis, aud


def vision(grid, cfg) -> VisionRequest:
    return VisionRequest(random_pixels(grid, cfg), torch.tensor(grid))


def audio(lens, cfg) -> AudioRequest:
    return AudioRequest(torch.randn(cfg.num_mel_bins, sum(lens)), torch.tensor(lens))


def same_as_whole(encoders, reqs, outs):
    vis, aud = encoders
    for r, o in zip(reqs, outs):
        if isinstance(r, VisionRequest):
            ref, ref_ds = vis(r.pixel_values, r.grid_thw)
            assert o.embeds.shape == ref.shape and rel_err(o.embeds, ref) <= TOL
            assert len(o.deepstack) == len(ref_ds)
            assert all(a.shape == b.shape and rel_err(a, b) <= TOL for a, b in zip(o.deepstack, ref_ds))
        else:
            ref = aud(r.input_features, r.feature_lens)
            assert o.embeds.shape == ref.shape and rel_err(o.embeds, ref) <= TOL


@torch.no_grad()
def test_long_video_and_audio_run_as_replays_of_graph_buckets_equal_to_the_whole(encoders):
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID)
    rt.capture(progress=False)
    long_video = vision([[11, 8, 8]], vis.config)  # 704 patches in 11 frames: 4 pieces of <= 3 frames
    mixed = vision([[1, 4, 6], [5, 8, 8], [1, 2, 2]], vis.config)  # an image, a video, an image
    # 1650 frames: parts of whole 200-frame windows, 800 + 600 + 250 (its last 50 frames, under a
    # chunk, take one window more: a clip's tail chunk is padded, not masked)
    long_audio = audio([1650], aud.config)
    clips = audio([1000, 130, 620], aud.config)  # three clips: 1750 frames, one of them cut
    small = [vision([[1, 4, 4]], vis.config), audio([300], aud.config)]
    reqs = [small[0], long_video, long_audio, mixed, small[1], clips]
    outs = rt.encode(reqs)
    same_as_whole(encoders, reqs, outs)
    s = rt.stats()
    assert s["fallbacks"] == 0 and s["eager_runs"] == 0  # every piece replayed a graph bucket
    assert s["vision"]["replays"] >= 4 and s["audio"]["replays"] >= 3
    assert s["requests"] == len(reqs)


@torch.no_grad()
def test_a_failing_piece_fails_its_request_alone(encoders, monkeypatch):
    vis, aud = encoders
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID)
    long_video = vision([[7, 8, 8]], vis.config)
    long_video.pixel_values[-1, 0] = float("nan")  # in its last piece: the CPU refuses it at validation
    with pytest.raises(ValueError, match="request 1 .*pixel_values"):
        rt.encode([vision([[1, 4, 4]], vis.config), long_video])
    lane = rt.vision
    real = type(lane.buckets).replay

    def replay(self, br, requests, shapes, used):  # a fault in the pack of the video's third piece
        if shapes == [[(3, 8, 8)]] and calls.append(1) is None and len(calls) == 2:
            raise RuntimeError("injected fault")
        return real(self, br, requests, shapes, used)

    calls = []
    monkeypatch.setattr(type(lane.buckets), "replay", replay)
    good = vision([[1, 4, 4]], vis.config)
    video = vision([[7, 8, 8]], vis.config)
    out = rt.launch([good, video]).results()
    assert isinstance(out[1], RuntimeError) and "injected" in str(out[1])
    same_as_whole(encoders, [good], [out[0]])


@torch.no_grad()
def test_a_frame_larger_than_every_bucket_runs_within_the_bound_or_fails_alone(encoders):
    vis, aud = encoders
    big = vision([[1, 16, 16]], vis.config)  # one frame of 256 patches: cannot be cut
    ok = vision([[2, 4, 4]], vis.config)
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID)  # the default bound: the largest uncaptured call's need
    mem = rt.memory()
    assert mem["max_transient_bytes"] == max(rt.vision.needed_bytes(), rt.audio.needed_bytes()) > 0
    out = rt.launch([ok, big]).results()
    same_as_whole(encoders, [ok], [out[0]])
    assert isinstance(out[1], ValueError)
    message = str(out[1])
    assert "request 1 (VisionRequest)" in message and "256 patches" in message
    bound = re.search(r"bound on transient memory of ([0-9.]+) (GiB|MiB|KiB)", message)
    scale = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10}[bound[2]]
    assert abs(float(bound[1]) * scale / mem["max_transient_bytes"] - 1) < 0.01 and "max_transient_bytes" in message
    need = rt.vision.spec.eager_bytes(256)
    roomy = EncoderRuntime(vision=vis, audio=aud, grid=GRID, config=RuntimeConfig(max_transient_bytes=need))
    outs = roomy.encode([ok, big])  # within a bound that holds it: eager, alone
    same_as_whole(encoders, [ok, big], outs)
    assert roomy.stats()["vision"]["fallbacks"] == 1


@torch.no_grad()
def test_the_bound_cuts_pieces_and_merged_eager_calls(encoders):
    vis, aud = encoders
    eager_grid = BucketGrid.from_dict({"dtype": "float32", "vision": {"patches": [64, 192], "batch": [4],
                                                                     "graphs_up_to": 64}})
    unbounded = EncoderRuntime(vision=vis, grid=eager_grid, config=RuntimeConfig(max_transient_bytes=2**40))
    assert unbounded.vision.eager_merge_units == 4 * 192
    spec = unbounded.vision.spec
    # the default bound holds the runtime's own largest uncaptured call, a merged one: nothing is cut
    default = EncoderRuntime(vision=vis, grid=eager_grid)
    assert default.memory()["max_transient_bytes"] == spec.eager_bytes(4 * 192)
    assert default.vision.eager_merge_units == 4 * 192 and default.vision.piece_limit.size == 4 * 192
    graphs_only = EncoderRuntime(vision=vis, grid=BucketGrid.from_dict({"dtype": "float32", "vision": {
        "patches": [64, 192], "batch": [4]}}))
    assert graphs_only.memory()["max_transient_bytes"] == spec.eager_bytes(192)  # a graph lane: its largest bucket
    limit = spec.eager_bytes(128)  # room for two frames of 8x8 in one call
    rt = EncoderRuntime(vision=vis, grid=eager_grid, config=RuntimeConfig(max_transient_bytes=limit))
    assert rt.vision.eager_merge_units == rt.vision.units_within(limit) < 192
    assert spec.eager_bytes(rt.vision.units_within(limit)) <= limit < spec.eager_bytes(rt.vision.units_within(limit) + 1)
    calls = []
    real = type(rt.vision.eager).run

    def run(self, requests, shapes):
        calls.append(sum(spec.demand(s).size for s in shapes))
        return real(self, requests, shapes)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(rt.vision.eager), "run", run)
        reqs = [vision([[5, 8, 8]], vis.config), vision([[1, 8, 8], [1, 8, 6]], vis.config),
                vision([[2, 8, 8]], vis.config)]
        outs = rt.encode(reqs)
    same_as_whole(encoders, reqs, outs)
    assert calls and max(calls) <= rt.vision.units_within(limit)  # no eager call over the bound


@torch.no_grad()
def test_simulator_prices_the_pieces_as_the_runtime_runs_them(encoders, tmp_path):
    # The simulator cuts audio at the real encoder's 800-frame windows: an audio encoder that
    # attends within such windows, and a grid whose largest audio bucket holds two of them.
    vis, _ = encoders
    _, aud = hf_and_native_audio(tiny_audio_config(n_window_infer=800))
    grid = BucketGrid.from_dict({"dtype": "float32", "vision": GRID.to_dict()["vision"],
                                 "audio": {"frames": [800, 1600], "batch": [2, 4]}})
    path = tmp_path / "t.jsonl"
    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid, trace_path=path)
    # 3250 frames: 1600 + 800 + 850 (its last 50 frames take a window more); 1000 + 130 + 620: one cut
    reqs = [vision([[11, 8, 8]], vis.config), audio([3250], aud.config), vision([[1, 4, 6]], vis.config),
            audio([1000, 130, 620], aud.config), vision([[3, 4, 4], [4, 8, 8]], vis.config)]
    same_as_whole((vis, aud), reqs, rt.encode(reqs))
    rt.close()
    measured = rt.stats()
    predicted = simulate(read_trace(path), grid, step_ms=1e9)
    for m in ("vision", "audio"):
        got = {f"{b.bucket.size}x{b.bucket.batch}": (b.runs, b.units) for b in predicted[m].buckets}
        want = {k: (b["runs"], b["units"]) for k, b in measured[m]["buckets"].items()}
        assert got == want, m
        assert predicted[m].fallbacks == measured[m]["fallbacks"] == 0


@torch.no_grad()
def test_pieces_of_an_eager_largest_bucket_are_as_large_as_one_uncaptured_call(encoders, tmp_path):
    """Where the largest bucket is eager, a long video is cut into pieces as large as the bound lets
    one uncaptured call be (each runs alone, larger than every bucket), not into bucket-sized ones,
    and as equal as whole frames allow;
    outputs equal the whole forward, and the simulator given the bound's units runs the same."""
    vis, _ = encoders
    eager_grid = BucketGrid.from_dict({"dtype": "float32", "vision": {"patches": [64, 192], "batch": [4],
                                                                     "graphs_up_to": 64}})
    spec = EncoderRuntime(vision=vis, grid=eager_grid).vision.spec
    limit = spec.eager_bytes(448)  # room for 7 frames of 8x8 in one call: above the largest bucket
    path = tmp_path / "t.jsonl"
    rt = EncoderRuntime(vision=vis, grid=eager_grid, trace_path=path, config=RuntimeConfig(max_transient_bytes=limit))
    within = rt.vision.units_within(limit)
    assert 192 < rt.vision.piece_limit.size == within < 4 * 192
    sizes = []
    real = type(rt.vision.eager).run

    def run(self, requests, shapes):
        sizes.append(sum(spec.demand(s).size for s in shapes))
        return real(self, requests, shapes)

    reqs = [vision([[12, 8, 8]], vis.config), vision([[1, 8, 6]], vis.config)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(rt.vision.eager), "run", run)
        outs = rt.encode(reqs)
    rt.close()
    same_as_whole(encoders, reqs, outs)
    frames = within // 64
    pieces = -(-12 // frames)  # as many as filling pieces would give, made even
    # the pieces' uncaptured calls (the image replays the 64-patch graph bucket)
    assert sorted(sizes) == sorted(64 * (12 // pieces + (i < 12 % pieces)) for i in range(pieces))
    measured = rt.stats()["vision"]
    assert measured["fallbacks"] == pieces  # each piece alone: larger than every bucket
    predicted = simulate(read_trace(path), eager_grid, step_ms=1e9, bound_units={"vision": within})["vision"]
    assert predicted.fallbacks == measured["fallbacks"]
    assert {f"{b.bucket.size}x{b.bucket.batch}": (b.runs, b.units) for b in predicted.buckets} == \
        {k: (b["runs"], b["units"]) for k, b in measured["buckets"].items()}
