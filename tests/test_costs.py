"""The GPU-time cost model (runtime/costs.py): interpolation, monotonicity, files, calibration on the CPU."""

import argparse
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import omnienc.runtime.costs as costs_module
from omnienc.runtime.calibrate import PROBES, audio_items, probe_grid, vision_items
from omnienc.runtime.costs import CostError, CostModel, Probe, Surface, attention_segments, card_family, card_note
from omnienc.runtime.grid import Bucket
from omnienc.runtime.packing import Demand, Pack, audio_demand, vision_demand


def random_model(rng: random.Random, sizes=None, batches=None, jitter=0.0) -> CostModel:
    """Random surfaces: a + b*S + c*S^2/batch per point, plus optional noise (then not monotone)."""
    probes = {}
    for m, unit in (("vision", 4), ("audio", 100)):
        for k in ("replay", "eager"):
            ss = sizes or sorted(rng.sample(range(1, 60), rng.randint(2, 5)))
            bs = batches or sorted(rng.sample([1, 2, 3, 4, 8, 16, 32], rng.randint(1, 3)))
            a, b, c = rng.uniform(0.1, 9), rng.uniform(0, 3e-3), rng.uniform(0, 1e-6)
            probes[m, k] = [Probe(s * unit, n, tuple(max(0.0, a + b * s * unit + c * (s * unit) ** 2 / n
                                                         + rng.gauss(0, jitter)) for _ in range(3)))
                            for s in ss for n in bs]
    return CostModel.from_probes(probes, card="test", torch="x", date="2026-11-28", command="test",
                                 dtype="bfloat16", measured=True, note="random")


def test_interpolates_measured_points():
    """Exact at measured points; linear between sizes; linear in 1/batch between batches (so
    a + c/b is reproduced exactly); constant below the smallest size; the last slope above the
    largest; batches clamped outside the measured ones."""
    rng = random.Random()
    a, b, c = rng.uniform(1, 5), rng.uniform(1e-4, 1e-3), rng.uniform(1, 10)
    f = lambda s, n: a + b * s + c * s / 1000 / n  # noqa: E731  linear in s and in 1/n
    sizes, batches = [100, 400, 1600, 3000], [1, 4, 16]
    surf = Surface("vision replay", [Probe(s, n, (f(s, n),)) for s in sizes for n in batches])
    for s in sizes:
        for n in batches:
            assert surf(s, n) == pytest.approx(f(s, n), rel=1e-12)
    for _ in range(50):
        s, n = rng.uniform(100, 3000), rng.uniform(1, 16)
        assert surf(s, n) == pytest.approx(f(s, n), rel=1e-9)  # f is bilinear in (s, 1/n)
        assert surf(s, 0.5) == pytest.approx(f(s, 1)) and surf(s, 99) == pytest.approx(f(s, 16))
        assert surf(rng.uniform(1, 100), n) == pytest.approx(f(100, n), rel=1e-9)
        big = rng.uniform(3000, 50000)
        assert surf(big, n) == pytest.approx(f(big, n), rel=1e-9)  # the last slope continues
    # Medians of the samples are what is fitted.
    med = Surface("audio eager", [Probe(s, 1, (9.0, f(s, 1), -1.0 + 0 * s + 1e9)) for s in sizes])
    assert all(med(s, 1) == pytest.approx(f(s, 1) if f(s, 1) > 9 else 9.0) for s in sizes[:1])


