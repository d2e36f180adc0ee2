"""Simulator, tuner and the replay / tune / tracegen tools (CPU)."""

import argparse
import dataclasses
import itertools
import json
import math
import random

import pytest

from omnienc.runtime.grid import (
    Bucket, BucketGrid, ModalityGrid, estimate_activation_bytes, estimate_flops,
)
from omnienc.runtime.simulate import batches, simulate, simulate_modality
from omnienc.runtime.trace import TraceRecord, read_trace, write_trace
from omnienc.tools import replay, tracegen, tune
from omnienc.tools.tracegen import generate_trace

B = Bucket


def vis(ts, *thw):
    return TraceRecord(ts, "vision", grid_thw=thw)


def aud(ts, *frames):
    return TraceRecord(ts, "audio", frames=frames)


GRID = BucketGrid(
    vision=ModalityGrid("vision", (B(1024, 4), B(4096, 16))), audio=ModalityGrid("audio", (B(1000, 2),))
)
TINY = [
    vis(0.001, (1, 16, 16)),  # 256 patches   } window 0: packed together, 1040 -> 4096x16
    vis(0.005, (1, 28, 28)),  # 784 patches   }
    vis(0.012, (2, 16, 24)),  # 768 patches, 2 segments: window 1 -> 1024x4
    vis(0.030, (1, 80, 80)),  # 6400 patches: fits no bucket -> eager
    aud(0.002, 1000, 370),    # 1400 frames, 2 audios: eager
    aud(0.004, 250),          # 300 frames: window 0 -> 1000x2
    aud(0.050, 999),          # 1000 frames: window 5 -> 1000x2
]


def test_simulate_by_hand():
    r = simulate(TINY, GRID, step_ms=10)
    v, a = r["vision"], r["audio"]
    assert [(s.bucket, s.hits, s.used) for s in v.buckets] == [(B(1024, 4), 1, 768), (B(4096, 16), 1, 1040)]
    assert (v.requests, v.replays, v.eager, v.eager_units) == (4, 3, 1, 6400)
    assert v.buckets[0].padded_share == 0.25
    assert v.padded_units == 5120 - 1808 and v.padded_share == pytest.approx(3312 / 5120)
    assert v.work == 5120 + 6400 and v.eager_share == 0.25
    assert [(s.hits, s.used) for s in a.buckets] == [(2, 1300)]
    assert (a.requests, a.replays, a.eager, a.padded_share, a.work) == (3, 3, 1, 0.35, 2000 + 1400)
    assert (r.requests, r.replays, r.eager) == (7, 6, 2)
    assert r.eager_share == pytest.approx(2 / 7)
    flops = estimate_flops("vision", 11520) + estimate_flops("audio", 3400)
    assert r.work_tflop == pytest.approx(flops / 1e12)


def test_simulate_each_request_alone():
    r = simulate(TINY, GRID, step_ms=0)
    v = r["vision"]
    assert [(s.hits, s.used) for s in v.buckets] == [(3, 1808), (0, 0)]
    assert v.padded_share == pytest.approx(1 - 1808 / 3072) and v.replays == 4
    assert r["audio"].replays == 3


def test_simulate_without_buckets_runs_eagerly():
    r = simulate(TINY, BucketGrid(), step_ms=10)
    assert r.eager == r.requests == r.replays == 7
    assert r["vision"].work == 256 + 784 + 768 + 6400 and r.padded_share == 0.0


def test_windows():
    recs = [aud(0.0, 100), aud(0.0099999, 100), aud(0.01, 100), aud(0.03, 100), aud(0.029, 100),
            aud(0.021, 100), aud(0.07, 100)]  # 0.07 * 1000 is 70.00000000000001: still window 7
    assert [len(g) for g in batches(recs, "audio", 10)] == [2, 1, 2, 1, 1]
    assert [len(g) for g in batches(recs, "audio", 0)] == [1] * 7
    assert batches(recs, "vision", 10) == []
    with pytest.raises(ValueError):
        batches(recs, "audio", -1)


