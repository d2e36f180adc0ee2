"""Acceptance of the tuner on the CPU: never worse than the base, small requests kept on
graphs, graphs_up_to follows the calibration, and a grid tuned on one trace holds on another."""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omnienc.runtime.tune as tuner
from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel, Probe
from omnienc.runtime.grid import Bucket, BucketGrid, ModalityGrid
from omnienc.runtime.packing import BucketSet, Demand, pack
from omnienc.runtime.simulator import batches, group_records, simulate, simulate_modality
from omnienc.runtime.split import PieceLimit, piece_demands
from omnienc.runtime.trace import TraceRecord
from omnienc.tools.tracegen import generate_trace

SMALL = {"vision": 3000, "audio": None}  # small requests: vision up to 3000 patches, audio all
NO_EXACT = RuntimeConfig(exact_graphs=False)  # the search over buckets, without exact-layout graphs


def model(replay, eager, note="test") -> CostModel:
    """A cost model from two functions ``f(modality, size, batch) -> ms`` at probe points that keep
    them exact where they are piecewise linear in size at these sizes and linear in 1/batch."""
    probes = {}
    for m, sizes in (("vision", (4, 1000, 3000, 6000, 12000, 30000, 100000)),
                     ("audio", (100, 1000, 3000, 6000, 13000, 100000))):
        for kind, f in (("replay", replay), ("eager", eager)):
            probes[m, kind] = [Probe(s, b, (f(m, s, b),)) for s in sizes for b in (1, 16)]
    return CostModel.from_probes(probes, source=note)


def eager_path_shares(records, grid, batching=BatchPolicy()):
    """Per modality: the share of its small requests left on the eager path, and the share served by
    a graph (replay). A small request is *left on the eager path* when it runs eagerly (a fallback,
    or an eager bucket's run) and nothing in its pack is above the modality's graphs_up_to: a pack
    that holds such a request runs eagerly by the grid's design, and a small request that arrived
    in the same batch rides along (cheaper than a replay of its own under the model). A request
    larger than every bucket runs as its pieces (``split``), as the runtime runs it: served by a
    graph when every piece is."""
    left, by_graph, total = {}, {}, {}
    for m, limit in SMALL.items():
        g = grid.modality(m)
        prepared = BucketSet(g.buckets if g else ())
        largest = max(g.buckets, key=lambda b: (b.size, b.batch)) if g and g.buckets else None
        top = (max(b.size for b in g.graph_buckets) if g and g.graph_buckets else 0) if g else 0
        n_left = n_graph = n = 0
        for group in group_records(records, batching):
            ids = [i for i in group if records[i].modality == m]
            owner, parts = [], []  # per piece: its request
            for i in ids:
                d = records[i].demand
                uncut = not largest or prepared.smallest(d.size, d.batch) is not None
                cut = [d] if uncut else piece_demands(m, d, PieceLimit(largest.size, largest.batch))
                owner += [i] * len(cut)
                parts += cut
            graph_all, left_any = {}, {}
            for r in pack(parts, prepared):
                ds = [parts[k] for k in r.members]
                graph = r.bucket is not None and g.is_graph(r.bucket)
                rides = any(d.size > top for d in ds)
                for k, d in zip(r.members, ds):
                    i = owner[k]
                    graph_all[i] = graph_all.get(i, True) and graph
                    left_any[i] = left_any.get(i, False) or (not graph and not (rides and d.size <= top))
            for i in ids:
                if limit is None or records[i].demand.size <= limit:
                    n += 1
                    n_graph += graph_all[i]
                    n_left += left_any[i]
        left[m], by_graph[m], total[m] = n_left / max(n, 1), n_graph / max(n, 1), n
    return left, by_graph, total


# --- never worse than the base (property) ----------------------------------------------------------


@st.composite
def cases(draw):
    rng = random.Random(draw(st.integers(0, 10**9)))
    records = []
    for _ in range(draw(st.integers(1, 14))):
        ts = round(rng.uniform(0, 0.03), 4)
        if rng.random() < 0.55:
            items = [(rng.choice([1, 1, 2]), 2 * rng.randint(1, 20), 2 * rng.randint(1, 20))
                     for _ in range(rng.choice([1, 1, 2]))]
            records.append(TraceRecord(ts, "vision", grid_thw=items))
        else:
            records.append(TraceRecord(ts, "audio", frames=[rng.randint(1, 1500) for _ in range(rng.choice([1, 1, 2]))]))
    grids = {}
    for m, unit, top in (("vision", 4, 400), ("audio", 100, 40)):
        if rng.random() < 0.15:
            continue
        sizes = [rng.randint(1, top) for _ in range(rng.randint(1, 5))]  # in units; a batch fits its size
        buckets = {Bucket(unit * n, rng.randint(1, min(4, n))) for n in sizes}
        up_to = rng.choice([None, unit * rng.randint(1, top)])
        grids[m] = ModalityGrid(m, tuple(buckets), up_to)
    base = BucketGrid(vision=grids.get("vision"), audio=grids.get("audio"))
    a, b, c, d = (rng.uniform(0.2, 5), rng.uniform(0, 3e-3), rng.uniform(0.2, 12), rng.uniform(0, 4e-3))
    costs = model(lambda m, s, n: a + b * s + 1e-7 * s * s / n, lambda m, s, n: c + d * s + 1e-7 * s * s / n)
    slack = draw(st.integers(-2, 3))
    batching = draw(st.sampled_from([BatchPolicy(), BatchPolicy(5, 3), BatchPolicy(0, 1), 10.0, 0.0]))
    return records, base, costs, max(0, base.num_graphs + slack), batching


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_never_worse_than_the_base(case):
    """On random traces, base grids, cost models and batching: the result keeps the constraints,
    its predicted time is what the simulator says, and it is never worse than an admissible base."""
    records, base, costs, max_graphs, batching = case
    result = tuner.tune(records, costs, max_graphs, batching, base=base)
    assert result.grid.num_graphs <= max_graphs
    assert result.ms == pytest.approx(simulate(records, result.grid, batching, costs).ms, rel=1e-9)
    assert result.base_ms == pytest.approx(simulate(records, base, batching, costs).ms, rel=1e-9)
    assert result.base_admissible == (base.num_graphs <= max_graphs)
    if result.base_admissible:
        assert result.ms <= result.base_ms * (1 + 1e-9)
        assert result.from_base == (result.searched_ms >= result.base_ms)
    else:
        assert not result.from_base