def test_a_kernel_change_splits_the_surface():
    """With ``cudnn_from`` (runs from that size took cuDNN), sizes below it are priced from the points
    below only, continued with their slope, and sizes from it from the points from it: a bucket just
    under the change is not priced as the cheaper kernel. Without it, or with too few points a side,
    the surface is one. The key survives a round trip and a bad value is refused."""
    rng = random.Random()
    a, b, c, d = rng.uniform(1, 5), rng.uniform(2e-3, 4e-3), rng.uniform(1, 5), rng.uniform(5e-4, 1e-3)
    slow = lambda s: a + b * s  # noqa: E731  below 8192: one kernel
    fast = lambda s: c + d * s  # noqa: E731  from 8192: a cheaper one
    sizes = [256, 1600, 6400, 8192, 16384]
    pts = [Probe(s, n, ((slow if s < 8192 else fast)(s),)) for s in sizes for n in (1, 16)]
    probes = {(m, k): pts for m in ("vision", "audio") for k in ("replay", "eager")}
    meta = dict(card="test", dtype="bfloat16", measured=True)
    split = CostModel.from_probes(probes, cudnn_from={"vision": {"replay": 8192}}, **meta)
    one = CostModel.from_probes(probes, **meta)
    under = rng.uniform(6400, 8191)
    assert split.replay_ms("vision", Bucket(int(under), 1)) == pytest.approx(slow(int(under)), rel=1e-9)
    assert one.replay_ms("vision", Bucket(int(under), 1)) < slow(int(under))  # mixed: underpriced
    over = rng.randint(8192, 30000)
    assert split.replay_ms("vision", Bucket(over, 1)) == pytest.approx(fast(over), rel=1e-9)
    assert split.eager_ms("vision", int(under)) == one.eager_ms("vision", int(under))  # eager: not split
    surf = split.surfaces["vision", "replay"]
    qs = np.array([rng.uniform(100, 30000) for _ in range(50)])
    assert np.allclose(surf.many(qs, np.full(50, 4.0)), [surf(q, 4.0) for q in qs], rtol=1e-12)
    again = CostModel.from_dict(split.to_dict())
    assert again.meta["cudnn_from"] == {"vision": {"replay": 8192}} and again.surfaces["vision", "replay"].split == 8192
    few = CostModel.from_probes(probes, cudnn_from={"vision": {"replay": 16384}}, **meta)  # one size from it
    assert few.surfaces["vision", "replay"].split is None
    for bad in ({"vision": {"replay": "8192"}}, {"video": {"replay": 8192}}, {"vision": {"floor": 8}}, [8192]):
        with pytest.raises(CostError, match="cudnn_from"):
            CostModel.from_probes(probes, cudnn_from=bad, **meta)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**9), jitter=st.sampled_from([0.0, 0.5, 3.0]))
def test_monotone_in_size(seed, jitter):
    """Noisy medians may fall with size; the model never does (any batch, any sizes, above and below
    the probes), and the vectorised form agrees with the scalar one."""
    rng = random.Random(seed)
    model = random_model(rng, jitter=jitter)
    for (m, k), surf in model.surfaces.items():
        lo, hi = surf.sizes[0], surf.sizes[-1]
        qs = sorted(rng.uniform(1, 2 * hi) for _ in range(40)) + [lo, hi]
        qs.sort()
        for n in (1, 2.5, 7, 40, rng.uniform(1, 32)):
            vals = [surf(s, n) for s in qs]
            assert all(x <= y + 1e-9 for x, y in zip(vals, vals[1:])), (m, k, n)
            many = surf.many(np.array(qs), np.full(len(qs), n))
            assert np.allclose(many, vals, rtol=1e-12, atol=1e-12)
        ns = np.array([rng.uniform(1, 40) for _ in qs])
        assert np.allclose(surf.many(np.array(qs), ns), [surf(s, n) for s, n in zip(qs, ns)], rtol=1e-12)


def test_predictions_of_runs():
    rng = random.Random()
    model = random_model(rng)
    b = Bucket(800, 4)
    rep = Pack(b, (0, 1), 700, 3)
    assert model.run_ms("audio", rep, graph=True) == model.replay_ms("audio", b, 3)
    assert model.run_ms("audio", rep, graph=True, segments=2.5) == model.replay_ms("audio", b, 2.5)
    assert model.run_ms("audio", rep, graph=False) == model.eager_ms("audio", 700, 3)
    assert model.replay_ms("vision", b) == model.surfaces["vision", "replay"](800, 4)
    fallback = Pack(None, (0,), 9000, 2)
    assert model.run_ms("vision", fallback, graph=False) == model.eager_ms("vision", 9000, 2)
    with pytest.raises(CostError, match="fallback"):
        model.run_ms("vision", fallback, graph=True)
    with pytest.raises(CostError, match="modality"):
        model.eager_ms("text", 10)


