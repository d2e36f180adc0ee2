"""Simulator, tuner and the simulate / tune / tracegen tools (CPU)."""

import argparse
import dataclasses
import itertools
import json
import math
import random

import pytest

import omnienc.runtime.tune as tuner
from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel, Probe, estimate_activation_bytes, estimate_flops
from omnienc.runtime.grid import Bucket, BucketGrid, ModalityGrid
from omnienc.runtime.packing import vision_demand
from omnienc.runtime.simulator import batches, simulate, simulate_modality
from omnienc.runtime.trace import TraceRecord, read_trace, write_trace
from omnienc.tools import simulate as simulate_tool, tracegen, tune
from omnienc.tools.tracegen import generate_trace

B = Bucket
NO_EXACT = RuntimeConfig(exact_graphs=False)  # buckets alone: what the tuner's search is exact for


def linear_costs(penalty=1.0, weight=None):
    """A cost model equal to the old FLOP objective plus a constant: a replay costs its bucket's size,
    an eager run (1 + penalty) x its units, each unit weighted per modality (``weight[m]`` ms per
    unit, default 1e-3). Then predicted ms = weight x (padded units + penalty x eager units + all
    units), so minimising it minimises padding + penalty x eager units."""
    weight = weight or {"vision": 1e-3, "audio": 1e-3}
    probes = {}
    for m, lo in (("vision", 4), ("audio", 100)):
        w = weight[m]
        probes[m, "replay"] = [Probe(s, 1, (s * w,)) for s in (lo, 10**6)]
        probes[m, "eager"] = [Probe(s, 1, ((1 + penalty) * s * w,)) for s in (lo, 10**6)]
    return CostModel.from_probes(probes, source=f"linear(penalty={penalty})")


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
    aud(0.002, 1000, 370),    # 1400 frames, 2 audios: fits no bucket, cut into its two clips
    aud(0.004, 250),          # 300 frames: window 0 -> 1000x2
    aud(0.050, 999),          # 1000 frames: window 5 -> 1000x2
]


def test_simulate_by_hand():
    r = simulate(TINY, GRID, step_ms=10)
    v, a = r["vision"], r["audio"]
    assert [(s.bucket, s.runs, s.units) for s in v.buckets] == [(B(1024, 4), 1, 768), (B(4096, 16), 1, 1040)]
    assert (v.requests, v.runs, v.fallbacks, v.fallback_units) == (4, 3, 1, 6400)
    assert (v.replays, v.eager_runs) == (2, 0)
    assert v.buckets[0].padded_share == 0.25
    assert v.padded_units == 5120 - 1808 and v.padded_share == pytest.approx(3312 / 5120)
    assert v.work == 5120 + 6400 and v.fallback_share == 0.25
    # window 0: the 1000-frame clip fills 1000x2, the 370-frame one (400) packs with the 300; then 999 (1000)
    assert [(s.runs, s.units) for s in a.buckets] == [(3, 2700)]
    assert (a.requests, a.runs, a.fallbacks, a.padded_share, a.work) == (3, 3, 0, 0.1, 3000)
    assert (r.requests, r.runs, r.fallbacks) == (7, 6, 1)
    assert r.fallback_share == pytest.approx(1 / 7)
    flops = estimate_flops("vision", 11520) + estimate_flops("audio", 3000)
    assert r.work_tflop == pytest.approx(flops / 1e12)


def test_simulate_predicts_time_from_the_cost_model():
    """Each run is priced by the model: replays by bucket (and the segments they carry), eager runs
    and fallbacks by their units; the totals add up per bucket, per modality and overall."""
    costs = CostModel.load()
    r = simulate(TINY, GRID, costs=costs, step_ms=10)
    v, a = r["vision"], r["audio"]
    # 768 patches in 2 frames in a 1024 bucket: attention of 1024^2 / (768^2 / 2) equal segments
    assert v.bucket(B(1024, 4)).ms == pytest.approx(costs.replay_ms("vision", B(1024, 4), 2 * 1024**2 / 768**2))
    assert v.fallback_ms == pytest.approx(costs.eager_ms("vision", 6400, 1))
    assert a.fallback_ms == 0  # the two-clip request is cut into its clips: replays
    assert a.bucket(B(1000, 2)).ms == pytest.approx(costs.replay_ms("audio", B(1000, 2), 1) * 2
                                                    + costs.replay_ms("audio", B(1000, 2), 2))
    assert v.ms == pytest.approx(sum(b.ms for b in v.buckets) + v.fallback_ms)
    assert r.ms == pytest.approx(v.ms + a.ms) and r.ms > 0
    eager = simulate(TINY, dataclasses.replace(GRID, vision=ModalityGrid("vision", GRID.vision.buckets, 1024)),
                     costs=costs, step_ms=10)["vision"]  # 4096x16 is now an eager bucket: unpadded
    e = eager.bucket(B(4096, 16))
    assert (e.graph, e.runs, e.units, e.padded_units) == (False, 1, 1040, 0)
    assert e.ms == pytest.approx(costs.eager_ms("vision", 1040, 1040**2 / (256**2 + 784**2)))
    assert (eager.replays, eager.eager_runs, eager.fallbacks) == (1, 1, 1)