# --- the calibration decides -------------------------------------------------------------------


@pytest.fixture(scope="module")
def trace60():
    return generate_trace(seconds=60, rate=20, seed=5)


@pytest.mark.parametrize("max_graphs", [8, 15])
def test_eager_three_times_a_replay_keeps_small_requests_on_graphs(trace60, max_graphs):
    """With eager runs 3x a replay of the same size, no modality is left with over 1.5% of its small
    requests on the eager path (the FLOP tuner gave audio no graphs at --max-graphs 15)."""
    linear = lambda m, s, n: 1.0 + (1e-3 if m == "vision" else 4e-4) * s  # noqa: E731
    costs = model(linear, lambda m, s, n: 3 * linear(m, s, n))
    result = tuner.tune(trace60, costs, max_graphs, base=BucketGrid.default(), config=NO_EXACT)
    left, by_graph, n = eager_path_shares(trace60, result.grid)
    assert n["vision"] > 300 and n["audio"] > 300
    assert left["vision"] <= 0.015 and left["audio"] <= 0.015, (left, result.grid)
    assert result.grid.audio.graph_buckets and result.grid.vision.graph_buckets


def test_graphs_up_to_follows_the_calibration(trace60):
    """Where the calibration says large eager runs are cheaper than replays, the search stops the
    graphs below that size and runs larger packs in an eager bucket; where eager is always 3x a
    replay it captures graphs far above it; and back again with the first calibration."""
    replay = lambda m, s, n: 1.0 + 2e-3 * s  # noqa: E731
    cheap = model(replay, lambda m, s, n: 6.0 + 0.5e-3 * s if m == "vision" else 3 * replay(m, s, n))
    dear = model(replay, lambda m, s, n: 3 * replay(m, s, n))
    cross = 5.0 / 1.5e-3  # vision: eager is cheaper than an unpadded replay above 3333 patches
    tops = []
    for costs in (cheap, dear, cheap):
        g = tuner.tune(trace60, costs, 16, config=NO_EXACT).grid.vision
        tops.append((g.graphs_up_to, max(b.size for b in g.graph_buckets)))
    (up_cheap, top_cheap), (up_dear, top_dear), again = tops
    assert up_cheap is not None and top_cheap <= 1.2 * cross  # eager above the crossover
    assert top_dear > 2 * cross and (up_dear is None or up_dear > 2 * cross)
    assert again == tops[0]


# --- held out: tune on one trace, judge on another ---------------------------------------------


@pytest.fixture(scope="module")
def held_out():
    train, test = generate_trace(300, 20, seed=0), generate_trace(300, 20, seed=1)
    return tuner.tune(train, max_graphs=16, base=BucketGrid.default(), config=NO_EXACT), test


def one_d_optimum(packs: list[int], k: int) -> list[int]:
    """The k bucket sizes of least padding for ``packs`` (each run alone, all on graphs)."""
    size = lambda S, s, b: np.asarray(S, float) + 0 * np.asarray(s, float)  # noqa: E731  padding + const
    never = lambda s, b: np.full(np.shape(s), 1e12)  # noqa: E731  nothing may run eagerly
    return sorted(b.size for b in tuner.optimal_buckets([Demand(p, 1) for p in packs], k, size, never)[k])


def test_held_out_trace(held_out):
    """Tuned on tracegen seed 0 (300 s, the packaged model, the service's batching), judged on seed 1:
    <= 16 graphs; per modality fallbacks <= 1.5%; small requests on graphs >= 98.5% (not left on the
    eager path); no slower, predicted, than graphs of the sizes that pad its replays least (as many
    sizes, its largest batch): padding is not the aim where a larger bucket runs a faster kernel
    (cuDNN from 8192 patches in the packaged model)."""
    result, test = held_out
    grid = result.grid
    assert grid.num_graphs <= 16 and not result.from_base and result.ms < result.base_ms
    report = simulate(test, grid, config=NO_EXACT)
    left, by_graph, n = eager_path_shares(test, grid)
    for m in ("vision", "audio"):
        assert report[m].fallback_share <= 0.015, m
        assert 1 - left[m] >= 0.985 and by_graph[m] >= 0.97, (m, left[m], by_graph[m])
        g = grid.modality(m)
        packs = [r for r in simulate_modality(batches(test, m), m, g.buckets, g.is_graph)[1]
                 if r.bucket is not None and g.is_graph(r.bucket)]
        k = len({b.size for b in g.graph_buckets})
        least_padding = ModalityGrid(m, tuple(Bucket(size, max(b.batch for b in g.buckets))
                                              for size in one_d_optimum([r.size for r in packs], k)))
        other = BucketGrid(grid.dtype, *(least_padding if n == m else grid.modality(n) for n in ("vision", "audio")))
        assert report[m].ms <= simulate(test, other, config=NO_EXACT)[m].ms, m
    assert report.ms <= simulate(test, BucketGrid.default(), config=NO_EXACT).ms  # and beats the default there