def with_points(model: CostModel, rng: random.Random) -> tuple[CostModel, dict, dict]:
    """``model`` plus measured host floors and capture runs (floor + a capture cost, with noise)."""
    probes = {k: list(surf.probes) for k, surf in model.surfaces.items()}
    floor, cost = {}, {}
    for m in ("vision", "audio"):
        floor[m], cost[m] = rng.uniform(5, 30), rng.uniform(1, 20)
        probes[m, "floor"] = [Probe(16, 1, (0.99 * floor[m], floor[m], 1.01 * floor[m]))]
        probes[m, "capture"] = [Probe(16, 1, tuple(floor[m] + cost[m] + d for d in (-0.1, 0.0, 0.1)))]
    return CostModel.from_probes(probes, card="test", measured=True), floor, cost


def test_pricing_rules_of_each_kind():
    """An exact replay costs the replay surface at the pack's own size; an uncaptured call (eager,
    merged, fallback) never goes below the measured host floor; a capture costs max(its eager run,
    floor + capture cost), the cost being the capture runs less the floor. Without those points the
    floor is the cheapest eager point, the capture cost one floor, and the model says so."""
    rng = random.Random()
    base = random_model(rng)
    model, floor, cost = with_points(base, rng)
    for m, unit in (("vision", 4), ("audio", 100)):
        assert model.floor_ms(m) == pytest.approx(floor[m]) and model.capture_cost_ms(m) == pytest.approx(cost[m])
        for _ in range(30):
            units, segs = rng.randint(1, 300) * unit, rng.uniform(1, 20)
            eager = max(base.surfaces[m, "eager"](units, segs), floor[m])
            for kind in ("eager", "merged", "fallback"):
                assert model.price(m, kind, units, segs) == pytest.approx(eager)
            assert model.price(m, "exact_capture", units, segs) == pytest.approx(max(eager, floor[m] + cost[m]))
            assert model.price(m, "exact_replay", units, segs) == base.surfaces[m, "replay"](units, segs)
            b = Bucket(units + rng.randint(0, 50) * unit, 4)
            assert model.price(m, "replay", units, segs, b) == base.replay_ms(m, b, segs)
        least = float(base.surfaces[m, "eager"].table.min())
        assert base.floor_ms(m) == least and base.capture_cost_ms(m) == least
    assert "floor and capture estimated" in base.describe() and "estimated" not in model.describe()
    with pytest.raises(CostError, match="kind of run"):
        model.price("vision", "replays", 10, 1)


def test_attention_segments():
    one = vision_demand([(1, 60, 60)])  # one 3600-patch frame
    assert attention_segments("vision", 3600, [one]) == 1
    assert attention_segments("vision", 4320, [one]) == pytest.approx((4320 / 3600) ** 2)
    eight = [vision_demand([(1, 28, 28)])] * 8
    assert attention_segments("vision", 6272, eight) == pytest.approx(8)
    assert attention_segments("vision", 6272, [vision_demand([(8, 28, 28)])]) == pytest.approx(8)
    mixed = [one, vision_demand([(1, 28, 28)])]
    assert 1 < attention_segments("vision", 4384, mixed) < 2  # the big frame dominates
    assert attention_segments("audio", 3000, [audio_demand([1000, 370]), audio_demand([99])]) == 3
    for _ in range(20):  # >= 1 whenever the members fit the size
        ds = [Demand(random.randint(1, 500) * 4, random.randint(1, 4)) for _ in range(random.randint(1, 5))]
        assert attention_segments("vision", sum(d.size for d in ds), ds) >= 1 - 1e-12