def test_simulate_prices_a_batchs_eager_packs_as_one_call():
    """As the runtime runs them: a batch's packs on eager buckets are one eager call (each still a
    run of its bucket), its predicted time shared by units."""
    costs = CostModel.load()
    grid = ModalityGrid("vision", (B(256, 1), B(4096, 1)), graphs_up_to=256)
    demands = [[vision_demand([(1, 50, 60)]), vision_demand([(1, 60, 50)]), vision_demand([(1, 8, 8)])]]
    stats, reps = simulate_modality(demands, "vision", grid.buckets, grid.is_graph, costs)
    e = stats.bucket(B(4096, 1))
    assert (e.runs, e.units, stats.replays) == (2, 6000, 1) and len(reps) == 3
    segments = 6000**2 / (2 * 3000**2)
    assert e.ms == pytest.approx(costs.eager_ms("vision", 6000, segments))
    assert e.ms < 2 * costs.eager_ms("vision", 3000, 1)  # one fixed part, not two


def test_simulate_with_a_busy_worker(tmp_path, capsys):
    """With --busy, what arrives while the worker runs a batch (its predicted time) waits and goes
    together: arrivals at 0, 2.5 and 6 ms with a 2 ms wait are three batches when the worker is free
    at once, two when each run keeps it busy 10 ms."""
    recs = [aud(0.0, 300), aud(0.0025, 300), aud(0.006, 300)]
    grid = BucketGrid(audio=ModalityGrid("audio", (B(1000, 4),)))
    costs = CostModel.from_probes({(m, k): [Probe(s, 1, (10.0,)) for s in (100, 10**5)]
                                   for m in ("vision", "audio") for k in ("replay", "eager")})
    free, busy = (simulate(recs, grid, BatchPolicy(2, 64), costs, busy=b, config=NO_EXACT)["audio"]
                  for b in (False, True))
    assert (free.replays, free.ms) == (3, 30.0) and (busy.replays, busy.ms) == (2, 20.0)
    assert busy.bucket(B(1000, 4)).units == 900
    with pytest.raises(ValueError, match="BatchPolicy"):
        simulate(recs, grid, 10.0, costs, busy=True)
    path = tmp_path / "t.jsonl"
    write_trace(path, recs)
    assert _cli("simulate", "--trace", path, "--busy") == 0 and "worker busy" in capsys.readouterr().out
    assert _cli("simulate", "--trace", path, "--busy", "--step-ms", 10) == 2


def test_simulate_each_request_alone():
    r = simulate(TINY, GRID, step_ms=0)
    v = r["vision"]
    assert [(s.runs, s.units) for s in v.buckets] == [(3, 1808), (0, 0)]
    assert v.padded_share == pytest.approx(1 - 1808 / 3072) and v.runs == 4
    assert r["audio"].runs == 4  # the two-clip request in two pieces


def test_simulate_without_buckets_runs_eagerly():
    r = simulate(TINY, BucketGrid(), step_ms=10)
    assert r.fallbacks == r.requests == r.runs == 7
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
    b = d["modalities"]["vision"]["buckets"]["1024x4"]
    assert {k: b[k] for k in ("size", "batch", "runs", "units", "padded_share", "graph")} == {
        "size": 1024, "batch": 4, "runs": 1, "units": 768, "padded_share": 0.25, "graph": True}
    assert b["ms"] > 0 and d["total"]["ms"] == pytest.approx(r.ms)
    assert d["total"]["fallbacks"] == 1
    table = r.format_table()
    assert "1024x4" in table and "25.0%" in table and "fallback" in table and "total: 7 requests" in table
    assert "eager runs" in table and "replays" in table and "predicted" in table


# --- tuner ---------------------------------------------------------------------------------------


def _cost(records, modality, buckets, costs, step_ms=0.0, config=NO_EXACT):
    return simulate_modality(batches(records, modality, step_ms), modality, tuple(buckets), costs=costs,
                             config=config)[0].ms


def _brute(records, modality, k, costs, candidates, step_ms=0.0, config=NO_EXACT):
    return min(_cost(records, modality, c, costs, step_ms, config)
               for n in range(k + 1) for c in itertools.combinations(candidates, n))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("penalty", [0.5, 1.0, 3.0])