def test_report_output():
    r = simulate(TINY, GRID, step_ms=10)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["modalities"]["vision"]["buckets"][0] == {
        "size": 1024, "batch": 4, "hits": 1, "used": 768, "padded_share": 0.25, "graph": True}
    assert d["total"]["eager"] == 2
    table = r.format_table()
    assert "1024x4" in table and "25.0%" in table and "eager" in table and "total: 7 requests" in table


# --- tuner ---------------------------------------------------------------------------------------


def _cost(records, modality, buckets, penalty, step_ms=0.0):
    report = simulate_modality(batches(records, modality, step_ms), modality, tuple(buckets))[0]
    return tune.modality_cost(report, penalty)


def _brute(records, modality, k, penalty, candidates, step_ms=0.0):
    return min(_cost(records, modality, c, penalty, step_ms)
               for n in range(k + 1) for c in itertools.combinations(candidates, n))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("penalty", [0.5, 1.0, 3.0])
def test_tune_matches_brute_force_2d(seed, penalty):
    """Single-segment requests: brute force over every subset of (size, batch) candidates."""
    rng = random.Random(seed)
    sizes = rng.sample(range(4, 400, 4), 5)
    records = [vis(0.1 * i, (1, 2, s // 2)) for i, s in enumerate(rng.choices(sizes, k=15))]
    candidates = [B(s, b) for s in sorted(sizes) for b in (1, 2)]
    best = tune.tune_modality(records, "vision", 3, 0.0, penalty)
    for k in range(4):
        assert best[k][0] == _brute(records, "vision", k, penalty, candidates)
        assert len(best[k][1]) <= k and best[k][0] == _cost(records, "vision", best[k][1], penalty)


@pytest.mark.parametrize("seed", range(4))
def test_tune_matches_brute_force_mixed_batches(seed):
    """Multi-clip requests: brute force over size subsets, each bucket large enough in batch."""
    rng = random.Random(seed)
    clips = [150, 420, 999, 1000, 2310]
    records = [aud(0.1 * i, *rng.choices(clips, k=rng.randint(1, 3))) for i in range(20)]
    sizes = sorted({r.demand.size for r in records})
    candidates = [B(s, 3) for s in sizes]
    best = tune.tune_modality(records, "audio", 4, 0.0, 1.0)
    for k in range(5):
        assert best[k][0] == _brute(records, "audio", k, 1.0, candidates)


def test_optimal_buckets_by_hand():
    # 10 x 196, 5 x 784, 2 x 3680 patches, penalty 1. One bucket: {196} leaves 784s and 3680s
    # eager (11280), {784} pads 10 x 588 and leaves 3680s eager (13240), {3680} pads 49320.
    # Two buckets: {784, 3680} pads 5880, {196, 784} leaves 7360 eager, {196, 3680} pads 14480.
    records = [vis(0, (1, 14, 14))] * 10 + [vis(0, (1, 28, 28))] * 5 + [vis(0, (1, 46, 80))] * 2
    best = tune.tune_modality(records, "vision", 3, 0.0, 1.0)
    assert best[0] == (196 * 10 + 784 * 5 + 3680 * 2, ())
    assert best[1] == (784 * 5 + 3680 * 2, (B(196, 1),))
    assert best[2] == (5880, (B(784, 1), B(3680, 1)))
    assert best[3] == (0, (B(196, 1), B(784, 1), B(3680, 1)))
    # With penalty 0.5 running the 3680s eagerly (3680) beats padding the 196s (5880).
    assert tune.tune_modality(records, "vision", 2, 0.0, 0.5)[2][1] == (B(196, 1), B(784, 1))


def test_tune_splits_graphs_between_modalities():
    records = [vis(0, (1, 14, 14))] * 10 + [vis(0, (1, 28, 28))] * 5 + [vis(0, (1, 46, 80))] * 2
    records += [aud(0, 1000)] * 10 + [aud(0, 300)] * 10
    # 4 graphs: 3 vision + 1 audio pads 10 x 700 frames (1.5 TFLOP); 2 + 2 pads 5880 patches (5.2 TFLOP).
    g = tune.tune(records, max_graphs=4, step_ms=0)
    assert g.vision.buckets == (B(196, 1), B(784, 1), B(3680, 1)) and g.audio.buckets == (B(1000, 1),)
    g5 = tune.tune(records, max_graphs=5, step_ms=0)
    assert g5.num_graphs == 5 and tune.objective(simulate(records, g5, 0)) == 0
    assert tune.tune(records, max_graphs=9, step_ms=0) == g5  # no extra graphs once padding is zero
    costs = {m: tune.tune_modality(records, m, 4, 0.0, 1.0) for m in ("vision", "audio")}
    v, a = ([estimate_flops(m, c) for c, _ in costs[m]] for m in ("vision", "audio"))
    best = min(v[kv] + a[4 - kv] for kv in range(5))  # every split of the 4 graphs
    assert tune.objective(simulate(records, g, 0)) == pytest.approx(best)


def test_tune_packs_windows():
    # Every window holds 100 + 300 frames: one bucket of 400 frames x 2 audios packs both, no padding.
    records = [r for w in range(20) for r in (aud(0.01 * w + 0.001, 100), aud(0.01 * w + 0.002, 300))]
    assert tune.tune(records, max_graphs=1, step_ms=10).audio.buckets == (B(400, 2),)
    assert tune.tune(records, max_graphs=1, step_ms=0).audio.buckets == (B(300, 1),)


@pytest.fixture(scope="module")
def trace():
    return generate_trace(seconds=20, rate=20, seed=7)


@pytest.mark.parametrize("n", [0, 1, 3, 8])
def test_tune_never_exceeds_max_graphs(trace, n):
    g = tune.tune(trace, max_graphs=n, step_ms=10)
    assert g.num_graphs <= n
    if n == 0:
        assert g.vision is None and g.audio is None


def test_tune_beats_default_and_alone_optimum(trace):
    # The tuner makes all-graph grids: compare with the default's buckets all captured.
    d = BucketGrid.default()
    default = dataclasses.replace(d, vision=dataclasses.replace(d.vision, graphs_up_to=None))
    assert default.num_graphs == len(d.vision.buckets) + len(d.audio.buckets)
    g = tune.tune(trace, max_graphs=default.num_graphs, step_ms=10)
    alone = tune.tune(trace, max_graphs=default.num_graphs, step_ms=0)
    cost = tune.objective(simulate(trace, g, 10))
    assert cost <= tune.objective(simulate(trace, alone, 10)) + 1e-6
    assert cost <= tune.objective(simulate(trace, default, 10))


def test_tune_respects_memory_limit(trace):
    limit = estimate_activation_bytes("vision", B(2000, 1))  # also below audio's 1000 frames
    g = tune.tune(trace, max_graphs=12, step_ms=10, max_graph_bytes=limit)
    assert g.num_graphs > 0
    for m in ("vision", "audio"):
        for b in g.modality(m).buckets if g.modality(m) else ():
            assert estimate_activation_bytes(m, b) <= limit
    free = tune.tune(trace, max_graphs=12, step_ms=10)
    assert max(b.size for b in free.vision.buckets) > 2000


# --- tools ---------------------------------------------------------------------------------------


def _cli(*argv):
    parser = argparse.ArgumentParser(prog="omnienc")
    sub = parser.add_subparsers(required=True)
    for tool in (replay, tune, tracegen):
        tool.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_replay_cli(tmp_path, capsys):
    path, grid = tmp_path / "t.jsonl", tmp_path / "g.yaml"
    write_trace(path, TINY)
    GRID.to_yaml(grid)
    assert _cli("replay", "--trace", path, "--grid", grid) == 0
    assert "4096x16" in capsys.readouterr().out
    assert _cli("replay", "--trace", path, "--grid", grid, "--step-ms", 0, "--json") == 0
    assert json.loads(capsys.readouterr().out)["modalities"]["vision"]["replays"] == 4
    assert _cli("replay", "--trace", path) == 0  # packaged default grid


@pytest.mark.parametrize("problem", ["missing trace", "missing grid", "bad grid", "bad line", "bad step"])
def test_replay_cli_errors(problem, tmp_path, capsys):
    path, grid = tmp_path / "t.jsonl", tmp_path / "g.yaml"
    write_trace(path, TINY)
    GRID.to_yaml(grid)
    argv = {"missing trace": ["--trace", tmp_path / "none.jsonl"],
            "missing grid": ["--trace", path, "--grid", tmp_path / "none.yaml"],
            "bad grid": ["--trace", path, "--grid", grid],
            "bad line": ["--trace", path],
            "bad step": ["--trace", path, "--step-ms", -5]}[problem]
    if problem == "bad grid":
        grid.write_text("audio: {frames: [150], batch: [1]}\n")
    if problem == "bad line":
        path.write_text(path.read_text() + '{"ts": 1, "modality": "audio"}\n')
    assert _cli("replay", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("omnienc replay: error:") and "Traceback" not in err
    if problem == "bad line":
        assert "t.jsonl:8:" in err and "'frames'" in err


def test_tune_cli(tmp_path, capsys):
    path, out = tmp_path / "t.jsonl", tmp_path / "tuned.yaml"
    write_trace(path, generate_trace(seconds=10, rate=20, seed=1))
    assert _cli("tune", "--trace", path, "--max-graphs", 6, "--max-graph-memory", 0.3, "-o", out) == 0
    text = capsys.readouterr().out
    assert "base :" in text and "tuned:" in text and "padded" in text and "eager" in text
    g = BucketGrid.from_yaml(out)
    assert 0 < g.num_graphs <= 6 and out.read_text().startswith("# Tuned by `omnienc tune`")
    assert all(estimate_activation_bytes(m, b) <= 0.3e9
               for m in ("vision", "audio") if g.modality(m) for b in g.modality(m).buckets)
    assert _cli("tune", "--trace", tmp_path / "none.jsonl", "-o", out) == 2
    assert _cli("tune", "--trace", path, "--max-graphs", -1, "-o", out) == 2
    assert _cli("tune", "--trace", path, "--base", tmp_path / "none.yaml", "-o", out) == 2
    assert "omnienc tune: error:" in capsys.readouterr().err


def test_tracegen_deterministic_and_plausible(tmp_path, capsys):
    a, b = generate_trace(60, 20, 0), generate_trace(60, 20, 0)
    assert a == b and a != generate_trace(60, 20, 1)
    assert abs(len(a) - 1200) < 5 * math.sqrt(1200)  # Poisson arrivals at 20/s
    assert [r.ts for r in a] == sorted(r.ts for r in a) and 0 <= a[0].ts and a[-1].ts < 60
    images = [x for r in a if r.modality == "vision" for x in r.grid_thw if x[0] == 1]
    videos = [x for r in a if r.modality == "vision" for x in r.grid_thw if x[0] > 1]
    clips = [f for r in a if r.modality == "audio" for f in r.frames]
    assert len(images) > 400 and len(videos) > 50 and len(clips) > 300
    assert all(196 <= h * w <= 6400 and h % 2 == 0 and w % 2 == 0 for _, h, w in images)
    assert all(2 <= t <= 16 and max(h, w) <= 28 for t, h, w in videos)
    assert all(100 <= f <= 3000 for f in clips) and sum(f % 100 != 0 for f in clips) > 0.8 * len(clips)
    assert any(len(r.grid_thw) > 1 for r in a if r.modality == "vision")
    assert any(len(r.frames) > 1 for r in a if r.modality == "audio")
    path = tmp_path / "gen.jsonl"
    assert _cli("tracegen", "-o", path, "--seconds", 5, "--seed", 3) == 0
    assert read_trace(path) == generate_trace(5, 20, 3) and "wrote" in capsys.readouterr().out
    assert _cli("tracegen", "-o", path, "--rate", 0) == 2