def test_file_round_trip(tmp_path):
    """Every probe point and sample survives save/load; predictions are identical; meta kept."""
    rng = random.Random()
    model = with_points(random_model(rng, jitter=0.5), rng)[0]
    path = tmp_path / "costs.yaml"
    text = model.save(path, header="measured on a test card\nsecond line")
    assert text.startswith("# measured on a test card\n# second line\nformat: 2\n")
    back = CostModel.load(path)
    assert back.source == str(path) and back.meta["card"] == "test" and back.meta["measured"] is True
    for key, surf in model.surfaces.items():
        got = back.surfaces[key]
        assert [(p.size, p.batch) for p in got.probes] == [(p.size, p.batch) for p in surf.probes]
        assert [p.samples for p in got.probes] == [p.samples for p in surf.probes]
        for _ in range(10):
            s, n = rng.uniform(1, 8000), rng.uniform(1, 40)
            assert got(s, n) == surf(s, n)
    assert back.points == model.points
    for m in ("vision", "audio"):
        assert back.floor_ms(m) == model.floor_ms(m) and back.capture_cost_ms(m) == model.capture_cost_ms(m)
    assert CostModel.load(path).to_dict() == back.to_dict()
    import yaml

    old = yaml.safe_load(text)  # a format-1 file (no floor, no capture) still loads; its points are not format 1
    old["format"] = 1
    for m in ("vision", "audio"):
        del old[m]["floor"], old[m]["capture"]
    path.write_text(yaml.safe_dump(old))
    assert not CostModel.load(path).points
    old["vision"]["floor"] = [{"size": 16, "batch": 1, "samples": [1.0]}]
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(CostError, match="'replay' and 'eager'"):
        CostModel.load(path)


def test_packaged_model_of_the_card(monkeypatch):
    """The packaged model of a card: the same name, else the same family, else the default (H200);
    a model used for another card is flagged with both names."""
    h200 = CostModel.load()
    h100 = CostModel.from_probes({k: list(v.probes) for k, v in h200.surfaces.items()}, "fake_h100",
                                 card="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(costs_module, "packaged_models", lambda: [h200, h100])
    assert costs_module.packaged() is h200 and CostModel.load(card="NVIDIA H100 80GB HBM3") is h100
    assert costs_module.packaged("NVIDIA H100 PCIe") is h100 and costs_module.packaged("NVIDIA A100-SXM4-80GB") is h200
    assert card_family("NVIDIA H100 80GB HBM3") == "H100" and card_family("CPU (x86_64, 2 threads)") is None
    assert card_note(h200, "NVIDIA H200") is None and card_note(h200, None) is None
    note = card_note(h200, "NVIDIA H100 80GB HBM3")
    assert "measured on NVIDIA H200, not on NVIDIA H100 80GB HBM3" in note and "--calibrate" in note
    monkeypatch.undo()
    for model in costs_module.packaged_models():  # every packaged model loads and names its card
        assert card_family(model.card) and model.meta["measured"] is True


def test_packaged_model():
    model = CostModel.load()
    assert model is CostModel.load()  # cached
    assert "costs_h200.yaml" in model.describe() and "measured" in model.describe()
    assert model.meta["measured"] is True and model.meta["dtype"] == "bfloat16"
    sizes, batches = PROBES["real"]["vision", "replay"]
    got = {(p.size, p.batch) for p in model.surfaces["vision", "replay"].probes}
    # points of a real calibration (one made before a point was added may lack it), the whole range
    assert got <= {(s, b) for s in sizes for b in batches}
    assert {(s, b) for s in (min(sizes), max(sizes)) for b in batches} <= got
    # What the H200 calibration says: eager small runs cost several replays; large packs hide launches.
    assert model.eager_ms("audio", 1000) > 3 * model.replay_ms("audio", Bucket(1100, 3), 1)
    assert model.eager_ms("vision", 784) > 2 * model.replay_ms("vision", Bucket(784, 1))
    assert model.eager_ms("vision", 6400, 16) < 1.2 * model.replay_ms("vision", Bucket(6400, 16))


@pytest.mark.parametrize("problem, fragment", [
    ("format", "format"), ("missing point", "no point at size"), ("one size", "at least two sizes"),
    ("bad sample", "finite time"), ("no samples", "empty"), ("unknown key", "unknown"),
    ("missing modality", "audio"), ("bad size", "positive integer"), ("duplicate", "twice"),
])
def test_file_errors(problem, fragment, tmp_path):
    d = random_model(random.Random(0), sizes=[1, 2, 3], batches=[1, 4]).to_dict()
    points = d["vision"]["replay"]
    if problem == "format":
        d["format"] = 3
    elif problem == "missing point":
        points.pop(3)
    elif problem == "one size":
        d["vision"]["replay"] = [p for p in points if p["size"] == 4]
    elif problem == "bad sample":
        points[0]["samples"] = [1.0, float("nan")]
    elif problem == "no samples":
        points[0]["samples"] = []
    elif problem == "unknown key":
        d["cards"] = "x"
    elif problem == "missing modality":
        del d["audio"]
    elif problem == "bad size":
        points[0]["size"] = 0
    elif problem == "duplicate":
        points.append(dict(points[0]))
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(d))
    with pytest.raises(CostError, match=fragment) as e:
        CostModel.load(path)
    assert str(path) in str(e.value)
    with pytest.raises(CostError, match="not found"):
        CostModel.load(tmp_path / "none.yaml")