def test_tune_matches_brute_force_2d(seed, penalty):
    """Single-segment requests: brute force over every subset of (size, batch) candidates."""
    rng = random.Random(seed)
    costs = linear_costs(penalty)
    sizes = rng.sample(range(4, 400, 4), 5)
    records = [vis(0.1 * i, (1, 2, s // 2)) for i, s in enumerate(rng.choices(sizes, k=15))]
    candidates = [B(s, b) for s in sorted(sizes) for b in (1, 2)]
    best = tuner.tune_modality(records, "vision", 3, 0.0, costs, config=NO_EXACT)
    for k in range(4):
        assert best[k].ms == pytest.approx(_brute(records, "vision", k, costs, candidates), rel=1e-12)
        assert len(best[k].graphs) <= k and not best[k].eager
        assert best[k].ms == pytest.approx(_cost(records, "vision", best[k].graphs, costs), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_tune_matches_brute_force_mixed_batches(seed):
    """Multi-clip requests, a runtime that runs a request larger than every bucket whole: brute
    force over size subsets, each bucket large enough in batch."""
    whole = NO_EXACT.replace(split_requests=False)
    rng = random.Random(seed)
    costs = linear_costs(1.0)
    clips = [150, 420, 999, 1000, 2310]
    records = [aud(0.1 * i, *rng.choices(clips, k=rng.randint(1, 3))) for i in range(20)]
    sizes = sorted({r.demand.size for r in records})
    candidates = [B(s, 3) for s in sizes]
    best = tuner.tune_modality(records, "audio", 4, 0.0, costs, config=whole)
    for k in range(5):
        assert best[k].ms == pytest.approx(_brute(records, "audio", k, costs, candidates, config=whole), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_tune_with_requests_cut_into_pieces_beats_every_grid_that_holds_them_whole(seed):
    """The runtime cuts a request larger than every bucket into pieces: the tuner, pricing that,
    finds a grid at least as good as the best one whose largest bucket holds every request whole
    (where its program is exact), and prices it as the simulator does."""
    rng = random.Random(seed)
    costs = linear_costs(1.0)
    clips = [150, 420, 999, 1000, 2310]
    records = [aud(0.1 * i, *rng.choices(clips, k=rng.randint(1, 3))) for i in range(20)]
    sizes = sorted({r.demand.size for r in records})
    top = B(sizes[-1], 3)
    best = tuner.tune_modality(records, "audio", 4, 0.0, costs, config=NO_EXACT)
    for k in range(1, 5):
        whole = min(_cost(records, "audio", (*c, top), costs)
                    for n in range(k) for c in itertools.combinations([B(s, 3) for s in sizes[:-1]], n))
        assert best[k].ms <= whole * (1 + 1e-12)
        assert best[k].ms == pytest.approx(_cost(records, "audio", best[k].graphs + best[k].eager, costs), rel=1e-12)


def test_optimal_buckets_by_hand():
    # 10 x 196, 5 x 784, 2 x 3680 patches, penalty 1. One bucket: {196} leaves 784s and 3680s
    # eager (11280), {784} pads 10 x 588 and leaves 3680s eager (13240), {3680} pads 49320.
    # Two buckets: {784, 3680} pads 5880, {196, 784} leaves 7360 eager, {196, 3680} pads 14480.
    # The linear model adds the units of every request (13240) to each cost, in ms of 1e-3 per unit.
    records = [vis(0, (1, 14, 14))] * 10 + [vis(0, (1, 28, 28))] * 5 + [vis(0, (1, 46, 80))] * 2
    base = 196 * 10 + 784 * 5 + 3680 * 2
    best = tuner.tune_modality(records, "vision", 3, 0.0, linear_costs(1.0), config=NO_EXACT)
    got = [(round(c.ms * 1e3 - base, 6), c.graphs) for c in best]
    assert got[0] == (196 * 10 + 784 * 5 + 3680 * 2, ())
    assert got[1] == (784 * 5 + 3680 * 2, (B(196, 1),))
    assert got[2] == (5880, (B(784, 1), B(3680, 1)))
    assert got[3] == (0, (B(196, 1), B(784, 1), B(3680, 1)))
    # With penalty 0.5 running the 3680s eagerly (3680) beats padding the 196s (5880).
    assert tuner.tune_modality(records, "vision", 2, 0.0, linear_costs(0.5), config=NO_EXACT)[2].graphs == (
        B(196, 1), B(784, 1))


def test_tune_splits_graphs_between_modalities():
    records = [vis(0, (1, 14, 14))] * 10 + [vis(0, (1, 28, 28))] * 5 + [vis(0, (1, 46, 80))] * 2
    records += [aud(0, 1000)] * 10 + [aud(0, 300)] * 10
    # Units weighed by estimated FLOPs (TFLOP as "ms"), penalty 1: the old objective plus a constant.
    costs = linear_costs(1.0, {m: estimate_flops(m, 1) / 1e12 for m in ("vision", "audio")})
    const = sum(estimate_flops(r.modality, r.demand.size) for r in records) / 1e12
    # 4 graphs: 3 vision + 1 audio pads 10 x 700 frames (1.5 TFLOP); 2 + 2 pads 5880 patches (5.2 TFLOP).
    g = tuner.tune(records, costs, max_graphs=4, step_ms=0, config=NO_EXACT).grid
    assert g.vision.buckets == (B(196, 1), B(784, 1), B(3680, 1)) and g.audio.buckets == (B(1000, 1),)
    g5 = tuner.tune(records, costs, max_graphs=5, step_ms=0, config=NO_EXACT)
    assert g5.grid.num_graphs == 5 and g5.ms == pytest.approx(const)  # no padding, nothing eager
    assert tuner.tune(records, costs, max_graphs=9, step_ms=0, config=NO_EXACT).grid == g5.grid  # no extra graphs once padding is zero
    per = {m: tuner.tune_modality(records, m, 4, 0.0, costs, config=NO_EXACT) for m in ("vision", "audio")}
    best = min(per["vision"][kv].ms + per["audio"][4 - kv].ms for kv in range(5))  # every split of the 4 graphs
    assert simulate(records, g, costs=costs, step_ms=0, config=NO_EXACT).ms == pytest.approx(best)


def test_tune_packs_windows():
    # Every window holds 100 + 300 frames: one bucket of 400 frames x 2 audios packs both, no padding.
    records = [r for w in range(20) for r in (aud(0.01 * w + 0.001, 100), aud(0.01 * w + 0.002, 300))]
    costs = linear_costs(1.0)
    assert tuner.tune(records, costs, max_graphs=1, step_ms=10).grid.audio.buckets == (B(400, 2),)
    assert tuner.tune(records, costs, max_graphs=1, step_ms=0).grid.audio.buckets == (B(300, 1),)


@pytest.fixture(scope="module")
def trace():
    return generate_trace(seconds=20, rate=20, seed=7)


@pytest.mark.parametrize("n", [0, 1, 3, 8])
def test_tune_never_exceeds_max_graphs(trace, n):
    g = tuner.tune(trace, max_graphs=n, step_ms=10).grid
    assert g.num_graphs <= n
    if n == 0:  # no graphs at all (eager buckets may remain: they capture nothing)
        assert all(m is None or not m.graph_buckets for m in (g.vision, g.audio))


def test_tune_beats_default_and_alone_optimum(trace):
    """Under the packaged model and 10 ms windows, the tuned grid predicts no more time than the grid
    tuned for requests alone, than the default grid, and than the default with every bucket a graph."""
    d = BucketGrid.default()
    every = dataclasses.replace(d, vision=dataclasses.replace(d.vision, graphs_up_to=None))
    assert every.num_graphs == len(d.vision.buckets) + len(d.audio.buckets)
    g = tuner.tune(trace, max_graphs=every.num_graphs, step_ms=10).grid
    alone = tuner.tune(trace, max_graphs=every.num_graphs, step_ms=0).grid
    cost = simulate(trace, g, step_ms=10).ms
    assert cost <= simulate(trace, alone, step_ms=10).ms + 1e-6
    assert cost <= simulate(trace, every, step_ms=10).ms and cost <= simulate(trace, d, step_ms=10).ms


def test_tune_respects_memory_limit(trace):
    limit = estimate_activation_bytes("vision", B(2000, 1))  # also below audio's 1000 frames
    g = tuner.tune(trace, max_graphs=12, step_ms=10, max_graph_bytes=limit).grid
    assert g.num_graphs > 0
    for m in ("vision", "audio"):
        for b in g.modality(m).graph_buckets if g.modality(m) else ():
            assert estimate_activation_bytes(m, b) <= limit
    free = tuner.tune(trace, max_graphs=12, step_ms=10).grid
    assert max(b.size for b in free.vision.graph_buckets) > 2000


# --- tools ---------------------------------------------------------------------------------------


def _cli(*argv):
    parser = argparse.ArgumentParser(prog="omnienc")
    sub = parser.add_subparsers(required=True)
    for tool in (simulate_tool, tune, tracegen):
        tool.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_simulate_cli(tmp_path, capsys):
    path, grid = tmp_path / "t.jsonl", tmp_path / "g.yaml"
    write_trace(path, TINY)
    GRID.to_yaml(grid)
    assert _cli("simulate", "--trace", path, "--grid", grid) == 0
    assert "4096x16" in capsys.readouterr().out
    assert _cli("simulate", "--trace", path, "--grid", grid, "--step-ms", 0, "--json") == 0
    v = json.loads(capsys.readouterr().out)["modalities"]["vision"]
    assert v["runs"] == 4 and (v["replays"], v["eager_runs"], v["fallbacks"]) == (3, 0, 1)
    assert _cli("simulate", "--trace", path) == 0  # packaged default grid
    assert _cli("replay", "--trace", path, "--grid", grid) == 0  # the older name still works
    assert "4096x16" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["missing trace", "missing grid", "bad grid", "bad line", "bad step"])
def test_simulate_cli_errors(problem, tmp_path, capsys):
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
    assert _cli("simulate", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("omnienc simulate: error:") and "Traceback" not in err
    if problem == "bad line":
        assert "t.jsonl:8:" in err and "'frames'" in err


def test_tune_cli(tmp_path, capsys):
    path, out = tmp_path / "t.jsonl", tmp_path / "tuned.yaml"
    write_trace(path, generate_trace(seconds=10, rate=20, seed=1))
    assert _cli("tune", "--trace", path, "--max-graphs", 6, "--max-graph-memory", 0.3, "-o", out) == 0
    text = capsys.readouterr().out
    assert "base :" in text and "tuned:" in text and "padded" in text and "eager" in text
    assert "predicted" in text and "fallbacks" in text and "outside the constraints" in text  # base: 15 graphs
    g = BucketGrid.from_yaml(out)
    header = out.read_text()
    assert 0 < g.num_graphs <= 6 and header.startswith("# Tuned by `omnienc tune`")
    assert all(estimate_activation_bytes(m, b) <= 0.3e9  # graphs only: eager buckets capture nothing
               for m in ("vision", "audio") if g.modality(m) for b in g.modality(m).graph_buckets)
    assert "# command: omnienc tune --trace" in header and "--max-graphs 6" in header
    assert "# costs: omnienc/configs/costs_h200.yaml" in header and "ms; base" in header
    # The acceptance form with fixed windows, and the cost file option.
    costs = tmp_path / "costs.yaml"
    linear_costs(1.0).save(costs)
    assert _cli("tune", "--trace", path, "--max-graphs", 5, "--step-ms", 10, "--costs", costs, "-o", out) == 0
    assert "fixed 10 ms windows" in capsys.readouterr().out and BucketGrid.from_yaml(out).num_graphs <= 5
    assert _cli("tune", "--trace", tmp_path / "none.jsonl", "-o", out) == 2
    assert _cli("tune", "--trace", path, "--max-graphs", -1, "-o", out) == 2
    assert _cli("tune", "--trace", path, "--base", tmp_path / "none.yaml", "-o", out) == 2
    assert _cli("tune", "--trace", path, "--costs", tmp_path / "none.yaml", "-o", out) == 2
    assert _cli("tune", "--trace", path, "--step-ms", 10, "--max-wait-ms", 2, "-o", out) == 2
    assert _cli("tune", "--trace", path, "--max-batch", 0, "-o", out) == 2
    err = capsys.readouterr().err
    assert "omnienc tune: error:" in err and "Traceback" not in err and "--calibrate" in err


def test_tune_cli_writes_the_base_when_it_cannot_beat_it(tmp_path, capsys):
    """A base that is already the optimum under the model: the search ties it, so the base is written."""
    path, out, base = tmp_path / "t.jsonl", tmp_path / "tuned.yaml", tmp_path / "base.yaml"
    rng = random.Random()
    write_trace(path, [vis(i * 0.5 + rng.random() * 0.1, (1, 28, 28)) for i in range(20)])
    BucketGrid(vision=ModalityGrid("vision", (B(784, 1),))).to_yaml(base)
    assert _cli("tune", "--trace", path, "--base", base, "--max-graphs", 3, "-o", out) == 0
    text = capsys.readouterr().out
    assert "did not beat the base" in text
    assert BucketGrid.from_yaml(out) == BucketGrid.from_yaml(base)
    assert "the search did not beat the base, so this is the base" in out.read_text()


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


def test_reports_name_the_card_and_flag_a_foreign_model(tmp_path, capsys):
    """Every simulate and tune report names the card of its cost model; a prediction for another card
    (--card, or the card --measure runs on) is flagged as such, in the table and the JSON."""
    costs = CostModel.load()
    own = simulate(TINY, GRID, costs=costs, step_ms=10, card=costs.card)
    other = simulate(TINY, GRID, costs=costs, step_ms=10, card="NVIDIA H100 80GB HBM3")
    assert own.card_note is None and f"measured on {costs.card}" in own.format_table()
    assert "FOREIGN" not in own.format_table() and not own.to_dict()["foreign_card"]
    d = other.to_dict()
    assert d["foreign_card"] and d["card"] == costs.card and "not on NVIDIA H100 80GB HBM3" in d["card_note"]
    assert "FOREIGN CARD" in other.format_table() and other.ms == own.ms
    path, grid, file = tmp_path / "t.jsonl", tmp_path / "g.yaml", tmp_path / "costs.yaml"
    write_trace(path, TINY)
    GRID.to_yaml(grid)
    costs.save(file)
    assert _cli("simulate", "--trace", path, "--grid", grid, "--costs", file, "--card", "NVIDIA H100 80GB HBM3") == 0
    assert "FOREIGN CARD" in capsys.readouterr().out
    assert _cli("simulate", "--trace", path, "--grid", grid, "--costs", file, "--card", costs.card, "--json") == 0
    assert json.loads(capsys.readouterr().out)["foreign_card"] is False
    out = tmp_path / "tuned.yaml"
    assert _cli("tune", "--trace", path, "--costs", file, "--card", "NVIDIA H100 80GB HBM3", "-o", out) == 0
    text = capsys.readouterr().out
    assert f"with a model of {costs.card}" in text and "FOREIGN CARD" in text


def test_tune_verify(tmp_path, capsys, monkeypatch):
    """Without CUDA, --verify says that it needs a GPU and writes the tuned grid as without it. With a
    GPU (its measurement stood in), the grid is tuned on the trace's first two thirds, base and tuned
    are measured on the last third, both figures are said, and the faster is written."""
    path, out, plain, costs = (tmp_path / n for n in ("t.jsonl", "v.yaml", "p.yaml", "c.yaml"))
    records = generate_trace(seconds=3, rate=20, seed=random.randrange(10**6))
    write_trace(path, records)
    linear_costs(1.0).save(costs)  # padding costs: the search beats the default grid
    assert tune.keep_faster(100.0, 80.0, True) == "tuned" and tune.keep_faster(80.0, 100.0, True) == "base"
    assert tune.keep_faster(80.0, 80.0, True) == "base" and tune.keep_faster(80.0, 100.0, False) == "tuned"
    assert tune.keep_faster(100.0, 80.0, True, base_failed=0, tuned_failed=2) == "base"
    monkeypatch.setattr(tune, "cuda_available", lambda: False)
    assert _cli("tune", "--trace", path, "--costs", costs, "--verify", "-o", out) == 0
    assert "needs a GPU" in capsys.readouterr().out
    assert _cli("tune", "--trace", path, "--costs", costs, "-o", plain) == 0
    assert BucketGrid.from_yaml(out) == BucketGrid.from_yaml(plain) != BucketGrid.default()
    monkeypatch.setattr(tune, "cuda_available", lambda: True)
    for base_ms, tuned_ms in ((100.0, 80.0), (100.0, 120.0)):
        seen = []

        def fake(records, grids, batching, config):
            seen.append((len(records), sorted(grids)))
            return {"base": base_ms, "tuned": tuned_ms, "card": "NVIDIA H200", "base_stats": {}, "tuned_stats": {},
                    "base_bound_units": None, "tuned_bound_units": None}

        monkeypatch.setattr(tune, "measure_grids", fake)
        assert _cli("tune", "--trace", path, "--costs", costs, "--verify", "--card", "NVIDIA H200", "-o", out) == 0
        text = capsys.readouterr().out
        assert seen == [(len(records) // 3, ["base", "tuned"])]
        assert f"base {base_ms:.1f} ms measured" in text and f"tuned {tuned_ms:.1f} ms measured" in text
        held = records[len(records) - len(records) // 3:]  # priced as the timed runs ran: after a whole untimed run
        warmed = simulate(held, BucketGrid.default(), BatchPolicy(), CostModel.load(costs), card="NVIDIA H200",
                          warmup=len(held))
        assert f"base {base_ms:.1f} ms measured (predicted {warmed.ms:.1f}" in text
        written, header = BucketGrid.from_yaml(out), out.read_text()
        assert (written == BucketGrid.default()) == (base_ms <= tuned_ms)
        assert f"of its {len(records)} requests" in header and "held-out last third" in header


def test_verify_measures_the_grids_in_turns_and_takes_each_ones_mean(monkeypatch):
    """What a process pays once falls on no grid's figure: each grid runs once untimed first (the
    first run much slower here). A drift over the process must not fall on one grid: then base,
    tuned, tuned, base; each grid's figure the mean of its runs, its statistics its last run's."""
    drift = [random.uniform(1.3, 1.6), random.uniform(1.0, 1.1),  # the untimed runs
             random.uniform(1.05, 1.1), random.uniform(1.0, 1.05), random.uniform(1.0, 1.05), 1.0]
    cost = {"base": random.uniform(900, 1100), "tuned": random.uniform(700, 900)}
    grids = {"base": BucketGrid.default(), "tuned": BucketGrid(vision=ModalityGrid("vision", (Bucket(4096, 16),)))}
    order, share = [], random.uniform(0.05, 0.2)

    def measure(records, grid, batching, config=None, encoders=None):
        name = next(n for n, g in grids.items() if g is grid)
        ms = cost[name] * drift[len(order)]
        order.append(name)
        return {"stats": {"vision": {"ms": ms}, "audio": {"ms": ms * share}, "requests": 1},
                "card": "NVIDIA H100 80GB HBM3", "failed": len(order) == 1, "bound_units": {"vision": len(order)}}

    monkeypatch.setattr(simulate_tool, "measure", measure)
    monkeypatch.setattr(simulate_tool, "build_measure_encoders", lambda: None)
    got = tune.measure_grids([], grids, BatchPolicy(), RuntimeConfig())
    assert order == ["base", "tuned", "base", "tuned", "tuned", "base"]
    total = 1 + share  # both modalities of a run
    assert got["base_runs"] == pytest.approx([cost["base"] * drift[2] * total, cost["base"] * drift[5] * total])
    assert got["base_untimed"] == pytest.approx([cost["base"] * drift[0] * total])
    assert got["tuned_modality_runs"] == [{"vision": cost["tuned"] * drift[k], "audio": cost["tuned"] * drift[k] * share}
                                          for k in (3, 4)]
    assert got["tuned_runs"] == pytest.approx([cost["tuned"] * drift[3] * total, cost["tuned"] * drift[4] * total])
    assert got["base"] == pytest.approx(cost["base"] * (drift[2] + drift[5]) / 2 * total)
    assert got["tuned"] == pytest.approx(cost["tuned"] * (drift[3] + drift[4]) / 2 * total)
    assert got["base_failed"] == 0 and got["tuned_failed"] == 0  # the untimed run's failure is not counted
    assert got["base_bound_units"] == {"vision": 6}
    assert got["base_stats"]["vision"]["ms"] == cost["base"] * drift[5]
    order.clear()
    got = tune.measure_grids([], grids, BatchPolicy(), RuntimeConfig(), warmup=0)
    assert order == ["base", "tuned", "tuned", "base"] and got["base_failed"] == 1  # the most of any timed run


def test_measure_grids_warms_on_another_trace_and_calls_a_hook_before_each_run(monkeypatch):
    """With ``warm_records`` the untimed runs take that trace and the timed ones the measured trace;
    ``before_each`` runs before every run (untimed and timed), so a run can start with shape caches
    emptied."""
    grids = {"base": BucketGrid.default(), "tuned": BucketGrid(vision=ModalityGrid("vision", (Bucket(4096, 16),)))}
    measured, warm = [object()], [object(), object()]
    events = []

    def measure(records, grid, batching, config=None, encoders=None):
        events.append(("run", "warm" if records is warm else "measured" if records is measured else "?"))
        return {"stats": {"vision": {"ms": random.uniform(1, 2)}}, "card": "c", "failed": 0, "bound_units": {}}

    monkeypatch.setattr(simulate_tool, "measure", measure)
    monkeypatch.setattr(simulate_tool, "build_measure_encoders", lambda: None)
    tune.measure_grids(measured, grids, BatchPolicy(), RuntimeConfig(), warm_records=warm,
                       before_each=lambda: events.append(("hook",)))
    assert events == [("hook",), ("run", "warm")] * 2 + [("hook",), ("run", "measured")] * 4


def test_first_sightings_of_cudnn_graphs_are_priced_once():
    """Where the model measured cuDNN graph builds, an uncaptured vision call of at least
    eager_cudnn_tokens tokens pays one build the first time its graph's key (segment count and longest
    segment, rounded up) is seen; later calls of that key, smaller calls and replays pay none. A
    warm-up batch (measure's) builds its keys before the trace."""
    base = CostModel.load()
    probes = {k: list(v.probes) for k, v in base.surfaces.items()}
    plain = CostModel.from_probes(probes, card="x", cudnn_steps=[16, 1024])
    build = random.uniform(10, 40)
    costs = CostModel.from_probes({**probes, ("vision", "build"): [Probe(9600, 24, (build,))]}, card="x",
                                  cudnn_steps=[16, 1024])
    grid = BucketGrid(vision=ModalityGrid("vision", (B(1024, 4), B(20000, 64)), graphs_up_to=1024))
    records = [vis(0, (1, 100, 100)), vis(1, (1, 100, 100)), vis(2, (1, 96, 100)),  # 10000, 10000, 9600: one key
               vis(3, (1, 40, 40)), vis(4, *[(1, 30, 40)] * 12), vis(5, (1, 8, 8))]  # small; a new key; a replay
    got, without = (simulate(records, grid, costs=c, step_ms=10, config=NO_EXACT) for c in (costs, plain))
    assert got.counts["vision"]["cudnn_builds"] == 2 and without.counts["vision"]["cudnn_builds"] == 0
    assert got.ms - without.ms == pytest.approx(2 * build)
    warmed = simulate(records, grid, costs=costs, step_ms=10, config=NO_EXACT, warmup=1)
    assert warmed.counts["vision"]["cudnn_builds"] == 1 and warmed.requests == len(records)
    assert warmed.ms == pytest.approx(got.ms - build)


def test_new_frame_shapes_are_priced_once_until_forgotten(monkeypatch):
    """Where the model measured layouts, a vision run pays one layout per frame shape the encoder has not
    cached, whatever kind of run meets it; the cache keeps the last FRAME_LAYOUT_CACHE shapes (least
    recent dropped); a warm-up lays out its shapes; forgetting after it makes every shape new again."""
    import omnienc.runtime.simulator as simulator

    base = CostModel.load()
    probes = {k: list(v.probes) for k, v in base.surfaces.items()}
    plain = CostModel.from_probes(probes, card="x")
    price = random.uniform(1, 4)
    costs = CostModel.from_probes({**probes, ("vision", "layout"): [Probe(1600, 4, (price,))]}, card="x")
    grid = BucketGrid(vision=ModalityGrid("vision", (B(1024, 4), B(8192, 16)), graphs_up_to=1024))
    a, b, c = (1, 10, 12), (1, 12, 10), (1, 20, 20)
    records = [vis(0, a), vis(1, a, b), vis(2, (3, *a[1:])), vis(3, c), vis(4, b, c), vis(5, (1, 14, 14)),
               aud(6, 500)]  # new shapes: a; b; -; c; -; the last: four
    got, without = (simulate(records, grid, costs=co, step_ms=10, config=NO_EXACT) for co in (costs, plain))
    assert got.counts["vision"]["new_frame_shapes"] == 4 and got.counts["audio"]["new_frame_shapes"] == 0
    assert got.ms - without.ms == pytest.approx(4 * price)
    warmed = simulate(records, grid, costs=costs, step_ms=10, config=NO_EXACT, warmup=1)
    assert warmed.counts["vision"]["new_frame_shapes"] == 3 and warmed.ms == pytest.approx(got.ms - price)
    seen = simulate(records, grid, costs=costs, step_ms=10, config=NO_EXACT, warmup=len(records))
    assert seen.counts["vision"]["new_frame_shapes"] == 0 and seen.ms == pytest.approx(without.ms)
    fresh = simulate(records, grid, costs=costs, step_ms=10, config=NO_EXACT, warmup=len(records), forget_shapes=True)
    assert fresh.counts["vision"]["new_frame_shapes"] == 4 and fresh.ms == pytest.approx(got.ms)
    # two shapes kept: a; a b; (a); c drops b; b drops a, (c); d drops b; a drops c: six layouts
    from omnienc.encoders.vision import FRAME_LAYOUT_CACHE, _frame_layout

    assert simulator.FRAME_LAYOUT_CACHE == FRAME_LAYOUT_CACHE == _frame_layout.cache_parameters()["maxsize"]
    monkeypatch.setattr(simulator, "FRAME_LAYOUT_CACHE", 2)
    small = simulate(records + [vis(7, a)], grid, costs=costs, step_ms=10, config=NO_EXACT)
    assert small.counts["vision"]["new_frame_shapes"] == 6


def test_verify_breakdown_says_where_a_grid_was_measured():
    """``tune --verify``'s breakdown line: measured and predicted ms per modality and per kind of run that ran,
    from a real (CPU) measurement of a short trace and the simulation of the same batches."""
    from omnienc.runtime.batching import BatchPolicy
    from omnienc.runtime.costs import CostModel
    from omnienc.runtime.grid import BucketGrid
    from omnienc.runtime.simulator import simulate as run_simulation
    from omnienc.tools.simulate import measure
    from omnienc.tools.tracegen import generate_trace
    from omnienc.tools.tune import breakdown

    records = []
    while not records:  # a second of Poisson arrivals may bring none
        records = generate_trace(seconds=1, rate=4, seed=random.randrange(10**6))
    grid = BucketGrid.from_dict({"dtype": "float32",
                                 "vision": {"patches": [1024, 4096], "batch": [2], "graphs_up_to": 1024},
                                 "audio": {"frames": [1000, 3000], "batch": [2]}})
    from omnienc.encoders import AudioEncoder, VisionEncoder

    from conftest import tiny_audio_config, tiny_vision_config

    encoders = (VisionEncoder(tiny_vision_config()).eval(), AudioEncoder(tiny_audio_config()).eval(), "cpu")
    got = measure(records, grid, BatchPolicy(), encoders=encoders)
    report = run_simulation(records, grid, BatchPolicy(), CostModel.load(), warmup=1)
    line = breakdown("base", report, got["stats"])
    assert line.startswith("  base, measured/predicted ms: ")
    for m in report.modalities:
        if m.requests:
            measured = got["stats"][m.modality]["ms"]
            assert f"{m.modality} {measured:.1f}/{m.ms:.1f} (" in line
            ran = [k for k, v in got["stats"][m.modality]["kinds"].items() if v["runs"]]  # none if all failed
            assert all(f"{k} " in line for k in ran)