def test_probe_layouts():
    for s in (256, 784, 1600, 3136, 6400, 16384):
        for b in (1, 4, 16):
            items = vision_items(s, b)
            used = sum(t * h * w for t, h, w in items)
            assert len(items) == b and all(h % 2 == 0 and w % 2 == 0 and t == 1 for t, h, w in items)
            assert 0.75 * s <= used <= s
    assert vision_items(784, 1) == [(1, 28, 28)] and vision_items(16384, 16) == [(1, 32, 32)] * 16
    assert audio_items(3200, 4) == [800] * 4 and sum(audio_items(12800, 4)) == 12800
    with pytest.raises(ValueError, match="segment"):
        vision_items(8, 4)
    with pytest.raises(ValueError, match="clip"):
        audio_items(400, 8)
    for name, probes in PROBES.items():  # every probe can be filled, and the grid loads
        g = probe_grid(probes, "bfloat16")
        assert g.num_graphs == sum(len(probes[m, "replay"][0]) * len(probes[m, "replay"][1]) for m in ("vision", "audio"))
        for m, items in (("vision", vision_items), ("audio", audio_items)):
            for k in ("replay", "eager"):
                sizes, batches = probes[m, k]
                assert len(sizes) >= 2
                for s in sizes:
                    for b in batches:
                        items(s, b)


def test_calibrate_on_the_cpu(tmp_path, capsys):
    """`capture --calibrate --sizes reduced` on the CPU: every probe timed, a file that loads and predicts."""
    from omnienc.tools import capture

    parser = argparse.ArgumentParser(prog="omnienc")
    capture.register(parser.add_subparsers(required=True))
    out = tmp_path / "costs.yaml"
    args = parser.parse_args(["capture", "--calibrate-quick", "--device", "cpu", "--sizes", "reduced",
                              "--repeats", "1", "--warmup", "0", "--warm-ms", "1", "-o", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "calibration" in text and "(quick)" in text
    model = CostModel.load(out)
    assert model.meta["measured"] is True and model.card.startswith("CPU") and model.meta["quick"] is True
    assert "capture --calibrate --quick" in model.meta["command"] and model.meta["dtype"] == "float32"
    assert "--warm-ms 1" in model.meta["command"]
    assert f"# on {model.card}, torch" in out.read_text()
    for m in ("vision", "audio"):  # the host floor and the captures, measured through the runtime's paths
        assert model.measured_points(m, "floor") and model.measured_points(m, "capture")
        assert model.floor_ms(m) > 0 and model.capture_cost_ms(m) >= 0
    assert model.measured_points("vision", "layout") and not model.measured_points("audio", "layout")
    assert model.layout_ms("vision") >= 0 and model.layout_ms("audio") == 0
    for (m, k), (sizes, batches) in PROBES["reduced"].items():
        surf = model.surfaces[m, k]
        assert {(p.size, p.batch) for p in surf.probes} == {(s, b) for s in sizes for b in batches}
        assert all(len(p.samples) == 1 and p.ms > 0 for p in surf.probes)
        for s in (1, sizes[0], (sizes[0] + sizes[-1]) / 2, 3 * sizes[-1]):
            assert math.isfinite(surf(s, batches[0])) and surf(s, batches[0]) > 0
    assert model.run_ms("audio", Pack(Bucket(800, 4), (0,), 500, 1), graph=True) > 0
    args = parser.parse_args(["capture", "--calibrate", "--device", "cpu"])
    assert args.func(args) == 2 and "-o FILE" in capsys.readouterr().err
    args = parser.parse_args(["capture", "--quick", "--device", "cpu"])
    assert args.func(args) == 2 and "--calibrate" in capsys.readouterr().err
    args = parser.parse_args(["capture", "--warm-ms", "5", "--device", "cpu"])
    assert args.func(args) == 2 and "--warm-ms" in capsys.readouterr().err


def test_a_warmed_point_runs_until_the_device_was_busy_that_long_within_a_cap():
    from omnienc.runtime.calibrate import WARM_CALLS, _samples

    rng = random.Random()
    ms = [rng.uniform(5.0, 9.0) for _ in range(64)]  # what each run of the probe takes: 30 ms within the cap
    calls = []

    def timer(fn):
        fn()
        return ms[len(calls) - 1]

    samples = _samples(lambda: calls.append(1), timer, warmup=1, repeats=3, warm_ms=30.0)
    warm = len(calls) - 3
    assert sum(ms[: warm - 1]) < 30.0 <= sum(ms[:warm]) and list(samples) == ms[warm : warm + 3]
    calls.clear()
    _samples(lambda: calls.append(1), timer, warmup=2, repeats=1, warm_ms=1e9)
    assert len(calls) == 2 + WARM_CALLS + 1  # the cap, then the timed run
    calls.clear()
    _samples(lambda: calls.append(1), timer, warmup=2, repeats=1)  # no warm_ms: the warm-up count alone
    assert len(calls) == 3


def test_cudnn_key_is_the_encoders_layout():
    """The simulator's key of a cuDNN varlen graph is the segment count and bound the runtime's
    uncaptured call is laid out with (``encoders.attention.cudnn_layout``)."""
    import itertools

    import torch

    from omnienc.encoders.attention import CUDNN_BOUND_STEP, CUDNN_SEGMENT_STEP, cudnn_layout
    from omnienc.runtime.sightings import cudnn_key, segment_lengths

    rng = random.Random()
    for _ in range(50):
        seqlens = [rng.randint(1, 5000) for _ in range(rng.randint(1, 70))]
        cu = torch.tensor([0, *itertools.accumulate(seqlens)], dtype=torch.int32)
        _, padded, bound = cudnn_layout(cu, tuple(seqlens), max(seqlens))
        assert cudnn_key(seqlens, (CUDNN_SEGMENT_STEP, CUDNN_BOUND_STEP)) == (len(padded), bound)
    assert segment_lengths([[(2, 4, 6), (1, 2, 2)], [(1, 8, 8)]]) == [24, 24, 4, 64]


def test_calibrated_replays_build_their_plans_anew():
    """Each timed replay sample builds its pack's host plan (a trace's packs bring new layouts, and the
    device waits for that host work), where a cached plan would price replays below what runs."""
    from conftest import hf_and_native_audio, hf_and_native_vision

    from omnienc.runtime import EncoderRuntime, RuntimeConfig
    from omnienc.runtime.calibrate import _replay_points

    probes = PROBES["reduced"]
    rt = EncoderRuntime(vision=hf_and_native_vision()[1], audio=hf_and_native_audio()[1],
                        grid=probe_grid(probes, "float32"), config=RuntimeConfig(exact_graphs=False))
    rt.capture(progress=False)
    built = {}
    for lane in rt.lanes():
        spec, m = lane.buckets.modality, lane.modality
        built[m] = 0

        def plan(shapes, bucket, _plan=spec.plan, _m=m):
            built[_m] += 1
            return _plan(shapes, bucket)

        spec.plan = plan
    warmup, repeats = 1, 3
    points = _replay_points(rt, probes, 2, lambda fn: (fn(), 1.0)[1], warmup, repeats, lambda line: None)
    for m in ("vision", "audio"):
        n = len(points[m, "replay"])
        assert n == len(probes[m, "replay"][0]) * len(probes[m, "replay"][1])
        # the warm-up's build is cached for the warm-ups after it; every timed sample builds again;
        # vision's layout point replays once untimed, then twice per sample (layouts forgotten, cached)
        extra = 1 + 2 * repeats if m == "vision" else 0
        assert built[m] == n * (1 + repeats) + extra, (m, built[m], n)
    assert len(points["vision", "layout"]) == 1 and ("audio", "layout") not in points


def test_the_layout_point_lays_out_its_shapes_anew_in_every_fresh_sample():
    """The layout point: distinct frame shapes within its bucket; each sample's first replay lays out
    every shape again (the encoder's layouts forgotten), the second none; the point is the difference per
    shape, never negative; the model prices a new shape at the samples' median (vision only)."""
    from conftest import hf_and_native_audio, hf_and_native_vision

    from omnienc.encoders.vision import frame_layouts_made
    from omnienc.runtime import EncoderRuntime, RuntimeConfig
    from omnienc.runtime.calibrate import LAYOUT_FRAMES, _layout_point, layout_shapes

    probes = PROBES["reduced"]
    sizes, batches = probes["vision", "replay"]
    buckets = [Bucket(s, b) for s in sizes for b in batches]
    bucket, shapes = layout_shapes(buckets, 2)
    assert bucket in buckets and len({tuple(sh[0]) for sh in shapes}) == LAYOUT_FRAMES
    assert sum(t * h * w for sh in shapes for t, h, w in sh) <= bucket.size and LAYOUT_FRAMES <= bucket.batch
    rt = EncoderRuntime(vision=hf_and_native_vision()[1], audio=hf_and_native_audio()[1],
                        grid=probe_grid(probes, "float32"), config=RuntimeConfig(exact_graphs=False))
    rt.capture(progress=False)
    made, times = [], iter(random.uniform(5, 9) for _ in range(100))

    def timer(fn):
        before = frame_layouts_made()
        fn()
        made.append(frame_layouts_made() - before)
        return next(times)

    repeats = 3
    p = _layout_point(rt.vision, buckets, 2, timer, repeats)
    assert made == [LAYOUT_FRAMES, 0] * repeats
    assert p.batch == LAYOUT_FRAMES and len(p.samples) == repeats and all(s >= 0 for s in p.samples)
    base = CostModel.load()
    probes_ = {k: list(v.probes) for k, v in base.surfaces.items()}
    model = CostModel.from_probes({**probes_, ("vision", "layout"): [p]}, card="x")
    assert model.layout_ms("vision") == pytest.approx(max(0.0, float(np.median(p.samples))))
    assert model.layout_ms("audio") == 0 and CostModel.from_probes(probes_, card="x").layout_ms("vision") == 0
